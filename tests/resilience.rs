//! Worker failures, retries, hot reload, contract conflicts, and the compatibility
//! endpoints, against the real binary and simulated Workers.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};

/// Polls are slow here so that the load balancer does not learn about a change
/// before the task that runs into it.
const SLOW_DISCOVERY: (&str, &str) = ("WORKER_DISCOVERY_INTERVAL", "60000");

#[tokio::test]
async fn a_refused_connection_is_retried_on_another_worker() {
    // `a` has no slot feed: it is used on its polled figures alone, and preferred (more slots).
    let a = sim(|c| {
        c.ws_addr = None;
        c.slots = 8;
    })
    .await;
    let b = sim(|c| c.slots = 1).await;
    let lb = Lb::start(&[a.url(), b.url()], &[SLOW_DISCOVERY]).await;
    lb.wait_available(2).await;
    let (s, _) = lb.run(task("hello", json!({"label": "first"}))).await;
    assert_eq!(s, 200);
    assert_eq!(
        a.stats().order,
        ["first"],
        "the HTTP-only Worker takes tasks"
    );
    a.shutdown().await;
    let (s, body) = lb.run(task("hello", json!({"label": "second"}))).await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(b.stats().order, ["second"]);
    assert!(lb.log().contains("not delivered"), "{}", lb.log());
}

#[tokio::test]
async fn a_worker_in_maintenance_is_skipped_without_running_the_task() {
    let a = sim(|c| {
        c.ws_addr = None;
        c.slots = 8;
    })
    .await;
    let b = sim(|c| c.slots = 1).await;
    let lb = Lb::start(&[a.url(), b.url()], &[SLOW_DISCOVERY]).await;
    lb.wait_available(2).await;
    a.set_status("maintenance");
    let (s, body) = lb.run(task("hello", json!({"label": "moved"}))).await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(a.stats().received, 0);
    assert_eq!(a.stats().requests, 1);
    assert_eq!(b.stats().order, ["moved"]);
}

#[tokio::test]
async fn with_every_worker_gone_the_client_hears_at_once() {
    let a = sim(|c| c.ws_addr = None).await;
    let lb = Lb::start(&[a.url()], &[SLOW_DISCOVERY]).await;
    lb.wait_available(1).await;
    a.shutdown().await;
    let started = std::time::Instant::now();
    let (s, body) = lb.run(task("hello", json!({}))).await;
    assert_eq!(s, 502, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("unreachable"),
        "{body}"
    );
    assert!(started.elapsed() < Duration::from_secs(3));
    // The Worker is now out of selection: the next task is refused with 503 at once.
    let (s, body) = lb.run(task("hello", json!({}))).await;
    assert_eq!(s, 503, "{body}");
}

