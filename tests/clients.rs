//! Named clients and operator access against the real binary: what each kind of key
//! may see and do (the LB key alone, a named client's, an admin's, a viewer's), and
//! keys rotated by editing the clients file without a restart.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

/// `GET url` with `key` in `x-lb-auth`: status and JSON body.
async fn get(lb: &Lb, url: &str, key: &str) -> (u16, Value) {
    let r = lb
        .http
        .get(url)
        .header("x-lb-auth", key)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// Runs a hello task with `key` as the LB key: status and JSON body.
async fn run_as(lb: &Lb, key: &str) -> (u16, Value) {
    let r = lb
        .http
        .post(lb.url("/task"))
        .header("authorization", key)
        .header("x-wr-auth", WK_KEY)
        .json(&task("hello", json!({})))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let id = r
        .headers()
        .get("x-andera-task-id")
        .map(|v| v.to_str().unwrap().to_string());
    let mut body: Value = r.json().await.unwrap_or(Value::Null);
    if let Some(id) = id {
        body["_id"] = json!(id);
    }
    (status, body)
}

/// The operator routes, on the admin port and (exposed) on the client port.
fn operator_routes(lb: &Lb) -> Vec<String> {
    vec![
        lb.admin_url("/dashboard/api/overview"),
        lb.admin_url("/dashboard/api/workers"),
        lb.admin_url("/bull/api/tasks"),
        lb.admin_url("/logs"),
        lb.url("/logs"),
        lb.url("/metrics"),
    ]
}

const CLIENTS: &str = "auth:\n  clients:\n    - name: billing\n      keys: [billing-key]\n  \
                       viewer_keys: [viewer-key]\nadmin:\n  expose_on_client_port: true\n";

#[tokio::test]
async fn a_named_clients_key_runs_tasks_and_opens_no_operator_surface() {
    let w = sim(|_| {}).await;
    let lb = Lb::start_with(&[w.url()], &[], CLIENTS).await;
    lb.wait_available(1).await;
    let (status, body) = run_as(&lb, "billing-key").await;
    assert_eq!(status, 200, "{body}");
    let record = lb.board_record(body["_id"].as_str().unwrap()).await;
    assert_eq!(record["client"], "billing", "the board names the client");
    for url in operator_routes(&lb) {
        let (status, body) = get(&lb, &url, "billing-key").await;
        assert_eq!(status, 403, "{url}: {body}");
        assert_eq!(body["reason"], "forbidden", "{url}");
    }
    // /health: the original's public answer, never other clients' data.
    let (status, body) = get(&lb, &lb.url("/health"), "billing-key").await;
    assert_eq!(status, 200);
    assert_eq!(body, json!({"status": "ready"}));
    // No key, or a wrong one: 401 as before.
    let (status, _) = get(&lb, &lb.admin_url("/logs"), "nobody").await;
    assert_eq!(status, 401);
    assert_eq!(run_as(&lb, "nobody").await.0, 401);
}

#[tokio::test]
async fn a_viewer_sees_the_pages_but_not_the_logs_or_the_workers_detail() {
    let lb = Lb::start_with(&[], &[], CLIENTS).await;
    for url in [
        lb.admin_url("/dashboard/api/overview"),
        lb.admin_url("/bull/api/tasks"),
    ] {
        assert_eq!(get(&lb, &url, "viewer-key").await.0, 200, "{url}");
    }
    let (_, who) = get(&lb, &lb.admin_url("/dashboard/api/whoami"), "viewer-key").await;
    assert_eq!(who["role"], "viewer");
    for url in [lb.admin_url("/logs"), lb.url("/metrics")] {
        assert_eq!(get(&lb, &url, "viewer-key").await.0, 403, "{url}");
    }
    let (_, health) = get(&lb, &lb.url("/health"), "viewer-key").await;
    assert_eq!(health, json!({"status": "ready"}));
    // A viewer's key runs no task.
    assert_eq!(run_as(&lb, "viewer-key").await.0, 403);
    // The LB key is still the admin key (no admin_keys listed).
    let (_, who) = get(&lb, &lb.admin_url("/bull/api/whoami"), LB_KEY).await;
    assert_eq!(who["role"], "admin");
}

#[tokio::test]
async fn admin_keys_open_every_operator_surface_and_take_it_from_the_lb_key() {
    let w = sim(|_| {}).await;
    // A third admin key given as its SHA-256, as client keys may be.
    let (ops_3, ops_3_hash) = key_and_sha256("ops-3");
    let admin_keys = format!("ops-1, ops-2, sha256:{ops_3_hash}");
    let lb = Lb::start_with(&[w.url()], &[("ADMIN_KEYS", &admin_keys)], CLIENTS).await;
    // Keyed /health detail is the admin keys' now, not the LB key's.
    let start = std::time::Instant::now();
    while get(&lb, &lb.url("/health"), "ops-1").await.1["components"]["discovery"]["available"]
        != json!(1)
    {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the Worker is available"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for key in ["ops-1", "ops-2", &ops_3] {
        for url in operator_routes(&lb) {
            assert_eq!(get(&lb, &url, key).await.0, 200, "{key} {url}");
        }
        let (_, health) = get(&lb, &lb.url("/health"), key).await;
        assert!(
            health["workers"].is_array(),
            "keyed detail for {key}: {health}"
        );
        // An admin key is not a client key.
        let (status, body) = run_as(&lb, key).await;
        assert_eq!(
            (status, &body["reason"]),
            (403, &json!("forbidden")),
            "{body}"
        );
    }
    // The LB key still runs tasks (client `default`) but is no longer the admin key.
    let (status, body) = run_as(&lb, LB_KEY).await;
    assert_eq!(status, 200, "{body}");
    let id = body["_id"].as_str().unwrap();
    let (_, record) = get(
        &lb,
        &lb.admin_url(&format!("/bull/api/tasks/{id}")),
        "ops-1",
    )
    .await;
    assert_eq!(record["client"], "default");
    assert_eq!(get(&lb, &lb.admin_url("/logs"), LB_KEY).await.0, 403);
}

#[tokio::test]
async fn the_lb_key_alone_opens_everything_as_before() {
    let w = sim(|_| {}).await;
    let lb = Lb::start_with(&[w.url()], &[], "admin:\n  expose_on_client_port: true\n").await;
    lb.wait_available(1).await;
    assert_eq!(run_as(&lb, LB_KEY).await.0, 200);
    for url in operator_routes(&lb) {
        assert_eq!(get(&lb, &url, LB_KEY).await.0, 200, "{url}");
    }
    // /metrics on the client port needs no key with the LB key alone, as before.
    let r = lb.http.get(lb.url("/metrics")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(lb.health().await["workers"].is_array());
}

/// Writes `keys` as client `billing`'s in the clients file.
fn write_clients(path: &std::path::Path, text: &str) {
    // Written aside and renamed, as editors and config management do: the watcher
    // never reads a half-written file.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

async fn eventually_status(lb: &Lb, key: &str, want: u16, what: &str) {
    let start = std::time::Instant::now();
    loop {
        let (status, _) = run_as(lb, key).await;
        if status == want {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{what}: {key} still gets {status}\n{}",
            lb.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_key_is_rotated_by_editing_the_clients_file_without_a_restart() {
    let w = sim(|c| c.slots = 4).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("clients.yaml");
    write_clients(&file, "- name: billing\n  keys: [old-key]\n");
    let lb = Lb::start_with(
        &[w.url()],
        &[("CLIENTS_FILE", file.to_str().unwrap())],
        "workers:\n  reload_interval_ms: 100\n",
    )
    .await;
    lb.wait_available(1).await;
    assert_eq!(run_as(&lb, "old-key").await.0, 200);
    assert_eq!(run_as(&lb, "new-key").await.0, 401);

    // Both keys valid together: clients switch over at their own pace.
    write_clients(&file, "- name: billing\n  keys: [old-key, new-key]\n");
    eventually_status(&lb, "new-key", 200, "the new key is added").await;
    assert_eq!(
        run_as(&lb, "old-key").await.0,
        200,
        "the old one still works"
    );

    // Then the old one is withdrawn.
    write_clients(&file, "- name: billing\n  keys: [new-key]\n");
    eventually_status(&lb, "old-key", 401, "the old key is withdrawn").await;
    assert_eq!(run_as(&lb, "new-key").await.0, 200);

    // A broken file is refused with a line naming it; the last good list stays.
    write_clients(
        &file,
        "- name: billing\n  keys: [new-key]\n- name: billing\n  keys: [other]\n",
    );
    wait_for(
        "the refused reload is logged",
        Duration::from_secs(10),
        || lb.log().contains("named clients not reloaded"),
    )
    .await;
    let line = lb
        .log()
        .lines()
        .find(|l| l.contains("named clients not reloaded"))
        .unwrap()
        .to_string();
    assert!(
        line.contains("clients.yaml") && line.contains("named twice"),
        "{line}"
    );
    assert_eq!(
        run_as(&lb, "new-key").await.0,
        200,
        "the last good list stays"
    );
    let metrics = lb.scrape().await;
    assert!(
        metrics.contains("andera_lb_clients_reloads_total{result=\"error\"} 1"),
        "{metrics}"
    );
    for secret in ["old-key", "new-key"] {
        assert!(!lb.log().contains(secret), "a key is in the log");
    }
}

#[tokio::test]
async fn dash_t_checks_the_clients_file_and_sha256_keys_work() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("workers.json"), "[]").unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "- name: Bad Name\n  keys: [k]\n").unwrap();
    let out = lb_once(dir.path())
        .arg("-t")
        .env("LB_AUTH_KEY", LB_KEY)
        .env("CLIENTS_FILE", &bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.yaml") && err.contains("Bad Name"),
        "{err}"
    );
    // The shipped example passes.
    let example =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("conf/clients.example.yaml");
    let out = lb_once(dir.path())
        .arg("-t")
        .env("LB_AUTH_KEY", LB_KEY)
        .env("CLIENTS_FILE", &example)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");

    // The file may hold a key's SHA-256 instead of the key.
    let key = key_and_sha256("hashed-client-key");
    let w = sim(|_| {}).await;
    let yaml = format!(
        "auth:\n  clients:\n    - name: hashed\n      keys: [\"sha256:{}\"]\n",
        key.1
    );
    let lb = Lb::start_with(&[w.url()], &[], &yaml).await;
    lb.wait_available(1).await;
    assert_eq!(run_as(&lb, &key.0).await.0, 200);
}

/// A key and its SHA-256 in hex, computed with `sha256sum` (so the test does not
/// reuse the code it checks).
fn key_and_sha256(key: &str) -> (String, String) {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("printf %s '{key}' | sha256sum"))
        .output()
        .unwrap();
    let hex = String::from_utf8(out.stdout).unwrap();
    (
        key.to_string(),
        hex.split_whitespace().next().unwrap().to_string(),
    )
}

#[tokio::test]
async fn a_client_over_its_rate_gets_429_and_its_priority_is_clamped() {
    let w = sim(|c| c.slots = 1).await;
    let yaml =
        "auth:\n  clients:\n    - name: slow\n      keys: [slow-key]\n      rate: 0.5\n      \
                burst: 2\n    - name: low\n      keys: [low-key]\n      max_priority: 5\n";
    let lb = Lb::start_with(&[w.url()], &[], yaml).await;
    lb.wait_available(1).await;
    assert_eq!(run_as(&lb, "slow-key").await.0, 200);
    assert_eq!(run_as(&lb, "slow-key").await.0, 200);
    let r = lb
        .http
        .post(lb.url("/task"))
        .header("authorization", "slow-key")
        .header("x-wr-auth", WK_KEY)
        .json(&task("hello", json!({})))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["x-andera-reason"], "client_rate");
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry), "{retry}");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["reason"], "client_rate");
    // Another client is not held back by it.
    assert_eq!(run_as(&lb, LB_KEY).await.0, 200);

    // `max_priority: 5`: a priority-1 task of `low` waits behind an earlier
    // priority-3 task, where it would have gone first.
    let blocker = lb.task(task("sleep", json!({"ms": 800})));
    let blocker = tokio::spawn(async move { blocker.send().await.unwrap().status() });
    lb.wait_until(
        |h| h["workers"][0]["lbInFlight"] == json!(1),
        "the slot is taken",
    )
    .await;
    let mut mid = task("hello", json!({"label": "p3"}));
    mid["priority"] = json!(3);
    let mid = tokio::spawn(lb.task(mid).send());
    lb.wait_queued(1).await;
    let mut urgent = task("hello", json!({"label": "low-p1"}));
    urgent["priority"] = json!(1);
    let low = lb
        .http
        .post(lb.url("/task"))
        .header("authorization", "low-key")
        .header("x-wr-auth", WK_KEY)
        .json(&urgent);
    let low = tokio::spawn(low.send());
    lb.wait_queued(2).await;
    assert_eq!(blocker.await.unwrap(), 200);
    assert_eq!(mid.await.unwrap().unwrap().status(), 200);
    assert_eq!(low.await.unwrap().unwrap().status(), 200);
    assert_eq!(w.stats().order, ["p3", "low-p1"], "served as priority 5");
}

