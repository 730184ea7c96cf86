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
