//! Trustworthy at the edge: request data never panics a route, client strings are
//! bounded in bytes, queued bodies have a byte budget, the process never lies about
//! serving, and accepted webhook tasks survive a shutdown.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};

#[tokio::test]
async fn worker_logs_route_without_a_worker_answers_404() {
    let w = sim(|_| {}).await;
    let lb = Lb::start(&[w.url()], &[]).await;
    for path in [
        "/dashboard/api/workers/logs",
        "/dashboard/api/workers//logs",
    ] {
        let r = lb
            .http
            .get(lb.admin_url(path))
            .header("x-lb-auth", LB_KEY)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{path}: no answer ({e})\nlog:\n{}", lb.log()));
        assert_eq!(r.status().as_u16(), 404, "{path}");
        let body: Value = r.json().await.unwrap();
        assert!(body["error"].is_string(), "{path}: {body}");
    }
    let overview = lb
        .get_json(&lb.admin_url("/dashboard/api/overview"), true)
        .await;
    assert!(overview.is_object());
}

#[tokio::test]
async fn long_client_strings_are_refused_with_400() {
    let w = sim(|_| {}).await;
    let lb = Lb::start(&[w.url()], &[]).await;
    lb.wait_available(1).await;
    let huge = "g".repeat(5 << 20);
    let cases = [
        (
            json!({"group": "g".repeat(257), "function": "hello", "contract": 1}),
            "group",
        ),
        (
            json!({"group": huge, "function": "hello", "contract": 1}),
            "group",
        ),
        (
            json!({"group": "default", "function": "f".repeat(300), "contract": 1}),
            "function",
        ),
        (
            json!({"group": "default", "function": "hello", "contract": 1, "mode": "webhook",
                "webhook": {"url": format!("http://h/{}", "u".repeat(3000))}}),
            "webhook.url",
        ),
    ];
    for (body, field) in cases {
        let (status, answer) = lb.run(body).await;
        assert_eq!(status, 400, "{field}: {answer}");
        let msg = answer["error"].as_str().unwrap();
        assert!(msg.starts_with(&format!("{field} is too long")), "{msg}");
    }
    // 256 bytes is still fine.
    let ok = json!({"group": "default", "function": "hello", "contract": 1, "input": {}});
    assert_eq!(lb.run(ok).await.0, 200);
    let board = lb.get_json(&lb.admin_url("/bull/api/tasks"), true).await;
    assert!(!board.to_string().contains(&"g".repeat(257)));
}

/// Accepts one webhook POST on `hook` and returns its request text.
async fn receive_webhook(hook: tokio::net::TcpListener, expect: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (mut sock, _) = hook.accept().await.unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while !String::from_utf8_lossy(&buf).contains(expect) {
        let n = sock.read(&mut chunk).await.unwrap();
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let _ = sock
        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
        .await;
    String::from_utf8_lossy(&buf).to_string()
}

#[tokio::test]
async fn sigterm_still_delivers_an_accepted_webhook_task() {
    let hook = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook_url = format!("http://{}/done", hook.local_addr().unwrap());
    let w = sim(|c| c.slots = 1).await;
    let mut lb = Lb::start(&[w.url()], &[]).await;
    lb.wait_available(1).await;
    // The Worker's only slot is taken by a task that did not come through this load
    // balancer, so nothing is in progress here while the webhook task waits.
    let direct = lb
        .http
        .post(format!("{}/task", w.url()))
        .header("x-lb-auth", LB_KEY)
        .header("authorization", WK_KEY)
        .json(&task("sleep", json!({"ms": 1500})))
        .send();
    let direct = tokio::spawn(direct);
    lb.wait_until(
        |h| h["workers"][0]["slots"]["available"] == json!(0),
        "the Worker reports its slot taken",
    )
    .await;
    let mut body = task("hello", json!({"name": "Drained"}));
    body["mode"] = json!("webhook");
    body["webhook"] = json!({"url": hook_url});
    let (s, b) = lb.run(body).await;
    assert_eq!(s, 200, "{b}");
    lb.wait_queued(1).await;
    lb.signal("TERM");
    let received = tokio::time::timeout(
        Duration::from_secs(10),
        receive_webhook(hook, "Hello Drained!"),
    )
    .await
    .unwrap_or_else(|_| panic!("the webhook never came\nlog:\n{}", lb.log()));
    assert!(received.starts_with("POST /done"), "{received}");
    assert_eq!(direct.await.unwrap().unwrap().status().as_u16(), 200);
    assert_eq!(
        lb.wait_exit(Duration::from_secs(10)).await,
        Some(0),
        "{}",
        lb.log()
    );
}

/// Starts the binary with its client or admin port taken; returns (exit code, stderr, taken address).
fn start_on_a_busy_port(admin: bool) -> (Option<i32>, String, String) {
    use std::process::Stdio;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("workers.json"), "[]").unwrap();
    let (port, admin_port) = (free_port(), free_port());
    let taken = if admin {
        format!("127.0.0.1:{admin_port}")
    } else {
        format!("0.0.0.0:{port}")
    };
    let _holder = std::net::TcpListener::bind(&taken).unwrap();
    let mut child = lb_once(dir.path())
        .env("LB_AUTH_KEY", LB_KEY)
        .env("PORT", port.to_string())
        .env("ADMIN_PORT", admin_port.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Well inside Pingora's 30 s bind retry window.
    let start = std::time::Instant::now();
    let code = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status.code();
        }
        if start.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    use std::io::Read;
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    (code, err, taken)
}

