//! The cluster agent: turns the scheduler's events into Redis calls (each bounded by
//! `cluster.timeout_ms`, several in flight at once on one multiplexed connection),
//! reads this instance's inbox, and renews its leases.

use std::sync::atomic::Ordering;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::time::timeout;

use super::metrics::call;
use super::scripts::{self, EPOCH, INBOX, INSTANCES, SEQ};
use super::{Asked, Cluster, Held, CLUSTER_METRICS};
use crate::scheduler::{Candidate, ClusterEvent, GrantOutcome, PoolKey};

static SCHED: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(scripts::SCHED));
static RENEW: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(scripts::RENEW));

/// Longest wait of one inbox read.
const INBOX_BLOCK: Duration = Duration::from_secs(1);
/// How late an inbox read's empty answer may come: Redis times blocked reads out
/// in its periodic task (every 100 ms by default), and a late "nothing" is no slow
/// answer to a task.
const INBOX_SLACK: Duration = Duration::from_secs(2);

/// A task to enter in its pool's queue.
struct Enqueue<'a> {
    member: &'a str,
    priority: u32,
    client: Option<&'a (Arc<str>, u32)>,
    /// Its earlier entry, replaced.
    replace: Option<&'a str>,
}

/// What one [`scripts::SCHED`] call gave.
struct Sched {
    /// Index (from 1) of the candidate the enqueued task got; 0: it waits.
    mine: usize,
    /// The enqueued task's entry in the queue.
    entry: Option<String>,
    /// Other tasks of this instance that got a lease: (member, url).
    own: Vec<(String, String)>,
}

fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// The sequence number of a member `<instance>|<seq>`.
fn seq_of(member: &str) -> Option<u64> {
    member.rsplit_once('|')?.1.parse().ok()
}

