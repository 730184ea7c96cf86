//! `POST /task` end to end: the real binary, real simulated Workers, real sockets.

mod common;

use std::time::{Duration, Instant};

use andera_worker_sim::fnv1a64_hex;
use common::*;
use serde_json::{json, Value};

#[tokio::test]
async fn hello_andera_through_the_load_balancer() {
    let w = sim(|_| {}).await;
    let lb = Lb::start(&[w.url()], &[]).await;
    lb.wait_available(1).await;
    let r = lb
        .task(task("hello", json!({"name": "Andera"})))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers().get("x-andera-task-id").is_some());
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .contains("json"));
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        body,
        json!({"success": true, "result": {"message": "Hello Andera!"}})
    );
    // Bearer and x-lb-auth forms are accepted too.
    let r = lb
        .http
        .post(lb.url("/task"))
        .header("x-lb-auth", format!("Bearer {LB_KEY}"))
        .header("x-wr-auth", format!("Bearer {WK_KEY}"))
        .json(&task("hello", json!({})))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // A function error is the Worker's own 500.
    let (s, b) = lb.run(task("fail", json!({"message": "nope"}))).await;
    assert_eq!(
        (s, b["success"].clone(), b["error"].clone()),
        (500, json!(false), json!("nope"))
    );
}

#[tokio::test]
async fn client_errors_get_json_with_the_right_status() {
    let w = sim(|_| {}).await;
    let lb = Lb::start(&[w.url()], &[("REQUEST_BODY_LIMIT", "1kb")]).await;
    lb.wait_available(1).await;
    let post = |key: Option<&str>| {
        let mut r = lb.http.post(lb.url("/task")).header("x-wr-auth", WK_KEY);
        if let Some(k) = key {
            r = r.header("authorization", k);
        }
        r
    };
    let expect = |s: u16, b: Value, status: u16, msg: &str| {
        assert_eq!(s, status, "{b}");
        assert!(
            b["error"].as_str().unwrap_or("").contains(msg),
            "{b} should mention {msg}"
        );
    };
    let send = |rb: reqwest::RequestBuilder| async move {
        let r = rb.send().await.unwrap();
        let s = r.status().as_u16();
        assert!(r.headers()["content-type"]
            .to_str()
            .unwrap()
            .contains("application/json"));
        (s, r.json::<Value>().await.unwrap())
    };
    let (s, b) = send(post(None).json(&task("hello", json!({})))).await;
    expect(s, b, 401, "Unauthorized");
    let (s, b) = send(post(Some("wrong")).json(&task("hello", json!({})))).await;
    expect(s, b, 401, "Unauthorized");
    let (s, b) = send(post(Some(LB_KEY)).json(&json!({"group": "default"}))).await;
    expect(s, b, 400, "Missing group, function, or contract");
    let (s, b) = send(
        post(Some(LB_KEY))
            .header("content-type", "application/json")
            .body("{not json"),
    )
    .await;
    expect(s, b, 400, "Invalid JSON");
    let (s, b) = send(post(Some(LB_KEY)).json(&json!([1, 2]))).await;
    expect(s, b, 400, "JSON object");
    let mut bad_priority = task("hello", json!({}));
    bad_priority["priority"] = json!(1.5);
    let (s, b) = send(post(Some(LB_KEY)).json(&bad_priority)).await;
    expect(s, b, 400, "priority");
    let mut no_hook = task("hello", json!({}));
    no_hook["mode"] = json!("webhook");
    let (s, b) = send(post(Some(LB_KEY)).json(&no_hook)).await;
    expect(s, b, 400, "Missing or invalid webhook.url for mode webhook");
    let no_wr = lb
        .http
        .post(lb.url("/task"))
        .header("authorization", LB_KEY)
        .json(&task("hello", json!({})));
    let (s, b) = send(no_wr).await;
    expect(
        s,
        b,
        400,
        "Missing x-wr-auth header (worker AUTH_KEY) in request",
    );
    let big = task("echo", json!({"pad": "x".repeat(2048)}));
    let (s, b) = send(post(Some(LB_KEY)).json(&big)).await;
    expect(s, b, 413, "too large");
    // Unknown group, contract or function: 503 at once, not after a timeout.
    let start = Instant::now();
    for body in [
        json!({"group": "nobody", "function": "hello", "contract": 1}),
        json!({"group": "default", "function": "hello", "contract": 9}),
        json!({"group": "default", "function": "nothing", "contract": 1}),
    ] {
        let (s, b) = send(post(Some(LB_KEY)).json(&body)).await;
        expect(s, b, 503, "No Worker");
    }
    assert!(start.elapsed() < Duration::from_secs(5));
    // Nothing reached the Worker.
    assert_eq!(w.stats().requests, 0);
}

