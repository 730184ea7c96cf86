//! Workers that misbehave: interim (1xx) answers, tasks accepted and never
//! answered, hop-by-hop headers, and streams that outlast `TASK_TIMEOUT` or stall.

mod common;

use std::time::{Duration, Instant};

use andera_worker_sim::TaskFault;
use common::*;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Waits (10 s at most) until `pred` holds for the Worker record of `url` on /health.
async fn wait_worker(lb: &Lb, url: &str, pred: impl Fn(&Value) -> bool, what: &str) -> Value {
    let h = lb
        .wait_until(
            |h| {
                h["workers"]
                    .as_array()
                    .and_then(|ws| ws.iter().find(|w| w["url"] == json!(url)))
                    .is_some_and(&pred)
            },
            what,
        )
        .await;
    h["workers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["url"] == json!(url))
        .unwrap()
        .clone()
}

#[tokio::test]
async fn interim_answers_are_skipped_and_the_final_answer_is_relayed() {
    for code in [100, 103] {
        let w = sim(|c| c.task_fault = TaskFault::Interim(code)).await;
        let lb = Lb::start(&[w.url()], &[]).await;
        lb.wait_available(1).await;
        let r = tokio::time::timeout(
            Duration::from_secs(10),
            lb.run(task("hello", json!({"name": "Andera"}))),
        )
        .await
        .unwrap_or_else(|_| panic!("{code}: no answer\nlog:\n{}", lb.log()));
        assert_eq!(
            r,
            (
                200,
                json!({"success": true, "result": {"message": "Hello Andera!"}})
            ),
            "after a {code} interim answer"
        );
        // The connection stays usable: a second task on it gets its own answer.
        let again = lb.run(task("hello", json!({}))).await;
        assert_eq!(again.0, 200, "{code}: {again:?}");
        assert_eq!(w.stats().completed, 2);
    }
}

#[tokio::test]
async fn a_101_from_a_worker_is_a_failure() {
    let w = sim(|c| c.task_fault = TaskFault::Interim(101)).await;
    let lb = Lb::start(&[w.url()], &[]).await;
    lb.wait_available(1).await;
    let (status, body) =
        tokio::time::timeout(Duration::from_secs(10), lb.run(task("hello", json!({}))))
            .await
            .expect("answered");
    assert_eq!(status, 502, "{body}");
    assert!(body["error"].as_str().unwrap().contains("101"), "{body}");
}

const EJECTION: &str =
    "upstream:\n  response_header_timeout_ms: 400\n  max_fails: 2\n  fail_timeout_ms: 60000\n";

#[tokio::test]
async fn a_worker_that_never_answers_is_ejected_after_max_fails() {
    // Listed first, the silent Worker wins ties until it is ejected.
    let bad = sim(|c| c.task_fault = TaskFault::Hang).await;
    let good = sim(|_| {}).await;
    let lb = Lb::start_with(
        &[bad.url(), good.url()],
        &[("TASK_TIMEOUT", "20000")],
        EJECTION,
    )
    .await;
    lb.wait_available(2).await;
    let mut statuses = Vec::new();
    for i in 0..6 {
        let started = Instant::now();
        let (status, body) = lb.run(task("hello", json!({"label": i.to_string()}))).await;
        if status == 504 {
            assert!(body["error"].is_string(), "{body}");
            // The per-attempt timeout answered, not TASK_TIMEOUT.
            assert!(started.elapsed() < Duration::from_secs(10), "{body}");
        }
        statuses.push(status);
    }
    assert_eq!(statuses, [504, 504, 200, 200, 200, 200], "{}", lb.log());
    // A task the Worker may have started is never sent a second time.
    assert_eq!(bad.stats().received, 2);
    assert_eq!(good.stats().received, 4);
    let rec = wait_worker(
        &lb,
        &bad.url(),
        |w| w["ejected"].is_object(),
        "the silent Worker shows as ejected",
    )
    .await;
    assert_eq!(rec["ejected"]["consecutiveFailures"], json!(2), "{rec}");
    assert!(
        rec["ejected"]["reason"]
            .as_str()
            .unwrap()
            .contains("timed out"),
        "{rec}"
    );
    assert!(rec["ejected"]["until"].is_string(), "{rec}");
    assert_eq!(
        lb.health().await["components"]["discovery"]["available"],
        json!(1)
    );
    let good_rec = wait_worker(&lb, &good.url(), |_| true, "the good Worker is listed").await;
    assert!(good_rec.get("ejected").is_none(), "{good_rec}");
    let text = lb.scrape().await;
    let gauge = format!("andera_lb_worker_ejected{{worker=\"{}\"}}", bad.url());
    let total = format!(
        "andera_lb_worker_ejections_total{{worker=\"{}\"}}",
        bad.url()
    );
    assert_eq!(metric(&text, &gauge), Some(1.0), "{text}");
    assert_eq!(metric(&text, &total), Some(1.0), "{text}");
    let good_gauge = format!("andera_lb_worker_ejected{{worker=\"{}\"}}", good.url());
    assert_eq!(metric(&text, &good_gauge), Some(0.0), "{text}");
}

#[tokio::test]
async fn by_default_task_timeout_bounds_the_wait_and_silence_still_ejects() {
    let bad = sim(|c| c.task_fault = TaskFault::Hang).await;
    let good = sim(|_| {}).await;
    let yaml = "upstream:\n  max_fails: 2\n  fail_timeout_ms: 60000\n";
    let lb = Lb::start_with(&[bad.url(), good.url()], &[("TASK_TIMEOUT", "700")], yaml).await;
    lb.wait_available(2).await;
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(lb.run(task("hello", json!({}))).await.0);
    }
    assert_eq!(statuses, [504, 504, 200, 200], "{}", lb.log());
    assert_eq!(bad.stats().received, 2);
    wait_worker(&lb, &bad.url(), |w| w["ejected"].is_object(), "ejected").await;
}

