//! OpenTelemetry traces against the real binary: an in-test OTLP/HTTP collector
//! decodes what the load balancer exports (protobuf, `opentelemetry-proto`) and
//! the tests check each task's span tree, the trace continued from the client, the
//! `traceparent` the Worker and the webhook receive, the access log's `trace_id`,
//! and that a dead collector never fails a task.

mod common;

#[path = "tracing/otlp.rs"]
mod otlp;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use otlp::{Collector, Got, SpanKind};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

/// The environment that points the load balancer at `endpoint`, exporting every
/// 100 ms.
fn otel(endpoint: &str) -> Vec<(&'static str, String)> {
    vec![
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.to_string()),
        (
            "OTEL_EXPORTER_OTLP_HEADERS",
            "x-collector-key=c%3Dk1".into(),
        ),
        ("OTEL_SERVICE_NAME", "lb-under-test".into()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100".into()),
        // Polls are slow so that a Worker put in maintenance is found by a task.
        ("WORKER_DISCOVERY_INTERVAL", "60000".into()),
    ]
}

fn env_of<'a>(pairs: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    pairs.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

/// The single span of `kind` (and `name`, when given) in `spans`.
fn one<'a>(spans: &'a [Got], kind: SpanKind, name: Option<&str>) -> &'a Got {
    let found: Vec<&Got> = spans
        .iter()
        .filter(|s| s.kind == kind && name.is_none_or(|n| s.name == n))
        .collect();
    assert_eq!(found.len(), 1, "one {kind:?} {name:?} span in {spans:#?}");
    found[0]
}

fn kinds(spans: &[Got]) -> Vec<(SpanKind, String)> {
    let mut k: Vec<(SpanKind, String)> = spans.iter().map(|s| (s.kind, s.name.clone())).collect();
    k.sort_by_key(|(kind, name)| (*kind as i32, name.clone()));
    k
}

const CLIENT_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN: &str = "00f067aa0ba902b7";

/// A client `traceparent` in trace `trace` (sampled).
fn traceparent(trace: &str) -> String {
    format!("00-{trace}-{CLIENT_SPAN}-01")
}

/// The access log's lines so far, parsed.
fn access_lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

