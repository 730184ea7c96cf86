//! Production operations: graceful drain on SIGTERM, zero-downtime upgrade under
//! load, and two instances in front of the same Workers.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::raw::RawConn;
use common::*;
use serde_json::{json, Value};

/// One `GET` on an existing keep-alive connection; returns the status line's code.
async fn get_on(conn: &mut RawConn, path: &str) -> u16 {
    // The admin port answers only Hosts that name it (localhost does).
    conn.send(format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n"))
        .await;
    conn.answer().await.status
}

#[tokio::test]
async fn sigterm_drains_in_flight_and_queued_tasks_then_exits_0() {
    let w = sim(|c| c.slots = 1).await;
    let mut lb = Lb::start(&[w.url()], &[]).await;
    lb.wait_available(1).await;
    let mut admin = RawConn::connect(lb.admin_port).await;
    assert_eq!(get_on(&mut admin, "/ready").await, 200);
    drop(admin);
    let running = lb.task(task("sleep", json!({"ms": 800})));
    let running = tokio::spawn(async move { running.send().await.unwrap().status().as_u16() });
    lb.wait_until(|h| h["workers"][0]["lbInFlight"] == json!(1), "a task runs")
        .await;
    let queued = lb.task(task("sleep", json!({"ms": 100})));
    let queued = tokio::spawn(async move { queued.send().await.unwrap().status().as_u16() });
    lb.wait_queued(1).await;
    let term = Instant::now();
    lb.signal("TERM");
    // Readiness turns false at once: the listeners close, so probes are refused
    // while the tasks are still running.
    let refused = |port: u16| std::net::TcpStream::connect(("127.0.0.1", port)).is_err();
    wait_for(
        "the admin listener to close",
        Duration::from_secs(5),
        || refused(lb.admin_port),
    )
    .await;
    wait_for(
        "the client listener to close",
        Duration::from_secs(5),
        || refused(lb.port),
    )
    .await;
    assert_eq!(running.await.unwrap(), 200);
    assert_eq!(queued.await.unwrap(), 200);
    let code = lb.wait_exit(Duration::from_secs(10)).await;
    assert_eq!(code, Some(0), "{}", lb.log());
    // It left as soon as the work was done, not after the 30 s grace period.
    assert!(term.elapsed() < Duration::from_secs(5));
    assert!(lb.log().contains("drained"), "{}", lb.log());
}

#[tokio::test]
async fn after_the_grace_period_what_remains_gets_a_json_error() {
    let w = sim(|c| c.slots = 1).await;
    let mut lb = Lb::start_with(&[w.url()], &[], "  grace_period_s: 1\n").await;
    lb.wait_available(1).await;
    let rb = lb.task(task("sleep", json!({"ms": 20000})));
    let stuck = tokio::spawn(async move {
        let r = rb.send().await.unwrap();
        (r.status().as_u16(), r.json::<Value>().await.unwrap())
    });
    lb.wait_until(|h| h["workers"][0]["lbInFlight"] == json!(1), "a task runs")
        .await;
    let rb = lb.task(task("hello", json!({})));
    let waiting = tokio::spawn(async move { rb.send().await.unwrap().status().as_u16() });
    lb.wait_queued(1).await;
    let term = Instant::now();
    lb.signal("TERM");
    let (s, body) = stuck.await.unwrap();
    assert_eq!(s, 503);
    assert!(
        body["error"].as_str().unwrap().contains("shutting down"),
        "{body}"
    );
    assert_eq!(waiting.await.unwrap(), 503);
    let waited = term.elapsed();
    assert!(waited >= Duration::from_millis(900), "{waited:?}");
    assert_eq!(lb.wait_exit(Duration::from_secs(10)).await, Some(0));
}

#[tokio::test]
async fn an_upgrade_under_continuous_load_fails_no_request() {
    let w = sim(|c| c.slots = 16).await;
    let mut old = Lb::start(&[w.url()], &[]).await;
    old.wait_available(1).await;
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(parking_lot::Mutex::new(Vec::<String>::new()));
    let refused_idle = Arc::new(AtomicU64::new(0));
    let mut load = Vec::new();
    for client_no in 0..6 {
        // Half the clients reuse connections, half open a new one per task.
        let keepalive = client_no % 2 == 0;
        let http = if keepalive {
            reqwest::Client::new()
        } else {
            reqwest::Client::builder()
                .pool_max_idle_per_host(0)
                .build()
                .unwrap()
        };
        let url = old.url("/task");
        let (stop, ok, failures, refused_idle) = (
            stop.clone(),
            ok.clone(),
            failures.clone(),
            refused_idle.clone(),
        );
        load.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let r = http
                    .post(&url)
                    .header("authorization", LB_KEY)
                    .header("x-wr-auth", WK_KEY)
                    .json(&task("sleep", json!({"ms": 30})))
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status() == 200 => {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(r) => failures.lock().push(format!("status {}", r.status())),
                    // HTTP/1.1's keep-alive race: the old process closed an idle connection
                    // as the client reused it. The request was never read, so never run
                    // (checked below against the Worker's count); clients may retry it.
                    Err(e)
                        if keepalive
                            && ["IncompleteMessage", "ConnectionReset"]
                                .iter()
                                .any(|k| format!("{e:?}").contains(k)) =>
                    {
                        refused_idle.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => failures.lock().push(format!("{e:?}")),
                }
            }
        }));
    }
    wait_for("load to flow", Duration::from_secs(10), || {
        ok.load(Ordering::Relaxed) > 10
    })
    .await;
    let before = ok.load(Ordering::Relaxed);
    // The successor waits for the listeners on the upgrade socket; then the old one hands them over.
    let mut new = old
        .command
        .arg("--upgrade")
        .spawn()
        .expect("successor starts");
    let sock = old.upgrade_socket();
    wait_for(
        "the successor's upgrade socket",
        Duration::from_secs(10),
        || sock.exists(),
    )
    .await;
    old.signal("QUIT");
    assert_eq!(
        old.wait_exit(Duration::from_secs(15)).await,
        Some(0),
        "{}",
        old.log()
    );
    let at_exit = ok.load(Ordering::Relaxed);
    wait_for(
        "load to flow through the successor",
        Duration::from_secs(10),
        || ok.load(Ordering::Relaxed) > at_exit + 10,
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    for l in load {
        l.await.unwrap();
    }
    let after = ok.load(Ordering::Relaxed);
    let _ = new.kill();
    let _ = new.wait();
    let failures = failures.lock().clone();
    assert!(
        failures.is_empty(),
        "{} failed requests: {:?}\n{}",
        failures.len(),
        &failures[..failures.len().min(5)],
        old.log()
    );
    assert!(
        before > 10 && after > before + 10,
        "load kept flowing: {before} then {after}"
    );
    // Every task the Worker ran was answered: nothing was lost in the hand-over.
    assert_eq!(
        w.stats().received,
        after,
        "{} idle keep-alive closes",
        refused_idle.load(Ordering::Relaxed)
    );
    assert!(
        old.log().contains("upgrade") || old.log().contains("SIGQUIT"),
        "{}",
        old.log()
    );
}

