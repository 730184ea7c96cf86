//! `https://` Workers with a `wss://` slot feed, trusted through a private CA whose
//! certificate is generated at test time.

mod common;

use andera_worker_sim::test_ca_and_cert;
use common::*;
use serde_json::json;

#[tokio::test]
async fn https_workers_with_a_private_ca_get_tasks_and_a_wss_feed() {
    let (ca_pem, tls) = test_ca_and_cert("127.0.0.1");
    let w = sim(|c| {
        c.tls = Some(tls);
        c.tls_host = "127.0.0.1".into();
    })
    .await;
    assert!(w.url().starts_with("https://"));
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, ca_pem).unwrap();
    let yaml = format!("upstream:\n  ca_file: {}\n", ca.display());
    let lb = Lb::start_with(&[w.url()], &[], &yaml).await;
    let h = lb
        .wait_until(
            |h| {
                h["workers"][0]["online"] == json!(true)
                    && h["workers"][0]["websocket"] == json!("connected")
            },
            "the https Worker is up with its wss feed",
        )
        .await;
    assert!(h["workers"][0]["wsUrl"]
        .as_str()
        .unwrap()
        .starts_with("wss://"));
    let (s, body) = lb.run(task("hello", json!({"name": "TLS"}))).await;
    assert_eq!(
        (s, body["result"]["message"].clone()),
        (200, json!("Hello TLS!"))
    );
}

#[tokio::test]
async fn an_untrusted_certificate_is_refused_and_said_so() {
    let (_ca_pem, tls) = test_ca_and_cert("127.0.0.1");
    let w = sim(|c| {
        c.tls = Some(tls);
        c.tls_host = "127.0.0.1".into();
    })
    .await;
    let lb = Lb::start(&[w.url()], &[]).await;
    let h = lb
        .wait_until(|h| h["workers"][0]["error"].is_string(), "the poll fails")
        .await;
    let err = h["workers"][0]["error"].as_str().unwrap().to_lowercase();
    assert!(
        err.contains("tls") || err.contains("certificate") || err.contains("handshake"),
        "{err}"
    );
    assert_eq!(lb.run(task("hello", json!({}))).await.0, 503);
    assert_eq!(w.stats().requests, 0);
}

#[test]
fn a_bad_ca_file_is_a_configuration_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("workers.json"), "[]").unwrap();
    std::fs::write(
        dir.path().join("lb.yaml"),
        "upstream:\n  ca_file: /nonexistent/ca.pem\n",
    )
    .unwrap();
    let out = lb_once(dir.path())
        .env("LB_AUTH_KEY", "k")
        .args(["-t", "--config", "lb.yaml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("ca_file"));
}