#[tokio::test]
async fn sync_stream_and_retried_tasks_continue_the_clients_trace() {
    let (collector, endpoint) = Collector::start().await;
    // `a` has no slot feed and more slots: preferred, until it is in maintenance.
    let a = sim(|c| {
        c.ws_addr = None;
        c.slots = 8;
    })
    .await;
    let b = sim(|c| c.slots = 2).await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let yaml = format!("logging:\n  access_log: {}\n", log.display());
    let env = otel(&endpoint);
    let lb = Lb::start_with(&[a.url(), b.url()], &env_of(&env), &yaml).await;
    lb.wait_available(2).await;

    // A sync task: SERVER (the client's span its parent) and one CLIENT attempt.
    let trace_sync = CLIENT_TRACE;
    let r = lb
        .task(task("hello", json!({"name": "Trace"})))
        .header("traceparent", traceparent(trace_sync))
        .header("tracestate", "vendor=opaque")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let sync_id = task_id(&r);
    let _ = r.text().await;
    let spans = collector.trace(trace_sync, 1).await;
    assert_eq!(
        kinds(&spans),
        [
            (SpanKind::Server, "POST /task".to_string()),
            (SpanKind::Client, "POST /task".to_string())
        ],
        "{spans:#?}"
    );
    let server = one(&spans, SpanKind::Server, None);
    assert_eq!(
        server.parent, CLIENT_SPAN,
        "the client's span is the parent"
    );
    assert_eq!(server.service, "lb-under-test");
    for (key, want) in [
        ("andera.task_id", sync_id.as_str()),
        ("andera.group", "default"),
        ("andera.function", "hello"),
        ("andera.mode", "sync"),
        ("andera.priority", "1"),
        ("andera.client", "default"),
        ("andera.outcome", "ok"),
        ("http.response.status_code", "200"),
    ] {
        assert_eq!(server.attr(key), want, "{key} of {server:#?}");
    }
    assert!(!server.error);
    let attempt = one(&spans, SpanKind::Client, None);
    assert_eq!(attempt.parent, server.span_id);
    assert_eq!(attempt.attr("andera.worker"), a.url());
    assert_eq!(attempt.attr("andera.attempt"), "1");
    assert_eq!(attempt.attr("http.response.status_code"), "200");
    // The Worker's traceparent names the attempt; the client's tracestate goes on.
    let h = a.stats().last_headers;
    assert_eq!(
        h.get("traceparent").map(String::as_str),
        Some(format!("00-{trace_sync}-{}-01", attempt.span_id).as_str()),
        "{h:?}"
    );
    assert_eq!(
        h.get("tracestate").map(String::as_str),
        Some("vendor=opaque")
    );
    // No key, no body in any attribute.
    for s in &spans {
        for v in s.attrs.values() {
            assert!(
                !v.contains(LB_KEY) && !v.contains(WK_KEY) && !v.contains("Trace"),
                "{s:#?}"
            );
        }
    }

    // A stream task: the same tree, mode stream, ended once the stream has.
    let trace_stream = "5bf92f3577b34da6a3ce929d0e0e4737";
    let mut body = task("ticker", json!({"count": 2, "intervalMs": 50}));
    body["mode"] = json!("stream");
    let r = lb
        .task(body)
        .header("traceparent", traceparent(trace_stream))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let streamed = r.text().await.unwrap();
    assert!(streamed.contains("tick 2"), "{streamed}");
    let spans = collector.trace(trace_stream, 1).await;
    let server = one(&spans, SpanKind::Server, None);
    assert_eq!(server.attr("andera.mode"), "stream");
    assert_eq!(server.attr("andera.function"), "ticker");
    assert_eq!(server.parent, CLIENT_SPAN);
    assert_eq!(one(&spans, SpanKind::Client, None).parent, server.span_id);

    // A retried task: `a` answers 503 (maintenance), `b` runs it; one CLIENT span
    // per attempt, each Worker told its own.
    a.set_status("maintenance");
    let trace_retry = "6bf92f3577b34da6a3ce929d0e0e4738";
    let r = lb
        .task(task("hello", json!({"name": "again"})))
        .header("traceparent", traceparent(trace_retry))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let _ = r.text().await;
    let spans = collector.trace(trace_retry, 2).await;
    let server = one(&spans, SpanKind::Server, None);
    let mut attempts: Vec<&Got> = spans
        .iter()
        .filter(|s| s.kind == SpanKind::Client)
        .collect();
    attempts.sort_by_key(|s| s.attr("andera.attempt").to_string());
    assert_eq!(attempts.len(), 2, "{spans:#?}");
    assert!(attempts.iter().all(|s| s.parent == server.span_id));
    assert_eq!(
        (
            attempts[0].attr("andera.worker"),
            attempts[0].attr("http.response.status_code")
        ),
        (a.url().as_str(), "503")
    );
    assert!(attempts[0].error, "the refused attempt is an error");
    assert_eq!(
        (
            attempts[1].attr("andera.worker"),
            attempts[1].attr("http.response.status_code")
        ),
        (b.url().as_str(), "200")
    );
    assert!(!attempts[1].error && !server.error);
    for (worker, attempt) in [(&a, attempts[0]), (&b, attempts[1])] {
        let sent = worker.stats().last_headers.get("traceparent").cloned();
        assert_eq!(
            sent,
            Some(format!("00-{trace_retry}-{}-01", attempt.span_id))
        );
    }

    // Without a client traceparent a trace starts here, and the Worker joins it.
    let r = lb
        .task(task("hello", json!({"name": "new"})))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let new_id = task_id(&r);
    let _ = r.text().await;
    let spans = collector.trace_of_task(&new_id, 1).await;
    let server = one(&spans, SpanKind::Server, None);
    assert_eq!(server.parent, "", "a root span");
    let attempt = one(&spans, SpanKind::Client, None);
    assert_eq!(
        b.stats().last_headers.get("traceparent").cloned(),
        Some(format!("00-{}-{}-01", server.trace_id, attempt.span_id))
    );

    // The access log's trace_id is the task's trace id, continued or new.
    wait_for("the access log lines", Duration::from_secs(10), || {
        access_lines(&log)
            .iter()
            .any(|l| l["task_id"] == json!(new_id))
    })
    .await;
    let lines = access_lines(&log);
    let trace_of = |id: &str| {
        lines
            .iter()
            .find(|l| l["task_id"] == json!(id))
            .map(|l| l["trace_id"].clone())
    };
    assert_eq!(trace_of(&sync_id), Some(json!(trace_sync)));
    assert_eq!(trace_of(&new_id), Some(json!(server.trace_id)));

    // Every export carried the configured header, as protobuf.
    let heads = collector.heads.lock().unwrap().clone();
    assert!(!heads.is_empty());
    for head in &heads {
        assert!(head.starts_with("post /v1/traces "), "{head}");
        assert!(
            head.contains("content-type: application/x-protobuf"),
            "{head}"
        );
        assert!(head.contains("x-collector-key: c=k1"), "{head}");
    }
    // The log names the collector, never the export header's value.
    let log = lb.log();
    let collector_addr = endpoint.trim_start_matches("http://");
    assert!(
        log.contains(&format!("exporting spans to {collector_addr}")),
        "{log}"
    );
    assert!(!log.contains("c=k1") && !log.contains("c%3Dk1"), "{log}");
}