/// Sends a hello task labelled `label` as `key` (spawned; returns its status).
fn spawn_labelled(lb: &Lb, key: &str, label: &str) -> tokio::task::JoinHandle<u16> {
    let r = lb
        .http
        .post(lb.url("/task"))
        .header("authorization", key)
        .header("x-wr-auth", WK_KEY)
        .json(&task("hello", json!({"label": label})));
    tokio::spawn(async move { r.send().await.unwrap().status().as_u16() })
}

#[tokio::test]
async fn a_client_flooding_the_queue_holds_another_back_by_one_task_at_most() {
    let w = sim(|c| c.slots = 1).await;
    let yaml = "auth:\n  clients:\n    - name: flood\n      keys: [flood-key]\n    \
                - name: other\n      keys: [other-key]\n";
    let lb = Lb::start_with(&[w.url()], &[], yaml).await;
    lb.wait_available(1).await;
    let blocker = lb
        .http
        .post(lb.url("/task"))
        .header("authorization", "flood-key")
        .header("x-wr-auth", WK_KEY)
        .json(&task("sleep", json!({"ms": 600})));
    let blocker = tokio::spawn(async move { blocker.send().await.unwrap().status() });
    lb.wait_until(
        |h| h["workers"][0]["lbInFlight"] == json!(1),
        "the slot is taken",
    )
    .await;
    let mut waiting = Vec::new();
    for i in 0..20 {
        waiting.push(spawn_labelled(&lb, "flood-key", &format!("f{i}")));
        lb.wait_queued(i + 1).await;
    }
    waiting.push(spawn_labelled(&lb, "other-key", "o"));
    lb.wait_queued(21).await;
    assert_eq!(blocker.await.unwrap(), 200);
    for t in waiting {
        assert_eq!(t.await.unwrap(), 200);
    }
    let order = w.stats().order;
    let at = order.iter().position(|l| l == "o").unwrap();
    // First come, first served would run it 21st; clients take turns instead.
    assert!(at <= 1, "the other client's task ran {at}th: {order:?}");
    let floods: Vec<&String> = order.iter().filter(|l| l.starts_with('f')).collect();
    let expected: Vec<String> = (0..20).map(|i| format!("f{i}")).collect();
    assert_eq!(
        floods,
        expected.iter().collect::<Vec<_>>(),
        "a client's own tasks keep their order"
    );
}

