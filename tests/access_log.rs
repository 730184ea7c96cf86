//! The access log against the real binary: one JSON line per request on both ports,
//! its fields, the client address behind a trusted proxy, and rotation (a rename is
//! followed, SIGUSR1 reopens).

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

/// The access log's lines so far, parsed.
fn lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|_| panic!("not JSON: {l}")))
        .collect()
}

/// Waits until the log at `path` has `n` lines, and returns them.
async fn wait_lines(path: &Path, n: usize) -> Vec<Value> {
    wait_for(
        &format!("{n} access log lines"),
        Duration::from_secs(10),
        || lines(path).len() >= n,
    )
    .await;
    lines(path)
}

fn access_log_yaml(path: &Path, extra: &str) -> String {
    format!("logging:\n  access_log: {}\n{extra}", path.display())
}

#[tokio::test]
async fn every_request_on_both_ports_is_one_json_line_without_secrets() {
    let w = sim(|_| {}).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("access.log");
    let lb = Lb::start_with(&[w.url()], &[], &access_log_yaml(&path, "")).await;
    lb.wait_available(1).await;
    let before = lines(&path).len();

    let body = task("hello", json!({"name": "Log"}));
    let r = lb
        .task(body.clone())
        .header(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let id = task_id(&r);
    let unknown = lb
        .run(json!({"group": "nobody", "function": "hello", "contract": 1}))
        .await;
    assert_eq!(unknown.0, 503);
    let refused = lb
        .http
        .post(lb.url("/task"))
        .header("authorization", "wrong")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    let metrics = lb.http.get(lb.admin_url("/metrics")).send().await.unwrap();
    assert_eq!(metrics.status(), 200);

    // Lines are written off the data path: wait for the four of them.
    let mut new = Vec::new();
    wait_for("the four requests' lines", Duration::from_secs(10), || {
        new = lines(&path).split_off(before.min(lines(&path).len()));
        let has = |f: &dyn Fn(&Value) -> bool| new.iter().any(f);
        has(&|l| l["task_id"] == json!(id))
            && has(&|l| l["status"] == 503)
            && has(&|l| l["status"] == 401)
            && has(&|l| l["path"] == "/metrics")
    })
    .await;
    let ok = new
        .iter()
        .find(|l| l["task_id"] == json!(id))
        .expect("the task's line");
    assert_eq!(ok["service"], "client");
    assert_eq!(ok["method"], "POST");
    assert_eq!(ok["path"], "/task");
    assert_eq!(ok["status"], 200);
    assert_eq!(ok["reason"], "ok");
    assert_eq!(ok["client"], "default");
    assert_eq!(ok["group"], "default");
    assert_eq!(ok["function"], "hello");
    assert_eq!(ok["mode"], "sync");
    assert_eq!(ok["priority"], 1);
    assert_eq!(ok["attempts"], 1);
    assert_eq!(ok["worker"], json!(w.url()));
    assert_eq!(ok["remote_addr"], "127.0.0.1");
    assert_eq!(ok["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(ok["bytes_in"], body.to_string().len());
    assert!(ok["bytes_out"].as_u64().unwrap() > 0);
    assert!(
        ok["queue_ms"].is_number() && ok["duration_ms"].is_number(),
        "{ok}"
    );
    assert!(ok["time"].as_str().unwrap().ends_with('Z'), "{ok}");

    let no_worker = new
        .iter()
        .find(|l| l["status"] == 503)
        .expect("the 503's line");
    assert_eq!(no_worker["group"], "nobody");
    assert_eq!(no_worker["reason"], "no_worker");
    let unauthorized = new
        .iter()
        .find(|l| l["status"] == 401)
        .expect("the 401's line");
    assert_eq!(unauthorized["client"], Value::Null);
    assert_eq!(unauthorized["reason"], "unauthorized");
    assert_eq!(unauthorized["task_id"], Value::Null);
    let scrape = new
        .iter()
        .find(|l| l["path"] == "/metrics")
        .expect("the admin line");
    assert_eq!(scrape["service"], "admin");

    let text = std::fs::read_to_string(&path).unwrap();
    for secret in [LB_KEY, WK_KEY] {
        assert!(!text.contains(secret), "a key is in the access log");
    }
}

#[tokio::test]
async fn behind_a_trusted_proxy_the_client_address_comes_from_the_forwarded_headers() {
    let dir = tempfile::tempdir().unwrap();
    let trusted = dir.path().join("trusted.log");
    let lb = Lb::start_with(
        &[],
        &[],
        &access_log_yaml(
            &trusted,
            "client:\n  trusted_proxies: [127.0.0.1/32, 10.0.0.0/8]\n",
        ),
    )
    .await;
    let untrusted = dir.path().join("untrusted.log");
    let plain = Lb::start_with(&[], &[], &access_log_yaml(&untrusted, "")).await;
    let cases = [
        // (X-Forwarded-For, X-Real-IP, address logged when the peer is trusted)
        (Some("203.0.113.7"), None, "203.0.113.7"),
        // The right-most hop that is not a trusted proxy: a client cannot forge its way in.
        (
            Some("198.51.100.1, 203.0.113.7, 10.1.2.3"),
            None,
            "203.0.113.7",
        ),
        (None, Some("203.0.113.9"), "203.0.113.9"),
        (Some("not-an-address"), None, "127.0.0.1"),
        (None, None, "127.0.0.1"),
    ];
    for (n, (xff, real_ip, expected)) in cases.iter().enumerate() {
        for (lb, path) in [(&lb, &trusted), (&plain, &untrusted)] {
            let marker = format!("/case-{n}");
            let mut r = lb.http.get(lb.url(&marker));
            if let Some(v) = xff {
                r = r.header("x-forwarded-for", *v);
            }
            if let Some(v) = real_ip {
                r = r.header("x-real-ip", *v);
            }
            assert_eq!(r.send().await.unwrap().status(), 404);
            let mut logged = Value::Null;
            wait_for("the case's line", Duration::from_secs(10), || {
                let found = lines(path).into_iter().find(|l| l["path"] == json!(marker));
                logged = found.map_or(Value::Null, |l| l["remote_addr"].clone());
                !logged.is_null()
            })
            .await;
            let want = if std::ptr::eq(path, &trusted) {
                *expected
            } else {
                "127.0.0.1"
            };
            assert_eq!(
                logged,
                want,
                "case {n} ({xff:?}, {real_ip:?}) in {}",
                path.display()
            );
        }
    }
}

#[tokio::test]
async fn a_renamed_log_is_followed_and_sigusr1_reopens_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("access.log");
    let lb = Lb::start_with(&[], &[], &access_log_yaml(&path, "")).await;
    let get = || async {
        let r = lb.http.get(lb.url("/health")).send().await.unwrap();
        assert_eq!(r.status(), 200);
    };
    get().await;
    let first = wait_lines(&path, 1).await.len();
    // logrotate's default: rename, then (maybe) signal. A rename alone is followed.
    let rotated = dir.path().join("access.log.1");
    std::fs::rename(&path, &rotated).unwrap();
    wait_for(
        "the log is reopened at its path",
        Duration::from_secs(10),
        || path.exists(),
    )
    .await;
    get().await;
    wait_lines(&path, 1).await;
    assert_eq!(
        lines(&rotated).len(),
        first,
        "nothing more went to the old file"
    );
    // copytruncate-style tools and `postrotate kill -USR1`: the signal reopens it.
    let second = dir.path().join("access.log.2");
    std::fs::rename(&path, &second).unwrap();
    lb.signal("USR1");
    wait_for("SIGUSR1 reopens the log", Duration::from_secs(10), || {
        path.exists()
    })
    .await;
    get().await;
    wait_lines(&path, 1).await;
    assert!(
        lb.log().is_empty() || !lb.log().contains("panicked"),
        "{}",
        lb.log()
    );
    assert_eq!(
        lb.health().await["status"],
        "ready",
        "still running after SIGUSR1"
    );
}
