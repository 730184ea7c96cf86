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
