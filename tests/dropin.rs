//! Drop-in fidelity with the original load balancer (issue #9, items 2–7): what
//! its clients send, what its monitors read, how it was configured, what its
//! Workers receive.

mod common;

use std::time::Duration;

use andera_worker_sim::FunctionSet;
use common::*;
use serde_json::{json, Value};

/// `body` sent as raw bytes with both keys.
async fn post_raw(lb: &Lb, body: &str) -> (u16, Value) {
    let r = lb
        .http
        .post(lb.url("/task"))
        .header("authorization", LB_KEY)
        .header("x-wr-auth", WK_KEY)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    let value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"));
    (status, value)
}

/// Item 2: what the original accepted runs; what it refused is still a JSON 400.
#[tokio::test]
async fn bodies_the_original_accepted_run() {
    let w = sim(|_| {}).await;
    let lb = Lb::start(&[w.url()], &[]).await;
    lb.wait_available(1).await;
    let hello = json!({"success": true, "result": {"message": "Hello A!"}});
    for body in [
        r#"{"group":"default","function":"hello","contract":1,"input":{"name":"A"},"priority":null}"#,
        r#"{"group":"default","function":"hello","contract":1,"input":{"name":"A"},"priority":0}"#,
        r#"{"group":"default","function":"hello","contract":1,"input":{"name":"A"},"priority":5.0}"#,
        r#"{"group":"default","function":"hello","contract":1.0,"input":{"name":"A"}}"#,
        r#"{"group":"nope","function":"hello","group":"default","contract":1,"input":{"name":"B"},"input":{"name":"A"}}"#,
    ] {
        let (s, b) = post_raw(&lb, body).await;
        assert_eq!((s, &b), (200, &hello), "{body}\n{}", lb.log());
        // The Worker never gets `priority`, and gets each key once.
        let got: Value = serde_json::from_str(&w.stats().last_body).unwrap();
        assert!(got.get("priority").is_none(), "{got}");
        assert_eq!(got["group"], "default");
        assert_eq!(got["contract"], json!(1));
    }
    // (`-1` runs since #20: see issue20_bodies_the_original_accepted_or_refused.)
    for p in ["1.5", "\"x\"", "2097153"] {
        let body =
            format!(r#"{{"group":"default","function":"hello","contract":1,"priority":{p}}}"#);
        let (s, b) = post_raw(&lb, &body).await;
        assert_eq!(s, 400, "{p}: {b}");
        assert!(b["error"].as_str().unwrap().contains("priority"), "{b}");
    }
}

/// Item 7: the Worker receives what the original sent it.
#[tokio::test]
async fn the_worker_receives_what_the_original_sent() {
    let w = sim(|_| {}).await;
    let lb = Lb::start(&[w.url()], &[]).await;
    lb.wait_available(1).await;
    let sent = json!({"group": "default", "function": "echo", "contract": 1,
        "input": {"a": 1}, "priority": 3, "mode": "sync", "extra": {"k": [1, 2]}});
    // The client sends the Worker key with a `Bearer ` prefix: it reaches the
    // Worker as the client wrote it, like the original forwarded it.
    let r = lb
        .http
        .post(lb.url("/task"))
        .header("authorization", LB_KEY)
        .header("x-wr-auth", format!("Bearer {WK_KEY}"))
        .json(&sent)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", lb.log());
    let task_id = r.headers()["x-andera-task-id"]
        .to_str()
        .unwrap()
        .to_string();
    let stats = w.stats();
    let h = &stats.last_headers;
    assert_eq!(h["authorization"], format!("Bearer {WK_KEY}"));
    assert_eq!(h["x-lb-auth"], LB_KEY);
    assert_eq!(h["content-type"], "application/json");
    assert_eq!(h["x-andera-task-id"], task_id);
    assert!(!h.contains_key("x-wr-auth"), "{h:?}");
    // The original's body: the client's object without `priority`, no `_taskId`.
    let mut expected = sent.clone();
    expected.as_object_mut().unwrap().remove("priority");
    let got: Value = serde_json::from_str(&stats.last_body).unwrap();
    assert_eq!(got, expected);
    assert!(!stats.last_body.contains("_taskId"));

    // Nothing to change: the client's bytes, byte for byte.
    let raw = r#"{ "group": "default", "function": "echo", "contract": 1, "input": {"n": 1.50} }"#;
    let (s, _) = post_raw(&lb, raw).await;
    assert_eq!(s, 200);
    assert_eq!(w.stats().last_body, raw);
}

/// Item 3: the original's `/health` fields, and a killed Worker leaves `ready`.
#[tokio::test]
async fn health_keeps_the_original_fields_and_shows_killed_workers() {
    let a = sim(|_| {}).await;
    let b = sim(|_| {}).await;
    let odd = sim(|c| c.function_set = FunctionSet::Alternate).await;
    // Listed with a trailing `/`, shown so.
    let listed = [format!("{}/", a.url()), b.url(), odd.url()];
    let env = [
        ("WORKER_DISCOVERY_INTERVAL", "1000"),
        ("WORKER_DISCOVERY_RETRIES", "3"),
    ];
    let lb = Lb::start(&listed, &env).await;
    let h = lb
        .wait_until(
            |h| {
                h["workers"].as_array().is_some_and(|w| w.len() == 2)
                    && h["invalidWorkers"].as_array().is_some_and(|w| w.len() == 1)
            },
            "both Workers and the invalid one are listed",
        )
        .await;
    assert_eq!(h["services"]["redis"], "ready", "{h}");
    assert_eq!(h["services"]["bullmq"], "ready", "{h}");
    assert!(h["components"]["scheduler"].is_object(), "{h}");
    assert_eq!(h["workers"][0]["url"], json!(listed[0]));
    assert_eq!(h["workers"][1]["url"], json!(listed[1]));
    for w in h["workers"].as_array().unwrap() {
        assert_eq!(w["contractValid"], json!(true), "{w}");
        assert_eq!(w["contractMismatchReason"], Value::Null, "{w}");
    }
    let bad = &h["invalidWorkers"][0];
    assert_eq!(bad["contractValid"], json!(false), "{bad}");
    assert!(bad["contractMismatchReason"].is_string(), "{bad}");

    lb.wait_until(
        |h| h["workers"][1]["status"] == "ready" && h["workers"][1]["websocket"] == "connected",
        "the second Worker is ready, its slot feed connected",
    )
    .await;
    b.shutdown().await;
    lb.wait_until(
        |h| h["workers"][1]["status"] == "offline",
        "the killed Worker is offline",
    )
    .await;
    let h = lb
        .wait_until(
            |h| h["workers"][1]["status"] == "unreachable",
            "the killed Worker is unreachable",
        )
        .await;
    assert_eq!(h["workers"][0]["status"], "ready", "{h}");
}

/// Item 4: the operator pages on the client port, only when asked for.
#[tokio::test]
async fn admin_pages_on_the_client_port_from_the_environment() {
    let w = sim(|_| {}).await;
    let closed = Lb::start(&[w.url()], &[]).await;
    let r = closed
        .http
        .get(closed.url("/dashboard"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let body: Value = r.json().await.unwrap();
    assert!(body["error"].is_string());
    let r = closed
        .http
        .get(closed.admin_url("/dashboard"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    let open = Lb::start(&[w.url()], &[("ADMIN_ON_CLIENT_PORT", "true")]).await;
    let r = open.http.get(open.url("/dashboard")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .contains("html"));
}

/// Item 5: a `.env` the original accepted starts it; the real environment wins.
#[tokio::test]
async fn a_dotenv_the_original_accepted_starts() {
    let w = sim(|_| {}).await;
    let dotenv = "# the original's .env\n\
        PORT=1\n\
        TASK_TIMEOUT=10000ms\n\
        ADMIN_ON_CLIENT_PORT=TRUE\n\
        BULL_BOARD_ENABLED=False\n\
        MAX_LOGS=\n\
        TASK_ATTEMPTS=2\n";
    // PORT comes from the environment too (the harness sets it): the environment wins.
    let lb = Lb::builder(&[w.url()]).dotenv(dotenv).start().await;
    lb.wait_available(1).await;
    assert_eq!(lb.run(task("hello", json!({}))).await.0, 200);
    let log = lb.log();
    assert!(log.contains("read ./.env"), "{log}");
    assert!(
        log.contains(r#"TASK_TIMEOUT="10000ms" read as 10000"#),
        "{log}"
    );
    assert!(
        log.contains(r#"ADMIN_ON_CLIENT_PORT="TRUE" read as true"#),
        "{log}"
    );
    // ADMIN_ON_CLIENT_PORT=TRUE took effect, and BULL_BOARD_ENABLED=False too.
    let page = |path: &str| lb.http.get(lb.url(path)).send();
    assert_eq!(page("/dashboard").await.unwrap().status(), 200);
    assert_eq!(page("/bull").await.unwrap().status(), 404);
}

/// Item 6: every failure is `{"error": ...}`, and a wrong Worker key is told apart
/// from a wrong LB key.
#[tokio::test]
async fn failures_keep_the_error_shape_and_name_the_key_at_fault() {
    let w = sim(|_| {}).await;
    let lb = Lb::start(
        &[w.url()],
        &[("TASK_TIMEOUT", "1500"), ("REQUEST_BODY_LIMIT", "1kb")],
    )
    .await;
    lb.wait_available(1).await;
    let error_of = |b: &Value| b["error"].as_str().map(str::to_string);
    let send = |rb: reqwest::RequestBuilder| async move {
        let r = rb.send().await.unwrap();
        let s = r.status().as_u16();
        (s, r.json::<Value>().await.unwrap())
    };
    let post = || lb.http.post(lb.url("/task"));

    // The LB's own key.
    let (s, b) = send(
        post()
            .header("x-wr-auth", WK_KEY)
            .json(&task("hello", json!({}))),
    )
    .await;
    assert_eq!((s, error_of(&b).as_deref()), (401, Some("Unauthorized")));
    // The Worker's key: relayed as 401, saying so.
    let (s, b) = send(
        post()
            .header("authorization", LB_KEY)
            .header("x-wr-auth", "not-the-worker-key")
            .json(&task("hello", json!({}))),
    )
    .await;
    assert_eq!(s, 401, "{b}");
    let e = error_of(&b).unwrap();
    assert!(e.contains("Worker rejected the x-wr-auth key"), "{e}");
    assert_eq!(b["workerError"], "Unauthorized");

    let (s, b) = post_raw(&lb, "{nope").await;
    assert_eq!(s, 400);
    assert!(error_of(&b).is_some(), "{b}");
    let big = task("hello", json!({"name": "x".repeat(2000)}));
    let (s, b) = lb.run(big).await;
    assert_eq!(s, 413);
    assert!(error_of(&b).is_some(), "{b}");
    let mut unknown = task("hello", json!({}));
    unknown["group"] = json!("no-such-group");
    let (s, b) = lb.run(unknown).await;
    assert_eq!(s, 503);
    assert!(error_of(&b).is_some(), "{b}");
    let (s, b) = lb.run(task("sleep", json!({"ms": 60000}))).await;
    assert_eq!(s, 504, "{b}");
    assert!(error_of(&b).is_some(), "{b}");

    // A Worker that vanishes mid-task: 502.
    let rb = lb.task(task("sleep", json!({"ms": 60000})));
    let pending = tokio::spawn(send(rb));
    lb.wait_until(
        |h| h["workers"][0]["lbInFlight"] == json!(1),
        "the task runs",
    )
    .await;
    w.shutdown().await;
    let (s, b) = tokio::time::timeout(Duration::from_secs(10), pending)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(s, 502, "{b}");
    assert!(error_of(&b).is_some(), "{b}");
}

// ---- issue #20, items 3, 4 and 7 (bodies, Worker headers, compat statuses) ----

/// `body` as raw bytes with both keys, the Worker key given as `worker_key`.
async fn post_bytes(lb: &Lb, body: Vec<u8>, worker_key: &str) -> (u16, Value) {
    let r = lb
        .http
        .post(lb.url("/task"))
        .header("authorization", LB_KEY)
        .header("x-wr-auth", worker_key)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// #20 item 3: a BOM and `priority: -1` run as in the original (the Worker gets
/// neither; one rate-limited warning); `contract: 0` and an empty `x-wr-auth` are
/// the original's `400`s.
#[tokio::test]
async fn issue20_bodies_the_original_accepted_or_refused() {
    let w = sim(|_| {}).await;
    let lb = Lb::start(&[w.url()], &[]).await;
    lb.wait_available(1).await;
    let plain = r#"{"group":"default","function":"echo","contract":1,"input":{"a":1}}"#;
    let mut bom = b"\xEF\xBB\xBF".to_vec();
    bom.extend_from_slice(plain.as_bytes());
    let (s, b) = post_bytes(&lb, bom, WK_KEY).await;
    assert_eq!(s, 200, "{b}\n{}", lb.log());
    assert_eq!(w.stats().last_body, plain, "the BOM is not forwarded");

    for _ in 0..3 {
        let body = r#"{"group":"default","function":"hello","contract":1,"input":{"name":"A"},"priority":-1}"#;
        let (s, b) = post_bytes(&lb, body.into(), WK_KEY).await;
        assert_eq!(
            (s, &b["result"]["message"]),
            (200, &json!("Hello A!")),
            "{b}"
        );
        let got: Value = serde_json::from_str(&w.stats().last_body).unwrap();
        assert!(got.get("priority").is_none(), "{got}");
    }
    let warned = |log: &str| {
        log.matches("priority -1 read as the default priority 1")
            .count()
    };
    wait_for("the priority warning", Duration::from_secs(5), || {
        warned(&lb.log()) > 0
    })
    .await;
    assert_eq!(warned(&lb.log()), 1, "rate-limited: {}", lb.log());

    let missing = json!({"error": "Missing group, function, or contract", "reason": "bad_request"});
    for contract in ["0", "0.0", "false"] {
        let body = format!(r#"{{"group":"default","function":"hello","contract":{contract}}}"#);
        assert_eq!(
            post_bytes(&lb, body.into(), WK_KEY).await,
            (400, missing.clone()),
            "{contract}"
        );
    }
    let no_key = json!({
        "error": "Missing x-wr-auth header (worker AUTH_KEY) in request",
        "reason": "bad_request",
    });
    let hello = task("hello", json!({})).to_string().into_bytes();
    assert_eq!(post_bytes(&lb, hello, "").await, (400, no_key));
}

/// #20 item 4: the Worker receives the original's headers, not the client's (a
/// `text/plain` client still works); an operator may list more.
#[tokio::test]
async fn issue20_the_worker_receives_the_originals_headers_only() {
    let w = sim(|_| {}).await;
    let send = |lb: &Lb| {
        lb.http
            .post(lb.url("/task"))
            .header("authorization", LB_KEY)
            .header("x-wr-auth", WK_KEY)
            .header("cookie", "session=secret")
            .header("user-agent", "client/1.0")
            .header("x-forwarded-for", "203.0.113.9")
            .header("accept-encoding", "gzip")
            .header("x-custom", "kept?")
            .header(
                "traceparent",
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            )
            .header("content-type", "text/plain")
            .body(task("echo", json!({})).to_string())
            .send()
    };
    let lb = Lb::start(&[w.url()], &[]).await;
    lb.wait_available(1).await;
    let r = send(&lb).await.unwrap();
    assert_eq!(r.status(), 200);
    let id = task_id(&r);
    let echoed: Value = r.json().await.unwrap();
    let seen = &echoed["result"]["headers"];
    for name in [
        "cookie",
        "user-agent",
        "x-forwarded-for",
        "accept-encoding",
        "x-custom",
        "x-wr-auth",
    ] {
        assert!(
            seen.get(name).is_none(),
            "{name} reached the Worker: {seen}"
        );
    }
    assert_eq!(seen["content-type"], "application/json", "{seen}");
    assert_eq!(seen["authorization"], WK_KEY);
    assert_eq!(seen["x-lb-auth"], LB_KEY);
    assert_eq!(seen["x-andera-task-id"], json!(id));
    assert_eq!(
        seen["traceparent"],
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    );

    let listed = Lb::start_with(
        &[w.url()],
        &[],
        "upstream:\n  forward_headers: [X-Custom]\n",
    )
    .await;
    listed.wait_available(1).await;
    let r = send(&listed).await.unwrap();
    assert_eq!(r.status(), 200);
    let echoed: Value = r.json().await.unwrap();
    let seen = &echoed["result"]["headers"];
    assert_eq!(seen["x-custom"], "kept?", "{seen}");
    assert!(seen.get("cookie").is_none(), "{seen}");
    assert_eq!(seen["content-type"], "application/json", "{seen}");
}

/// #20 item 7: honest statuses by default; with `COMPAT_ORIGINAL_STATUS=true` (or
/// `compat.original_status_codes`) the balancer's own 503/504 are the original's
/// `500 {"error":"Task timed out"}`, and what the Worker answered is unchanged.
#[tokio::test]
async fn issue20_original_status_codes_only_when_asked() {
    let w = sim(|_| {}).await;
    let env = [("TASK_TIMEOUT", "1500")];
    let honest = Lb::start(&[w.url()], &env).await;
    let by_env = Lb::start(
        &[w.url()],
        &[("TASK_TIMEOUT", "1500"), ("COMPAT_ORIGINAL_STATUS", "true")],
    )
    .await;
    let by_yaml =
        Lb::start_with(&[w.url()], &env, "compat:\n  original_status_codes: true\n").await;
    let mut unknown = task("hello", json!({}));
    unknown["group"] = json!("no-such-group");
    let slow = task("sleep", json!({"ms": 5000}));
    let failing = task("fail", json!({"message": "boom"}));
    let wrong_key = |lb: &Lb| {
        lb.http
            .post(lb.url("/task"))
            .header("authorization", LB_KEY)
            .header("x-wr-auth", "not-the-worker-key")
            .json(&task("hello", json!({})))
            .send()
    };

    honest.wait_available(1).await;
    let (s, b) = honest.run(unknown.clone()).await;
    assert_eq!(s, 503, "{b}");
    assert!(b["error"].as_str().unwrap().starts_with("No Worker"), "{b}");
    let (s, b) = honest.run(slow.clone()).await;
    assert_eq!(
        (s, &b["error"]),
        (504, &json!("Task timed out waiting for the Worker"))
    );
    let (s, b) = honest.run(failing.clone()).await;
    assert_eq!((s, &b), (500, &json!({"success": false, "error": "boom"})));
    assert_eq!(wrong_key(&honest).await.unwrap().status(), 401);

    for lb in [&by_env, &by_yaml] {
        lb.wait_available(1).await;
        let (s, b) = lb.run(unknown.clone()).await;
        assert_eq!((s, &b["error"]), (500, &json!("Task timed out")), "{b}");
        assert!(
            b["reason"].as_str().unwrap().starts_with("No Worker"),
            "{b}"
        );
        let (s, b) = lb.run(slow.clone()).await;
        assert_eq!((s, &b["error"]), (500, &json!("Task timed out")), "{b}");
        // The Worker's own answers are relayed as they were.
        let (s, b) = lb.run(failing.clone()).await;
        assert_eq!((s, &b), (500, &json!({"success": false, "error": "boom"})));
        assert_eq!(wrong_key(lb).await.unwrap().status(), 401);
    }
}

/// Issue #20 item 2: Express matched `/task` case-insensitively and ignored one
/// trailing slash, and answered `OPTIONS /task` with the methods it allows.
#[tokio::test]
async fn task_paths_match_as_express_matched_them_and_options_lists_the_methods() {
    let w = sim(|_| {}).await;
    let lb = Lb::start(&[w.url()], &[]).await;
    lb.wait_available(1).await;
    let body = task("hello", json!({"name": "Path"}));
    for path in ["/task/", "/TASK", "/Task/"] {
        let r = lb
            .http
            .post(lb.url(path))
            .header("authorization", LB_KEY)
            .header("x-wr-auth", WK_KEY)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "POST {path}");
        let answer: Value = r.json().await.unwrap();
        assert_eq!(answer["result"]["message"], "Hello Path!", "POST {path}");
    }
    assert_eq!(w.stats().received, 3);
    let r = lb
        .http
        .request(reqwest::Method::OPTIONS, lb.url("/task"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["allow"], "POST, OPTIONS");
}

/// Issue #20 item 5: an operator page asked for on the client port says where it is.
#[tokio::test]
async fn operator_pages_on_the_client_port_name_the_admin_port() {
    let lb = Lb::start(&[], &[]).await;
    for path in ["/dashboard", "/bull", "/metrics"] {
        let r = lb.http.get(lb.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 404, "{path}");
        let answer: Value = r.json().await.unwrap();
        let message = answer["error"].as_str().unwrap();
        assert!(
            message.contains(&lb.admin_port.to_string())
                && message.contains("ADMIN_ON_CLIENT_PORT"),
            "{path}: {message}"
        );
    }
    // Anything else is still a plain 404.
    let r = lb.http.get(lb.url("/nope")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    let answer: Value = r.json().await.unwrap();
    assert_eq!(answer["error"], "Not found");
}

/// Issue #20 item 6: the original kept the connection open after its own 401 and
/// 404, as nginx does; so do we, unless a large body was left unread.
#[tokio::test]
async fn the_connection_stays_open_after_our_own_401_and_404() {
    use common::raw::RawConn;
    let lb = Lb::start(&[], &[]).await;
    let body = task("hello", json!({})).to_string();
    let mut c = RawConn::connect(lb.port).await;
    let requests = [
        (
            format!(
                "POST /task HTTP/1.1\r\nHost: x\r\nAuthorization: wrong\r\nx-wr-auth: {WK_KEY}\r\n\
                 content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            ),
            401,
        ),
        (
            format!(
                "POST /nope HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\n\
                 content-length: {}\r\n\r\n{body}",
                body.len()
            ),
            404,
        ),
        ("GET /nope HTTP/1.1\r\nHost: x\r\n\r\n".to_string(), 404),
        ("GET /health HTTP/1.1\r\nHost: x\r\n\r\n".to_string(), 200),
    ];
    for (request, status) in &requests {
        c.send(request).await;
        let a = c.answer().await;
        assert_eq!(a.status, *status, "{}", a.head);
        assert_eq!(a.header("connection"), Some("keep-alive"), "{}", a.head);
    }
    // A body too large to discard closes the connection after the 401, and the
    // client still reads the answer.
    // More than the socket buffers hold: the client is still writing at the 401.
    let big = "x".repeat(16 << 20);
    let mut c = RawConn::connect(lb.port).await;
    c.send(format!(
        "POST /task HTTP/1.1\r\nHost: x\r\nAuthorization: wrong\r\ncontent-length: {}\r\n\r\n{big}",
        big.len()
    ))
    .await;
    let a = c.answer().await;
    assert_eq!(a.status, 401);
    assert_eq!(a.header("connection"), Some("close"));
}

// ---- issue #20 item 9 (invalid Workers), worker-registry engineer ----

/// Issue #20 item 9: a function that only an invalid Worker (under
/// `invalidWorkers`) exposes gets the same answer every time, derived from the valid
/// Workers alone: `503`, no valid Worker exposes it. The invalid Worker never runs it.
#[tokio::test]
async fn a_function_only_invalid_workers_expose_gets_one_answer() {
    let valid = sim(|_| {}).await;
    let lb = Lb::start(&[valid.url()], &[]).await;
    lb.wait_available(1).await;
    // Listed second, with one function more: its list conflicts, so it is invalid.
    // Added later, so that its polls and feed messages do not arrive in step with
    // the valid Worker's.
    let odd = sim(|c| c.function_set = FunctionSet::Extended).await;
    std::fs::write(
        lb.workers_file(),
        json!([valid.url(), odd.url()]).to_string(),
    )
    .unwrap();
    lb.wait_until(
        |h| {
            h["invalidWorkers"][0]["url"] == json!(odd.url())
                && h["invalidWorkers"][0]["websocket"] == "connected"
                && h["workers"][0]["websocket"] == "connected"
        },
        "the Extended Worker is invalid, both feeds connected",
    )
    .await;
    let mut answers = Vec::new();
    // Spread over a few slot feed messages of both Workers.
    for _ in 0..12 {
        answers.push(lb.run(task("shout", json!({"text": "hi"}))).await);
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    let (status, body) = &answers[0];
    assert_eq!(*status, 503, "{body}");
    assert!(
        body["error"].as_str().is_some_and(|e| e.contains("shout")),
        "{body}"
    );
    assert!(answers.iter().all(|a| a == &answers[0]), "{answers:?}");
    assert_eq!(odd.stats().received, 0);
    assert_eq!(valid.stats().received, 0);
    // Functions the valid Workers expose still run.
    assert_eq!(lb.run(task("hello", json!({}))).await.0, 200);
    assert_eq!(valid.stats().received, 1);
}

/// #20 item 1: keyed `/health` keeps the original's `services` as plain strings
/// (`"redis": "ready"`, `"bullmq": "ready"`); our own components are under
/// `components`, the journal's state among them.
#[tokio::test]
async fn keyed_health_services_are_the_originals_strings_and_components_are_beside_them() {
    let w = sim(|_| {}).await;
    let lb = Lb::start(&[w.url()], &[]).await;
    let h = lb.wait_available(1).await;
    assert_eq!(
        h["services"],
        json!({"redis": "ready", "bullmq": "ready"}),
        "{h}"
    );
    assert_eq!(h["components"]["journal"]["status"], "none", "{h}");
    assert_eq!(h["components"]["queue"]["engine"], "in-process", "{h}");
    assert!(h["components"]["scheduler"].is_object(), "{h}");
    assert_eq!(h["components"]["discovery"]["workers"], json!(1), "{h}");

    let state = tempfile::tempdir().unwrap();
    let journal = state.path().join("tasks.db");
    let env = [("TASK_JOURNAL", journal.to_str().unwrap())];
    let lb = Lb::start(&[w.url()], &env).await;
    let h = lb
        .wait_until(
            |h| h["components"]["journal"]["status"] == "ok",
            "the journal is open",
        )
        .await;
    assert_eq!(h["services"]["redis"], "ready", "{h}");
    assert_eq!(h["components"]["journal"]["engine"], "sqlite", "{h}");
    assert_eq!(
        h["components"]["journal"]["location"],
        json!(journal.to_str().unwrap())
    );
}

/// #20 item 8: a webhook task that cannot run (a group or function no Worker has,
/// or a group whose only Worker is gone) is `503` at once with its reason, where the
/// original answered `200 accepted` and dropped it: nothing is journaled, nothing
/// reaches a Worker, and the client knows to retry elsewhere.
#[tokio::test]
async fn a_webhook_task_that_cannot_run_is_503_at_once_and_never_journaled() {
    let w = sim(|_| {}).await;
    let state = tempfile::tempdir().unwrap();
    let journal = state.path().join("tasks.db");
    let lb = Lb::start(&[w.url()], &[("TASK_JOURNAL", journal.to_str().unwrap())]).await;
    lb.wait_available(1).await;
    let webhook = |mut body: Value| {
        body["mode"] = json!("webhook");
        body["webhook"] = json!({"url": "http://127.0.0.1:9/hook"});
        body
    };
    let mut unknown_group = task("hello", json!({}));
    unknown_group["group"] = json!("nobody-runs-this");
    let cases = [
        ("an unknown group", webhook(unknown_group)),
        (
            "an unknown function",
            webhook(task("no-such-function", json!({}))),
        ),
    ];
    for (what, body) in &cases {
        let (status, answer) = lb.run(body.clone()).await;
        assert_eq!(status, 503, "{what}: {answer}");
        assert!(answer["error"].is_string(), "{what}: {answer}");
        assert_eq!(answer["reason"], "no_worker", "{what}: {answer}");
    }
    w.shutdown().await;
    lb.wait_available(0).await;
    let (status, answer) = lb.run(webhook(task("hello", json!({})))).await;
    assert_eq!(status, 503, "no usable Worker: {answer}");
    assert_eq!(answer["reason"], "no_worker", "{answer}");

    let metrics = lb.scrape().await;
    let kept = metric(&metrics, "andera_lb_journal_tasks");
    assert_eq!(kept, Some(0.0), "nothing journaled");
}
