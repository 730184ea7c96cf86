//! Durable webhook tasks: the real binary with a task journal, killed, restarted,
//! upgraded, in front of a simulated Worker that posts results to a webhook
//! receiver counting deliveries by task.

mod common;

use std::time::{Duration, Instant};

use common::receiver::{settle, Receiver};
use common::*;
use serde_json::json;

/// Webhook task `name` at `priority`, 15 ms on the Worker.
fn prioritized(name: &str, hook: &str, priority: u32) -> serde_json::Value {
    with(webhook_task(name, hook, 15), "priority", json!(priority))
}

/// Sends `n` webhook tasks named `t0..t{n-1}` and checks each is accepted.
async fn accept_all(lb: &Lb, n: usize, hook: &str) {
    for i in 0..n {
        let (s, b) = lb
            .run(prioritized(&format!("t{i}"), hook, 1 + (i % 3) as u32))
            .await;
        assert_eq!(s, 200, "task {i}: {b}");
    }
}

#[tokio::test]
async fn kill_9_with_200_queued_webhook_tasks_loses_and_duplicates_none() {
    let (rx, hook) = Receiver::start().await;
    let w = sim(|c| c.slots = 1).await;
    let state = tempfile::tempdir().unwrap();
    let journal = state.path().join("tasks.db");
    let env = [("TASK_JOURNAL", journal.to_str().unwrap())];
    let mut lb = Lb::start(&[w.url()], &env).await;
    lb.wait_available(1).await;
    // A sync task holds the only slot, so the webhook tasks queue in the LB.
    let blocker = lb
        .task(task("hello", json!({"name": "blocker", "sleepMs": 4000})))
        .send();
    let blocker = tokio::spawn(blocker);
    wait_for("the blocker runs", Duration::from_secs(10), || {
        w.stats().running > 0
    })
    .await;
    accept_all(&lb, 200, &hook).await;
    // kill -9 with all 200 accepted and still queued in the load balancer.
    let queued = lb.health().await["queue"]["depth"].as_u64();
    lb.kill();
    let _ = blocker.await;
    let before = rx.snapshot().len();
    assert_eq!(
        (queued, before),
        (Some(200), 0),
        "the blocker ended before the kill: nothing would be tested"
    );

    let lb = Lb::start(&[w.url()], &env).await;
    lb.wait_available(1).await;
    let counts = settle(&rx, |c| c.len() >= 200).await;
    let text = lb.scrape().await;
    let unknown = metric(&text, "andera_lb_journal_unknown_total").unwrap_or(0.0);
    let resumed = metric(&text, "andera_lb_journal_resumed_total").unwrap_or(0.0);
    let duplicated: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
    let lost = (0..200)
        .map(|i| format!("t{i}"))
        .filter(|name| !counts.contains_key(name))
        .count();
    println!(
        "kill -9: accepted 200, delivered {} ({before} before the kill), resumed {resumed}, unknown {unknown}, duplicated {}, lost {lost}",
        counts.len(),
        duplicated.len()
    );
    assert!(duplicated.is_empty(), "delivered twice: {duplicated:?}");
    // All 200 were still queued at the kill (none marked dispatched): each is resumed
    // and run once, none is lost and none is left unknown.
    assert_eq!(resumed, 200.0, "every queued task is resumed");
    assert_eq!((lost, unknown), (0, 0.0), "lost, unknown");
}

