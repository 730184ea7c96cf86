//! The Redis journal: several real load balancers share one webhook queue in a real
//! `redis-server` (started here on a free port; the tests that need it say
//! "skipped" when it is not installed), in front of simulated Workers whose webhook
//! posts are counted by task.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::receiver::{settle, Receiver};
use common::redis_server::Redis;
use common::*;
use serde_json::json;

const STREAM: &str = "andera-lb:webhook-tasks";
const GROUP: &str = "andera-lb";

/// Unfinished tasks in the shared queue.
fn stream_len(redis: &Redis) -> i64 {
    let mut c = redis.conn().expect("redis answers");
    redis::cmd("XLEN").arg(STREAM).query(&mut c).unwrap_or(0)
}

/// A sync task that holds the Worker's only slot for `ms`.
async fn block_worker(lb: &Lb, w: &andera_worker_sim::SimWorker, ms: u64) {
    let blocker = lb
        .task(task("hello", json!({"name": "blocker", "sleepMs": ms})))
        .send();
    tokio::spawn(blocker);
    wait_for("the blocker runs", Duration::from_secs(10), || {
        w.stats().running > 0
    })
    .await;
}

/// Tasks the load balancer with process id `lb_pid` holds unfinished (its consumer's pending entries).
fn pending_of(redis: &Redis, lb_pid: u32) -> i64 {
    let mut c = redis.conn().expect("redis answers");
    let v: redis::Value = redis::cmd("XINFO")
        .arg("CONSUMERS")
        .arg(STREAM)
        .arg(GROUP)
        .query(&mut c)
        .unwrap();
    let redis::Value::Array(consumers) = v else {
        return 0;
    };
    let tag = format!("-{lb_pid}-");
    let mut total = 0;
    for c in consumers {
        let redis::Value::Array(kv) = c else { continue };
        let mut name = String::new();
        let mut pending = 0;
        for p in kv.chunks(2) {
            match (&p[0], &p[1]) {
                (redis::Value::BulkString(k), redis::Value::BulkString(v)) if k == b"name" => {
                    name = String::from_utf8_lossy(v).into_owned();
                }
                (redis::Value::BulkString(k), redis::Value::Int(n)) if k == b"pending" => {
                    pending = *n;
                }
                _ => {}
            }
        }
        if name.contains(&tag) {
            total += pending;
        }
    }
    total
}

fn report(counts: &HashMap<String, u32>, n: usize) -> (Vec<String>, usize) {
    let duplicated: Vec<_> = counts
        .iter()
        .filter(|(_, c)| **c > 1)
        .map(|(k, _)| k.clone())
        .collect();
    let lost = (0..n)
        .filter(|i| !counts.contains_key(&format!("t{i}")))
        .count();
    (duplicated, lost)
}

