//! andera-lb behind the fronting proxies it ships configs for, as the original's
//! deployment guide puts it: real Caddy (`deploy/Caddyfile`) and real nginx
//! (`deploy/nginx.conf`) terminating TLS in front of the real binary and simulated
//! Workers, every request made through the proxy with `curl`. Skipped with a message
//! where a proxy is not installed; `scripts/test` installs both and sets
//! `ANDERA_FRONTING_TEST=required`.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::front::{available, Front, Kind, ADMIN_PASSWORD, ADMIN_USER};
use common::receiver::Receiver;
use common::*;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};

/// The LB as the proxies expect it: the proxy on loopback is trusted for the client's
/// address in the access log (written to `access.log` in `dir`), and the
/// forwarded-address headers are passed on to Workers so that the echo function
/// shows what reached the balancer.
async fn lb_behind_a_proxy(w: &andera_worker_sim::SimWorker, dir: &Path) -> Lb {
    let yaml = format!(
        "upstream:\n  forward_headers: [x-forwarded-for, x-real-ip]\n\
         client:\n  trusted_proxies: [127.0.0.1]\n\
         logging:\n  access_log: {}\n",
        dir.join("access.log").display()
    );
    let lb = Lb::start_with(&[w.url()], &[], &yaml).await;
    lb.wait_available(1).await;
    lb
}

/// `curl` for `POST /task` with both keys and `body`.
fn task_curl(front: &Front, body: &Value) -> tokio::process::Command {
    task_curl_at(front, "/task", body)
}

/// Like [`task_curl`], to `path` (a curl URL range repeats the request).
fn task_curl_at(front: &Front, path: &str, body: &Value) -> tokio::process::Command {
    let mut cmd = front.curl(path);
    cmd.args(["-H", &format!("Authorization: {LB_KEY}")])
        .args(["-H", &format!("x-wr-auth: {WK_KEY}")])
        .args(["-H", "content-type: application/json"])
        .args(["--data-binary", &body.to_string()]);
    cmd
}

fn parse(kind: Kind, status: u16, body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|_| panic!("{kind:?}: {status} not JSON: {body:?}"))
}

/// Every check of the issue through one proxy, with the long task running alongside.
async fn through(kind: Kind) {
    if !available(kind) {
        return;
    }
    let w = sim(|c| c.slots = 8).await;
    let logs = tempfile::tempdir().unwrap();
    let lb = lb_behind_a_proxy(&w, logs.path()).await;
    let front = Front::start(kind, &lb).await;

    // A task longer than 60 s, the proxies' usual default read timeout: not cut.
    let long = {
        let mut cmd = task_curl(&front, &task("sleep", json!({"ms": 61_000})));
        let front_kind = kind;
        tokio::spawn(async move {
            let out = cmd
                .args(["-o", "-", "-w", "\n%{http_code}"])
                .output()
                .await
                .unwrap();
            (
                front_kind,
                String::from_utf8_lossy(&out.stdout).into_owned(),
            )
        })
    };

    // A sync task.
    let (status, body) = front
        .fetch(&mut task_curl(
            &front,
            &task("hello", json!({"name": "Front"})),
        ))
        .await;
    assert_eq!(status, 200, "{kind:?}: {body}\n{}", front.log());
    assert_eq!(
        parse(kind, status, &body)["result"]["message"],
        "Hello Front!"
    );

    stream_arrives_as_produced(&front).await;
    webhook_task_is_delivered(&front).await;
    oversized_body_is_413_json(&front).await;
    admin_pages_need_the_allow_list_and_the_password(&front).await;
    forwarded_addresses_reach_the_balancer(&front, &logs.path().join("access.log")).await;

    let (_, out) = long.await.unwrap();
    let (body, status) = out.rsplit_once('\n').unwrap();
    assert_eq!(
        status,
        "200",
        "{kind:?}: the 61 s task: {body}\n{}",
        front.log()
    );
}