#[tokio::test]
async fn headers_are_rewritten_and_a_5mb_body_arrives_intact() {
    let w = sim(|_| {}).await;
    // Only listed client headers reach a Worker (#20 item 4).
    let lb = Lb::start_with(
        &[w.url()],
        &[],
        "upstream:\n  forward_headers: [x-custom]\n",
    )
    .await;
    lb.wait_available(1).await;
    let pad: String = (0..5 * 1024 * 1024)
        .map(|i| (b'a' + (i % 26) as u8) as char)
        .collect();
    let body = serde_json::to_vec(&json!({
        "group": "default", "function": "echo", "contract": 1,
        "input": {"pad": pad}, "extra": {"kept": true}
    }))
    .unwrap();
    let r = lb
        .http
        .post(lb.url("/task"))
        .header("authorization", format!("Bearer {LB_KEY}"))
        .header("x-wr-auth", WK_KEY)
        .header("content-type", "application/json")
        .header("x-custom", "kept")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let result: Value = r.json().await.unwrap();
    let stats = w.stats();
    assert_eq!(stats.last_body_len, body.len() as u64);
    assert_eq!(stats.last_body_fnv64, fnv1a64_hex(&body));
    assert_eq!(result["result"]["bodyFnv64"], json!(fnv1a64_hex(&body)));
    let h = &stats.last_headers;
    assert_eq!(h.get("authorization").map(String::as_str), Some(WK_KEY));
    assert_eq!(h.get("x-lb-auth").map(String::as_str), Some(LB_KEY));
    assert_eq!(
        h.get("content-type").map(String::as_str),
        Some("application/json")
    );
    assert_eq!(h.get("x-custom").map(String::as_str), Some("kept"));
    assert!(!h.contains_key("x-wr-auth"), "{h:?}");
    assert!(
        h.values().all(|v| !v.contains(&format!("Bearer {LB_KEY}"))),
        "{h:?}"
    );
}

#[tokio::test]
async fn queued_tasks_run_by_priority_then_arrival() {
    let w = sim(|c| c.slots = 1).await;
    let lb = Lb::start(&[w.url()], &[]).await;
    lb.wait_available(1).await;
    // The blocker holds the only slot until every other task is queued: no timing window.
    w.set_task_fault(andera_worker_sim::TaskFault::Hold);
    let blocker = {
        let rb = lb.task(task("hello", json!({"label": "blocker"})));
        tokio::spawn(async move { rb.send().await.unwrap().status().as_u16() })
    };
    lb.wait_until(
        |h| h["workers"][0]["lbInFlight"] == json!(1),
        "the blocker runs",
    )
    .await;
    let plan = [
        (5, "p5-a"),
        (5, "p5-b"),
        (1, "p1-a"),
        (3, "p3-a"),
        (1, "p1-b"),
        (2097152, "last"),
    ];
    let mut handles = Vec::new();
    for (i, (priority, label)) in plan.iter().enumerate() {
        let mut body = task("hello", json!({"label": label}));
        body["priority"] = json!(priority);
        let rb = lb.task(body);
        handles.push(tokio::spawn(async move {
            rb.send().await.unwrap().status().as_u16()
        }));
        lb.wait_queued(i as u64 + 1).await;
    }
    w.set_task_fault(andera_worker_sim::TaskFault::None);
    assert_eq!(blocker.await.unwrap(), 200);
    for h in handles {
        assert_eq!(h.await.unwrap(), 200);
    }
    assert_eq!(
        w.stats().order,
        ["blocker", "p1-a", "p1-b", "p3-a", "p5-a", "p5-b", "last"]
    );
}

