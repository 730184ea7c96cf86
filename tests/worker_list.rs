//! The Worker list: spellings of one Worker are one Worker, Workers that leave the
//! list leave `/metrics` too, and refused entries never echo their credentials.

mod common;

use std::net::ToSocketAddrs;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

/// `andera-lb -t` in the load balancer's directory, with its environment: stdout
/// and stderr together, and the exit code.
fn dash_t(lb: &Lb) -> (String, Option<i32>) {
    run_in(lb, &["-t"])
}

/// `andera-lb <args>` in the load balancer's directory (its `workers.json`), on
/// other ports: stdout and stderr together, and the exit code.
fn run_in(lb: &Lb, args: &[&str]) -> (String, Option<i32>) {
    let mut cmd = lb_once(lb.dir.path());
    cmd.env("LB_AUTH_KEY", LB_KEY).args(args);
    let out = cmd.output().expect("andera-lb runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (text, out.status.code())
}

/// Lines of `/metrics` that belong to the Worker `url`.
fn series_of(text: &str, url: &str) -> Vec<String> {
    let label = format!("worker=\"{url}\"");
    text.lines()
        .filter(|l| l.contains(&label))
        .map(str::to_string)
        .collect()
}

#[tokio::test]
async fn spellings_of_one_worker_are_one_worker() {
    let w = sim(|c| c.slots = 4).await;
    let port = w.http_addr().port();
    let mut spellings = vec![
        w.url(),
        format!("HTTP://127.0.0.1:{port}"),
        format!("http://127.000.000.001:{port}"),
        format!("http://[::ffff:127.0.0.1]:{port}"),
        format!("http://0x7f.0.0.1:{port}/"),
        format!("http://2130706433:{port}"),
    ];
    // `localhost` merges when it resolves to the Worker's address first (the
    // address the load balancer would connect to).
    let localhost = ("localhost", port)
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .is_some_and(|a| a.ip().to_string() == "127.0.0.1");
    if localhost {
        spellings.push(format!("http://localhost:{port}"));
    } else {
        eprintln!("localhost does not resolve to 127.0.0.1 first here: its spelling is not tried");
    }
    let lb = Lb::start(&spellings, &[]).await;
    let h = lb.wait_available(1).await;
    assert_eq!(h["workers"].as_array().map(Vec::len), Some(1), "{h}");
    assert_eq!(h["workers"][0]["url"], json!(w.url()), "{h}");
    let log = lb.log();
    let (t_out, code) = dash_t(&lb);
    assert_eq!(code, Some(0), "{t_out}");
    for spelling in &spellings[1..] {
        let warning = format!("Worker {spelling:?} is the same Worker as {:?}", w.url());
        assert!(log.contains(&warning), "{warning}\nlog:\n{log}");
        assert!(t_out.contains(&warning), "{warning}\n-t:\n{t_out}");
    }
    // Never more tasks at once than its slots.
    let tasks = (0..12).map(|_| lb.run(task("sleep", json!({"ms": 300}))));
    let answers = futures_util::future::join_all(tasks).await;
    assert!(answers.iter().all(|(s, _)| *s == 200), "{answers:?}");
    let stats = w.stats();
    assert_eq!(stats.received, 12);
    assert!(stats.max_in_flight <= 4, "{stats:?}");
}

#[tokio::test]
async fn removed_workers_leave_no_metric_series() {
    let kept = sim(|_| {}).await;
    // No slot feed listener: their feeds fail, so they have error counters too.
    let gone = [
        sim(|c| c.ws_addr = None).await,
        sim(|c| c.ws_addr = None).await,
    ];
    let list = [kept.url(), gone[0].url(), gone[1].url()];
    let lb = Lb::start(&list, &[]).await;
    lb.wait_available(3).await;
    let mut text = String::new();
    for _ in 0..200 {
        text = lb.scrape().await;
        let counted = gone.iter().all(|g| {
            text.contains(&format!(
                "andera_lb_websocket_errors_total{{worker=\"{}\"}}",
                g.url()
            ))
        });
        if counted {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for g in &gone {
        assert!(!series_of(&text, &g.url()).is_empty(), "{text}");
    }
    assert!(!series_of(&text, &kept.url()).is_empty(), "{text}");
    std::fs::write(lb.workers_file(), json!([kept.url()]).to_string()).unwrap();
    let mut left = Vec::new();
    for _ in 0..200 {
        text = lb.scrape().await;
        left = gone
            .iter()
            .flat_map(|g| series_of(&text, &g.url()))
            .collect();
        if left.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        left.is_empty(),
        "series left behind: {left:?}\n{}",
        lb.log()
    );
    assert!(!series_of(&text, &kept.url()).is_empty(), "{text}");
    let h = lb.health().await;
    assert_eq!(h["workers"].as_array().map(Vec::len), Some(1), "{h}");
}

#[tokio::test]
async fn refused_entries_never_show_their_credentials() {
    let w = sim(|_| {}).await;
    let lb = Lb::start(&[w.url()], &[]).await;
    lb.wait_available(1).await;
    let bad = [
        w.url(),
        format!("http://admin:PassW0rd@{}/", w.http_addr()),
        format!("{}/?token=T0kenValue", w.url()),
    ];
    let secrets = ["PassW0rd", "T0kenValue"];
    std::fs::write(lb.workers_file(), json!(bad).to_string()).unwrap();
    let mut log = String::new();
    for _ in 0..200 {
        log = lb.log();
        if log.contains("keeping the current Worker list") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Refused, each entry with its reason, the secrets masked.
    let refusals = [
        "entry 1 refused",
        "credentials (user:password@) are not allowed",
        "entry 2 refused",
        "a query (?...) is not allowed",
    ];
    for what in refusals {
        assert!(log.contains(what), "{what}\nlog:\n{log}");
    }
    let logs: Value = lb.get_json(&lb.url("/logs"), true).await;
    let overview: Value = lb
        .get_json(&lb.admin_url("/dashboard/api/overview"), true)
        .await;
    let (t_out, code) = dash_t(&lb);
    assert_eq!(code, Some(2), "{t_out}");
    // A start with this list is refused the same way, on stderr.
    let (start_out, code) = run_in(&lb, &[]);
    assert_eq!(code, Some(2), "{start_out}");
    for what in ["entry 1 refused", "entry 2 refused", "***@"] {
        assert!(t_out.contains(what), "{what}\n-t:\n{t_out}");
        assert!(start_out.contains(what), "{what}\nstart:\n{start_out}");
    }
    let logs = logs.to_string();
    let overview = overview.to_string();
    assert!(logs.contains("entry 1 refused"), "{logs}");
    assert!(overview.contains("entry 1 refused"), "{overview}");
    for secret in secrets {
        for (what, text) in [
            ("log file", &log),
            ("/logs", &logs),
            ("overview", &overview),
            ("-t", &t_out),
            ("start-up stderr", &start_out),
        ] {
            assert!(!text.contains(secret), "{secret} in {what}:\n{text}");
        }
    }
    // Still serving the list it had.
    assert_eq!(lb.run(task("hello", json!({}))).await.0, 200);
}

/// Resident memory of process `pid`, in KiB.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[tokio::test]
async fn a_long_list_reverted_gives_its_memory_back() {
    let w = sim(|_| {}).await;
    // Polled seldom: the test measures memory, and must not load the shared cores.
    let lb = Lb::start(&[w.url()], &[("WORKER_DISCOVERY_INTERVAL", "5000")]).await;
    lb.wait_available(1).await;
    let base = rss_kib(lb.pid());
    // 2,500 Workers nobody answers for (port 9 on loopback addresses).
    let long: Vec<String> = std::iter::once(w.url())
        .chain((0..2500).map(|i| format!("http://127.0.{}.{}:9", 2 + i / 250, 1 + i % 250)))
        .collect();
    std::fs::write(lb.workers_file(), json!(long).to_string()).unwrap();
    lb.wait_until(
        |h| {
            h["workers"]
                .as_array()
                .is_some_and(|w| w.len() == long.len())
        },
        "the long list is loaded",
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let peak = rss_kib(lb.pid());
    assert!(peak > base + 20 * 1024, "base {base} KiB, peak {peak} KiB");
    std::fs::write(lb.workers_file(), json!([w.url()]).to_string()).unwrap();
    lb.wait_until(
        |h| h["workers"].as_array().is_some_and(|w| w.len() == 1),
        "the list is back to one Worker",
    )
    .await;
    let half = base + (peak - base) / 2;
    let mut now = rss_kib(lb.pid());
    for _ in 0..200 {
        if now < half {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        now = rss_kib(lb.pid());
    }
    eprintln!("rss: base {base} KiB, peak {peak} KiB, after the revert {now} KiB");
    assert!(
        now < half,
        "base {base} KiB, peak {peak} KiB, after the revert {now} KiB"
    );
    assert_eq!(lb.run(task("hello", json!({}))).await.0, 200);
}