/// A webhook receiver that hands the test each request head it gets.
async fn hook_receiver() -> (mpsc::UnboundedReceiver<String>, String) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    // A secret in the path, as webhook URLs often carry one (a query is refused).
    let url = format!("http://{}/hook/hook-secret", listener.local_addr().unwrap());
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match sock.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let _ = tx.send(String::from_utf8_lossy(&buf).to_ascii_lowercase());
                let _ = sock
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                    .await;
            });
        }
    });
    (rx, url)
}

#[tokio::test]
async fn webhook_tasks_trace_their_queue_wait_and_their_failure_notice() {
    let (collector, endpoint) = Collector::start().await;
    let (mut hooks, hook) = hook_receiver().await;
    let w = sim(|c| c.slots = 1).await;
    let mut env = otel(&endpoint);
    env.push(("TASK_TIMEOUT", "1500".into()));
    let yaml = "webhook:\n  notify_failures: true\n  allowed_hosts: [\"127.0.0.1\"]\n";
    let lb = Lb::start_with(&[w.url()], &env_of(&env), yaml).await;
    lb.wait_available(1).await;
    let webhook_task = |input: Value| {
        let mut body = task("hello", input);
        body["mode"] = json!("webhook");
        body["webhook"] = json!({"url": hook});
        body
    };

    // The Worker refuses it (401: not its key): its attempt, then the notice,
    // whose traceparent names the notice's own span.
    let trace_refused = "7bf92f3577b34da6a3ce929d0e0e4739";
    let r = lb
        .http
        .post(lb.url("/task"))
        .header("authorization", LB_KEY)
        .header("x-wr-auth", "not-the-workers-key")
        .json(&webhook_task(json!({"name": "x"})))
        .header("traceparent", traceparent(trace_refused))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let head = tokio::time::timeout(Duration::from_secs(10), hooks.recv())
        .await
        .expect("the refusal is posted")
        .unwrap();
    let spans = collector.trace(trace_refused, 2).await;
    let server = one(&spans, SpanKind::Server, None);
    assert_eq!(server.parent, CLIENT_SPAN);
    assert_eq!(server.attr("andera.mode"), "webhook");
    assert_eq!(server.attr("http.response.status_code"), "401");
    assert_eq!(server.attr("andera.outcome"), "worker_key_rejected");
    let attempt = one(&spans, SpanKind::Client, Some("POST /task"));
    assert_eq!(attempt.attr("http.response.status_code"), "401");
    assert!(attempt.error);
    let notice = one(&spans, SpanKind::Client, Some("webhook failure notice"));
    assert_eq!(notice.parent, server.span_id);
    assert!(
        head.contains(&format!(
            "traceparent: 00-{trace_refused}-{}-01",
            notice.span_id
        )),
        "{head}"
    );
    // The webhook is named by its host: never its path (nor a query).
    let host = hook
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap();
    assert_eq!(notice.attr("server.address"), host);
    assert_eq!(notice.attr("http.response.status_code"), "200");
    for s in &spans {
        assert!(
            s.attrs.values().all(|v| !v.contains("hook-secret")
                && !v.contains("/hook")
                && !v.contains("not-the-workers-key")),
            "{s:#?}"
        );
    }

    // It waits for the only slot past its deadline: a queue wait span (an error),
    // no attempt, and the notice.
    let direct = lb
        .http
        .post(format!("{}/task", w.url()))
        .header("x-lb-auth", LB_KEY)
        .header("authorization", WK_KEY)
        .json(&task("sleep", json!({"ms": 4000})))
        .send();
    let blocker = tokio::spawn(async move {
        let _ = direct.await;
    });
    lb.wait_until(
        |h| h["workers"][0]["slots"]["available"] == json!(0),
        "the Worker reports its slot taken",
    )
    .await;
    let trace_late = "8bf92f3577b34da6a3ce929d0e0e473a";
    let r = lb
        .task(webhook_task(json!({"name": "late"})))
        .header("traceparent", traceparent(trace_late))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let head = tokio::time::timeout(Duration::from_secs(10), hooks.recv())
        .await
        .expect("the timeout is posted")
        .unwrap();
    let spans = collector.trace(trace_late, 2).await;
    assert_eq!(
        kinds(&spans),
        [
            (SpanKind::Internal, "queue wait".to_string()),
            (SpanKind::Server, "POST /task".to_string()),
            (SpanKind::Client, "webhook failure notice".to_string()),
        ],
        "{spans:#?}"
    );
    let server = one(&spans, SpanKind::Server, None);
    assert_eq!(server.attr("andera.reason"), "queue_timeout");
    assert!(server.error);
    let queue = one(&spans, SpanKind::Internal, None);
    assert_eq!(queue.parent, server.span_id);
    assert!(queue.error);
    let notice = one(&spans, SpanKind::Client, None);
    assert!(
        head.contains(&format!(
            "traceparent: 00-{trace_late}-{}-01",
            notice.span_id
        )),
        "{head}"
    );
    blocker.abort();
}