#[tokio::test]
async fn max_running_and_max_queued_answer_429_with_their_reasons() {
    let w = sim(|c| c.slots = 2).await;
    let yaml = "auth:\n  clients:\n    - name: capped\n      keys: [capped-key]\n      \
                max_running: 1\n    - name: queuer\n      keys: [queuer-key]\n      max_queued: 1\n";
    let lb = Lb::start_with(&[w.url()], &[], yaml).await;
    lb.wait_available(1).await;
    let long = |key: &str| {
        lb.http
            .post(lb.url("/task"))
            .header("authorization", key)
            .header("x-wr-auth", WK_KEY)
            .json(&task("sleep", json!({"ms": 1500})))
    };
    let first = long("capped-key");
    let first = tokio::spawn(async move { first.send().await.unwrap().status() });
    lb.wait_until(
        |h| h["workers"][0]["lbInFlight"] == json!(1),
        "capped runs one",
    )
    .await;
    let r = long("capped-key").send().await.unwrap();
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["x-andera-reason"], "client_running");
    assert!(r.headers().get("retry-after").is_some());
    // The second slot is still there for everybody else.
    let other = long(LB_KEY);
    let other = tokio::spawn(async move { other.send().await.unwrap().status() });
    lb.wait_until(
        |h| h["workers"][0]["lbInFlight"] == json!(2),
        "both slots taken",
    )
    .await;
    // Both slots busy: queuer's first task waits, its second is over max_queued.
    let queued = long("queuer-key");
    let queued = tokio::spawn(async move { queued.send().await.unwrap().status() });
    lb.wait_queued(1).await;
    let r = long("queuer-key").send().await.unwrap();
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["x-andera-reason"], "client_queued");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["reason"], "client_queued");
    for t in [first, other, queued] {
        assert_eq!(t.await.unwrap(), 200);
    }
}