#[tokio::test]
async fn no_worker_ever_gets_more_tasks_than_its_slots() {
    let a = sim(|c| c.slots = 2).await;
    let b = sim(|c| c.slots = 3).await;
    let lb = Lb::start(&[a.url(), b.url()], &[]).await;
    lb.wait_available(2).await;
    let mut handles = Vec::new();
    for i in 0..40 {
        let rb = lb.task(task("sleep", json!({"ms": 20 + (i % 5) * 10})));
        handles.push(tokio::spawn(async move {
            rb.send().await.unwrap().status().as_u16()
        }));
    }
    for h in handles {
        assert_eq!(h.await.unwrap(), 200);
    }
    let (sa, sb) = (a.stats(), b.stats());
    assert_eq!(sa.completed + sb.completed, 40);
    // in_flight counts tasks queued inside the Worker: it only exceeds the slots if overfilled.
    assert!(
        sa.max_in_flight <= 2,
        "worker a saw {} at once",
        sa.max_in_flight
    );
    assert!(
        sb.max_in_flight <= 3,
        "worker b saw {} at once",
        sb.max_in_flight
    );
    assert!(
        sa.max_in_flight == 2 && sb.max_in_flight == 3,
        "both were used to their limit"
    );
    let h = lb
        .wait_until(
            |h| {
                h["workers"][0]["lbInFlight"] == json!(0)
                    && h["workers"][1]["lbInFlight"] == json!(0)
            },
            "slots are back",
        )
        .await;
    assert_eq!(h["queue"]["depth"], json!(0));
}

#[tokio::test]
async fn a_worker_killed_mid_task_gives_502_within_a_second() {
    let w = sim(|_| {}).await;
    let lb = Lb::start(&[w.url()], &[]).await;
    lb.wait_available(1).await;
    let rb = lb.task(task("sleep", json!({"ms": 30000})));
    let pending = tokio::spawn(async move {
        let r = rb.send().await.unwrap();
        let s = r.status().as_u16();
        (s, r.json::<Value>().await.unwrap(), Instant::now())
    });
    lb.wait_until(
        |h| h["workers"][0]["lbInFlight"] == json!(1),
        "the task runs",
    )
    .await;
    let killed = Instant::now();
    w.shutdown().await;
    let (s, b, at) = pending.await.unwrap();
    assert_eq!(s, 502, "{b}");
    assert!(
        b["error"].as_str().unwrap().contains("Worker failed"),
        "{b}"
    );
    assert!(at.duration_since(killed) < Duration::from_secs(1));
}

#[tokio::test]
async fn a_task_waiting_past_task_timeout_gets_504() {
    let w = sim(|c| c.slots = 1).await;
    let lb = Lb::start(&[w.url()], &[("TASK_TIMEOUT", "700")]).await;
    lb.wait_available(1).await;
    // Someone else (not this load balancer) takes the Worker's only slot.
    let direct = reqwest::Client::new()
        .post(format!("{}/task", w.url()))
        .header("x-lb-auth", LB_KEY)
        .header("authorization", WK_KEY)
        .json(&task("sleep", json!({"ms": 2500})));
    let outsider = tokio::spawn(async move { direct.send().await.unwrap().status().as_u16() });
    lb.wait_until(
        |h| h["workers"][0]["slots"]["used"] == json!(1),
        "the Worker reports its slot used",
    )
    .await;
    let start = Instant::now();
    let (s, b) = lb.run(task("hello", json!({}))).await;
    assert_eq!(s, 504, "{b}");
    assert!(
        b["error"]
            .as_str()
            .unwrap()
            .contains("waiting for a free Worker slot"),
        "{b}"
    );
    assert!(start.elapsed() >= Duration::from_millis(650));
    lb.wait_queued(0).await;
    assert_eq!(outsider.await.unwrap(), 200);
    // Once the slot is free again, tasks flow.
    lb.wait_until(
        |h| h["workers"][0]["slots"]["used"] == json!(0),
        "the slot is free",
    )
    .await;
    assert_eq!(lb.run(task("hello", json!({}))).await.0, 200);
}