#[test]
fn a_busy_port_exits_non_zero_naming_the_address() {
    for admin in [false, true] {
        let (code, err, taken) = start_on_a_busy_port(admin);
        assert!(
            code.is_some_and(|c| c != 0),
            "still running or exit 0: {code:?}\n{err}"
        );
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(err.contains(&taken), "{taken} not named in: {err}");
    }
}

#[tokio::test]
async fn queued_bodies_have_a_byte_budget() {
    let w = sim(|c| c.slots = 1).await;
    let lb = Lb::start_with(&[w.url()], &[], "tasks:\n  max_queued_bytes: 1mb\n").await;
    lb.wait_available(1).await;
    let busy = lb.task(task("sleep", json!({"ms": 1500})));
    let busy = tokio::spawn(async move { busy.send().await.unwrap().status().as_u16() });
    lb.wait_until(|h| h["workers"][0]["lbInFlight"] == json!(1), "a task runs")
        .await;
    // A webhook task is answered at once but its body stays here while it waits.
    // (Long `name`s: `hello` publishes no other parameter, and an input it refuses
    // is answered at the edge without queueing.)
    let mut held = task("hello", json!({"name": "h".repeat(600 << 10)}));
    held["mode"] = json!("webhook");
    held["webhook"] = json!({"url": "http://127.0.0.1:9/hook"});
    let held_len = serde_json::to_vec(&held).unwrap().len() as u64;
    assert_eq!(lb.run(held).await.0, 200);
    let h = lb
        .wait_until(
            |h| h["queue"]["depth"] == json!(1),
            "the webhook task waits",
        )
        .await;
    assert_eq!(h["queue"]["bytes"], json!(held_len), "{h}");
    assert_eq!(h["queue"]["maxBytes"], json!(1 << 20));
    let metrics = lb.scrape().await;
    assert!(
        metrics.contains(&format!("andera_lb_queued_bytes {held_len}")),
        "{metrics}"
    );
    // A second body that would take the queue past 1 MiB is refused like a full queue.
    let r = lb
        .task(task("hello", json!({"name": "x".repeat(600 << 10)})))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 503);
    assert_eq!(r.headers()["retry-after"], "1");
    let body: Value = r.json().await.unwrap();
    assert!(body["error"].as_str().unwrap().contains("full"), "{body}");
    // A small one still fits.
    let small = lb.task(task("hello", json!({"name": "S"})));
    let small = tokio::spawn(async move { small.send().await.unwrap().status().as_u16() });
    lb.wait_queued(2).await;
    assert_eq!(busy.await.unwrap(), 200);
    assert_eq!(small.await.unwrap(), 200);
    lb.wait_until(
        |h| h["queue"]["bytes"] == json!(0) && h["queue"]["depth"] == json!(0),
        "the budget is given back",
    )
    .await;
}

#[tokio::test]
async fn log_lines_escape_control_characters_and_stay_bounded() {
    let w = sim(|_| {}).await;
    let lb = Lb::start(&[w.url()], &[]).await;
    lb.wait_available(1).await;
    // A client-chosen group that would colour the terminal and forge a log line.
    let body = json!({"group": "g\u{1b}[31m\nFAKE forged line", "function": "f", "contract": 1});
    assert_eq!(lb.run(body).await.0, 503);
    // A Worker-supplied status far longer than a log line.
    let status = format!("maint{}", "x".repeat(20_000));
    w.set_status(&status);
    let logs = eventually(
        "the status change in /logs",
        Duration::from_secs(10),
        || async {
            let logs = lb.get_json(&lb.url("/logs"), true).await;
            let lines = logs["logs"].as_array().unwrap().clone();
            lines
                .iter()
                .any(|l| l.as_str().unwrap().contains("is now maint"))
                .then_some(lines)
        },
    )
    .await;
    let stderr = lb.log();
    for text in logs
        .iter()
        .map(|l| l.as_str().unwrap())
        .chain([stderr.as_str()])
    {
        assert!(!text.contains('\u{1b}'), "raw escape in: {text}");
        assert!(
            !text.lines().any(|l| l.starts_with("FAKE")),
            "forged line in: {text}"
        );
    }
    assert!(
        stderr.contains("g\\u{1b}[31m\\nFAKE forged line"),
        "{stderr}"
    );
    let status_line = logs
        .iter()
        .map(|l| l.as_str().unwrap())
        .find(|l| l.contains("is now maint"))
        .unwrap();
    assert!(status_line.len() < 4096 + 64, "{}", status_line.len());
    assert!(status_line.contains("…(+"), "{status_line}");
    let stderr_line = stderr.lines().find(|l| l.contains("is now maint")).unwrap();
    assert!(stderr_line.len() < 4096 + 128, "{}", stderr_line.len());
}