#[tokio::test]
async fn metrics_count_each_named_clients_tasks_and_refusals_and_never_a_key() {
    let w = sim(|_| {}).await;
    let yaml = "auth:\n  clients:\n    - name: billing\n      keys: [billing-key]\n      \
                rate: 0.1\n      burst: 1\n";
    let lb = Lb::start_with(&[w.url()], &[], yaml).await;
    lb.wait_available(1).await;
    assert_eq!(run_as(&lb, "billing-key").await.0, 200);
    assert_eq!(run_as(&lb, "billing-key").await.0, 429);
    assert_eq!(run_as(&lb, LB_KEY).await.0, 200);
    let text = lb.scrape().await;
    let has = |family: &str, labels: &[&str], value: &str| {
        text.lines().any(|l| {
            l.starts_with(family)
                && labels.iter().all(|x| l.contains(x))
                && l.ends_with(&format!(" {value}"))
        })
    };
    assert!(
        has(
            "andera_lb_client_tasks_total",
            &["client=\"billing\"", "outcome=\"ok\""],
            "1"
        ),
        "{text}"
    );
    assert!(
        has(
            "andera_lb_client_tasks_total",
            &["client=\"default\"", "outcome=\"ok\""],
            "1"
        ),
        "{text}"
    );
    assert!(
        has(
            "andera_lb_client_refused_total",
            &["client=\"billing\"", "reason=\"client_rate\""],
            "1"
        ),
        "{text}"
    );
    assert!(
        has(
            "andera_lb_client_tasks_running",
            &["client=\"billing\""],
            "0"
        ),
        "{text}"
    );
    assert!(!text.contains("billing-key"));
    // The dashboard shows each client's running, queued and refused tasks.
    let (_, overview) = get(&lb, &lb.admin_url("/dashboard/api/overview"), LB_KEY).await;
    let billing = overview["clients"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "billing")
        .cloned()
        .unwrap_or_else(|| panic!("{}", overview["clients"]));
    assert_eq!(
        billing,
        json!({"name": "billing", "running": 0, "queued": 0, "refused": 1})
    );
    // The task's log line names its client, never its key.
    assert!(
        lb.log().contains("client billing default/hello"),
        "{}",
        lb.log()
    );
    assert!(!lb.log().contains("billing-key"));
}

