//! Issue #23: every answer the load balancer makes itself names its `reason` (body
//! and `x-andera-reason`), every task answer its `x-andera-queue-ms`, and
//! `x-andera-timeout-ms` shortens a task's limit (never lengthens it).

mod common;

use std::time::Duration;

use andera_worker_sim::TaskFault;
use common::*;
use serde_json::{json, Value};

/// `(status, body, x-andera-reason, x-andera-queue-ms)` of one answer.
async fn answer(r: reqwest::RequestBuilder) -> (u16, Value, Option<String>, Option<u64>) {
    let r = r.send().await.expect("the load balancer answers");
    let header = |name: &str| {
        r.headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_string())
    };
    let reason = header("x-andera-reason");
    let queue_ms = header("x-andera-queue-ms").map(|v| v.parse().expect("whole ms"));
    let status = r.status().as_u16();
    let text = r.text().await.unwrap_or_default();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, body, reason, queue_ms)
}

/// Asserts a refusal: `status`, an `error`, and `reason` in the body and the header.
fn refused(got: &(u16, Value, Option<String>, Option<u64>), status: u16, reason: &str) {
    let (s, body, header, _) = got;
    assert_eq!(*s, status, "{body}");
    assert!(body["error"].is_string(), "{body}");
    assert_eq!(body["reason"], reason, "{body}");
    assert_eq!(header.as_deref(), Some(reason), "{body}");
}

#[tokio::test]
async fn refusals_before_a_task_name_their_reason() {
    let w = sim(|_| {}).await;
    let lb = Lb::start(&[w.url()], &[("REQUEST_BODY_LIMIT", "1kb")]).await;
    lb.wait_available(1).await;
    let post = || lb.http.post(lb.url("/task"));
    let hello = task("hello", json!({}));

    refused(&answer(post().json(&hello)).await, 401, "unauthorized");
    let keyed = || post().header("authorization", LB_KEY);
    refused(
        &answer(keyed().header("x-wr-auth", WK_KEY).body("{not json")).await,
        400,
        "bad_request",
    );
    refused(&answer(keyed().json(&hello)).await, 400, "bad_request");
    let big = task("echo", json!({"pad": "x".repeat(4096)}));
    refused(&answer(lb.task(big)).await, 413, "body_too_large");
    for bad in ["0", "-1", "soon", "1.5"] {
        let got = answer(lb.task(hello.clone()).header("x-andera-timeout-ms", bad)).await;
        refused(&got, 400, "bad_request");
        assert!(
            got.1["error"]
                .as_str()
                .unwrap()
                .contains("x-andera-timeout-ms"),
            "{bad}: {}",
            got.1
        );
    }
}

#[tokio::test]
async fn task_answers_carry_their_queue_wait_and_failures_their_reason() {
    let w = sim(|c| c.slots = 1).await;
    let lb = Lb::start(
        &[w.url()],
        &[("TASK_TIMEOUT", "60000"), ("MAX_QUEUED_TASKS", "1")],
    )
    .await;
    lb.wait_available(1).await;

    // A success: the Worker's answer, with the wait and no reason.
    let (s, b, reason, queue_ms) = answer(lb.task(task("hello", json!({})))).await;
    assert_eq!((s, reason), (200, None), "{b}");
    assert!(queue_ms.is_some(), "x-andera-queue-ms on a success");

    // A stream: the wait is in the head.
    let mut ticker = task("ticker", json!({"count": 1, "intervalMs": 10}));
    ticker["mode"] = json!("stream");
    let (s, _, _, queue_ms) = answer(lb.task(ticker)).await;
    assert_eq!(s, 200);
    assert!(queue_ms.is_some(), "x-andera-queue-ms in a stream's head");

    let mut unknown = task("hello", json!({}));
    unknown["group"] = json!("no-such-group");
    let got = answer(lb.task(unknown)).await;
    refused(&got, 503, "no_worker");
    assert!(
        got.3.is_some(),
        "x-andera-queue-ms on the balancer's own answers"
    );

    let wrong_key = lb
        .http
        .post(lb.url("/task"))
        .header("authorization", LB_KEY)
        .header("x-wr-auth", "not-the-worker-key")
        .json(&task("hello", json!({})));
    refused(&answer(wrong_key).await, 401, "unauthorized");

    // The only slot is held: a 500 ms deadline ends in the queue, long before
    // TASK_TIMEOUT (the client's own timeout is shorter than it).
    w.set_task_fault(TaskFault::Hold);
    let before = w.stats().requests;
    let holder = tokio::spawn(lb.task(task("hello", json!({}))).send());
    wait_for("the slot is taken", Duration::from_secs(10), || {
        w.stats().requests > before
    })
    .await;
    let quick = lb
        .task(task("hello", json!({})))
        .header("x-andera-timeout-ms", "500")
        .timeout(Duration::from_secs(20));
    let got = answer(quick).await;
    refused(&got, 504, "queue_timeout");
    assert!(got.3.unwrap() > 0, "it waited: {:?}", got.3);

    // One waiting task fills the queue (MAX_QUEUED_TASKS=1).
    let waiting = tokio::spawn(
        lb.task(task("hello", json!({})))
            .header("x-andera-timeout-ms", "20000")
            .send(),
    );
    lb.wait_queued(1).await;
    refused(
        &answer(lb.task(task("hello", json!({})))).await,
        503,
        "queue_full",
    );
    w.set_task_fault(TaskFault::None);
    assert_eq!(holder.await.unwrap().unwrap().status(), 200);
    assert_eq!(waiting.await.unwrap().unwrap().status(), 200);
}

#[tokio::test]
async fn the_timeout_header_bounds_the_workers_head_and_never_lengthens_the_limit() {
    let w = sim(|_| {}).await;
    let long = Lb::start(&[w.url()], &[("TASK_TIMEOUT", "60000")]).await;
    let short = Lb::start(&[w.url()], &[("TASK_TIMEOUT", "1000")]).await;
    long.wait_available(1).await;
    short.wait_available(1).await;
    let slow = task("sleep", json!({"ms": 30000}));

    let got = answer(
        long.task(slow.clone())
            .header("x-andera-timeout-ms", "800")
            .timeout(Duration::from_secs(20)),
    )
    .await;
    refused(&got, 504, "worker_timeout");
    let got = answer(
        short
            .task(slow)
            .header("x-andera-timeout-ms", "600000")
            .timeout(Duration::from_secs(20)),
    )
    .await;
    refused(&got, 504, "worker_timeout");
}

#[tokio::test]
async fn with_original_status_codes_the_reason_is_in_the_header() {
    let w = sim(|_| {}).await;
    let lb = Lb::start(&[w.url()], &[("COMPAT_ORIGINAL_STATUS", "true")]).await;
    lb.wait_available(1).await;
    let mut unknown = task("hello", json!({}));
    unknown["group"] = json!("no-such-group");
    let (s, b, reason, _) = answer(lb.task(unknown)).await;
    assert_eq!((s, &b["error"]), (500, &json!("Task timed out")), "{b}");
    assert_eq!(reason.as_deref(), Some("no_worker"));
}