#[tokio::test]
async fn the_spans_still_queued_at_shutdown_are_exported_before_the_exit() {
    let (collector, endpoint) = Collector::start().await;
    let w = sim(|_| {}).await;
    let mut env = otel(&endpoint);
    // No export would come before a minute: only the exit's flush sends these.
    env.push(("OTEL_BSP_SCHEDULE_DELAY", "60000".into()));
    let mut lb = Lb::start(&[w.url()], &env_of(&env)).await;
    lb.wait_available(1).await;
    let trace = "9bf92f3577b34da6a3ce929d0e0e473b";
    let r = lb
        .task(task("hello", json!({})))
        .header("traceparent", traceparent(trace))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let _ = r.text().await;
    assert!(collector.spans.lock().unwrap().is_empty());
    lb.signal("TERM");
    assert_eq!(lb.wait_exit(Duration::from_secs(30)).await, Some(0));
    let spans = collector.trace(trace, 1).await;
    assert_eq!(spans.len(), 2, "{spans:#?}");
}

/// The value of a counter in a scrape of `lb` (-1 when absent).
async fn counter(lb: &Lb, series: &str) -> f64 {
    metric(&lb.scrape().await, series).unwrap_or(-1.0)
}

/// Waits until `series` of `lb` counts at least `min`.
async fn wait_counter(lb: &Lb, series: &str, min: f64) {
    let start = std::time::Instant::now();
    loop {
        let now = counter(lb, series).await;
        if now >= min {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{series} is {now}, waited for {min}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Runs `n` tasks, 8 at a time, and returns their statuses.
async fn run_tasks(lb: &Lb, n: usize) -> Vec<u16> {
    let mut statuses = Vec::new();
    for round in 0..n.div_ceil(8) {
        let batch = (0..8.min(n - round * 8)).map(|i| {
            lb.task(task("hello", json!({"name": format!("t{round}-{i}")})))
                .header("traceparent", traceparent(CLIENT_TRACE))
                .send()
        });
        for r in futures_util::future::join_all(batch).await {
            statuses.push(r.map_or(0, |r| r.status().as_u16()));
        }
    }
    statuses
}

#[tokio::test]
async fn a_collector_that_never_answers_costs_a_bounded_queue_and_a_counter() {
    // It accepts and reads, never answers: the exporter waits out its timeout.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let held = Arc::new(Mutex::new(Vec::new()));
    let keep = held.clone();
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            keep.lock().unwrap().push(sock);
        }
    });
    let w = sim(|c| c.slots = 8).await;
    let mut env = otel(&endpoint);
    env.push(("OTEL_BSP_MAX_QUEUE_SIZE", "4".into()));
    env.push(("OTEL_EXPORTER_OTLP_TIMEOUT", "120000".into()));
    let lb = Lb::start(&[w.url()], &env_of(&env)).await;
    lb.wait_available(1).await;
    let dropped = "andera_lb_trace_spans_dropped_total{reason=\"queue_full\"}";
    assert_eq!(counter(&lb, dropped).await, 0.0, "at 0 from the start");
    // 40 tasks make 80 spans: the first export hangs, 4 wait, the rest are dropped.
    let statuses = run_tasks(&lb, 40).await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    wait_counter(&lb, dropped, 80.0 - 4.0 - 4.0).await;
    assert_eq!(
        counter(&lb, "andera_lb_trace_spans_exported_total").await,
        0.0
    );
    assert!(!held.lock().unwrap().is_empty(), "the exporter did connect");
}