/// `max_running` holds when slots free up: a client's tasks that queued while every
/// slot was busy start no more than `max_running` at once when the slots come back,
/// the rest keep their place and start as the client's own tasks end.
#[tokio::test]
async fn queued_tasks_of_a_client_at_max_running_wait_for_its_own_to_end() {
    let w = sim(|c| c.slots = 4).await;
    let yaml = "auth:\n  clients:\n    - name: capped\n      keys: [capped-key]\n      \
                max_running: 2\n";
    let lb = Lb::start_with(&[w.url()], &[], yaml).await;
    lb.wait_available(1).await;
    let sleep_as = |key: &str, ms: u64| {
        let r = lb
            .http
            .post(lb.url("/task"))
            .header("authorization", key)
            .header("x-wr-auth", WK_KEY)
            .json(&task("sleep", json!({"ms": ms})));
        tokio::spawn(async move { r.send().await.unwrap().status().as_u16() })
    };
    let blockers: Vec<_> = (0..4).map(|_| sleep_as(LB_KEY, 1500)).collect();
    lb.wait_until(
        |h| h["workers"][0]["lbInFlight"] == json!(4),
        "every slot is busy",
    )
    .await;
    let capped: Vec<_> = (0..4).map(|_| sleep_as("capped-key", 1000)).collect();
    lb.wait_queued(4).await;
    // Watch the client's running count until all of its tasks have ended.
    let running_line = r#"andera_lb_client_tasks_running{client="capped"}"#;
    let mut most = 0;
    let mut seen = 0;
    let start = std::time::Instant::now();
    while !capped.iter().all(|t| t.is_finished()) {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "capped tasks end"
        );
        let text = lb.scrape().await;
        if let Some(n) = metric(&text, running_line) {
            most = most.max(n as u32);
            seen += 1;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    println!("capped: at most {most} running at once over {seen} scrapes");
    assert!(seen > 0, "the client's running series is scraped");
    assert_eq!(most, 2, "max_running 2 held when the four slots came back");
    for t in blockers.into_iter().chain(capped) {
        assert_eq!(t.await.unwrap(), 200);
    }
}
