//! The waiting room (`tasks.no_worker_wait_ms` / `NO_WORKER_WAIT_MS`): a task for a
//! group with no usable Worker waits in the queue for one to appear instead of an
//! instant `503`; off (0) by default, as the original. And the per-group queue depth
//! an autoscaler reads (`andera_lb_queue_depth_by_group`, `_by_priority_class`).

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;

/// Re-reads `workers.json` every 100 ms.
const FAST_RELOAD: &str = "workers:\n  reload_interval_ms: 100\n";

/// Polls `/metrics` until it has the line `want` (10 s at most).
async fn wait_metric(lb: &Lb, want: &str) {
    let start = std::time::Instant::now();
    loop {
        let text = lb.scrape().await;
        if text.lines().any(|l| l == want) {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no line {want:?} in /metrics:\n{}",
            text.lines()
                .filter(|l| l.contains("queue_depth_by_group"))
                .collect::<Vec<_>>()
                .join("\n")
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_task_waits_for_a_worker_to_appear_and_runs_on_it() {
    let lb = Lb::start_with(&[], &[("NO_WORKER_WAIT_MS", "30000")], FAST_RELOAD).await;
    let pending = tokio::spawn(lb.task(task("hello", json!({"name": "room"}))).send());
    lb.wait_queued(1).await;
    // A group no Worker has had yet is no label of its own.
    wait_metric(&lb, r#"andera_lb_queue_depth_by_group{group="other"} 1"#).await;

    let w = sim(|c| c.slots = 1).await;
    std::fs::write(lb.workers_file(), json!([w.url()]).to_string()).unwrap();
    let r = tokio::time::timeout(Duration::from_secs(20), pending)
        .await
        .expect("the waiting task is answered once a Worker appears")
        .unwrap()
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["result"]["message"], "Hello room!", "{body}");
    wait_metric(&lb, r#"andera_lb_queue_depth_by_group{group="default"} 0"#).await;
}

#[tokio::test]
async fn without_a_waiting_room_no_worker_is_503_as_before() {
    let lb = Lb::start(&[], &[("TASK_TIMEOUT", "60000")]).await;
    let (status, body) = lb.run(task("hello", json!({}))).await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("No Worker"),
        "{body}"
    );
    assert_eq!(lb.health().await["queue"]["depth"], 0);
}

#[tokio::test]
async fn a_wait_with_no_worker_appearing_ends_in_503() {
    let yaml = format!("{FAST_RELOAD}tasks:\n  no_worker_wait_ms: 2000\n  timeout_ms: 60000\n");
    let lb = Lb::start_with(&[], &[], &yaml).await;
    let mut body = task("hello", json!({}));
    body["group"] = json!("client-chosen-group");
    let pending = tokio::spawn(lb.task(body).send());
    lb.wait_queued(1).await;
    let r = tokio::time::timeout(Duration::from_secs(30), pending)
        .await
        .expect("the waiting room ends before TASK_TIMEOUT")
        .unwrap()
        .unwrap();
    assert_eq!(r.status(), 503);
    let body: serde_json::Value = r.json().await.unwrap();
    assert!(
        body["error"].as_str().unwrap().contains("No Worker"),
        "{body}"
    );
    assert_eq!(lb.health().await["queue"]["depth"], 0);
    let scrape = lb.scrape().await;
    assert!(
        !scrape.contains("client-chosen-group"),
        "a group no Worker has had is no label: {scrape}"
    );
}

#[tokio::test]
async fn a_waiting_task_for_a_function_the_first_worker_lacks_is_refused_then() {
    let lb = Lb::start_with(&[], &[("NO_WORKER_WAIT_MS", "60000")], FAST_RELOAD).await;
    let pending = tokio::spawn(lb.task(task("nope", json!({}))).send());
    lb.wait_queued(1).await;
    let w = sim(|_| {}).await;
    std::fs::write(lb.workers_file(), json!([w.url()]).to_string()).unwrap();
    let r = tokio::time::timeout(Duration::from_secs(20), pending)
        .await
        .expect("refused when the Worker shows it lacks the function, not after the wait")
        .unwrap()
        .unwrap();
    assert_eq!(r.status(), 503);
    let body: serde_json::Value = r.json().await.unwrap();
    assert!(
        body["error"].as_str().unwrap().contains("exposes function"),
        "{body}"
    );
    assert_eq!(w.stats().requests, 0);
}

#[tokio::test]
async fn tasks_queued_when_the_last_worker_leaves_wait_for_the_next() {
    let yaml = format!("{FAST_RELOAD}tasks:\n  no_worker_wait_ms: 30000\n");
    let busy = sim(|c| c.slots = 1).await;
    let lb = Lb::start_with(&[busy.url()], &[], &yaml).await;
    lb.wait_available(1).await;
    // One task holds the only slot; a second waits behind it, counted under its group.
    let running = tokio::spawn(lb.task(task("sleep", json!({"ms": 6000}))).send());
    lb.wait_until(
        |h| h["workers"][0]["lbInFlight"] == json!(1),
        "the first task runs",
    )
    .await;
    let mut next = task("hello", json!({"name": "next"}));
    next["priority"] = json!(7);
    let queued = tokio::spawn(lb.task(next).send());
    lb.wait_queued(1).await;
    wait_metric(&lb, r#"andera_lb_queue_depth_by_group{group="default"} 1"#).await;
    // Counted under its priority class; the other classes are there at 0.
    wait_metric(
        &lb,
        r#"andera_lb_queue_depth_by_priority_class{group="default",priority_class="2-10"} 1"#,
    )
    .await;
    wait_metric(
        &lb,
        r#"andera_lb_queue_depth_by_priority_class{group="default",priority_class="1"} 0"#,
    )
    .await;
    wait_metric(&lb, r#"andera_lb_group_tasks_running{group="default"} 1"#).await;
    wait_metric(&lb, r#"andera_lb_group_slots_free{group="default"} 0"#).await;

    // The Worker leaves the list (its running task finishes); a new one comes.
    std::fs::write(lb.workers_file(), "[]").unwrap();
    lb.wait_until(
        |h| h["workers"].as_array().is_some_and(|w| w.is_empty()),
        "the Worker left the list",
    )
    .await;
    assert_eq!(lb.health().await["queue"]["depth"], 1, "still waiting");
    let next = sim(|c| c.slots = 1).await;
    std::fs::write(lb.workers_file(), json!([next.url()]).to_string()).unwrap();

    let first = running.await.unwrap().unwrap();
    assert_eq!(first.status(), 200, "the removed Worker's task finished");
    let r = tokio::time::timeout(Duration::from_secs(20), queued)
        .await
        .expect("the queued task runs on the new Worker")
        .unwrap()
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["result"]["message"], "Hello next!", "{body}");
}

#[tokio::test]
async fn a_bad_waiting_room_value_names_the_key() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("workers.json"), "[]").unwrap();
    let out = lb_once(dir.path())
        .env("LB_AUTH_KEY", LB_KEY)
        .env("NO_WORKER_WAIT_MS", "soon")
        .arg("-t")
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(text.contains("NO_WORKER_WAIT_MS"), "{text}");
}

#[tokio::test]
async fn a_client_that_leaves_the_waiting_room_of_an_unknown_group_adds_no_label() {
    // A group no Worker has had is a client's string: it must not become a label
    // value, whichever way its task ends (here: the client leaves while it waits).
    let lb = Lb::start_with(&[], &[("NO_WORKER_WAIT_MS", "30000")], FAST_RELOAD).await;
    let mut body = task("hello", json!({}));
    body["group"] = json!("made-up-group-1234");
    let leaver = lb.task(body);
    let leaver = tokio::spawn(async move { leaver.send().await });
    lb.wait_queued(1).await;
    leaver.abort();
    lb.wait_queued(0).await;
    let counted = |text: &str| {
        text.lines().any(|l| {
            l.starts_with("andera_lb_tasks_total")
                && l.contains("outcome=\"client_gone\"")
                && !l.ends_with(" 0")
        })
    };
    let start = std::time::Instant::now();
    let mut text = lb.scrape().await;
    while !counted(&text) {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the task is counted: {text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        text = lb.scrape().await;
    }
    assert!(!text.contains("made-up-group-1234"), "{text}");
}