#[tokio::test]
async fn two_instances_share_the_queue_and_one_killed_mid_run_duplicates_none_and_reports_each_loss_unknown(
) {
    let Some(redis) = Redis::start("two_instances") else {
        return;
    };
    const N: usize = 300;
    let (rx, hook) = Receiver::start().await;
    let w1 = sim(|c| c.slots = 1).await;
    let w2 = sim(|c| c.slots = 1).await;
    let url = redis.url();
    let env = [("TASK_JOURNAL", url.as_str())];
    let yaml = "tasks:\n  claim_idle_ms: 1000\n";
    let mut lb1 = Lb::start_with(&[w1.url()], &env, yaml).await;
    let lb2 = Lb::start_with(&[w2.url()], &env, yaml).await;
    lb1.wait_available(1).await;
    lb2.wait_available(1).await;
    // lb2 can take nothing for a while: the shared queue builds up, and lb1 runs.
    block_worker(&lb2, &w2, 3000).await;
    for i in 0..N {
        let lb = if i % 2 == 0 { &lb1 } else { &lb2 };
        let (s, b) = lb.run(webhook_task(&format!("t{i}"), &hook, 10)).await;
        assert_eq!(s, 200, "task t{i}: {b}");
    }
    // kill -9 lb1 mid-run: it has delivered some, holds some, and many are queued.
    let start = Instant::now();
    while rx.snapshot().len() < 20 && start.elapsed() < Duration::from_secs(20) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let held = pending_of(&redis, lb1.pid());
    let queued = stream_len(&redis);
    lb1.kill();
    let before = rx.snapshot().len();
    assert!(
        before > 0 && queued > 0,
        "nothing ran or nothing was queued at the kill: delivered {before}, queued {queued}"
    );

    // Done when all came, or when nothing is left anywhere (then the rest is lost).
    let idle = |w: &andera_worker_sim::SimWorker| {
        let s = w.stats();
        s.completed == s.received
    };
    let counts = settle(&rx, |c| {
        c.len() >= N || (stream_len(&redis) == 0 && idle(&w1) && idle(&w2))
    })
    .await;
    let text = lb2.scrape().await;
    let unknown = metric(&text, "andera_lb_journal_unknown_total").unwrap_or(0.0);
    let resumed = metric(&text, "andera_lb_journal_resumed_total").unwrap_or(0.0);
    let (duplicated, lost) = report(&counts, N);
    println!(
        "two instances on Redis, one killed: accepted {N}, delivered {} ({before} before the kill; \
         {queued} queued, {held} held by the killed one), taken over {resumed}, unknown {unknown}, \
         duplicated {}, lost {lost}",
        counts.len(),
        duplicated.len()
    );
    assert!(duplicated.is_empty(), "delivered twice: {duplicated:?}");
    // A task marked sent in the instant before the kill may not have reached the
    // Worker: it is reported `unknown`, never silently lost.
    assert!(
        lost as f64 <= unknown,
        "lost {lost} with only {unknown} reported unknown\n{}",
        lb2.log()
    );
    assert!(
        text.contains("andera_lb_journal_engine{engine=\"redis\"} 1"),
        "{text}"
    );
    assert_eq!(stream_len(&redis), 0, "finished tasks leave the stream");
    let mut c = redis.conn().expect("redis answers");
    let indexed: i64 = redis::cmd("HLEN")
        .arg("andera-lb:webhook-index")
        .query(&mut c)
        .unwrap();
    assert_eq!(indexed, 0, "finished tasks leave the index of task ids");
}

#[tokio::test]
async fn a_task_sent_by_an_instance_that_died_is_unknown_not_run_twice() {
    let Some(redis) = Redis::start("unknown") else {
        return;
    };
    let (rx, hook) = Receiver::start().await;
    let w = sim(|c| c.slots = 1).await;
    let url = redis.url();
    let env = [("TASK_JOURNAL", url.as_str())];
    let yaml = "tasks:\n  claim_idle_ms: 500\n";
    let mut a = Lb::start_with(&[w.url()], &env, yaml).await;
    a.wait_available(1).await;
    block_worker(&a, &w, 2500).await;
    for i in 0..3 {
        let (s, b) = a.run(webhook_task(&format!("t{i}"), &hook, 1)).await;
        assert_eq!(s, 200, "{b}");
    }
    // `a` holds all three, waiting for the slot; pretend it sent t1 to a Worker.
    let start = Instant::now();
    while pending_of(&redis, a.pid()) < 3 {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "a did not take the tasks"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut c = redis.conn().unwrap();
    let entries: redis::Value = redis::cmd("XRANGE")
        .arg(STREAM)
        .arg("-")
        .arg("+")
        .query(&mut c)
        .unwrap();
    let redis::Value::Array(entries) = entries else {
        panic!("no entries")
    };
    let mut sent = None;
    for e in entries {
        let redis::Value::Array(pair) = e else {
            continue;
        };
        let (redis::Value::BulkString(id), redis::Value::Array(fields)) = (&pair[0], &pair[1])
        else {
            continue;
        };
        if fields.iter().any(
            |f| matches!(f, redis::Value::BulkString(b) if b.windows(4).any(|w| w == b"\"t1\"")),
        ) {
            sent = Some(String::from_utf8_lossy(id).into_owned());
        }
    }
    let sent = sent.expect("t1 is in the stream");
    redis::cmd("HSET")
        .arg("andera-lb:webhook-dispatched")
        .arg(&sent)
        .arg("dead")
        .query::<()>(&mut c)
        .unwrap();
    a.kill();

    let w2 = sim(|c| c.slots = 1).await;
    let b = Lb::start_with(&[w2.url()], &env, yaml).await;
    b.wait_available(1).await;
    let counts = settle(&rx, |c| c.len() >= 2).await;
    let text = b.scrape().await;
    let unknown = metric(&text, "andera_lb_journal_unknown_total").unwrap_or(0.0);
    let resumed = metric(&text, "andera_lb_journal_resumed_total").unwrap_or(0.0);
    println!("take-over: counts {counts:?}, resumed {resumed}, unknown {unknown}");
    assert_eq!(counts.get("t0"), Some(&1));
    assert_eq!(counts.get("t2"), Some(&1));
    assert_eq!(
        counts.get("t1"),
        None,
        "a task that may have run is not run again"
    );
    assert_eq!((resumed, unknown), (2.0, 1.0));
    assert_eq!(stream_len(&redis), 0);
}

#[tokio::test]
async fn redis_unreachable_at_start_is_one_clear_line_and_a_non_zero_exit() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("workers.json"), "[]").unwrap();
    let url = format!("redis://:hunter2@127.0.0.1:{}/3", free_port());
    let out = lb_once(dir.path())
        .env("LB_AUTH_KEY", LB_KEY)
        .env("TASK_JOURNAL", &url)
        .env("PORT", free_port().to_string())
        .env("ADMIN_PORT", free_port().to_string())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    let shown = url.replace(":hunter2@", "***@");
    assert!(stderr.contains(&shown), "names the URL: {stderr}");
    assert!(!stderr.contains("hunter2"), "never the password: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
}