#[tokio::test]
async fn the_worker_list_reloads_without_disturbing_tasks_in_flight() {
    let a = sim(|_| {}).await;
    let b = sim(|c| c.group = "other".into()).await;
    let lb = Lb::start(&[a.url()], &[]).await;
    lb.wait_available(1).await;
    let rb = lb.task(task("sleep", json!({"ms": 1500})));
    let in_flight = tokio::spawn(async move {
        let r = rb.send().await.unwrap();
        (r.status().as_u16(), r.json::<Value>().await.unwrap())
    });
    lb.wait_until(
        |h| h["workers"][0]["lbInFlight"] == json!(1),
        "the task runs on a",
    )
    .await;
    std::fs::write(lb.workers_file(), json!([b.url()]).to_string()).unwrap();
    let burl = b.url();
    lb.wait_until(
        |h| {
            h["workers"].as_array().is_some_and(|w| {
                w.len() == 1 && w[0]["url"] == json!(burl) && w[0]["online"] == json!(true)
            })
        },
        "the list holds b only",
    )
    .await;
    let (s, body) = in_flight.await.unwrap();
    assert_eq!((s, body["result"]["slept"].clone()), (200, json!(1500)));
    let mut other = task("hello", json!({"name": "B"}));
    other["group"] = json!("other");
    let (s, body) = lb.run(other).await;
    assert_eq!(
        (s, body["result"]["message"].clone()),
        (200, json!("Hello B!"))
    );
    let (s, _) = lb.run(task("hello", json!({}))).await;
    assert_eq!(s, 503, "group default left with a");
    // A broken edit keeps the current list.
    std::fs::write(lb.workers_file(), "[not json").unwrap();
    wait_for(
        "the broken list to be noticed",
        Duration::from_secs(10),
        || lb.log().contains("keeping the current Worker list"),
    )
    .await;
    assert_eq!(lb.health().await["workers"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn a_worker_whose_functions_conflict_with_its_group_is_excluded() {
    let a = sim(|_| {}).await;
    let b = sim(|c| c.function_set = andera_worker_sim::FunctionSet::Alternate).await;
    let lb = Lb::start(&[a.url(), b.url()], &[]).await;
    let h = lb
        .wait_until(
            |h| h["invalidWorkers"].as_array().is_some_and(|v| v.len() == 1),
            "b is invalid",
        )
        .await;
    assert_eq!(h["invalidWorkers"][0]["url"], json!(b.url()));
    assert_eq!(h["workers"][0]["url"], json!(a.url()));
    for _ in 0..6 {
        assert_eq!(lb.run(task("hello", json!({}))).await.0, 200);
    }
    assert_eq!(b.stats().requests, 0);
    assert_eq!(a.stats().received, 6);
}

#[tokio::test]
async fn health_and_logs_answer_like_the_original_and_leak_no_secret() {
    let w = sim(|c| {
        c.tags.insert("region".into(), "eu-west".into());
    })
    .await;
    let lb = Lb::start(&[w.url()], &[]).await;
    lb.wait_available(1).await;
    let public: Value = lb.get_json(&lb.url("/health"), false).await;
    assert_eq!(public, json!({"status": "ready"}));
    let authed = lb.health().await;
    let worker = &authed["workers"][0];
    assert_eq!(worker["group"], json!("default"));
    assert_eq!(worker["contract"], json!(1));
    assert_eq!(worker["tags"]["region"], json!("eu-west"));
    assert_eq!(worker["slots"]["limit"], json!(4));
    assert!(worker["functions"]
        .as_array()
        .unwrap()
        .iter()
        .any(|f| f["name"] == json!("hello")));
    assert_eq!(authed["invalidWorkers"], json!([]));
    assert!(authed["services"].is_object());
    // Same answers on the admin port.
    let admin: Value = lb.get_json(&lb.admin_url("/health"), false).await;
    assert_eq!(admin, json!({"status": "ready"}));

    let (s, _) = lb
        .run(task("hello", json!({"name": "SecretInputMarker"})))
        .await;
    assert_eq!(s, 200);
    let r = lb.http.get(lb.url("/logs")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let logs: Value = lb
        .http
        .get(lb.url("/logs"))
        .header("authorization", format!("Bearer {LB_KEY}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let lines = logs["logs"].as_array().unwrap();
    assert!(
        lines.iter().any(|l| l.as_str().unwrap().contains("task ")),
        "{logs}"
    );
    assert!(lines[0].as_str().unwrap().starts_with('['));
    let all = format!("{logs}{}", lb.log());
    for secret in [LB_KEY, WK_KEY, "SecretInputMarker"] {
        assert!(!all.contains(secret), "{secret} leaked into the logs");
    }
}

#[tokio::test]
async fn a_worker_that_never_answers_delays_no_other_worker() {
    // Accepts connections and says nothing: every poll of it runs into the timeout.
    let black_hole = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hole_url = format!("http://{}", black_hole.local_addr().unwrap());
    let _held = tokio::spawn(async move {
        let mut conns = Vec::new();
        while let Ok((c, _)) = black_hole.accept().await {
            conns.push(c);
        }
    });
    let w = sim(|_| {}).await;
    let started = std::time::Instant::now();
    let lb = Lb::start(
        &[hole_url, w.url()],
        &[
            ("WORKER_DISCOVERY_TIMEOUT", "5000"),
            ("WORKER_DISCOVERY_RETRIES", "3"),
        ],
    )
    .await;
    lb.wait_available(1).await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "the healthy Worker waited for the silent one"
    );
    assert_eq!(lb.run(task("hello", json!({}))).await.0, 200);
}

#[tokio::test]
async fn a_silent_slot_feed_takes_the_worker_offline_after_the_heartbeat_timeout() {
    let w = sim(|c| c.ws_mode = andera_worker_sim::WsMode::Silent).await;
    let lb = Lb::start(
        &[w.url()],
        &[
            SLOW_DISCOVERY,
            ("WS_HEARTBEAT_INTERVAL", "200"),
            ("WS_HEARTBEAT_TIMEOUT", "500"),
        ],
    )
    .await;
    lb.wait_available(1).await;
    let h = lb
        .wait_until(
            |h| h["workers"][0]["online"] == json!(false),
            "the silent Worker goes offline",
        )
        .await;
    assert!(
        h["workers"][0]["error"]
            .as_str()
            .unwrap_or("")
            .contains("no answer within 500 ms"),
        "{h}"
    );
    let (s, body) = lb.run(task("hello", json!({}))).await;
    assert_eq!(s, 503, "{body}");
}
