//! The dashboard and the task board in a real browser: two simulated Workers (one
//! reporting a hostile tag), the real binary, ~30 tasks through it, then
//! `tests/browser/dashboard.mjs` (playwright-core driving the system Chromium)
//! checks the pages while tasks keep flowing, and leaves `target/dashboard.png`.
//!
//! Needs `node`, `/usr/bin/chromium` and `tests/browser/node_modules`:
//! `apt-get install -y nodejs chromium && npm ci --prefix tests/browser`.
//! Without them a plain `cargo test` skips it with a message naming what is missing;
//! `scripts/test` sets `ANDERA_BROWSER_TEST=required`, which turns that into a failure.

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

const XSS_TAG: &str = "<img src=x onerror=alert(1)>";
const CHROMIUM: &str = "/usr/bin/chromium";

/// What is missing to run the browser test, with how to install it.
fn missing_prerequisites(root: &Path) -> Vec<String> {
    let mut missing = Vec::new();
    let node_ok = std::process::Command::new("node")
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !node_ok {
        missing.push("`node` is not on PATH: apt-get install -y nodejs npm".to_string());
    }
    if !Path::new(CHROMIUM).exists() {
        missing.push(format!(
            "no Chromium at {CHROMIUM}: apt-get install -y chromium"
        ));
    }
    if !root
        .join("tests/browser/node_modules/playwright-core/package.json")
        .exists()
    {
        missing.push(
            "tests/browser/node_modules has no playwright-core: npm ci --prefix tests/browser"
                .to_string(),
        );
    }
    missing
}

/// One task body of the mix: hello, sleep or fail, with a spread of priorities.
fn mixed_task(i: usize) -> Value {
    let mut body = match i % 4 {
        0 | 3 => task("hello", json!({"name": format!("n{i}")})),
        1 => task("sleep", json!({"ms": 120 + (i % 5) as u64 * 60})),
        _ => task("fail", json!({"message": "boom <b>not bold</b>"})),
    };
    body["priority"] = json!(1 + (i % 3) as u64);
    body
}

/// Sends `body` and returns `(status, x-andera-task-id)`.
async fn send(lb: &Lb, body: Value) -> (u16, Option<String>) {
    match lb.task(body).send().await {
        Ok(r) => {
            let status = r.status().as_u16();
            let id = r
                .headers()
                .get("x-andera-task-id")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let _ = r.bytes().await;
            (status, id)
        }
        Err(_) => (0, None),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_and_task_board_in_a_browser() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let missing = missing_prerequisites(&root);
    if !missing.is_empty() {
        let why = format!(
            "the browser test cannot run:\n  - {}\ninstall with: apt-get install -y chromium && npm ci --prefix tests/browser (scripts/test does this)",
            missing.join("\n  - ")
        );
        // scripts/test (and so CI) sets ANDERA_BROWSER_TEST=required: there a missing
        // prerequisite is a failure, never a silent pass.
        assert!(
            std::env::var("ANDERA_BROWSER_TEST").as_deref() != Ok("required"),
            "{why}"
        );
        eprintln!("SKIPPED dashboard_and_task_board_in_a_browser: {why}");
        return;
    }

    let a = sim(|c| {
        c.tags.insert("region".into(), "eu-west".into());
        c.services = vec![("db".into(), "up".into())];
        c.cpu_load = 0.35;
        c.used_memory_percent = 41.5;
    })
    .await;
    let b = sim(|c| {
        c.slots = 1;
        c.tags.insert("xss".into(), XSS_TAG.into());
        c.tags.insert("zone".into(), "b".into());
        c.used_memory_percent = 63.0;
    })
    .await;
    let lb = Arc::new(Lb::start(&[a.url(), b.url()], &[]).await);
    lb.wait_available(2).await;

    // ~30 tasks at once: 5 slots in all, so most of them wait in the queue.
    let mut wave = Vec::new();
    for i in 0..30 {
        let lb = lb.clone();
        let body = mixed_task(i);
        let function = body["function"].as_str().unwrap().to_string();
        wave.push(tokio::spawn(
            async move { (function, send(&lb, body).await.0) },
        ));
    }
    for h in wave {
        let (function, status) = h.await.unwrap();
        let expected = if function == "fail" { 500 } else { 200 };
        assert_eq!(
            status,
            expected,
            "{function} answered {status}\nlog:\n{}",
            lb.log()
        );
    }
    // The task the browser looks for: the newest one before the background load.
    let (status, id) = send(&lb, task("hello", json!({"name": "browser"}))).await;
    assert_eq!(status, 200);
    let task_id = id.expect("the answer carries x-andera-task-id");

    // Background load while the browser runs: a steady trickle plus bursts that queue.
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let lb = lb.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let mut inflight = tokio::task::JoinSet::new();
            let mut i = 0usize;
            let mut round = 0usize;
            while !stop.load(Ordering::Relaxed)
                && started.elapsed() < Duration::from_secs(240)
                && i < 2000
            {
                // The first 12 s stay gentle (1 task/s), so the task the browser looks for
                // is still among the dashboard's 50 recent tasks even if Chromium starts
                // slowly; then 2 tasks/s plus, every 5 s, 9 slow tasks at once: more than
                // the 5 slots, so some queue.
                let burst = if round < 24 {
                    usize::from(round.is_multiple_of(2))
                } else if round.is_multiple_of(10) {
                    9
                } else {
                    1
                };
                round += 1;
                for k in 0..burst {
                    let lb = lb.clone();
                    let body = if burst > 1 {
                        let mut b = task("sleep", json!({"ms": 400 + k as u64 * 60}));
                        b["priority"] = json!(1 + (k % 3) as u64);
                        b
                    } else {
                        mixed_task(i)
                    };
                    i += 1;
                    inflight.spawn(async move { send(&lb, body).await });
                }
                while inflight.try_join_next().is_some() {}
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            while inflight.join_next().await.is_some() {}
            i
        })
    };

    let target = root.join("target");
    std::fs::create_dir_all(&target).unwrap();
    let shot = target.join("dashboard.png");
    let run = tokio::process::Command::new("node")
        .current_dir(&root)
        .arg("tests/browser/dashboard.mjs")
        .arg(lb.admin_url(""))
        .arg(LB_KEY)
        .arg(&shot)
        .env("EXPECT_WORKERS", format!("{},{}", a.url(), b.url()))
        .env("EXPECT_TASK", &task_id)
        .env("XSS_TAG", XSS_TAG)
        .env("CHROMIUM", CHROMIUM)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(200), run).await;
    stop.store(true, Ordering::Relaxed);
    let sent = load.await.unwrap();

    let out = match out {
        Ok(Ok(out)) => out,
        Ok(Err(e)) => panic!("cannot run node tests/browser/dashboard.mjs: {e}"),
        Err(_) => panic!("node tests/browser/dashboard.mjs ran longer than 200 s"),
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let log = lb.log();
    let tail: Vec<&str> = log.lines().rev().take(60).collect();
    assert!(
        out.status.success(),
        "the browser test failed ({}) with {sent} background task(s) sent\n--- stdout\n{stdout}\n--- stderr\n{stderr}\n--- last LB log lines\n{}",
        out.status,
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    );
    assert!(shot.exists(), "no screenshot at {}", shot.display());
    println!("{stdout}");
    println!(
        "screenshot: {} ({sent} background task(s) sent meanwhile)",
        shot.display()
    );
    drop(a);
    drop(b);
}