#[tokio::test]
async fn redis_lost_later_refuses_new_webhook_tasks_with_503_then_reconnects() {
    let Some(redis) = Redis::start("redis_lost") else {
        return;
    };
    let (rx, hook) = Receiver::start().await;
    let w = sim(|c| c.slots = 2).await;
    let url = redis.url();
    let port = redis.port;
    let env = [("TASK_JOURNAL", url.as_str())];
    let lb = Lb::start(&[w.url()], &env).await;
    lb.wait_available(1).await;
    let (s, b) = lb.run(webhook_task("t0", &hook, 1)).await;
    assert_eq!(s, 200, "{b}");
    settle(&rx, |c| c.contains_key("t0")).await;

    let dir = redis.stop();
    let (s, b) = lb.run(webhook_task("t1", &hook, 1)).await;
    assert_eq!(s, 503, "{b}");
    assert!(
        b["error"].as_str().unwrap_or("").contains("cannot be kept"),
        "{b}"
    );
    // Sync tasks do not need the journal.
    let (s, _) = lb.run(task("hello", json!({"name": "sync"}))).await;
    assert_eq!(s, 200);

    let _redis = Redis::start_in(dir, port);
    let start = Instant::now();
    let accepted = loop {
        let (s, b) = lb.run(webhook_task("t2", &hook, 1)).await;
        if s == 200 {
            break true;
        }
        assert_eq!(s, 503, "{b}");
        if start.elapsed() > Duration::from_secs(15) {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(accepted, "no reconnect\n{}", lb.log());
    let counts = settle(&rx, |c| c.contains_key("t2")).await;
    assert_eq!(counts.get("t2"), Some(&1));
    assert_eq!(counts.get("t1"), None, "refused, so never run");
}

#[tokio::test]
async fn the_first_webhook_task_after_redis_restarts_is_accepted() {
    let Some(redis) = Redis::start("redis_restart") else {
        return;
    };
    let (rx, hook) = Receiver::start().await;
    let w = sim(|c| c.slots = 2).await;
    let url = redis.url();
    let port = redis.port;
    let env = [("TASK_JOURNAL", url.as_str())];
    let lb = Lb::start(&[w.url()], &env).await;
    lb.wait_available(1).await;
    let (s, b) = lb.run(webhook_task("t0", &hook, 1)).await;
    assert_eq!(s, 200, "{b}");
    settle(&rx, |c| c.contains_key("t0")).await;
    // Redis restarts (empty): the connection the load balancer holds is dead, and
    // the first task after it finds out.
    let dir = redis.stop();
    // While Redis is away the journal says so (keyed /health, /ready).
    lb.wait_until(
        |h| h["components"]["journal"]["status"] == "unavailable",
        "the journal is unavailable",
    )
    .await;
    let ready = lb.http.get(lb.admin_url("/ready")).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    let _redis = Redis::start_in(dir, port);
    lb.wait_until(
        |h| h["components"]["journal"]["status"] == "ok",
        "the journal is ok again",
    )
    .await;
    let (s, b) = lb.run(webhook_task("t1", &hook, 1)).await;
    assert_eq!(
        s,
        200,
        "the first task after the restart: {b}\n{}",
        lb.log()
    );
    let counts = settle(&rx, |c| c.contains_key("t1")).await;
    assert_eq!(counts.get("t1"), Some(&1));
}