#[tokio::test]
async fn an_ejected_worker_returns_after_its_back_off() {
    let w = sim(|c| c.task_fault = TaskFault::Hang).await;
    let yaml =
        "upstream:\n  response_header_timeout_ms: 300\n  max_fails: 1\n  fail_timeout_ms: 1000\n";
    let lb = Lb::start_with(&[w.url()], &[], yaml).await;
    lb.wait_available(1).await;
    assert_eq!(lb.run(task("hello", json!({}))).await.0, 504);
    // Its only Worker is out: the next task is refused at once instead of waiting.
    let (status, body) = lb.run(task("hello", json!({}))).await;
    assert_eq!(status, 503, "{body}");
    wait_worker(&lb, &w.url(), |w| w["ejected"].is_object(), "ejected").await;
    w.set_task_fault(TaskFault::None);
    wait_worker(
        &lb,
        &w.url(),
        |w| w.get("ejected").is_none(),
        "back in rotation after fail_timeout_ms",
    )
    .await;
    assert_eq!(lb.run(task("hello", json!({}))).await.0, 200);
    assert_eq!(w.stats().received, 2);
}

/// Sends `request` on a fresh connection and reads the answer to the end.
async fn raw_exchange(port: u16, request: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .expect("the answer ends")
        .unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn hop_by_hop_headers_stay_on_their_hop() {
    let w = sim(|_| {}).await;
    // Listed client headers pass (#20 item 4), unless `Connection` names them.
    let yaml = "upstream:\n  forward_headers: [x-client-kept, x-client-hop]\n";
    let lb = Lb::start_with(&[w.url()], &[], yaml).await;
    lb.wait_available(1).await;
    let body = json!({
        "group": "default", "function": "echo", "contract": 1,
        "input": {"responseHeaders": {
            "connection": "x-worker-hop",
            "x-worker-hop": "worker-secret",
            "keep-alive": "timeout=5",
            "x-worker-kept": "yes"
        }}
    })
    .to_string();
    let request = format!(
        "POST /task HTTP/1.1\r\nhost: lb\r\nauthorization: {LB_KEY}\r\nx-wr-auth: {WK_KEY}\r\n\
         content-type: application/json\r\nconnection: close, x-client-hop\r\n\
         x-client-hop: client-secret\r\nkeep-alive: timeout=9\r\nproxy-connection: keep-alive\r\n\
         te: trailers\r\ntrailer: x-sum\r\nx-andera-task-id: forged\r\nx-client-kept: yes\r\n\
         content-length: {}\r\n\r\n{body}",
        body.len()
    );
    let answer = raw_exchange(lb.port, &request).await;
    let (head, payload) = answer.split_once("\r\n\r\n").expect("a full answer");
    assert!(head.starts_with("HTTP/1.1 200"), "{answer}");
    let head = head.to_ascii_lowercase();
    let task_id = head
        .lines()
        .find_map(|l| l.strip_prefix("x-andera-task-id: "))
        .expect("task id")
        .to_string();
    // The Worker saw neither the client's hop-by-hop headers nor its task id.
    let echoed: Value = serde_json::from_str(payload).unwrap_or_else(|_| {
        // Chunked: take the JSON between the first chunk size line and the end.
        let start = payload.find('{').unwrap();
        let end = payload.rfind('}').unwrap();
        serde_json::from_str(&payload[start..=end]).unwrap()
    });
    let seen = &echoed["result"]["headers"];
    for name in [
        "x-client-hop",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
    ] {
        assert!(
            seen.get(name).is_none(),
            "{name} reached the Worker: {seen}"
        );
    }
    assert_eq!(seen["x-andera-task-id"], json!(task_id), "{seen}");
    assert_eq!(seen["x-client-kept"], json!("yes"), "{seen}");
    // The client saw none of the Worker's.
    assert!(!head.contains("x-worker-hop"), "{head}");
    assert!(!head.contains("timeout=5"), "{head}");
    assert!(head.contains("x-worker-kept: yes"), "{head}");
    assert_eq!(head.matches("x-andera-task-id").count(), 1, "{head}");
}

#[tokio::test]
async fn a_stream_may_outlast_the_task_timeout() {
    let w = sim(|_| {}).await;
    let lb = Lb::start(&[w.url()], &[("TASK_TIMEOUT", "1500")]).await;
    lb.wait_available(1).await;
    let mut body = task("ticker", json!({"count": 6, "intervalMs": 500}));
    body["mode"] = json!("stream");
    let r = lb.task(body).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let text = r.text().await.expect("the stream ends cleanly");
    let ticks: String = (1..=6).map(|i| format!("tick {i}\n")).collect();
    assert_eq!(text, ticks, "{}", lb.log());
}

#[tokio::test]
async fn a_stalled_body_fails_the_task_after_the_idle_timeout() {
    let w = sim(|_| {}).await;
    let yaml = "upstream:\n  body_idle_timeout_ms: 500\n";
    let lb = Lb::start_with(&[w.url()], &[], yaml).await;
    lb.wait_available(1).await;
    let mut body = task("ticker", json!({"count": 2, "intervalMs": 3000}));
    body["mode"] = json!("stream");
    let started = Instant::now();
    let r = lb.task(body).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let id = task_id(&r);
    assert!(r.text().await.is_err(), "the stream must be cut, not ended");
    assert!(started.elapsed() < Duration::from_secs(5));
    let rec: Value = lb.board_record(&id).await;
    assert_eq!(rec["state"], json!("failed"), "{rec}");
    assert_ne!(rec["status"], json!(200), "{rec}");
    assert!(lb.log().contains(&format!("task {id}")), "{}", lb.log());
}
