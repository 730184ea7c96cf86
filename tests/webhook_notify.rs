//! Failure notices: a webhook task that finally fails before a Worker took it is
//! posted to its webhook as `{"success":false,"error":…}`, only to allowed hosts.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

/// A webhook receiver that hands every POST body it gets to the test.
async fn receiver() -> (mpsc::UnboundedReceiver<Value>, String) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                        match sock.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                        continue;
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                    let len: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse().ok())
                        .unwrap_or(0);
                    while buf.len() < end + 4 + len {
                        match sock.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let body =
                        serde_json::from_slice(&buf[end + 4..end + 4 + len]).unwrap_or(Value::Null);
                    let _ = tx.send(json!({"head": head, "body": body}));
                    buf.drain(..end + 4 + len);
                    let _ = sock
                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                        .await;
                }
            });
        }
    });
    (rx, url)
}

/// Webhook task `name` whose receiver wants an `x-hook-secret` header.
fn secret_hook_task(name: &str, hook: &str) -> Value {
    let webhook = json!({"url": hook, "headers": {"x-hook-secret": "s3"}});
    with(webhook_task(name, hook, 0), "webhook", webhook)
}

async fn next(rx: &mut mpsc::UnboundedReceiver<Value>) -> Option<Value> {
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .ok()
        .flatten()
}

/// Takes the Worker's only slot with a task sent to it directly (not through the
/// load balancer, whose TASK_TIMEOUT would cut it), until the LB sees it taken.
async fn hold_the_slot(lb: &Lb, w: &andera_worker_sim::SimWorker) -> tokio::task::JoinHandle<()> {
    let direct = lb
        .http
        .post(format!("{}/task", w.url()))
        .header("x-lb-auth", LB_KEY)
        .header("authorization", WK_KEY)
        .json(&task("sleep", json!({"ms": 2500})))
        .send();
    let handle = tokio::spawn(async move {
        let _ = direct.await;
    });
    lb.wait_until(
        |h| h["workers"][0]["slots"]["available"] == json!(0),
        "the Worker reports its slot taken",
    )
    .await;
    handle
}

const NOTIFY: &str = "webhook:\n  notify_failures: true\n  allowed_hosts: [\"127.0.0.1\"]\n";

#[tokio::test]
async fn a_webhook_task_that_times_out_in_the_queue_is_posted_as_failed() {
    let (mut rx, hook) = receiver().await;
    let w = sim(|c| c.slots = 1).await;
    let lb = Lb::start_with(&[w.url()], &[("TASK_TIMEOUT", "600")], NOTIFY).await;
    lb.wait_available(1).await;
    let blocker = hold_the_slot(&lb, &w).await;
    let (s, _) = lb.run(secret_hook_task("late", &hook)).await;
    assert_eq!(s, 200);
    let notice = next(&mut rx).await.expect("the failure is posted");
    assert_eq!(notice["body"]["success"], json!(false), "{notice}");
    assert!(
        notice["body"]["error"]
            .as_str()
            .unwrap_or("")
            .contains("timed out"),
        "{notice}"
    );
    // The task's own webhook headers go along; the LB's keys never do.
    let head = notice["head"].as_str().unwrap();
    assert!(head.contains("x-hook-secret: s3"), "{head}");
    assert!(!head.contains(LB_KEY) && !head.contains(WK_KEY), "{head}");
    blocker.abort();
}

#[tokio::test]
async fn a_webhook_task_the_worker_refuses_is_posted_with_the_workers_reason() {
    let (mut rx, hook) = receiver().await;
    let w = sim(|_| {}).await;
    let lb = Lb::start_with(&[w.url()], &[], NOTIFY).await;
    lb.wait_available(1).await;
    // A key the Worker does not take: it answers 401 and never calls the hook. (A
    // bad input is no refusal: a Worker accepts a webhook task, then checks its
    // input and posts the failure itself, protocol §5.)
    let r = lb
        .http
        .post(lb.url("/task"))
        .header("authorization", LB_KEY)
        .header("x-wr-auth", "not-the-worker-key")
        .json(&secret_hook_task("x", &hook))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let notice = next(&mut rx).await.expect("the refusal is posted");
    let error = notice["body"]["error"].as_str().unwrap_or("").to_string();
    assert!(error.contains("rejected the x-wr-auth key"), "{notice}");
}

#[tokio::test]
async fn failures_are_never_posted_to_hosts_off_the_allow_list() {
    let (mut rx, hook) = receiver().await;
    let w = sim(|c| c.slots = 1).await;
    let yaml = "webhook:\n  notify_failures: true\n  allowed_hosts: [\"hooks.example.com\"]\n";
    let lb = Lb::start_with(&[w.url()], &[("TASK_TIMEOUT", "600")], yaml).await;
    lb.wait_available(1).await;
    let blocker = hold_the_slot(&lb, &w).await;
    let (s, _) = lb.run(secret_hook_task("late", &hook)).await;
    assert_eq!(s, 200);
    let start = Instant::now();
    while !lb.log().contains("is not in webhook.allowed_hosts") {
        assert!(start.elapsed() < Duration::from_secs(10), "{}", lb.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let got = tokio::time::timeout(Duration::from_millis(500), rx.recv()).await;
    assert!(got.is_err(), "posted to a host off the list: {got:?}");
    blocker.abort();
}

/// A webhook URL with a query (a receiver's token, often) gets its failure notice,
/// the query included; the query never reaches the log.
#[tokio::test]
async fn a_webhook_url_with_a_query_gets_its_notice_and_the_query_is_never_logged() {
    let (mut rx, hook) = receiver().await;
    let hook = format!("{hook}?token=s3cret-token");
    let w = sim(|c| c.slots = 1).await;
    let lb = Lb::start_with(&[w.url()], &[("TASK_TIMEOUT", "600")], NOTIFY).await;
    lb.wait_available(1).await;
    let blocker = hold_the_slot(&lb, &w).await;
    let (s, _) = lb.run(secret_hook_task("late", &hook)).await;
    assert_eq!(s, 200);
    let notice = next(&mut rx).await.expect("the failure is posted");
    let head = notice["head"].as_str().unwrap();
    assert!(
        head.starts_with("post /hook?token=s3cret-token http/1.1"),
        "{head}"
    );
    assert!(!lb.log().contains("s3cret-token"), "{}", lb.log());
    blocker.abort();
}