#[tokio::test]
async fn a_full_queue_answers_503_with_retry_after() {
    let w = sim(|c| c.slots = 1).await;
    let lb = Lb::start(&[w.url()], &[("MAX_QUEUED_TASKS", "1")]).await;
    lb.wait_available(1).await;
    let rb = lb.task(task("sleep", json!({"ms": 1500})));
    let blocker = tokio::spawn(async move { rb.send().await.unwrap().status().as_u16() });
    lb.wait_until(
        |h| h["workers"][0]["lbInFlight"] == json!(1),
        "the blocker runs",
    )
    .await;
    let rb = lb.task(task("hello", json!({})));
    let queued = tokio::spawn(async move { rb.send().await.unwrap().status().as_u16() });
    lb.wait_queued(1).await;
    let r = lb.task(task("hello", json!({}))).send().await.unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "1");
    assert_eq!(blocker.await.unwrap(), 200);
    assert_eq!(queued.await.unwrap(), 200);
}

#[tokio::test]
async fn a_client_that_leaves_the_queue_frees_its_place_and_no_slot_leaks() {
    let w = sim(|c| c.slots = 1).await;
    let lb = Lb::start(&[w.url()], &[]).await;
    lb.wait_available(1).await;
    let rb = lb.task(task("sleep", json!({"ms": 3000})));
    let blocker = tokio::spawn(async move { rb.send().await.unwrap().status().as_u16() });
    lb.wait_until(
        |h| h["workers"][0]["lbInFlight"] == json!(1),
        "the blocker runs",
    )
    .await;
    let rb = lb.task(task("hello", json!({"label": "gone"})));
    let leaver = tokio::spawn(async move { rb.send().await });
    lb.wait_queued(1).await;
    leaver.abort(); // drops the connection
    lb.wait_queued(0).await;
    // Ordered by events, not by the clock: the blocker still holds the only slot.
    assert!(
        !blocker.is_finished(),
        "left the queue before the slot freed"
    );
    assert_eq!(blocker.await.unwrap(), 200);
    let (s, _) = lb.run(task("hello", json!({"label": "after"}))).await;
    assert_eq!(s, 200);
    assert_eq!(w.stats().order, ["after"]);
    lb.wait_until(
        |h| h["workers"][0]["lbInFlight"] == json!(0),
        "every slot is back",
    )
    .await;
}

