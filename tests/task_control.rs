//! Task control against the real binary (#23): `GET /task/{id}` and
//! `DELETE /task/{id}` on queued, running and finished tasks, and on another
//! client's; a cancelled queued webhook task not run after `kill -9` and a restart.

mod common;

use std::time::{Duration, Instant};

use common::receiver::Receiver;
use common::redis_server::Redis;
use common::*;
use serde_json::{json, Value};

const CLIENTS: &str = "auth:\n  clients:\n    - name: billing\n      keys: [billing-key]\n    \
                       - name: other\n      keys: [other-key]\n  viewer_keys: [viewer-key]\n";

/// `method url` with `key` in `x-lb-auth`: status, `x-andera-reason` and JSON body.
async fn call(lb: &Lb, method: &str, url: &str, key: &str) -> (u16, String, Value) {
    let r = lb
        .http
        .request(method.parse().unwrap(), url)
        .header("x-lb-auth", key)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let reason = r
        .headers()
        .get("x-andera-reason")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (status, reason, r.json().await.unwrap_or(Value::Null))
}

/// A `POST /task` as `key`'s client.
fn task_as(lb: &Lb, key: &str, body: Value) -> reqwest::RequestBuilder {
    lb.http
        .post(lb.url("/task"))
        .header("authorization", key)
        .header("x-wr-auth", WK_KEY)
        .json(&body)
}

fn labelled(function: &str, label: &str, input: Value) -> Value {
    let mut body = task(function, input);
    body["input"]["label"] = json!(label);
    body
}