#[tokio::test]
async fn a_collector_that_refuses_connections_never_fails_a_task() {
    let endpoint = format!("http://127.0.0.1:{}", free_port());
    let w = sim(|c| c.slots = 8).await;
    let lb = Lb::start(&[w.url()], &env_of(&otel(&endpoint))).await;
    lb.wait_available(1).await;
    let statuses = run_tasks(&lb, 16).await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    let failed = "andera_lb_trace_spans_dropped_total{reason=\"export_failed\"}";
    wait_counter(&lb, failed, 32.0).await;
    let (s, _) = lb.run(task("hello", json!({}))).await;
    assert_eq!(s, 200, "still serving");
}

#[test]
fn dash_t_checks_the_tracing_settings_and_never_prints_a_header_value() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("workers.json"), "[]").unwrap();
    let yaml = dir.path().join("lb.yaml");
    std::fs::write(
        &yaml,
        "tracing:\n  endpoint: http://127.0.0.1:4318\n  headers: {x-api-key: top-secret-1}\n  sampler_arg: 0.01\n",
    )
    .unwrap();
    let check = |env: &[(&str, &str)]| {
        let mut cmd = lb_once(dir.path());
        cmd.env("LB_AUTH_KEY", "k")
            .args(["-t", "--config"])
            .arg(&yaml);
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.output().unwrap()
    };
    let ok = check(&[]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let bad = check(&[("OTEL_TRACES_SAMPLER", "sometimes")]);
    assert_eq!(bad.status.code(), Some(2));
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("OTEL_TRACES_SAMPLER"), "{err}");
    let bad = check(&[("OTEL_EXPORTER_OTLP_HEADERS", "x-api-key=top-secret-2\u{7f}")]);
    assert_eq!(bad.status.code(), Some(2));
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&bad.stdout),
        String::from_utf8_lossy(&bad.stderr)
    );
    assert!(all.contains("OTEL_EXPORTER_OTLP_HEADERS"), "{all}");
    assert!(!all.contains("top-secret"), "{all}");
}

#[tokio::test]
async fn a_webhook_task_given_to_the_shared_queue_ends_its_span_as_such_not_as_a_failure() {
    let Some(redis) = common::redis_server::Redis::start("tracing shared queue") else {
        return;
    };
    let (collector, endpoint) = Collector::start().await;
    let (_hooks, hook) = hook_receiver().await;
    let w = sim(|_| {}).await;
    let mut env = otel(&endpoint);
    env.push(("TASK_JOURNAL", redis.url()));
    let lb = Lb::start_with(&[w.url()], &env_of(&env), "").await;
    lb.wait_available(1).await;
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let r = lb
        .http
        .post(lb.url("/task"))
        .header("authorization", LB_KEY)
        .header("x-wr-auth", WK_KEY)
        .header("traceparent", traceparent(trace))
        .json(&webhook_task("shared", &hook, 0))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // Accepted into Redis: this instance's part of the task ends there (the one
    // that takes it from the queue counts it), and its span says so.
    let spans = collector.trace(trace, 0).await;
    let server = one(&spans, SpanKind::Server, None);
    assert_eq!(server.attr("andera.outcome"), "shared_queue", "{server:?}");
    assert!(!server.error, "a hand-over is no failure: {server:?}");
}
