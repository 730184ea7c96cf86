//! The cluster (`cluster.redis`): several real load balancers share Worker slots and
//! one priority queue through a real `redis-server` (started here on a free port;
//! "skipped" when it is not installed, a failure under `ANDERA_REDIS_TEST=required`),
//! in front of simulated Workers that record how many tasks they had at once.

mod common;

use std::time::{Duration, Instant};

use andera_worker_sim::{SimWorker, TaskFault};
use common::redis_server::Redis;
use common::*;

/// Sorted-set reads of the test's Redis.
trait Sets {
    /// `ZCARD key`.
    fn zcard(&self, key: &str) -> u64;
    /// The members and scores of the sorted set `key`.
    fn zrange(&self, key: &str) -> Vec<(String, f64)>;
}

impl Sets for Redis {
    fn zcard(&self, key: &str) -> u64 {
        let mut c = self.conn().expect("redis answers");
        redis::cmd("ZCARD").arg(key).query(&mut c).unwrap_or(0)
    }

    fn zrange(&self, key: &str) -> Vec<(String, f64)> {
        let mut c = self.conn().expect("redis answers");
        redis::cmd("ZRANGE")
            .arg(key)
            .arg(0)
            .arg(-1)
            .arg("WITHSCORES")
            .query(&mut c)
            .unwrap_or_default()
    }
}
use serde_json::{json, Value};

const QUEUE: &str = "andera-lb:cluster:queue:1:default";
/// A Redis answer may take 2 s before the fallback (default lease_ttl_ms 10000).
const STEADY: &str = "  timeout_ms: 2000\n";

fn leases_of(w: &SimWorker) -> String {
    format!("andera-lb:cluster:leases:{}", w.url())
}

/// A load balancer in the cluster at `redis`, with `yaml` under `cluster:`.
/// `cluster_yaml` sets `timeout_ms`: short where a test makes Redis fail, long where
/// a fallback on this shared machine would only blur what the test checks.
async fn member(w: &[String], redis: &Redis, cluster_yaml: &str) -> Lb {
    let yaml = format!("cluster:\n{cluster_yaml}");
    let lb = Lb::start_with(w, &[("CLUSTER_REDIS", redis.url().as_str())], &yaml).await;
    lb.wait_available(w.len() as u64).await;
    lb.wait_until(
        |h| h["components"]["cluster"]["status"] == json!("ok"),
        "the cluster is joined",
    )
    .await;
    lb
}

/// The instance and sequence number of a queue entry `<tag><arrival>|<instance>|<seq>`.
fn entry_of(member: &str) -> (String, u64) {
    let mut parts = member.split('|');
    let (_, inst, seq) = (parts.next(), parts.next().unwrap(), parts.next().unwrap());
    (inst.to_string(), seq.parse().unwrap())
}

/// Puts the two-slot Worker `w` on hold and fills both slots through `lb` (priority
/// 3 tasks `block-0`, `block-1`); their answers, once the hold is lifted.
async fn hold_both_slots(
    lb: &Lb,
    w: &andera_worker_sim::SimWorker,
) -> Vec<tokio::task::JoinHandle<reqwest::Result<reqwest::Response>>> {
    w.set_task_fault(TaskFault::Hold);
    let runs = (0..2)
        .map(|i| tokio::spawn(lb.task(labelled(&format!("block-{i}"), 3)).send()))
        .collect();
    wait_for("both slots taken", Duration::from_secs(30), || {
        w.stats().received == 2
    })
    .await;
    runs
}

fn labelled(label: &str, priority: u32) -> Value {
    let mut t = task("hello", json!({ "label": label }));
    t["priority"] = json!(priority);
    t
}