async fn stream_arrives_as_produced(front: &Front) {
    let mut body = task("ticker", json!({"count": 4, "intervalMs": 400}));
    body["mode"] = json!("stream");
    let mut cmd = task_curl(front, &body);
    let mut child = cmd
        .arg("-N")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let start = Instant::now();
    let mut arrivals = Vec::new();
    while let Some(line) = lines.next_line().await.unwrap() {
        arrivals.push((start.elapsed(), line));
    }
    let ticks: Vec<&str> = arrivals.iter().map(|(_, l)| l.as_str()).collect();
    assert_eq!(
        ticks,
        ["tick 1", "tick 2", "tick 3", "tick 4"],
        "{:?}",
        front.kind
    );
    // Ticks are 400 ms apart at the Worker: a proxy that buffered the answer would
    // deliver them together at the end.
    let (first, last) = (arrivals[0].0, arrivals[3].0);
    assert!(
        first + Duration::from_millis(800) < last,
        "{:?}: the stream was buffered: {arrivals:?}",
        front.kind
    );
}

async fn webhook_task_is_delivered(front: &Front) {
    let (rx, url) = Receiver::start().await;
    let mut body = task("hello", json!({"name": "FrontHook"}));
    body["mode"] = json!("webhook");
    body["webhook"] = json!({ "url": url });
    let (status, answer) = front.fetch(&mut task_curl(front, &body)).await;
    assert_eq!(status, 200, "{:?}: {answer}", front.kind);
    wait_for("the webhook delivery", Duration::from_secs(10), || {
        rx.snapshot().get("FrontHook") == Some(&1)
    })
    .await;
}

async fn oversized_body_is_413_json(front: &Front) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("big.json");
    let big = task("hello", json!({"name": "n".repeat(11 << 20)}));
    std::fs::write(&file, big.to_string()).unwrap();
    let mut cmd = front.curl("/task");
    cmd.args(["-H", &format!("Authorization: {LB_KEY}")])
        .args(["-H", &format!("x-wr-auth: {WK_KEY}")])
        .args(["-H", "content-type: application/json"])
        .arg("--data-binary")
        .arg(format!("@{}", file.display()));
    let (status, body) = front.fetch(&mut cmd).await;
    assert_eq!(status, 413, "{:?}: {body}", front.kind);
    assert!(
        parse(front.kind, status, &body)["error"].is_string(),
        "{:?}: {body}",
        front.kind
    );
}

async fn admin_pages_need_the_allow_list_and_the_password(front: &Front) {
    let kind = front.kind;
    let credentials = format!("{ADMIN_USER}:{ADMIN_PASSWORD}");
    for path in ["/dashboard", "/bull"] {
        // From the allow-list, with the password: served.
        let (status, body) = front
            .fetch(front.curl(path).args(["-u", &credentials]))
            .await;
        assert_eq!(status, 200, "{kind:?} {path}: {body}\n{}", front.log());
        assert!(
            body.contains("<html") || body.contains("<!doctype"),
            "{kind:?} {path}"
        );
        // Without it: asked for.
        let (status, _) = front.fetch(&mut front.curl(path)).await;
        assert_eq!(status, 401, "{kind:?} {path} without the password");
        // From outside the allow-list (127.0.0.2 is not in it), even with it: refused.
        let (status, _) = front
            .fetch(
                front
                    .curl(path)
                    .args(["-u", &credentials, "--interface", "127.0.0.2"]),
            )
            .await;
        assert_eq!(status, 403, "{kind:?} {path} from outside the allow-list");
    }
    // The dashboard's data through the proxy: the page's own call with the LB key.
    let (status, body) = front
        .fetch(front.curl("/dashboard/api/overview").args([
            "-u",
            &credentials,
            "-H",
            &format!("x-lb-auth: {LB_KEY}"),
        ]))
        .await;
    assert_eq!(status, 200, "{kind:?}: {body}");
    // /metrics is never served through the proxy, with or without the password.
    for extra in [vec![], vec!["-u", credentials.as_str()]] {
        let (status, body) = front.fetch(front.curl("/metrics").args(&extra)).await;
        assert_eq!(status, 404, "{kind:?} /metrics: {body}");
        assert!(!body.contains("andera_lb_"), "{kind:?}: metrics leaked");
    }
}

