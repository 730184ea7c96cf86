//! The admin sidecar: metrics move with real tasks, data routes are keyed, the
//! Worker-logs route only reaches listed Workers, the board keeps task timelines.

mod common;

use base64::Engine;
use common::*;
use serde_json::{json, Value};

#[tokio::test]
async fn metrics_move_with_real_tasks() {
    let w = sim(|_| {}).await;
    let lb = Lb::start(&[w.url()], &[]).await;
    lb.wait_available(1).await;
    let before = lb.scrape().await;
    // Known groups and functions are counted from 0, before their first task.
    let ok = r#"andera_lb_tasks_total{function="hello",group="default",outcome="ok"}"#;
    assert_eq!(metric(&before, ok).expect("the series is scraped"), 0.0);
    for _ in 0..3 {
        assert_eq!(lb.run(task("hello", json!({}))).await.0, 200);
    }
    assert_eq!(lb.run(task("fail", json!({}))).await.0, 500);
    for i in 0..5 {
        let body =
            json!({"group": format!("random-{i}"), "function": format!("f{i}"), "contract": 1});
        assert_eq!(lb.run(body).await.0, 503);
    }
    let text = lb.scrape().await;
    assert_eq!(metric(&text, ok).expect("the series is scraped"), 3.0);
    let failed =
        r#"andera_lb_tasks_total{function="fail",group="default",outcome="function_error"}"#;
    assert_eq!(metric(&text, failed).expect("the series is scraped"), 1.0);
    // Client-chosen names fold into one label value.
    let other = r#"andera_lb_tasks_total{function="other",group="other",outcome="no_worker"}"#;
    assert_eq!(metric(&text, other).expect("the series is scraped"), 5.0);
    assert!(!text.contains("random-"));
    let wait = r#"andera_lb_queue_wait_seconds_count{group="default",priority_class="1"}"#;
    assert_eq!(metric(&text, wait).expect("the series is scraped"), 4.0);
    let dur =
        r#"andera_lb_task_duration_seconds_count{function="hello",group="default",outcome="ok"}"#;
    assert_eq!(metric(&text, dur).expect("the series is scraped"), 3.0);
    let up = format!(
        r#"andera_lb_worker_up{{group="default",worker="{}"}}"#,
        w.url()
    );
    assert_eq!(metric(&text, &up).expect("the series is scraped"), 1.0);
    let limit = format!(r#"andera_lb_worker_slots_limit{{worker="{}"}}"#, w.url());
    assert_eq!(metric(&text, &limit).expect("the series is scraped"), 4.0);
    let responses = r#"andera_lb_http_responses_total{route="task",service="client",status="200"}"#;
    assert_eq!(
        metric(&text, responses).expect("the series is scraped"),
        3.0
    );
    assert_eq!(
        metric(&text, "andera_lb_queue_depth").expect("the series is scraped"),
        0.0
    );
    assert!(
        metric(&text, "andera_lb_process_resident_memory_bytes").expect("the series is scraped")
            > 1e6
    );
    assert!(text.contains("andera_lb_process_cpu_seconds_total"));
    // Not on the client port unless configured.
    let r = lb.http.get(lb.url("/metrics")).send().await.unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn discovery_errors_and_worker_down_are_counted() {
    let dead = format!("http://127.0.0.1:{}", free_port());
    let lb = Lb::start(std::slice::from_ref(&dead), &[]).await;
    lb.wait_until(|h| h["workers"][0]["error"].is_string(), "the poll fails")
        .await;
    let text = lb.scrape().await;
    assert!(metric(
        &text,
        &format!(r#"andera_lb_discovery_errors_total{{worker="{dead}"}}"#)
    )
    .is_some_and(|n| n >= 1.0));
    assert_eq!(
        metric(
            &text,
            &format!(r#"andera_lb_worker_up{{group="unknown",worker="{dead}"}}"#)
        ),
        Some(0.0)
    );
}

#[tokio::test]
async fn data_routes_need_the_key_and_worker_logs_only_reach_listed_workers() {
    let w = sim(|_| {}).await;
    let lb = Lb::start(&[w.url()], &[]).await;
    lb.wait_available(1).await;
    let get = |path: &str, key: bool| {
        let mut r = lb.http.get(lb.admin_url(path));
        if key {
            r = r.header("x-lb-auth", LB_KEY);
        }
        r.send()
    };
    for path in [
        "/dashboard/api/workers",
        "/dashboard/api/overview",
        "/bull/api/tasks",
    ] {
        assert_eq!(get(path, false).await.unwrap().status(), 401, "{path}");
    }
    let workers: Value = get("/dashboard/api/workers", true)
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(workers[0]["url"], json!(w.url()));
    let b64 = |u: &str| base64::engine::general_purpose::STANDARD.encode(u);
    let logs = get(
        &format!("/dashboard/api/workers/{}/logs", b64(&w.url())),
        true,
    )
    .await
    .unwrap();
    assert_eq!(logs.status(), 200);
    assert!(logs.json::<Value>().await.unwrap()["logs"].is_array());
    // A URL that is not in the list is never fetched (the key would go with it).
    let trap = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let trap_url = format!("http://{}", trap.local_addr().unwrap());
    let r = get(
        &format!("/dashboard/api/workers/{}/logs", b64(&trap_url)),
        true,
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 404);
    let accepted = tokio::time::timeout(std::time::Duration::from_millis(300), trap.accept()).await;
    assert!(
        accepted.is_err(),
        "the load balancer connected to an unlisted URL"
    );
    // Pages are served, and can be switched off.
    let page = get("/dashboard", false).await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    let off = Lb::start(
        &[w.url()],
        &[
            ("DASHBOARD_ENABLED", "false"),
            ("BULL_BOARD_ENABLED", "false"),
        ],
    )
    .await;
    for path in ["/dashboard", "/bull", "/dashboard/api/workers"] {
        let r = off
            .http
            .get(off.admin_url(path))
            .header("x-lb-auth", LB_KEY)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404, "{path}");
    }
}

#[tokio::test]
async fn a_task_whose_answer_the_client_has_is_finished_on_the_board() {
    // The client can hold the whole answer before the Worker's end of body is read:
    // the record must already be closed by then, every time.
    let w = sim(|_| {}).await;
    let lb = Lb::start(&[w.url()], &[]).await;
    lb.wait_available(1).await;
    for i in 0..40 {
        let r = lb
            .task(task("hello", json!({ "name": format!("n{i}") })))
            .send()
            .await
            .unwrap();
        let id = task_id(&r);
        assert_eq!(r.status(), 200);
        r.bytes().await.unwrap();
        let rec: Value = lb.board_record(&id).await;
        assert_eq!(rec["state"], json!("completed"), "task {i}: {rec}");
    }
}

#[tokio::test]
async fn the_board_keeps_each_task_with_its_timeline_but_never_its_input() {
    let w = sim(|_| {}).await;
    let lb = Lb::start(&[w.url()], &[]).await;
    lb.wait_available(1).await;
    let r = lb
        .task(task("hello", json!({"name": "PrivateInput"})))
        .send()
        .await
        .unwrap();
    let id = task_id(&r);
    assert!(r.text().await.unwrap().contains("PrivateInput"));
    assert!(lb.log().contains(&id), "the id is logged");
    let rec: Value = lb.board_record(&id).await;
    assert_eq!(rec["state"], json!("completed"));
    assert_eq!(rec["worker"], json!(w.url()));
    assert_eq!(rec["status"], json!(200));
    let events: Vec<&str> = rec["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(events, ["received", "dispatched", "finished"]);
    assert!(!rec.to_string().contains("PrivateInput"));
    let list: Value = lb
        .get_json(
            &lb.admin_url("/bull/api/tasks?state=completed&group=default"),
            true,
        )
        .await;
    assert_eq!(list["counts"]["completed"], json!(1));
    assert_eq!(list["tasks"][0]["id"], json!(id));
    let overview: Value = lb
        .get_json(&lb.admin_url("/dashboard/api/overview"), true)
        .await;
    assert_eq!(overview["totals"]["completed"], json!(1));
    assert_eq!(overview["recentTasks"][0]["id"], json!(id));
}

#[tokio::test]
async fn admin_pages_can_be_exposed_on_the_client_port() {
    let w = sim(|_| {}).await;
    let port = free_port();
    let admin_port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("expose.yaml");
    let yaml = format!(
        "admin:\n  expose_on_client_port: true\nserver:\n  pid_file: {0}/lb.pid\n  upgrade_sock: {0}/up.sock\n",
        dir.path().display()
    );
    std::fs::write(&conf, yaml).unwrap();
    std::fs::write(
        dir.path().join("workers.json"),
        json!([w.url()]).to_string(),
    )
    .unwrap();
    let mut child = lb_once(dir.path())
        .env("LB_AUTH_KEY", LB_KEY)
        .env("PORT", port.to_string())
        .env("ADMIN_PORT", admin_port.to_string())
        .arg("--config")
        .arg(&conf)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}/metrics");
    let mut ok = false;
    for _ in 0..100 {
        if let Ok(r) = reqwest::get(&url).await {
            ok = r.status() == 200 && r.text().await.unwrap().contains("andera_lb_");
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(ok, "/metrics answers on the client port");
}
