//! Lingering close against the real binary: a client that writes its whole body
//! before reading (Python's http.client and urllib do) reads the balancer's early
//! answer instead of a reset, and a client that never stops writing is cut off at
//! `client.lingering_time_ms`.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use tokio::io::AsyncWriteExt;

/// Runs a Python http.client (or urllib) POST of an 11 MB body to `/task` with
/// `key`, and returns the status it read (or what failed).
fn python_post(lb: &Lb, key: &str, library: &str) -> String {
    let script = format!(
        r#"
import http.client, json, sys, urllib.request, urllib.error
body = json.dumps({{"group": "default", "function": "hello", "contract": 1,
                    "input": {{"pad": "x" * (11 * 1024 * 1024)}}}}).encode()
headers = {{"Authorization": "{key}", "x-wr-auth": "{WK_KEY}",
            "Content-Type": "application/json"}}
try:
    if "{library}" == "http.client":
        c = http.client.HTTPConnection("127.0.0.1", {port}, timeout=20)
        c.request("POST", "/task", body=body, headers=headers)
        print(c.getresponse().status)
    else:
        req = urllib.request.Request("http://127.0.0.1:{port}/task", data=body, headers=headers)
        try:
            print(urllib.request.urlopen(req, timeout=20).status)
        except urllib.error.HTTPError as e:
            print(e.code)
except Exception as e:
    print("error: %r" % e)
"#,
        port = lb.port
    );
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[tokio::test]
async fn python_clients_read_the_413_and_the_401_after_writing_an_11_mb_body() {
    let lb = Lb::start(&[], &[]).await;
    for library in ["http.client", "urllib"] {
        assert_eq!(
            python_post(&lb, LB_KEY, library),
            "413",
            "{library}, too large"
        );
        assert_eq!(
            python_post(&lb, "wrong-key", library),
            "401",
            "{library}, bad key"
        );
    }
    let metrics = lb.scrape().await;
    let discarded = metric(&metrics, "andera_lb_lingering_bytes_total").unwrap_or(0.0);
    assert!(
        discarded > 1e6,
        "the rest of the bodies was read and discarded: {discarded}"
    );
}

#[tokio::test]
async fn a_client_that_keeps_writing_is_cut_off_at_the_lingering_time() {
    let lb = Lb::start_with(
        &[],
        &[],
        "client:\n  lingering_time_ms: 1000\n  lingering_timeout_ms: 5000\n",
    )
    .await;
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", lb.port))
        .await
        .unwrap();
    s.write_all(
        b"POST /task HTTP/1.1\r\nHost: x\r\nAuthorization: wrong\r\ncontent-length: 999999999999\r\n\r\n",
    )
    .await
    .unwrap();
    let started = Instant::now();
    let chunk = vec![b'x'; 64 * 1024];
    // Writes as fast as the balancer reads: only the lingering time can end it.
    let cut = tokio::time::timeout(Duration::from_secs(30), async {
        while s.write_all(&chunk).await.is_ok() {}
    })
    .await;
    assert!(cut.is_ok(), "the writer was never cut off");
    // Cut after the lingering time, not at once (the close comes only after it).
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "cut after {:?}, before the lingering time",
        started.elapsed()
    );
}
