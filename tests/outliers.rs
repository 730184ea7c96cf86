//! Outlier ejection counts a Worker's failures, not its clients' slow tasks: a task
//! that outlasts `TASK_TIMEOUT` on a Worker that still answers its slot feed and
//! reports the slot used is not held against it, and a Worker silent on every
//! channel still leaves the rotation.

mod common;

use std::time::Duration;

use andera_worker_sim::TaskFault;
use common::*;
use serde_json::{json, Value};

/// The Worker record of `url` on keyed `/health`.
fn record<'a>(h: &'a Value, url: &str) -> Option<&'a Value> {
    h["workers"]
        .as_array()?
        .iter()
        .find(|w| w["url"] == json!(url))
}

#[tokio::test]
async fn long_tasks_on_a_live_worker_do_not_eject_it() {
    let w = sim(|_| {}).await;
    let lb = Lb::start(&[w.url()], &[("TASK_TIMEOUT", "1500")]).await;
    lb.wait_available(1).await;
    // More than max_fails (3) tasks in a row, each outlasting the task timeout.
    for i in 0..4 {
        let (status, body) = lb.run(task("sleep", json!({"ms": 2500}))).await;
        assert_eq!(status, 504, "task {i}: {body}\n{}", lb.log());
        let h = lb.health().await;
        let rec = record(&h, &w.url()).expect("listed");
        assert!(rec.get("ejected").is_none(), "after task {i}: {rec}");
    }
    // The Worker still takes tasks: a short one on it succeeds.
    let (status, body) = lb.run(task("hello", json!({"name": "after"}))).await;
    assert_eq!(status, 200, "{body}\n{}", lb.log());
    assert_eq!(w.stats().received, 5);
    let h = lb.health().await;
    assert!(
        record(&h, &w.url()).unwrap().get("ejected").is_none(),
        "{h}"
    );
    assert_eq!(h["components"]["discovery"]["available"], json!(1), "{h}");
    assert!(!lb.log().contains("ejected for"), "{}", lb.log());
}

#[tokio::test]
async fn a_worker_silent_on_every_channel_is_still_ejected() {
    let w = sim(|_| {}).await;
    let yaml = "upstream:\n  max_fails: 2\n  fail_timeout_ms: 60000\n";
    let lb = Lb::start_with(&[w.url()], &[("TASK_TIMEOUT", "4000")], yaml).await;
    lb.wait_available(1).await;
    // The Worker stops answering anything: tasks, /health and its slot feed.
    w.set_task_fault(TaskFault::Frozen);
    let tasks = (0..3).map(|i| lb.run(task("hello", json!({"label": i.to_string()}))));
    let answers = futures_util::future::join_all(tasks).await;
    for (status, body) in &answers {
        assert_eq!(*status, 504, "{body}\n{}", lb.log());
    }
    assert_eq!(w.stats().received, 3, "{}", lb.log());
    let h = lb
        .wait_until(
            |h| record(h, &w.url()).is_some_and(|r| r["ejected"].is_object()),
            "the silent Worker is ejected",
        )
        .await;
    let rec = record(&h, &w.url()).unwrap();
    assert!(
        rec["ejected"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("timed out")),
        "{rec}"
    );
    assert!(lb.log().contains("ejected for 60000 ms"), "{}", lb.log());
    // It is thawed: the ejection stands until its back-off ends.
    w.set_task_fault(TaskFault::None);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let h = lb.health().await;
    assert!(record(&h, &w.url()).unwrap()["ejected"].is_object(), "{h}");
}

#[tokio::test]
async fn a_worker_that_fails_after_its_answer_began_is_counted_like_one_that_failed_before() {
    // A stream whose Worker crashes after the head: the failure comes from the body,
    // which the delivery reads and counts itself (`max_fails: 1` ejects at once).
    let w = sim(|_| {}).await;
    let url = w.url();
    let yaml = "upstream:\n  max_fails: 1\n  fail_timeout_ms: 60000\n";
    let lb = Lb::start_with(std::slice::from_ref(&url), &[], yaml).await;
    lb.wait_available(1).await;
    let mut body = task("ticker", json!({"count": 50, "intervalMs": 200}));
    body["mode"] = json!("stream");
    let mut r = lb.task(body).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let first = r.chunk().await.unwrap().expect("a first tick");
    assert!(
        String::from_utf8_lossy(&first).contains("tick 1"),
        "{first:?}"
    );
    w.shutdown().await;
    while let Ok(Some(_)) = r.chunk().await {}
    let series = format!("andera_lb_worker_ejections_total{{worker=\"{url}\"}}");
    let scrape = lb.scrape().await;
    assert_eq!(
        metric(&scrape, &series),
        Some(1.0),
        "{scrape}\n{}",
        lb.log()
    );
    assert!(lb.log().contains("ejected for 60000 ms"), "{}", lb.log());
}