async fn wait_redis(what: &str, mut cond: impl FnMut() -> bool) {
    wait_for(what, Duration::from_secs(30), &mut cond).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_instances_never_overfill_a_worker_and_keep_one_priority_order() {
    let Some(redis) = Redis::start("cluster order") else {
        return;
    };
    let w = sim(|c| c.slots = 2).await;
    let list = [w.url()];
    let (a, b, c) = (
        member(&list, &redis, STEADY).await,
        member(&list, &redis, STEADY).await,
        member(&list, &redis, STEADY).await,
    );
    // Hold every task at the Worker until all 88 wait in the cluster's queue.
    let mut runs = hold_both_slots(&a, &w).await;
    let batches: [(&Lb, &str, u32, usize); 3] =
        [(&b, "p5", 5, 30), (&c, "p1", 1, 30), (&a, "p3", 3, 28)];
    let mut queued = 0;
    for (lb, name, priority, n) in batches {
        for i in 0..n {
            runs.push(tokio::spawn(
                lb.task(labelled(&format!("{name}-{i}"), priority)).send(),
            ));
            if name == "p5" {
                // One at a time: their arrival order is known (checked below).
                queued += 1;
                wait_redis(&format!("{queued} tasks in the cluster's queue"), || {
                    redis.zcard(QUEUE) == queued
                })
                .await;
            }
        }
        if name != "p5" {
            queued += n as u64;
        }
        wait_redis(&format!("{queued} tasks in the cluster's queue"), || {
            redis.zcard(QUEUE) == queued
        })
        .await;
    }
    assert_eq!(w.stats().received, 2, "nothing ran past the 2 slots");
    // The one order, kept in Redis: C's priority-1 tasks, then A's priority-3, then
    // B's priority-5, each instance's in the order they arrived.
    let mut names = Vec::new();
    for lb in [&a, &b, &c] {
        let h = lb.health().await;
        names.push(
            h["components"]["cluster"]["instance"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    let order: Vec<(String, u64)> = redis
        .zrange(QUEUE)
        .into_iter()
        .map(|(m, _)| entry_of(&m))
        .collect();
    let runs_of: Vec<&str> = order
        .iter()
        .map(|(i, _)| i.as_str())
        .fold(Vec::new(), |mut v, i| {
            if v.last() != Some(&i) {
                v.push(i);
            }
            v
        });
    assert_eq!(runs_of, [&names[2], &names[0], &names[1]], "{order:?}");
    let b_seqs: Vec<u64> = order
        .iter()
        .filter(|(i, _)| *i == names[1])
        .map(|(_, s)| *s)
        .collect();
    assert!(
        b_seqs.windows(2).all(|p| p[0] < p[1]),
        "arrival order: {b_seqs:?}"
    );
    assert_eq!(redis.zcard(&leases_of(&w)), 2, "two leases, no more");
    w.set_task_fault(TaskFault::None);
    for r in runs {
        let r = r.await.unwrap().expect("the load balancer answers");
        assert_eq!(r.status(), 200);
    }
    let stats = w.stats();
    assert_eq!(stats.received, 90);
    assert_eq!(
        stats.max_in_flight, 2,
        "the Worker never had more than its 2 slots' worth at once"
    );
    let pos = |p: &str| -> Vec<usize> {
        stats
            .order
            .iter()
            .enumerate()
            .filter(|(_, l)| l.starts_with(p))
            .map(|(i, _)| i)
            .collect()
    };
    let (p1, p5) = (pos("p1-"), pos("p5-"));
    assert!(
        p1.iter().max() < p5.iter().min(),
        "every priority-1 task (instance C) started before any priority-5 task queued \
         earlier on instance B: {:?}",
        stats.order
    );
    wait_redis("every lease returned", || redis.zcard(&leases_of(&w)) == 0).await;
    // The hand-off between instances was measured.
    let text = c.scrape().await;
    assert!(
        metric(&text, "andera_lb_cluster_handoff_seconds_count").is_some_and(|n| n > 0.0),
        "{text}"
    );
    let ov = a
        .get_json(&a.admin_url("/dashboard/api/overview"), true)
        .await;
    assert_eq!(
        ov["cluster"]["status"],
        json!("ok"),
        "the dashboard's cluster: {ov}"
    );
    a.wait_until(
        |h| {
            h["components"]["cluster"]["instances"]
                .as_array()
                .map(Vec::len)
                == Some(3)
        },
        "keyed /health lists the 3 instances",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_instance_leases_lapse_and_nothing_runs_twice() {
    let Some(redis) = Redis::start("cluster kill") else {
        return;
    };
    let ttl_ms = 2000;
    let w = sim(|c| c.slots = 2).await;
    let list = [w.url()];
    let ttl = format!("  lease_ttl_ms: {ttl_ms}\n  timeout_ms: 1000\n");
    let a = member(&list, &redis, &ttl).await;
    let mut doomed = member(&list, &redis, &ttl).await;
    w.set_task_fault(TaskFault::Hold);
    let mut lost = Vec::new();
    for i in 0..2 {
        lost.push(tokio::spawn(
            doomed.task(labelled(&format!("dead-{i}"), 1)).send(),
        ));
    }
    wait_for(
        "the doomed instance holds both slots",
        Duration::from_secs(30),
        || w.stats().received == 2,
    )
    .await;
    let mut after = Vec::new();
    for i in 0..2 {
        after.push(tokio::spawn(
            a.task(labelled(&format!("alive-{i}"), 1)).send(),
        ));
    }
    wait_redis("the survivor's tasks wait in the cluster", || {
        redis.zcard(QUEUE) == 2
    })
    .await;
    doomed.kill(); // SIGKILL: no release, no goodbye
    let killed_at = Instant::now();
    let killed_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as f64;
    let leases = redis.zrange(&leases_of(&w));
    assert_eq!(leases.len(), 2, "{leases:?}");
    for (_, expiry) in &leases {
        assert!(
            *expiry <= killed_ms + ttl_ms as f64,
            "a lease outlives its lease_ttl_ms: {leases:?}"
        );
    }
    // The Worker finishes the dead instance's tasks (nobody reads the answers).
    w.set_task_fault(TaskFault::None);
    for r in after {
        let r = r.await.unwrap().expect("the survivor answers");
        assert_eq!(r.status(), 200);
    }
    println!(
        "slots usable again {} ms after kill -9 (lease_ttl_ms {ttl_ms})",
        killed_at.elapsed().as_millis()
    );
    for r in lost {
        let r = r.await.unwrap();
        assert!(
            r.is_err() || r.unwrap().status() != 200,
            "no answer from a dead instance"
        );
    }
    let stats = w.stats();
    assert_eq!(stats.received, 4, "nothing ran twice: {:?}", stats.order);
    let mut order = stats.order.clone();
    order.sort();
    assert_eq!(order, ["alive-0", "alive-1", "dead-0", "dead-1"]);
    wait_redis("the survivor gave its leases back", || {
        redis.zcard(&leases_of(&w)) == 0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_lost_falls_back_and_returns_without_failing_a_sync_task() {
    let Some(redis) = Redis::start("cluster fallback") else {
        return;
    };
    let w = sim(|c| c.slots = 2).await;
    // A second pool whose one task is held across the Redis restart.
    let slow = sim(|c| {
        c.slots = 1;
        c.group = "slow".into();
        c.task_fault = TaskFault::Hold;
    })
    .await;
    let list = [w.url(), slow.url()];
    let faulty = "  lease_ttl_ms: 2000\n  timeout_ms: 500\n";
    let a = member(&list, &redis, faulty).await;
    let b = member(&list, &redis, faulty).await;
    let mut held = task("hello", json!({"label": "held"}));
    held["group"] = json!("slow");
    let held = tokio::spawn(a.task(held).send());
    wait_redis("the held task has its lease", || {
        redis.zcard(&leases_of(&slow)) == 1
    })
    .await;

    // Sync tasks through both instances the whole time.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut load = Vec::new();
    for lb in [&a, &b] {
        let (http, url, stop) = (lb.http.clone(), lb.url("/task"), stop.clone());
        load.push(tokio::spawn(async move {
            let mut statuses = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let r = http
                    .post(&url)
                    .header("authorization", LB_KEY)
                    .header("x-wr-auth", WK_KEY)
                    .json(&task("hello", json!({"sleepMs": 5})))
                    .send()
                    .await
                    .expect("the load balancer answers");
                statuses.push(r.status().as_u16());
            }
            statuses
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let port = redis.port;
    let dir = redis.stop();
    for lb in [&a, &b] {
        lb.wait_until(
            |h| h["components"]["cluster"]["status"] == json!("fallback"),
            "the instance falls back",
        )
        .await;
        let text = lb.scrape().await;
        assert_eq!(metric(&text, "andera_lb_cluster_fallback"), Some(1.0));
        assert!(metric(&text, "andera_lb_cluster_fallbacks_total").is_some_and(|n| n >= 1.0));
    }
    assert!(a.log().contains("CLUSTER FALLBACK"), "a loud warning");
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Back, empty: the held task's lease is written again from A's own count.
    let redis = Redis::start_in(dir, port);
    for lb in [&a, &b] {
        lb.wait_until(
            |h| h["components"]["cluster"]["status"] == json!("ok"),
            "the instance shares slots again",
        )
        .await;
        assert_eq!(
            metric(&lb.scrape().await, "andera_lb_cluster_fallback"),
            Some(0.0)
        );
    }
    wait_redis("the held task's lease is rebuilt", || {
        redis.zcard(&leases_of(&slow)) == 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for l in load {
        let statuses = l.await.unwrap();
        assert!(statuses.len() > 2, "tasks ran meanwhile: {statuses:?}");
        assert!(
            statuses.iter().all(|s| *s == 200),
            "no sync task failed: {statuses:?}"
        );
    }
    slow.set_task_fault(TaskFault::None);
    assert_eq!(held.await.unwrap().unwrap().status(), 200);
    wait_redis("the held task's lease is returned", || {
        redis.zcard(&leases_of(&slow)) == 0
    })
    .await;
}

#[tokio::test]
async fn without_cluster_redis_each_instance_counts_alone_as_before() {
    let w = sim(|c| c.slots = 1).await;
    let lb = Lb::start(&[w.url()], &[]).await;
    lb.wait_available(1).await;
    let h = lb.health().await;
    assert_eq!(h["components"]["cluster"]["status"], json!("off"));
    let ov = lb
        .get_json(&lb.admin_url("/dashboard/api/overview"), true)
        .await;
    assert_eq!(ov["cluster"]["status"], json!("off"));
    // A free slot is taken at once, without asking anyone.
    assert_eq!(lb.run(task("hello", json!({}))).await.0, 200);
    w.set_task_fault(TaskFault::Hold);
    let first = tokio::spawn(lb.task(labelled("first", 1)).send());
    wait_for("the slot is taken", Duration::from_secs(30), || {
        w.stats().received == 2
    })
    .await;
    let second = tokio::spawn(lb.task(labelled("second", 1)).send());
    lb.wait_queued(1).await;
    w.set_task_fault(TaskFault::None);
    assert_eq!(first.await.unwrap().unwrap().status(), 200);
    assert_eq!(second.await.unwrap().unwrap().status(), 200);
    let text = lb.scrape().await;
    for op in ["take", "release", "renew", "inbox"] {
        let name = format!("andera_lb_cluster_redis_calls_total{{op=\"{op}\"}}");
        assert_eq!(metric(&text, &name), Some(0.0), "no Redis call: {name}");
    }
    assert_eq!(metric(&text, "andera_lb_cluster_fallback"), Some(0.0));
    assert_eq!(metric(&text, "andera_lb_cluster_leases"), Some(0.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_slow_redis_is_a_bounded_wait_then_the_fallback() {
    let Some(redis) = Redis::start("cluster slow") else {
        return;
    };
    let w = sim(|c| c.slots = 2).await;
    let list = [w.url()];
    let lb = member(&list, &redis, "  timeout_ms: 500\n").await;
    assert_eq!(lb.run(task("hello", json!({}))).await.0, 200);
    // Redis stops answering every client for 3 s (it still accepts connections).
    let mut c = redis.conn().unwrap();
    redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(3000)
        .arg("ALL")
        .query::<String>(&mut c)
        .unwrap();
    // A task arriving now waits for Redis at most cluster.timeout_ms, then runs.
    let (status, body) = lb.run(task("hello", json!({}))).await;
    assert_eq!(status, 200, "{body}");
    let h = lb.health().await;
    assert_eq!(
        h["components"]["cluster"]["status"],
        json!("fallback"),
        "{h}"
    );
    assert!(lb.log().contains("CLUSTER FALLBACK"), "{}", lb.log());
    lb.wait_until(
        |h| h["components"]["cluster"]["status"] == json!("ok"),
        "Redis answers again",
    )
    .await;
    // The call that timed out still ran once Redis woke, and granted a lease nobody
    // got: the renewal that ended the fallback removed it.
    assert_eq!(
        redis.zcard(&leases_of(&w)),
        0,
        "{:?}",
        redis.zrange(&leases_of(&w))
    );
    assert_eq!(lb.run(task("hello", json!({}))).await.0, 200);
    wait_redis("its lease is returned", || redis.zcard(&leases_of(&w)) == 0).await;
}

#[test]
fn cluster_redis_is_read_from_the_environment_and_a_bad_url_names_its_key() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("workers.json"), "[]").unwrap();
    let check = |url: &str| {
        lb_once(dir.path())
            .env("LB_AUTH_KEY", "k")
            .env("CLUSTER_REDIS", url)
            .arg("-t")
            .output()
            .unwrap()
    };
    let out = check("http://user:hunter2@10.0.0.1:6379");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cluster.redis / CLUSTER_REDIS"), "{err}");
    assert!(
        !err.contains("hunter2"),
        "the password is never printed: {err}"
    );
    // A valid URL passes -t (Redis is only reached once the server runs).
    let out = check("redis://127.0.0.1:1/2");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn within_a_priority_clients_take_turns_across_instances() {
    let Some(redis) = Redis::start("cluster fair share") else {
        return;
    };
    let w = sim(|c| c.slots = 2).await;
    let list = [w.url()];
    let clients =
        "  timeout_ms: 2000\nauth:\n  clients:\n    - name: newcomer\n      keys: [\"new-key\"]\n";
    let (a, b) = (
        member(&list, &redis, clients).await,
        member(&list, &redis, clients).await,
    );
    let mut runs = hold_both_slots(&a, &w).await;
    // A flood of the default client's tasks on A, then one of another client on B.
    for i in 0..10 {
        runs.push(tokio::spawn(
            a.task(labelled(&format!("flood-{i}"), 3)).send(),
        ));
    }
    wait_redis("the flood waits in the cluster", || {
        redis.zcard(QUEUE) == 10
    })
    .await;
    let newcomer = b
        .http
        .post(b.url("/task"))
        .header("authorization", "new-key")
        .header("x-wr-auth", WK_KEY)
        .json(&labelled("newcomer", 3))
        .send();
    runs.push(tokio::spawn(newcomer));
    wait_redis("the newcomer waits too", || redis.zcard(QUEUE) == 11).await;
    let b_name = b.health().await["components"]["cluster"]["instance"]
        .as_str()
        .unwrap()
        .to_string();
    let queue: Vec<(String, u64)> = redis
        .zrange(QUEUE)
        .iter()
        .map(|(m, _)| entry_of(m))
        .collect();
    let at = queue.iter().position(|(i, _)| *i == b_name);
    assert_eq!(
        at,
        Some(1),
        "the newcomer waits behind one task of the flood, not ten: {queue:?}"
    );
    // The clocks live only while the pool is in use (client-named groups cannot pile up).
    let ttl: i64 = redis::cmd("PTTL")
        .arg("andera-lb:cluster:fair:1:default")
        .query(&mut redis.conn().unwrap())
        .unwrap();
    assert!(ttl > 0 && ttl <= 3_600_000, "{ttl}");
    w.set_task_fault(TaskFault::None);
    for r in runs {
        assert_eq!(r.await.unwrap().unwrap().status(), 200);
    }
    let order = w.stats().order;
    let started = order.iter().position(|l| l == "newcomer").unwrap();
    assert!(started <= 4, "the newcomer started early: {order:?}");
}