#[tokio::test]
async fn two_instances_share_workers_without_losing_or_duplicating_tasks() {
    let a = sim(|c| c.slots = 2).await;
    let b = sim(|c| c.slots = 2).await;
    let urls = [a.url(), b.url()];
    let lb1 = Lb::start(&urls, &[]).await;
    let lb2 = Lb::start(&urls, &[]).await;
    lb1.wait_available(2).await;
    lb2.wait_available(2).await;
    let mut handles = Vec::new();
    for i in 0..60 {
        let lb = if i % 2 == 0 { &lb1 } else { &lb2 };
        let rb = lb.task(task("sleep", json!({"ms": 20, "label": format!("t{i}")})));
        handles.push(tokio::spawn(async move {
            let r = rb.send().await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }));
    }
    for h in handles {
        let (s, body) = h.await.unwrap();
        assert_eq!(s, 200, "{body}");
    }
    let mut seen: HashMap<String, u32> = HashMap::new();
    for label in a.stats().order.into_iter().chain(b.stats().order) {
        *seen.entry(label).or_default() += 1;
    }
    assert_eq!(seen.len(), 60, "every task ran");
    assert!(
        seen.values().all(|n| *n == 1),
        "no task ran twice: {seen:?}"
    );
    // Each instance keeps its own slot count (2 per Worker), so a Worker never holds
    // more than 2 × 2 tasks at once (running or waiting inside it). The simulator's own
    // slot limit caps `max_running`, not `max_in_flight`: an instance that overfilled
    // a Worker would show here.
    for w in [&a, &b] {
        let st = w.stats();
        assert!(st.max_in_flight <= 4, "a Worker was overfilled: {st:?}");
        assert!(st.max_in_flight >= 1);
    }
}
