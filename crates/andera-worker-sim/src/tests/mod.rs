//! Tests of the simulated Worker over real sockets.

mod faults;
mod tls;
mod ws;

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::{fnv1a64_hex, SimConfig, SimStatsSnapshot, SimWorker};

pub(super) const LB: &str = "lb-secret";
pub(super) const WK: &str = "wk-secret";
pub(super) fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client")
}

pub(super) async fn start(slots: usize) -> SimWorker {
    let mut cfg = SimConfig::new(LB, WK);
    cfg.slots = slots;
    cfg.tags.insert("region".into(), "eu".into());
    cfg.services.push(("db".into(), "up".into()));
    SimWorker::start(cfg).await.expect("start")
}

async fn post_task(w: &SimWorker, body: &Value) -> reqwest::Response {
    client()
        .post(format!("{}/task", w.url()))
        .header("x-lb-auth", LB)
        .header("authorization", format!("Bearer {WK}"))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .expect("send")
}

async fn json_of(resp: reqwest::Response) -> (u16, Value) {
    let status = resp.status().as_u16();
    let text = resp.text().await.expect("body");
    (status, serde_json::from_str(&text).expect("json"))
}

#[tokio::test]
async fn health_with_and_without_key() {
    let w = start(4).await;
    let c = client();
    let anon: Value = serde_json::from_str(
        &c.get(format!("{}/health", w.url()))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(anon, json!({"status": "ready"}));
    let resp = c
        .get(format!("{}/health", w.url()))
        .header("x-lb-auth", format!("Bearer {LB}"))
        .send()
        .await
        .unwrap();
    let (status, full) = json_of(resp).await;
    assert_eq!(status, 200);
    assert_eq!(full["group"], "default");
    assert_eq!(full["contract"], 1);
    assert_eq!(full["websocketPort"], w.ws_addr().unwrap().port());
    assert_eq!(
        full["slots"],
        json!({"used":0,"available":4,"limit":4,"queue":0})
    );
    assert_eq!(full["tags"], json!({"region": "eu"}));
    assert_eq!(full["services"], json!([{"name":"db","state":"up"}]));
    assert_eq!(full["functions"][0]["name"], "hello");
    assert_eq!(full["functions"][0]["params"]["name"]["default"], "World");
    let logs = c
        .get(format!("{}/logs", w.url()))
        .header("x-lb-auth", "nope")
        .send()
        .await
        .unwrap();
    assert_eq!(logs.status().as_u16(), 401);
    w.shutdown().await;
}

#[tokio::test]
async fn hello_sync_stream_and_errors() {
    let w = start(4).await;
    let (s, v) = json_of(
        post_task(
            &w,
            &json!({"function":"hello","contract":1,"input":{"name":"Andera"}}),
        )
        .await,
    )
    .await;
    assert_eq!(
        (s, v),
        (
            200,
            json!({"success":true,"result":{"message":"Hello Andera!"}})
        )
    );

    let mut resp = post_task(
        &w,
        &json!({"function":"hello","contract":1,"mode":"stream","input":{"name":"X"}}),
    )
    .await;
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(resp.headers()["content-type"], "text/plain; charset=utf-8");
    let first = resp.chunk().await.unwrap().unwrap();
    assert_eq!(&first[..], b"Hello ");
    let t = Instant::now();
    let second = resp.chunk().await.unwrap().unwrap();
    assert_eq!(&second[..], b"X!");
    assert!(t.elapsed() >= Duration::from_millis(30));
    assert!(resp.chunk().await.unwrap().is_none());

    // Protocol §5: the checks before the slot answer `{"error"}` with their own
    // status; the input is checked once the task holds a slot, as a failed function.
    let error = |status: u16, msg: &str| (status, json!({"error": msg}));
    let failed = |msg: &str| (500, json!({"success": false, "error": msg}));
    let cases = [
        (
            json!({"function":"hello","contract":2}),
            error(400, "Contract version mismatch: requested 2, worker is 1"),
        ),
        (
            json!({"function":"hello","contract":0}),
            error(400, "Missing or invalid contract"),
        ),
        (
            json!({"function":"hello","contract":"1"}),
            error(400, "Missing or invalid contract"),
        ),
        (
            json!({"function":"hello","contract":1,"priority":0}),
            error(400, "Invalid priority: must be between 1 and 2097152"),
        ),
        // The real Worker refuses `priority: null` (the LB never forwards priority).
        (
            json!({"function":"hello","contract":1,"priority":null}),
            error(400, "Invalid priority: must be between 1 and 2097152"),
        ),
        (
            json!({"function":"hello","contract":1,"priority":2097153}),
            error(400, "Invalid priority: must be between 1 and 2097152"),
        ),
        (
            json!({"function":"","contract":1}),
            error(400, "Missing or invalid function name"),
        ),
        (
            json!({"function":"hello","contract":1,"mode":"carrier-pigeon"}),
            error(400, "Invalid mode"),
        ),
        (
            json!({"function":"hello","contract":1,"input":"x"}),
            error(400, "Invalid input: must be an object"),
        ),
        (
            json!({"function":"nope","contract":1}),
            error(404, "Function 'nope' not found"),
        ),
        (
            json!({"function":"sleep","contract":1,"mode":"stream","input":{"ms":1}}),
            error(400, "Function 'sleep' does not support streaming"),
        ),
        (
            json!({"function":"hello","contract":1,"input":{"bogus":1}}),
            failed("Unexpected param: bogus"),
        ),
        (
            json!({"function":"hello","contract":1,"input":{"name":5}}),
            failed("Invalid type for param: name, expected string"),
        ),
        (
            json!({"function":"sleep","contract":1}),
            failed("Missing required param: ms"),
        ),
        (
            json!({"function":"fail","contract":1,"input":{"message":"bad"}}),
            failed("bad"),
        ),
        (
            json!([1, 2]),
            error(400, "Missing or invalid function name"),
        ),
        (json!(5), error(500, "Internal server error")),
    ];
    for (body, want) in cases {
        let got = json_of(post_task(&w, &body).await).await;
        assert_eq!(got, want, "{body}");
    }
    // `priority` as JavaScript's Number() reads it: "5", true and 1.5 are accepted.
    for p in [json!("5"), json!(true), json!(1.5)] {
        let body = json!({"function":"hello","contract":1,"priority":p});
        let (status, v) = json_of(post_task(&w, &body).await).await;
        assert_eq!(status, 200, "{body} -> {v}");
    }
    let bad_key = client()
        .post(format!("{}/task", w.url()))
        .header("x-lb-auth", LB)
        .header("authorization", "wrong")
        .body(json!({"function":"hello","contract":1}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(
        json_of(bad_key).await,
        (401, json!({"error":"Unauthorized"}))
    );
    w.set_status("maintenance");
    let (s, v) = json_of(post_task(&w, &json!({"function":"hello","contract":1})).await).await;
    assert_eq!(
        (s, v),
        (503, json!({"error":"Worker is in maintenance mode"}))
    );
    let stats = w.stats();
    // hello, its stream, the four whose input is checked after the slot, and the
    // three priorities.
    assert_eq!(stats.received, 9);
    assert_eq!(stats.requests, 24);
    w.shutdown().await;
}

#[tokio::test]
async fn echo_and_stats_endpoint() {
    let w = start(4).await;
    let body = json!({"function":"echo","contract":1,"input":{"anything":[1,2],"label":"e1"},"extra":true});
    let raw = body.to_string();
    let (s, v) = json_of(post_task(&w, &body).await).await;
    assert_eq!(s, 200);
    assert_eq!(v["result"]["bodyLen"], raw.len());
    assert_eq!(v["result"]["bodyFnv64"], fnv1a64_hex(raw.as_bytes()));
    assert_eq!(v["result"]["headers"]["x-lb-auth"], LB);
    let text = client()
        .get(format!("{}/sim/stats", w.url()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let stats: SimStatsSnapshot = serde_json::from_str(&text).unwrap();
    assert_eq!(stats.order, vec!["e1".to_string()]);
    assert_eq!(stats.last_body_len, raw.len() as u64);
    assert_eq!(stats.last_body_fnv64, fnv1a64_hex(raw.as_bytes()));
    assert_eq!(stats.last_headers["content-type"], "application/json");
    assert_eq!(stats.completed, 1);
    assert!(text.contains("\"maxRunning\""));
    w.shutdown().await;
}

#[tokio::test]
async fn slot_limit_queues_inside_the_worker() {
    let w = start(2).await;
    let t = Instant::now();
    let calls = (0..4).map(|i| {
        let w = &w;
        async move {
            let body =
                json!({"function":"sleep","contract":1,"input":{"ms":200,"label":format!("s{i}")}});
            json_of(post_task(w, &body).await).await
        }
    });
    for (status, v) in futures_util::future::join_all(calls).await {
        assert_eq!(status, 200, "{v}");
        assert_eq!(v["result"]["slept"], 200);
    }
    assert!(t.elapsed() >= Duration::from_millis(390));
    let stats = w.stats();
    assert_eq!(stats.max_running, 2);
    assert_eq!(stats.max_in_flight, 4);
    assert_eq!((stats.running, stats.in_flight, stats.completed), (0, 0, 4));
    assert_eq!(stats.order.len(), 4);
    w.shutdown().await;
}

#[tokio::test]
async fn webhook_result_is_posted() {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<(String, String)>(1);
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: axum::http::HeaderMap, body: String| {
            let tx = tx.clone();
            async move {
                let h = |name: &str| {
                    headers
                        .get(name)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_string()
                };
                let seen = format!("{} {}", h("x-token"), h("user-agent"));
                let _ = tx.send((seen, body)).await;
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook = format!("http://{}/hook", listener.local_addr().unwrap());
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let w = start(1).await;
    let body = json!({"function":"hello","contract":1,"mode":"webhook",
        "webhook":{"url":hook,"headers":{"x-token":"t1"}},"input":{"name":"Hook"}});
    let (s, v) = json_of(post_task(&w, &body).await).await;
    assert_eq!(s, 200);
    assert_eq!(
        v["message"],
        "Task accepted, result will be sent to webhook"
    );
    let (token, posted) = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        token, "t1 Andera",
        "the task's header and the real Worker's User-Agent"
    );
    // The real Worker (worker-core 0.1.3) posts the bare function result.
    let posted: Value = serde_json::from_str(&posted).unwrap();
    assert_eq!(posted, json!({"message":"Hello Hook!"}));
    let (s, _) = json_of(
        post_task(
            &w,
            &json!({"function":"hello","contract":1,"mode":"webhook"}),
        )
        .await,
    )
    .await;
    assert_eq!(s, 400);
    w.shutdown().await;
    server.abort();
}

#[tokio::test]
async fn shutdown_cuts_in_flight_tasks() {
    let w = start(1).await;
    let url = w.url();
    let pending = tokio::spawn(async move {
        client()
            .post(format!("{url}/task"))
            .header("x-lb-auth", LB)
            .header("authorization", WK)
            .header("content-type", "application/json")
            .body(json!({"function":"sleep","contract":1,"input":{"ms":10000}}).to_string())
            .send()
            .await
    });
    while w.stats().running == 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let url = w.url();
    let t = Instant::now();
    w.shutdown().await;
    let result = tokio::time::timeout(Duration::from_secs(2), pending)
        .await
        .expect("the request must fail promptly")
        .unwrap();
    assert!(result.is_err(), "{result:?}");
    assert!(t.elapsed() < Duration::from_secs(2));
    assert!(client().get(format!("{url}/health")).send().await.is_err());
}

#[tokio::test]
async fn abandoned_request_leaves_the_queue() {
    let w = start(1).await;
    let busy_body = json!({"function":"sleep","contract":1,"input":{"ms":600}});
    let busy = post_task(&w, &busy_body);
    let waiting = async {
        while w.stats().running == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let c = client();
        let req = c
            .post(format!("{}/task", w.url()))
            .header("x-lb-auth", LB)
            .header("authorization", WK)
            .header("content-type", "application/json")
            .timeout(Duration::from_millis(150))
            .body(json!({"function":"hello","contract":1}).to_string());
        let result = req.send().await;
        assert!(result.is_err(), "the queued request must time out");
        tokio::time::sleep(Duration::from_millis(100)).await;
        let stats = w.stats();
        assert_eq!((stats.running, stats.queued), (1, 0), "{stats:?}");
    };
    let (resp, ()) = tokio::join!(busy, waiting);
    assert_eq!(resp.status().as_u16(), 200);
    let stats = w.stats();
    assert_eq!((stats.completed, stats.max_in_flight), (1, 2));
    w.shutdown().await;
}

#[tokio::test]
async fn the_input_is_checked_only_once_the_task_holds_a_slot() {
    let w = start(1).await;
    let sleep = json!({"function":"sleep","contract":1,"input":{"ms":400}});
    let unexpected = json!({"function":"hello","contract":1,"input":{"x":1}});
    let busy = post_task(&w, &sleep);
    let bad = async {
        while w.stats().running == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let answer = post_task(&w, &unexpected);
        let watch = async {
            // Protocol §5: it waits in the Worker's queue like any task.
            while w.stats().queued == 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        };
        let (resp, ()) = tokio::join!(answer, watch);
        json_of(resp).await
    };
    let (_, got) = tokio::join!(busy, bad);
    assert_eq!(
        got,
        (500, json!({"success":false,"error":"Unexpected param: x"}))
    );
    w.shutdown().await;
}

#[tokio::test]
async fn alternate_function_set_differs() {
    let mut cfg = SimConfig::new(LB, WK);
    cfg.function_set = super::FunctionSet::Alternate;
    let w = SimWorker::start(cfg).await.expect("start");
    let body = json!({"function":"hello","contract":1,"input":{"greeting":"Hi","name":"A"}});
    let (s, v) = json_of(post_task(&w, &body).await).await;
    assert_eq!(
        (s, v),
        (200, json!({"success":true,"result":{"message":"Hi A!"}}))
    );
    let std = start(1).await;
    let got = json_of(post_task(&std, &body).await).await;
    assert_eq!(
        got,
        (
            500,
            json!({"success":false,"error":"Unexpected param: greeting"})
        )
    );
    w.shutdown().await;
    std.shutdown().await;
}

#[tokio::test]
async fn extended_function_set_adds_shout() {
    let mut cfg = SimConfig::new(LB, WK);
    cfg.function_set = super::FunctionSet::Extended;
    let w = SimWorker::start(cfg).await.expect("start");
    let body = json!({"function":"shout","contract":1,"input":{"text":"hi"}});
    let (s, v) = json_of(post_task(&w, &body).await).await;
    assert_eq!(
        (s, v),
        (200, json!({"success":true,"result":{"message":"HI"}}))
    );
    let std = start(1).await;
    let (s, _) = json_of(post_task(&std, &body).await).await;
    assert_eq!(s, 404);
    w.shutdown().await;
    std.shutdown().await;
}