async fn settle_until(rx: &Receiver, n: usize) {
    let start = Instant::now();
    while rx.snapshot().len() < n && start.elapsed() < Duration::from_secs(20) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn an_upgrade_hands_queued_webhook_tasks_to_the_successor() {
    let (rx, hook) = Receiver::start().await;
    let w = sim(|c| c.slots = 2).await;
    let state = tempfile::tempdir().unwrap();
    let journal = state.path().join("tasks.db");
    let env = [("TASK_JOURNAL", journal.to_str().unwrap())];
    let mut old = Lb::start_with(&[w.url()], &env, "  grace_period_s: 60\n").await;
    old.wait_available(1).await;
    accept_all(&old, 400, &hook).await;
    settle_until(&rx, 5).await;
    // Under load: 100 more webhook tasks keep arriving through the hand-over.
    let more: Vec<_> = (400..500)
        .map(|i| old.task(prioritized(&format!("t{i}"), &hook, 1 + (i % 3) as u32)))
        .collect();
    let load = tokio::spawn(async move {
        let mut statuses = Vec::new();
        for rb in more {
            statuses.push(rb.send().await.map(|r| r.status().as_u16()).unwrap_or(0));
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        statuses
    });
    // The successor takes the sockets over, then the old process is told to go.
    let mut successor = old.command.arg("--upgrade").spawn().unwrap();
    let sock = old.upgrade_socket();
    wait_for(
        "the successor's upgrade socket",
        Duration::from_secs(10),
        || sock.exists(),
    )
    .await;
    old.signal("QUIT");
    // The old process must not sit out its 60 s grace period running the queue.
    let code = old.wait_exit(Duration::from_secs(20)).await;
    let statuses = load.await.unwrap();
    let refused: Vec<_> = statuses.iter().filter(|s| **s != 200).collect();
    assert!(
        refused.is_empty(),
        "refused during the upgrade: {refused:?}"
    );
    let counts = settle(&rx, |c| c.len() >= 500).await;
    let _ = successor.kill();
    let _ = successor.wait();
    let duplicated: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
    let lost = 500 - counts.len();
    println!(
        "upgrade under load: accepted 500, delivered {}, duplicated {}, lost {lost}",
        counts.len(),
        duplicated.len()
    );
    assert_eq!(code, Some(0), "old process exit\n{}", old.log());
    assert!(duplicated.is_empty(), "delivered twice: {duplicated:?}");
    assert_eq!(lost, 0, "not delivered\n{}", old.log());
}

#[test]
fn a_corrupt_journal_is_refused_with_the_file_named_unless_recover() {
    let dir = tempfile::tempdir().unwrap();
    let journal = dir.path().join("tasks.db");
    std::fs::write(
        &journal,
        b"this is not a database, it is a text file that got here by mistake",
    )
    .unwrap();
    std::fs::write(dir.path().join("workers.json"), "[]").unwrap();
    let run = |extra: &[&str]| {
        lb_once(dir.path())
            .env("LB_AUTH_KEY", LB_KEY)
            .env("TASK_JOURNAL", &journal)
            .env("PORT", free_port().to_string())
            .env("ADMIN_PORT", free_port().to_string())
            .args(extra)
            .output()
            .unwrap()
    };
    let out = run(&[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains(journal.to_str().unwrap()), "{stderr}");
    assert!(stderr.contains("--recover"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
}

#[tokio::test]
async fn a_full_journal_refuses_new_webhook_tasks_with_503_and_keeps_the_accepted_ones() {
    let (rx, hook) = Receiver::start().await;
    let w = sim(|c| c.slots = 1).await;
    let state = tempfile::tempdir().unwrap();
    let journal = state.path().join("tasks.db");
    let yaml = format!(
        "tasks:\n  journal: {}\n  journal_max_size: 128kb\n",
        journal.display()
    );
    let lb = Lb::start_with(&[w.url()], &[], &yaml).await;
    lb.wait_available(1).await;
    let blocker = lb
        .task(task("hello", json!({"name": "blocker", "sleepMs": 1000})))
        .send();
    let blocker = tokio::spawn(blocker);
    wait_for("the blocker runs", Duration::from_secs(10), || {
        w.stats().running > 0
    })
    .await;
    let padding = "x".repeat(4000);
    let mut accepted = Vec::new();
    let refusal = loop {
        let name = format!("t{}", accepted.len());
        let mut body = prioritized(&name, &hook, 1);
        body["padding"] = json!(padding);
        let (s, b) = lb.run(body).await;
        match s {
            200 => accepted.push(name),
            _ => break (s, b),
        }
        assert!(
            accepted.len() < 200,
            "a 128 KiB journal took 200 tasks of 4 KB"
        );
    };
    assert_eq!(refusal.0, 503, "{}", refusal.1);
    assert!(
        refusal.1["error"]
            .as_str()
            .unwrap_or("")
            .contains("cannot be kept"),
        "{}",
        refusal.1
    );
    let _ = blocker.await;
    let counts = settle(&rx, |c| accepted.iter().all(|n| c.contains_key(n))).await;
    let missing: Vec<_> = accepted
        .iter()
        .filter(|n| !counts.contains_key(*n))
        .collect();
    assert!(
        missing.is_empty(),
        "accepted but not delivered: {missing:?}"
    );
}

#[tokio::test]
async fn recover_moves_a_corrupt_journal_aside_and_starts() {
    let w = sim(|_| {}).await;
    let state = tempfile::tempdir().unwrap();
    let journal = state.path().join("tasks.db");
    let env = [("TASK_JOURNAL", journal.to_str().unwrap())];
    let mut lb = Lb::start(&[w.url()], &env).await;
    lb.kill();
    for suffix in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", journal.display()));
    }
    std::fs::write(&journal, vec![0x5a; 8192]).unwrap();
    let mut child = lb.command.arg("--recover").spawn().unwrap();
    let start = Instant::now();
    let aside = loop {
        let found = std::fs::read_dir(state.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .find(|e| e.file_name().to_string_lossy().contains(".corrupt-"));
        if let Some(f) = found {
            break f.path();
        }
        assert!(start.elapsed() < Duration::from_secs(10), "not moved aside");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(std::fs::read(&aside).unwrap(), vec![0x5a; 8192]);
    // And it serves, on a new journal.
    let start = Instant::now();
    while lb.health().await.get("status").is_none() {
        assert!(start.elapsed() < Duration::from_secs(10), "{}", lb.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
}