async fn forwarded_addresses_reach_the_balancer(front: &Front, access_log: &Path) {
    // The client connects from 127.0.0.2; the proxy reaches the LB from 127.0.0.1.
    let mut cmd = task_curl(front, &task("echo", json!({"label": "from-far"})));
    let (status, body) = front.fetch(cmd.args(["--interface", "127.0.0.2"])).await;
    assert_eq!(status, 200, "{:?}: {body}", front.kind);
    let headers = &parse(front.kind, status, &body)["result"]["headers"];
    assert_eq!(
        headers["x-forwarded-for"], "127.0.0.2",
        "{:?}: {headers}",
        front.kind
    );
    if front.kind == Kind::Nginx {
        // Caddy sets X-Forwarded-For (and -Proto, -Host), not X-Real-IP.
        assert_eq!(headers["x-real-ip"], "127.0.0.2", "{headers}");
    }
    // The access log names the client, not the proxy (client.trusted_proxies).
    let mut logged = Vec::new();
    wait_for(
        "the echo task's access log line",
        Duration::from_secs(10),
        || {
            logged = std::fs::read_to_string(access_log)
                .unwrap_or_default()
                .lines()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .filter(|l| l["function"] == "echo")
                .collect();
            !logged.is_empty()
        },
    )
    .await;
    assert_eq!(
        logged[0]["remote_addr"], "127.0.0.2",
        "{:?}: {}",
        front.kind, logged[0]
    );
}

#[tokio::test]
async fn behind_caddy_with_the_shipped_caddyfile() {
    through(Kind::Caddy).await;
}

#[tokio::test]
async fn behind_nginx_with_the_shipped_nginx_conf() {
    through(Kind::Nginx).await;
}

/// A zero-downtime upgrade (`--upgrade`, then SIGQUIT to the old process) while
/// clients keep sending tasks through the proxy: no request fails.
async fn upgrade_behind(kind: Kind) {
    if !available(kind) {
        return;
    }
    let w = sim(|c| c.slots = 16).await;
    let logs = tempfile::tempdir().unwrap();
    let mut old = lb_behind_a_proxy(&w, logs.path()).await;
    let front = Front::start(kind, &old).await;
    let body = task("sleep", json!({"ms": 20}));
    let mut clients = Vec::new();
    for _ in 0..3 {
        // One curl per client, sending the same task many times over kept-alive
        // connections (curl's URL range: /task?1 … /task?400, routed as /task); it
        // prints each answer's status on its own line.
        let mut cmd = task_curl_at(&front, "/task?[1-400]", &body);
        cmd.args(["-o", "/dev/null", "-w", "%{http_code}\n"]);
        clients.push(tokio::spawn(async move { cmd.output().await.unwrap() }));
    }
    wait_for("load to flow", Duration::from_secs(20), || {
        w.stats().received > 30
    })
    .await;
    let mut new = old
        .command
        .arg("--upgrade")
        .spawn()
        .expect("the successor starts");
    let sock = old.upgrade_socket();
    wait_for(
        "the successor's upgrade socket",
        Duration::from_secs(10),
        || sock.exists(),
    )
    .await;
    let handed_over_at = w.stats().received;
    old.signal("QUIT");
    assert_eq!(
        old.wait_exit(Duration::from_secs(15)).await,
        Some(0),
        "{}",
        old.log()
    );
    let mut statuses = Vec::new();
    for c in clients {
        let out = c.await.unwrap();
        statuses.extend(
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .map(str::to_string)
                .collect::<Vec<_>>(),
        );
    }
    let _ = new.kill();
    let _ = new.wait();
    let failed: Vec<&String> = statuses.iter().filter(|s| *s != "200").collect();
    assert_eq!(statuses.len(), 1200, "{kind:?}: every request was answered");
    assert!(
        failed.is_empty(),
        "{kind:?}: {} of {} failed: {:?}\n{}\n{}",
        failed.len(),
        statuses.len(),
        &failed[..failed.len().min(5)],
        front.log(),
        old.log()
    );
    assert!(
        w.stats().received > handed_over_at + 10,
        "{kind:?}: the successor served tasks"
    );
    assert_eq!(w.stats().received, 1200, "{kind:?}: each task ran once");
}

#[tokio::test]
async fn an_upgrade_behind_caddy_fails_no_request() {
    upgrade_behind(Kind::Caddy).await;
}

#[tokio::test]
async fn an_upgrade_behind_nginx_fails_no_request() {
    upgrade_behind(Kind::Nginx).await;
}