#[tokio::test]
async fn stream_chunks_reach_the_client_before_the_task_ends() {
    let w = sim(|_| {}).await;
    let lb = Lb::start(&[w.url()], &[]).await;
    lb.wait_available(1).await;
    let mut body = task("ticker", json!({"count": 5, "intervalMs": 300}));
    body["mode"] = json!("stream");
    let start = Instant::now();
    let mut r = lb.task(body).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    let mut arrivals = Vec::new();
    let mut text = String::new();
    while let Some(chunk) = r.chunk().await.unwrap() {
        arrivals.push(start.elapsed());
        text.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    assert_eq!(text.lines().count(), 5, "{text:?}");
    let total = *arrivals.last().unwrap();
    // The first tick arrives while four more are still 300 ms apart in the future.
    assert!(
        arrivals[0] + Duration::from_millis(600) < total,
        "{arrivals:?}"
    );
}

#[tokio::test]
async fn webhook_tasks_are_accepted_at_once_and_run_in_the_background() {
    let hook = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook_url = format!("http://{}/done", hook.local_addr().unwrap());
    let w = sim(|_| {}).await;
    let lb = Lb::start(&[w.url()], &[]).await;
    lb.wait_available(1).await;
    // The task takes 2 s on the Worker, so an answer before that is "at once".
    let mut body = task("hello", json!({"name": "Hook", "sleepMs": 2000}));
    body["mode"] = json!("webhook");
    body["webhook"] = json!({"url": hook_url});
    let start = Instant::now();
    let (s, b) = lb.run(body).await;
    assert_eq!(
        (s, b.clone()),
        (
            200,
            json!({"success": true, "message": "Task accepted, result will be sent to webhook"})
        )
    );
    assert!(start.elapsed() < Duration::from_millis(2000));
    let received = tokio::time::timeout(Duration::from_secs(10), async {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut sock, _) = hook.accept().await.unwrap();
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        while !String::from_utf8_lossy(&buf).contains("Hello Hook!") {
            let n = sock.read(&mut chunk).await.unwrap();
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        let _ = sock
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
            .await;
        String::from_utf8_lossy(&buf).to_string()
    })
    .await
    .expect("the webhook is called");
    assert!(received.contains("Hello Hook!"), "{received}");
}

#[tokio::test]
async fn expect_100_continue_is_answered_so_large_bodies_are_not_delayed() {
    let w = sim(|_| {}).await;
    let lb = Lb::start(&[w.url()], &[]).await;
    lb.wait_available(1).await;
    let body = serde_json::to_vec(&task("echo", json!({"pad": "y".repeat(100_000)}))).unwrap();
    let mut conn = common::raw::RawConn::connect(lb.port).await;
    let head = format!(
        "POST /task HTTP/1.1\r\nHost: lb\r\nAuthorization: {LB_KEY}\r\nx-wr-auth: {WK_KEY}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nExpect: 100-continue\r\n\r\n",
        body.len()
    );
    conn.send(head).await;
    // The body is sent only after the interim answer: an LB that waited for the body
    // first would never answer at all.
    let interim = conn.answer().await;
    assert_eq!(interim.status, 100, "{}", interim.head);
    conn.send(&body).await;
    let answer = conn.answer().await;
    assert_eq!(answer.status, 200, "{}", answer.head);
    assert_eq!(answer.json()["result"]["bodyLen"], body.len());
    assert_eq!(w.stats().last_body_len, body.len() as u64);
}

#[tokio::test]
async fn task_ids_are_unique_across_instances_and_restarts() {
    let w = sim(|_| {}).await;
    // Two instances started in the same second, and one restarted: a start-time
    // plus counter id would repeat here; a UUIDv7 does not.
    let ids_of = |lb: &Lb| {
        let req = lb.task(task("hello", json!({})));
        async move {
            let r = req.send().await.unwrap();
            assert_eq!(r.status(), 200);
            r.headers()["x-andera-task-id"]
                .to_str()
                .unwrap()
                .to_string()
        }
    };
    let mut ids = Vec::new();
    let workers = [w.url()];
    for _round in 0..2 {
        let (a, b) = tokio::join!(Lb::start(&workers, &[]), Lb::start(&workers, &[]));
        a.wait_available(1).await;
        b.wait_available(1).await;
        for lb in [&a, &b] {
            for _ in 0..3 {
                ids.push(ids_of(lb).await);
            }
        }
    }
    for id in &ids {
        let parsed = uuid::Uuid::parse_str(id).unwrap_or_else(|e| panic!("{id}: {e}"));
        assert_eq!(parsed.get_version_num(), 7, "{id}");
    }
    let mut unique = ids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), ids.len(), "{ids:?}");
}