impl Cluster {
    /// Connects (retrying, in fallback meanwhile), then serves events until shutdown.
    pub(super) async fn run(self: Arc<Self>, mut shutdown: pingora::server::ShutdownWatch) {
        let Some(mut events) = self.events.lock().take() else {
            return;
        };
        let (conn, inbox) = loop {
            match self.connect().await {
                Ok(c) => break c,
                Err(e) => self.fall_back(&e),
            }
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tokio::time::sleep(self.tick()) => {}
            }
        };
        log::info!(
            "cluster: sharing Worker slots through Redis at {} as {}",
            self.url,
            self.me
        );
        tokio::spawn(self.clone().read_inbox(inbox));
        tokio::spawn(self.clone().upkeep(conn.clone()));
        // Not stopped by the shutdown: the tasks that finish during the grace period
        // give their leases back, so the other instances need not wait for them to
        // lapse.
        while let Some(e) = events.recv().await {
            self.on_event(e, &conn);
        }
    }

    async fn connect(&self) -> Result<(ConnectionManager, ConnectionManager), String> {
        let client =
            redis::Client::open(self.settings.redis.as_str()).map_err(|e| e.to_string())?;
        let t = self.settings.timeout;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(t))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(200));
        let conn = client
            .get_connection_manager_with_config(config.clone().set_response_timeout(Some(t)))
            .await
            .map_err(|e| e.to_string())?;
        // The inbox blocks: on its own connection, or it would hold up every call.
        let inbox = client
            .get_connection_manager_with_config(
                config.set_response_timeout(Some(INBOX_BLOCK + INBOX_SLACK)),
            )
            .await
            .map_err(|e| e.to_string())?;
        Ok((conn, inbox))
    }

    fn on_event(self: &Arc<Self>, event: ClusterEvent, conn: &ConnectionManager) {
        let live = !self.in_fallback();
        match event {
            ClusterEvent::Wait {
                seq,
                pool,
                key,
                candidates,
                client,
            } => {
                let asked = Asked {
                    pool,
                    key,
                    client,
                    entry: None,
                };
                self.asked.lock().insert(seq, asked.clone());
                if live {
                    self.ask(conn, seq, asked, candidates);
                }
            }
            ClusterEvent::Left { seq } => {
                let Some(a) = self.asked.lock().remove(&seq) else {
                    return;
                };
                // Not entered yet (its call is on its way): its grant will go back.
                let Some(member) = a.entry.filter(|_| live) else {
                    return;
                };
                {
                    let (me, mut conn) = (self.clone(), conn.clone());
                    let queue = scripts::queue_key(&a.pool.0, a.pool.1);
                    tokio::spawn(async move {
                        call("leave");
                        let mut zrem = redis::cmd("ZREM");
                        zrem.arg(queue).arg(member);
                        if let Err(e) = me.bounded(zrem.query_async::<i64>(&mut conn)).await {
                            me.fall_back(&e);
                        }
                    });
                }
            }
            ClusterEvent::Started { seq, url, pool } => {
                self.asked.lock().remove(&seq);
                let held = Held {
                    url: url.raw.clone(),
                    pool,
                };
                let n = {
                    let mut h = self.held.lock();
                    h.insert(seq, held);
                    h.len()
                };
                CLUSTER_METRICS.leases.set(n as i64);
            }
            ClusterEvent::Released { seq, limit } => {
                let (held, n) = {
                    let mut h = self.held.lock();
                    (h.remove(&seq), h.len())
                };
                CLUSTER_METRICS.leases.set(n as i64);
                if let (Some(h), true) = (held, live) {
                    self.give_back(conn, seq, h.url, h.pool, limit.unwrap_or(0), "release");
                }
            }
        }
    }

    /// Waits for `fut` at most `cluster.timeout_ms`.
    async fn bounded<T>(
        &self,
        fut: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, String> {
        match timeout(self.settings.timeout, fut).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!(
                "no answer within {} ms",
                self.settings.timeout.as_millis()
            )),
        }
    }

    /// One [`scripts::SCHED`] call.
    async fn sched(
        self: &Arc<Self>,
        conn: &ConnectionManager,
        pool: &PoolKey,
        workers: &[(String, u32)],
        release: Option<&str>,
        enqueue: Option<Enqueue<'_>>,
    ) -> Result<Sched, String> {
        let mut inv = SCHED.key(scripts::queue_key(&pool.0, pool.1));
        inv.key(INSTANCES)
            .key(SEQ)
            .key(scripts::fair_key(&pool.0, pool.1));
        for (url, _) in workers {
            inv.key(scripts::lease_key(url));
        }
        let client = enqueue.as_ref().and_then(|e| e.client);
        inv.arg(&self.me)
            .arg(self.settings.lease_ttl.as_millis() as u64)
            .arg(now_us())
            .arg(release.unwrap_or(""))
            .arg(enqueue.as_ref().map_or("", |e| e.member))
            .arg(enqueue.as_ref().map_or(0, |e| e.priority))
            .arg(INBOX)
            .arg(client.map_or("", |c| &*c.0))
            .arg(client.map_or(1, |c| c.1))
            .arg(enqueue.as_ref().and_then(|e| e.replace).unwrap_or(""));
        for (url, limit) in workers {
            inv.arg(url).arg(*limit);
        }
        let mut conn = conn.clone();
        let out: Vec<String> = self.bounded(inv.invoke_async(&mut conn)).await?;
        let mine = out.first().and_then(|v| v.parse().ok()).unwrap_or(0);
        if let Some(depth) = out.get(1).and_then(|v| v.parse::<u64>().ok()) {
            self.seen.lock().queue_depth = depth;
            CLUSTER_METRICS.queue_depth.set(depth as i64);
        }
        let entry = out.get(2).filter(|e| !e.is_empty()).cloned();
        let lapse = out.get(3).and_then(|v| v.parse::<u64>().ok());
        if let Some(ms) = lapse {
            self.arm(&conn, pool, ms);
        }
        let own = out
            .get(4..)
            .unwrap_or_default()
            .chunks_exact(2)
            .map(|p| (p[0].clone(), p[1].clone()))
            .collect();
        Ok(Sched { mine, entry, own })
    }

    /// Enters task `seq` in its pool's queue (granting it a lease if one is free).
    fn ask(
        self: &Arc<Self>,
        conn: &ConnectionManager,
        seq: u64,
        asked: Asked,
        candidates: Vec<Candidate>,
    ) {
        let (me, conn) = (self.clone(), conn.clone());
        tokio::spawn(async move {
            call("take");
            let workers: Vec<(String, u32)> = candidates
                .iter()
                .map(|c| (c.url.raw.clone(), c.limit))
                .collect();
            let member = me.member(seq);
            let enqueue = Enqueue {
                member: &member,
                priority: asked.key.0,
                client: asked.client.as_ref(),
                replace: asked.entry.as_deref(),
            };
            let pool = asked.pool.clone();
            match me.sched(&conn, &pool, &workers, None, Some(enqueue)).await {
                Ok(s) => {
                    if let Some(a) = me.asked.lock().get_mut(&seq) {
                        a.entry = s.entry.clone();
                    }
                    if let Some((url, _)) = s.mine.checked_sub(1).and_then(|i| workers.get(i)) {
                        me.granted(&conn, seq, url, &pool);
                    }
                    me.granted_own(&conn, s.own, &pool);
                }
                Err(e) => me.fall_back(&e),
            }
        });
    }

    fn granted_own(
        self: &Arc<Self>,
        conn: &ConnectionManager,
        own: Vec<(String, String)>,
        pool: &PoolKey,
    ) {
        for (member, url) in own {
            if let Some(seq) = seq_of(&member) {
                self.granted(conn, seq, &url, pool);
            }
        }
    }

    /// Task `seq` got a lease on `url`: it starts, or the lease goes back.
    fn granted(self: &Arc<Self>, conn: &ConnectionManager, seq: u64, url: &str, pool: &PoolKey) {
        let asked = self.asked.lock().remove(&seq);
        let outcome = match &asked {
            Some(a) => self.scheduler.cluster_grant(&a.pool, a.key, url),
            None => GrantOutcome::Gone,
        };
        let limit = self
            .scheduler
            .cluster_candidates(pool)
            .iter()
            .find(|c| c.url.raw == url)
            .map_or(0, |c| c.limit);
        match (outcome, asked) {
            (GrantOutcome::Granted, Some(a)) => {
                let n = {
                    let mut h = self.held.lock();
                    h.insert(
                        seq,
                        Held {
                            url: url.to_string(),
                            pool: a.pool,
                        },
                    );
                    h.len()
                };
                CLUSTER_METRICS.leases.set(n as i64);
            }
            (GrantOutcome::Unusable, Some(a)) => {
                self.give_back(conn, seq, url.to_string(), pool.clone(), limit, "release");
                let a = Asked { entry: None, ..a };
                self.asked.lock().insert(seq, a.clone());
                let candidates = self.scheduler.cluster_candidates(&a.pool);
                self.ask(conn, seq, a, candidates);
            }
            _ => self.give_back(conn, seq, url.to_string(), pool.clone(), limit, "release"),
        }
    }

    /// Returns lease `seq` on `url` and hands the slot to the most urgent task.
    fn give_back(
        self: &Arc<Self>,
        conn: &ConnectionManager,
        seq: u64,
        url: String,
        pool: PoolKey,
        limit: u32,
        op: &'static str,
    ) {
        let (me, conn) = (self.clone(), conn.clone());
        tokio::spawn(async move {
            call(op);
            let member = me.member(seq);
            let workers = [(url, limit)];
            match me.sched(&conn, &pool, &workers, Some(&member), None).await {
                Ok(s) => me.granted_own(&conn, s.own, &pool),
                Err(e) => me.fall_back(&e),
            }
        });
    }

    /// Enters every task waiting here in the queues again (after a fallback, or
    /// when Redis lost its state).
    pub(super) fn ask_all(self: &Arc<Self>, conn: &ConnectionManager) {
        for (pool, key) in self.scheduler.cluster_waiters() {
            // Its client as it arrived (a task that arrived during the fallback has
            // none on record: it is entered without one); its old entry is replaced.
            let asked = {
                let mut book = self.asked.lock();
                let a = book.entry(key.2).or_insert_with(|| Asked {
                    pool: pool.clone(),
                    key,
                    client: None,
                    entry: None,
                });
                a.clone()
            };
            let candidates = self.scheduler.cluster_candidates(&pool);
            self.ask(conn, key.2, asked, candidates);
        }
    }

    /// Reads grants other instances made to this instance's tasks.
    async fn read_inbox(self: Arc<Self>, mut conn: ConnectionManager) {
        let key = format!("{INBOX}{}", self.me);
        loop {
            call("inbox");
            let mut pop = redis::cmd("BLPOP");
            pop.arg(&key).arg(INBOX_BLOCK.as_secs_f64());
            let pop = pop.query_async::<Option<(String, String)>>(&mut conn);
            match timeout(INBOX_BLOCK + INBOX_SLACK, pop).await {
                Ok(Ok(Some((_, grant)))) => self.on_grant(&conn, &grant),
                Ok(Ok(None)) => {}
                Ok(Err(e)) => {
                    self.fall_back(&e.to_string());
                    tokio::time::sleep(self.tick()).await;
                }
                Err(_) => {
                    self.fall_back("the inbox read got no answer");
                    tokio::time::sleep(self.tick()).await;
                }
            }
        }
    }

    /// A grant from the inbox: `member \t url \t queue \t µs`.
    fn on_grant(self: &Arc<Self>, conn: &ConnectionManager, grant: &str) {
        let mut parts = grant.split('\t');
        let (Some(member), Some(url), Some(queue), Some(sent)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            log::warn!("cluster: malformed grant in the inbox ignored");
            return;
        };
        if let Ok(sent) = sent.parse::<u64>() {
            let waited = now_us().saturating_sub(sent);
            CLUSTER_METRICS.handoff.observe(waited as f64 / 1e6);
        }
        let (Some(seq), Some((group, contract))) = (seq_of(member), scripts::pool_of(queue)) else {
            return;
        };
        let pool: PoolKey = (group.into(), contract);
        self.granted(conn, seq, url, &pool);
    }

    /// Renews leases every tick, pumps the queues this instance waits in (leases of
    /// dead instances lapse without a release), and refreshes the figures.
    async fn upkeep(self: Arc<Self>, conn: ConnectionManager) {
        let mut ticker = tokio::time::interval(self.tick());
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            match self.renew(&conn).await {
                Ok(rebuilt) => {
                    self.seen.lock().connected = true;
                    if self.in_fallback() {
                        self.recover(&conn);
                    } else if rebuilt {
                        log::warn!(
                            "cluster: Redis at {} lost the cluster's state (restarted empty?): \
                             leases written again from this instance's own count",
                            self.url
                        );
                        self.ask_all(&conn);
                    }
                }
                Err(e) => {
                    self.fall_back(&e);
                    continue;
                }
            }
            for pool in self.scheduler.cluster_waiting_pools() {
                self.pump(&conn, &pool).await;
            }
            if let Err(e) = self.status(&conn).await {
                self.fall_back(&e);
            }
        }
    }

    /// Hands the free slots of `pool`'s Workers to its most urgent tasks (leases that
    /// lapsed free slots without a release).
    async fn pump(self: &Arc<Self>, conn: &ConnectionManager, pool: &PoolKey) {
        let workers: Vec<(String, u32)> = self
            .scheduler
            .cluster_candidates(pool)
            .iter()
            .map(|c| (c.url.raw.clone(), c.limit))
            .collect();
        call("pump");
        match self.sched(conn, pool, &workers, None, None).await {
            Ok(s) => self.granted_own(conn, s.own, pool),
            Err(e) => self.fall_back(&e),
        }
    }

    /// Looks at `pool` again in `after_ms`, when a full Worker's first lease lapses
    /// (a dead instance's slot is then used at once, not at the next renewal); one
    /// look per pool at a time.
    fn arm(self: &Arc<Self>, conn: &ConnectionManager, pool: &PoolKey, after_ms: u64) {
        if !self.armed.lock().insert(pool.clone()) {
            return;
        }
        let (me, conn, pool) = (self.clone(), conn.clone(), pool.clone());
        let look: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> =
            Box::pin(async move {
                tokio::time::sleep(Duration::from_millis(after_ms + 2)).await;
                me.armed.lock().remove(&pool);
                if !me.in_fallback() && me.scheduler.cluster_waiting_pools().contains(&pool) {
                    me.pump(&conn, &pool).await;
                }
            });
        tokio::spawn(look);
    }

    /// One [`scripts::RENEW`] call; true when Redis had lost the cluster's state
    /// (the leases were written again).
    async fn renew(&self, conn: &ConnectionManager) -> Result<bool, String> {
        let held: Vec<(u64, String)> = self
            .held
            .lock()
            .iter()
            .map(|(seq, h)| (*seq, h.url.clone()))
            .collect();
        let rebuild = self.rebuild.load(Ordering::Acquire);
        let known = self.epoch.lock().clone();
        let mut inv = RENEW.key(INSTANCES);
        inv.key(EPOCH);
        for (_, url) in &held {
            inv.key(scripts::lease_key(url));
        }
        if rebuild {
            // Swept for leases of this instance it does not hold.
            for (_, urls) in self.scheduler.cluster_layout() {
                for url in urls {
                    inv.key(scripts::lease_key(&url));
                }
            }
        }
        inv.arg(&self.me)
            .arg(self.settings.lease_ttl.as_millis() as u64)
            .arg(&known)
            .arg(format!("{}-{}", self.me, now_us()))
            .arg(if rebuild { "1" } else { "0" })
            .arg(held.len());
        for (seq, _) in &held {
            inv.arg(self.member(*seq));
        }
        call("renew");
        let mut c = conn.clone();
        let (epoch, rebuilt): (String, i64) = self.bounded(inv.invoke_async(&mut c)).await?;
        self.rebuild.store(false, Ordering::Release);
        // A new epoch after one was seen: Redis lost the cluster's state.
        let lost = !known.is_empty() && epoch != known;
        *self.epoch.lock() = epoch;
        Ok(rebuilt == 1 && lost)
    }

    /// Reads the instances, the leases on this instance's Workers and the depth of
    /// its pools' queues, for `/health`.
    async fn status(&self, conn: &ConnectionManager) -> Result<(), String> {
        let layout = self.scheduler.cluster_layout();
        let mut pipe = redis::pipe();
        pipe.cmd("ZRANGE").arg(INSTANCES).arg(0).arg(-1);
        let urls: Vec<&String> = layout.iter().flat_map(|(_, u)| u).collect();
        for url in &urls {
            pipe.cmd("ZCARD").arg(scripts::lease_key(url));
        }
        for (pool, _) in &layout {
            pipe.cmd("ZCARD").arg(scripts::queue_key(&pool.0, pool.1));
        }
        call("status");
        let mut c = conn.clone();
        let out: Vec<redis::Value> = self.bounded(pipe.query_async(&mut c)).await?;
        let mut out = out.into_iter();
        let instances: Vec<String> = out
            .next()
            .and_then(|v| redis::from_redis_value(v).ok())
            .unwrap_or_default();
        let leases = urls
            .iter()
            .map(|u| {
                let n = out.next().and_then(|v| redis::from_redis_value(v).ok());
                ((*u).clone(), n.unwrap_or(0))
            })
            .collect();
        let depth: u64 = out
            .filter_map(|v| redis::from_redis_value::<u64>(v).ok())
            .sum();
        CLUSTER_METRICS.queue_depth.set(depth as i64);
        let mut seen = self.seen.lock();
        seen.instances = instances;
        seen.leases = leases;
        seen.queue_depth = depth;
        seen.last_error = None;
        Ok(())
    }
}