/// The id of the one task in `state` on the board (admin port, LB key), waiting for it.
async fn board_id(lb: &Lb, state: &str) -> String {
    let start = Instant::now();
    loop {
        let url = lb.admin_url(&format!("/bull/api/tasks?state={state}"));
        let list = lb.get_json(&url, true).await;
        if let Some(id) = list["tasks"][0]["id"].as_str() {
            return id.to_string();
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no {state} task: {list}\n{}",
            lb.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls `GET /task/{id}` as `key` until its state is `want`.
async fn wait_state(lb: &Lb, id: &str, key: &str, want: &str) -> Value {
    let start = Instant::now();
    loop {
        let (status, _, body) = call(lb, "GET", &lb.url(&format!("/task/{id}")), key).await;
        if status == 200 && body["state"] == want {
            return body;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "task {id} never {want}: {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn wait_running(w: &andera_worker_sim::SimWorker, n: u64) {
    let start = Instant::now();
    while w.stats().running < n {
        assert!(start.elapsed() < Duration::from_secs(10), "never running");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn get_shows_a_clients_own_task_through_its_life_and_nobody_elses() {
    let w = sim(|c| c.slots = 1).await;
    let lb = Lb::start_with(&[w.url()], &[], CLIENTS).await;
    lb.wait_available(1).await;
    let running = tokio::spawn(
        task_as(
            &lb,
            "billing-key",
            labelled("hello", "a", json!({"sleepMs": 1500})),
        )
        .send(),
    );
    wait_running(&w, 1).await;
    let id = board_id(&lb, "running").await;
    let url = lb.url(&format!("/task/{id}"));
    let (status, _, body) = call(&lb, "GET", &url, "billing-key").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (&body["id"], &body["state"], &body["client"], &body["mode"]),
        (
            &json!(id),
            &json!("running"),
            &json!("billing"),
            &json!("sync")
        )
    );
    assert_eq!(
        (&body["group"], &body["function"]),
        (&json!("default"), &json!("hello"))
    );
    assert!(
        body["startedAt"].is_string() && body["worker"].is_string(),
        "{body}"
    );
    assert!(body.get("input").is_none() && body.get("result").is_none());
    // Another client's task is as unknown as a task that never was.
    let (status, _, other) = call(&lb, "GET", &url, "other-key").await;
    assert_eq!(status, 404, "{other}");
    let (status, _, unknown) = call(&lb, "GET", &lb.url("/task/no-such-task"), "other-key").await;
    assert_eq!(
        (status, &unknown),
        (404, &other),
        "no way to tell them apart"
    );
    let (status, reason, _) = call(&lb, "GET", &url, "nobody").await;
    assert_eq!((status, reason.as_str()), (401, "unauthorized"));
    // A queued one (a webhook task answers at once with its id).
    let mut hook = labelled("hello", "b", json!({}));
    hook["mode"] = json!("webhook");
    hook["webhook"] = json!({"url": "http://127.0.0.1:9/hook"});
    let r = task_as(&lb, "billing-key", hook).send().await.unwrap();
    let queued = task_id(&r);
    let body = wait_state(&lb, &queued, "billing-key", "queued").await;
    assert!(body.get("startedAt").is_none(), "{body}");
    assert_eq!(body["queuePosition"], 1, "{body}");
    let mut second = labelled("hello", "c", json!({}));
    second["mode"] = json!("webhook");
    second["webhook"] = json!({"url": "http://127.0.0.1:9/hook"});
    let r = task_as(&lb, "billing-key", second).send().await.unwrap();
    let body = wait_state(&lb, &task_id(&r), "billing-key", "queued").await;
    assert_eq!(body["queuePosition"], 2, "{body}");
    // The admin key (the LB key, with no admin_keys) on the admin port sees any task;
    // a viewer may look up, and a client key on the admin port sees its own only.
    let admin = lb.admin_url(&format!("/task/{queued}"));
    assert_eq!(call(&lb, "GET", &admin, LB_KEY).await.0, 200);
    assert_eq!(call(&lb, "GET", &admin, "viewer-key").await.0, 200);
    assert_eq!(call(&lb, "GET", &admin, "other-key").await.0, 404);
    // Finished.
    assert_eq!(running.await.unwrap().unwrap().status(), 200);
    let body = wait_state(&lb, &id, "billing-key", "done").await;
    assert!(body["finishedAt"].is_string(), "{body}");
    let (status, _, body) = call(&lb, "DELETE", &url, "billing-key").await;
    assert_eq!((status, &body["state"]), (409, &json!("done")), "{body}");
    assert_eq!(call(&lb, "DELETE", &url, "other-key").await.0, 404);
    assert_eq!(call(&lb, "PUT", &url, "billing-key").await.0, 405);
}

#[tokio::test]
async fn delete_takes_a_queued_task_out_of_the_queue_before_any_worker_sees_it() {
    let w = sim(|c| c.slots = 1).await;
    let lb = Lb::start_with(&[w.url()], &[], CLIENTS).await;
    lb.wait_available(1).await;
    let blocker = tokio::spawn(
        task_as(
            &lb,
            "billing-key",
            labelled("hello", "blocker", json!({"sleepMs": 1500})),
        )
        .send(),
    );
    wait_running(&w, 1).await;
    let waiting =
        tokio::spawn(task_as(&lb, "billing-key", labelled("hello", "waiter", json!({}))).send());
    lb.wait_queued(1).await;
    let id = board_id(&lb, "queued").await;
    let url = lb.url(&format!("/task/{id}"));
    assert_eq!(call(&lb, "DELETE", &url, "other-key").await.0, 404);
    let admin = lb.admin_url(&format!("/task/{id}"));
    let (status, reason, _) = call(&lb, "DELETE", &admin, "viewer-key").await;
    assert_eq!((status, reason.as_str()), (403, "forbidden"));
    let (status, _, body) = call(&lb, "DELETE", &url, "billing-key").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({"id": id, "state": "cancelled"}));
    // Its client is told, with the reason, and the queue is empty at once.
    let r = waiting.await.unwrap().unwrap();
    assert_eq!(r.status().as_u16(), 409);
    assert_eq!(r.headers()["x-andera-reason"], "cancelled");
    assert_eq!(task_id(&r), id);
    let answer: Value = r.json().await.unwrap();
    assert_eq!(answer["reason"], "cancelled", "{answer}");
    lb.wait_queued(0).await;
    wait_state(&lb, &id, "billing-key", "cancelled").await;
    assert_eq!(call(&lb, "DELETE", &url, "billing-key").await.0, 409);
    assert_eq!(blocker.await.unwrap().unwrap().status(), 200);
    // The Worker only ever got the blocker.
    let (status, _) = lb.run(labelled("hello", "after", json!({}))).await;
    assert_eq!(status, 200);
    assert_eq!(
        w.stats().order,
        ["blocker", "after"],
        "the cancelled task reached the Worker"
    );
}

#[tokio::test]
async fn delete_of_a_running_task_closes_its_worker_connection() {
    let w = sim(|c| c.slots = 1).await;
    let lb = Lb::start_with(&[w.url()], &[], CLIENTS).await;
    lb.wait_available(1).await;
    let running = tokio::spawn(
        task_as(
            &lb,
            "billing-key",
            labelled("hello", "long", json!({"sleepMs": 20000})),
        )
        .send(),
    );
    wait_running(&w, 1).await;
    let id = board_id(&lb, "running").await;
    // The admin key cancels it from the task board's action.
    let board = lb.admin_url(&format!("/bull/api/tasks/{id}"));
    assert_eq!(call(&lb, "DELETE", &board, "viewer-key").await.0, 403);
    // The board is an operator surface: even the task's own client may not use it
    // (it cancels through DELETE /task/{id}).
    let (status, reason, _) = call(&lb, "DELETE", &board, "billing-key").await;
    assert_eq!((status, reason.as_str()), (403, "forbidden"));
    let (status, _, body) = call(&lb, "DELETE", &board, LB_KEY).await;
    assert_eq!(
        (status, &body["state"]),
        (200, &json!("cancelled")),
        "{body}"
    );
    let r = running.await.unwrap().unwrap();
    assert_eq!(r.status().as_u16(), 409);
    let body = wait_state(&lb, &id, "billing-key", "cancelled").await;
    assert!(body["finishedAt"].is_string(), "{body}");
    // The Worker saw its connection close: the simulator drops a sync task whose
    // connection closed, well before the 20 s task would have ended.
    let start = Instant::now();
    while w.stats().running > 0 {
        assert!(start.elapsed() < Duration::from_secs(10), "{:?}", w.stats());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Rows of task `id` in the SQLite journal at `path` (read beside the running writer).
fn journal_rows(path: &std::path::Path, id: &str) -> i64 {
    let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY;
    let conn = rusqlite::Connection::open_with_flags(path, flags).unwrap();
    conn.query_row("SELECT count(*) FROM tasks WHERE id = ?1", [id], |r| {
        r.get(0)
    })
    .unwrap()
}

#[tokio::test]
async fn a_cancelled_queued_webhook_task_is_not_run_after_kill_9_and_a_restart() {
    let (rx, hook) = Receiver::start().await;
    let w = sim(|c| c.slots = 1).await;
    let state = tempfile::tempdir().unwrap();
    let journal = state.path().join("tasks.db");
    let env = [("TASK_JOURNAL", journal.to_str().unwrap())];
    let mut lb = Lb::start(&[w.url()], &env).await;
    lb.wait_available(1).await;
    let blocker = labelled("hello", "blocker", json!({"sleepMs": 3000}));
    let blocker = tokio::spawn(lb.task(blocker).send());
    wait_running(&w, 1).await;
    let r = lb.task(webhook("cancelled", &hook)).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let id = task_id(&r);
    assert_eq!(journal_rows(&journal, &id), 1, "journaled once accepted");
    let (status, _, body) = call(&lb, "DELETE", &lb.url(&format!("/task/{id}")), LB_KEY).await;
    assert_eq!(status, 200, "{body}");
    // Gone from the journal before the kill.
    let start = Instant::now();
    while journal_rows(&journal, &id) != 0 {
        assert!(start.elapsed() < Duration::from_secs(10), "still journaled");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    lb.kill();
    let _ = blocker.await;
    let lb = Lb::start(&[w.url()], &env).await;
    lb.wait_available(1).await;
    // A task sent after the restart is delivered (after anything resumed: one slot);
    // the cancelled one never is, and nothing was resumed.
    assert_eq!(lb.run(webhook("control", &hook)).await.0, 200);
    delivered(&rx, "control").await;
    assert!(
        !rx.snapshot().contains_key("cancelled"),
        "{:?}",
        rx.snapshot()
    );
    assert_eq!(
        metric(&lb.scrape().await, "andera_lb_journal_resumed_total"),
        Some(0.0)
    );
    let (status, _, _) = call(&lb, "GET", &lb.url(&format!("/task/{id}")), LB_KEY).await;
    assert_eq!(status, 404, "a cancelled task leaves nothing to resume");
}

/// A webhook `hello` task posting to `hook`, named `name`.
fn webhook(name: &str, hook: &str) -> Value {
    let mut body = task("hello", json!({"name": name, "label": name}));
    body["mode"] = json!("webhook");
    body["webhook"] = json!({"url": hook});
    body
}

/// Sends `body` as the LB key's client with `Idempotency-Key: key`: status, task id
/// (if any), reason header and body.
async fn send_keyed(lb: &Lb, key: &str, body: &Value) -> (u16, String, String, Value) {
    let r = lb
        .task(body.clone())
        .header("idempotency-key", key)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let header = |name| {
        r.headers()
            .get(name)
            .map(|v: &reqwest::header::HeaderValue| v.to_str().unwrap().to_string())
            .unwrap_or_default()
    };
    let (id, reason) = (header("x-andera-task-id"), header("x-andera-reason"));
    (status, id, reason, r.json().await.unwrap_or(Value::Null))
}

async fn delivered(rx: &Receiver, name: &str) {
    let start = Instant::now();
    while !rx.snapshot().contains_key(name) {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{name} not delivered"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn an_idempotent_webhook_task_retried_runs_once_and_a_changed_body_is_422() {
    let (rx, hook) = Receiver::start().await;
    let w = sim(|_| {}).await;
    let lb = Lb::start(&[w.url()], &[]).await;
    lb.wait_available(1).await;
    let body = webhook("once", &hook);
    let (status, first, _, answer) = send_keyed(&lb, "order-17", &body).await;
    assert_eq!(status, 200, "{answer}");
    for _ in 0..3 {
        let (status, id, _, again) = send_keyed(&lb, "order-17", &body).await;
        assert_eq!((status, &id, &again), (200, &first, &answer));
    }
    delivered(&rx, "once").await;
    let (status, _, reason, _) = send_keyed(&lb, "order-17", &webhook("changed", &hook)).await;
    assert_eq!((status, reason.as_str()), (422, "bad_request"));
    // Another key is another task.
    let (status, other, _, _) = send_keyed(&lb, "order-18", &body).await;
    assert_eq!(status, 200);
    assert_ne!(other, first);
    let start = Instant::now();
    while rx.snapshot().get("once") != Some(&2) {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{:?}",
            rx.snapshot()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!rx.snapshot().contains_key("changed"));
}

#[tokio::test]
async fn an_idempotent_sync_task_repeated_while_it_runs_is_409_duplicate_in_progress() {
    let w = sim(|_| {}).await;
    let lb = Lb::start(&[w.url()], &[]).await;
    lb.wait_available(1).await;
    let body = labelled("hello", "first", json!({"sleepMs": 1500}));
    let first = {
        let rb = lb.task(body.clone()).header("idempotency-key", "k1");
        tokio::spawn(rb.send())
    };
    wait_running(&w, 1).await;
    let (status, id, reason, answer) = send_keyed(&lb, "k1", &body).await;
    assert_eq!(
        (status, reason.as_str()),
        (409, "duplicate_in_progress"),
        "{answer}"
    );
    assert_eq!(answer["id"], json!(id));
    let first = first.await.unwrap().unwrap();
    assert_eq!((first.status().as_u16(), task_id(&first)), (200, id));
    // Once it ended, its result was not kept: a repeat runs again.
    let (status, again, _, _) = send_keyed(&lb, "k1", &body).await;
    assert_eq!(status, 200);
    assert_ne!(again, task_id(&first));
    assert_eq!(w.stats().order, ["first", "first"]);
}

#[tokio::test]
async fn a_journaled_webhook_task_keeps_its_client_across_a_restart() {
    let (_rx, hook) = Receiver::start().await;
    let w = sim(|c| c.slots = 1).await;
    let state = tempfile::tempdir().unwrap();
    let journal = state.path().join("tasks.db");
    let yaml = format!("{CLIENTS}tasks:\n  journal: {}\n", journal.display());
    let mut lb = Lb::start_with(&[w.url()], &[], &yaml).await;
    lb.wait_available(1).await;
    let blocker = labelled("hello", "blocker", json!({"sleepMs": 3000}));
    let blocker = tokio::spawn(lb.task(blocker).send());
    wait_running(&w, 1).await;
    let r = task_as(&lb, "billing-key", webhook("kept", &hook))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let id = task_id(&r);
    lb.kill();
    let _ = blocker.await;
    let lb = Lb::start_with(&[w.url()], &[], &yaml).await;
    lb.wait_available(1).await;
    let url = lb.url(&format!("/task/{id}"));
    let start = Instant::now();
    let body = loop {
        let (status, _, body) = call(&lb, "GET", &url, "billing-key").await;
        if status == 200 {
            break body;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "{status} {body}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(
        (&body["client"], &body["mode"]),
        (&json!("billing"), &json!("webhook"))
    );
    assert_eq!(call(&lb, "GET", &url, "other-key").await.0, 404);
}

#[tokio::test]
async fn an_idempotent_webhook_task_retried_across_a_kill_9_and_restart_runs_once() {
    let (rx, hook) = Receiver::start().await;
    let w = sim(|_| {}).await;
    let state = tempfile::tempdir().unwrap();
    let journal = state.path().join("tasks.db");
    let env = [("TASK_JOURNAL", journal.to_str().unwrap())];
    let mut lb = Lb::start(&[w.url()], &env).await;
    lb.wait_available(1).await;
    let body = webhook("once", &hook);
    let (status, first, _, _) = send_keyed(&lb, "pay-1", &body).await;
    assert_eq!(status, 200);
    assert_eq!(send_keyed(&lb, "pay-1", &body).await.1, first);
    delivered(&rx, "once").await;
    lb.kill();
    let lb = Lb::start(&[w.url()], &env).await;
    lb.wait_available(1).await;
    for _ in 0..2 {
        let (status, id, _, _) = send_keyed(&lb, "pay-1", &body).await;
        assert_eq!((status, &id), (200, &first), "{}", lb.log());
    }
    let (status, _, reason, _) = send_keyed(&lb, "pay-1", &webhook("other", &hook)).await;
    assert_eq!((status, reason.as_str()), (422, "bad_request"));
    // A task sent after the retries is delivered; the first ran once.
    assert_eq!(lb.run(webhook("control", &hook)).await.0, 200);
    delivered(&rx, "control").await;
    assert_eq!(rx.snapshot().get("once"), Some(&1), "{:?}", rx.snapshot());
}

#[tokio::test]
async fn with_redis_an_idempotency_key_is_shared_by_every_instance() {
    let Some(redis) = Redis::start("task_control") else {
        return;
    };
    let (rx, hook) = Receiver::start().await;
    let w = sim(|_| {}).await;
    let env = [("TASK_JOURNAL", redis.url())];
    let env: Vec<_> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let a = Lb::start(&[w.url()], &env).await;
    let b = Lb::start(&[w.url()], &env).await;
    a.wait_available(1).await;
    b.wait_available(1).await;
    let body = webhook("shared", &hook);
    let (status, first, _, _) = send_keyed(&a, "order-9", &body).await;
    assert_eq!(status, 200, "{}", a.log());
    for lb in [&b, &a, &b] {
        let (status, id, _, _) = send_keyed(lb, "order-9", &body).await;
        assert_eq!((status, &id), (200, &first));
    }
    let (status, _, reason, _) = send_keyed(&b, "order-9", &webhook("other", &hook)).await;
    assert_eq!((status, reason.as_str()), (422, "bad_request"));
    delivered(&rx, "shared").await;
    assert_eq!(b.run(webhook("control", &hook)).await.0, 200);
    delivered(&rx, "control").await;
    assert_eq!(rx.snapshot().get("shared"), Some(&1), "{:?}", rx.snapshot());
}

/// What the browser test needs that is missing (node, Chromium, playwright-core).
fn browser_missing(root: &std::path::Path) -> Option<String> {
    let node = std::process::Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    let chromium = std::path::Path::new("/usr/bin/chromium").exists();
    let playwright = root
        .join("tests/browser/node_modules/playwright-core/package.json")
        .exists();
    (!(node && chromium && playwright))
        .then(|| format!("node {node}, /usr/bin/chromium {chromium}, playwright-core {playwright}"))
}

#[tokio::test]
async fn the_task_boards_cancel_action_is_for_admin_keys_in_a_browser() {
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    if let Some(why) = browser_missing(&root) {
        assert!(
            std::env::var("ANDERA_BROWSER_TEST").as_deref() != Ok("required"),
            "the browser test cannot run: {why}"
        );
        eprintln!("SKIPPED: the browser test cannot run: {why}");
        return;
    }
    let w = sim(|c| c.slots = 1).await;
    let lb = Lb::start_with(&[w.url()], &[], CLIENTS).await;
    lb.wait_available(1).await;
    let blocker = labelled("hello", "blocker", json!({"sleepMs": 20000}));
    let _blocker = tokio::spawn(lb.task(blocker).send());
    wait_running(&w, 1).await;
    let waiting = tokio::spawn(lb.task(labelled("hello", "waiter", json!({}))).send());
    lb.wait_queued(1).await;
    let id = board_id(&lb, "queued").await;
    let run = tokio::process::Command::new("node")
        .current_dir(&root)
        .arg("tests/browser/cancel.mjs")
        .arg(lb.admin_url(""))
        .args([LB_KEY, "viewer-key", &id])
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(90), run)
        .await
        .expect("the browser test ends")
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}\n{}", lb.log());
    println!("{text}");
    let r = waiting.await.unwrap().unwrap();
    assert_eq!(r.status().as_u16(), 409);
    assert_eq!(r.headers()["x-andera-reason"], "cancelled");
}

/// With the Redis engine, a named client's webhook task accepted by one instance is
/// its own on every instance: looked up there with its client (404 for another
/// client), and cancelled there, so that the instance holding it drops it at once
/// and no Worker runs it.
#[tokio::test]
async fn with_redis_a_clients_task_is_looked_up_and_cancelled_on_another_instance() {
    let Some(redis) = Redis::start("task_control") else {
        return;
    };
    let (rx, hook) = Receiver::start().await;
    let w = sim(|c| c.slots = 1).await;
    let yaml = format!("{CLIENTS}tasks:\n  journal: {}\n", redis.url());
    let a = Lb::start_with(&[w.url()], &[], &yaml).await;
    // b has no Worker, so it never takes a task from the shared queue: the task is
    // a's, and b answers from the shared queue alone.
    let b = Lb::start_with(&[], &[], &yaml).await;
    a.wait_available(1).await;
    // a's only slot busy: the webhook task waits in a's own queue.
    let body = labelled("hello", "blocker", json!({"sleepMs": 3000}));
    let blocker = tokio::spawn(a.task(body).send());
    wait_running(&w, 1).await;
    let r = task_as(&a, "billing-key", webhook("kept", &hook))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200, "{}", a.log());
    let id = task_id(&r);
    let url = b.url(&format!("/task/{id}"));
    let (status, _, body) = call(&b, "GET", &url, "billing-key").await;
    assert_eq!(status, 200, "{body}\n{}", b.log());
    assert_eq!(
        (&body["client"], &body["mode"], &body["state"]),
        (&json!("billing"), &json!("webhook"), &json!("queued")),
        "{body}"
    );
    assert_eq!(call(&b, "GET", &url, "other-key").await.0, 404);
    assert_eq!(call(&b, "DELETE", &url, "other-key").await.0, 404);
    let (status, _, body) = call(&b, "DELETE", &url, "billing-key").await;
    assert_eq!(
        (status, &body["state"]),
        (200, &json!("cancelled")),
        "{body}"
    );
    // The instance holding it heard and took it out of its own queue at once.
    let on_a = wait_state(&a, &id, "billing-key", "cancelled").await;
    assert!(on_a["finishedAt"].is_string(), "{on_a}");
    assert_eq!(blocker.await.unwrap().unwrap().status(), 200);
    // The slot is free now: a later task runs, the cancelled one never does.
    assert_eq!(a.run(webhook("control", &hook)).await.0, 200);
    delivered(&rx, "control").await;
    assert!(!rx.snapshot().contains_key("kept"), "{:?}", rx.snapshot());
    assert!(!w.stats().order.contains(&"kept".to_string()));
}
