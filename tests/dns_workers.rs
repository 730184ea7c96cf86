//! Workers found by DNS: a `dns+http://NAME:PORT` entry stands for one Worker per
//! A record of NAME, followed as the records change. A DNS server on loopback (a few
//! lines on a UDP socket with hickory's message types) answers the load balancer
//! with records the test changes while it runs; the Workers listen on 127.0.0.1,
//! 127.0.0.2 and 127.0.0.3 on one port.

mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};

use common::*;
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{RData, Record, RecordType};
use serde_json::{json, Value};

/// The name the Workers are listed under.
const NAME: &str = "workers.andera.test";

/// What the test DNS server answers.
#[derive(Clone)]
enum Answer {
    /// These A records (no AAAA).
    Records(Vec<Ipv4Addr>),
    /// `SERVFAIL`: a failed lookup.
    ServFail,
}

/// A DNS server on 127.0.0.1 answering every A query with the current [`Answer`].
struct TestDns {
    addr: SocketAddr,
    answer: Arc<Mutex<Answer>>,
}

impl TestDns {
    async fn start(records: &[u8]) -> TestDns {
        let socket = tokio::net::UdpSocket::bind(("127.0.0.1", free_port()))
            .await
            .unwrap();
        let addr = socket.local_addr().unwrap();
        let dns = TestDns {
            addr,
            answer: Arc::new(Mutex::new(Answer::Records(Vec::new()))),
        };
        dns.set(records);
        let answer = dns.answer.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            loop {
                let Ok((n, from)) = socket.recv_from(&mut buf).await else {
                    return;
                };
                let Ok(query) = Message::from_vec(&buf[..n]) else {
                    continue;
                };
                let current = answer.lock().unwrap().clone();
                let reply = respond(&query, &current);
                let _ = socket.send_to(&reply.to_vec().unwrap(), from).await;
            }
        });
        dns
    }

    /// Answers with A records 127.0.0.`n` for each `n` of `last_octets`.
    fn set(&self, last_octets: &[u8]) {
        let ips = last_octets
            .iter()
            .map(|n| Ipv4Addr::new(127, 0, 0, *n))
            .collect();
        *self.answer.lock().unwrap() = Answer::Records(ips);
    }

    fn fail(&self) {
        *self.answer.lock().unwrap() = Answer::ServFail;
    }
}

fn respond(query: &Message, answer: &Answer) -> Message {
    let mut reply = Message::response(query.metadata.id, query.metadata.op_code);
    reply.metadata.recursion_desired = query.metadata.recursion_desired;
    reply.metadata.recursion_available = true;
    reply.metadata.authoritative = true;
    reply.queries = query.queries.clone();
    match answer {
        Answer::ServFail => reply.metadata.response_code = ResponseCode::ServFail,
        Answer::Records(ips) => {
            for q in &query.queries {
                if q.query_type() == RecordType::A {
                    for ip in ips {
                        let record = Record::from_rdata(q.name().clone(), 0, RData::A(A(*ip)));
                        reply.answers.push(record);
                    }
                }
            }
        }
    }
    reply
}

/// Three simulated Workers, on 127.0.0.1..3 and one port; `slots` each.
async fn workers(slots: usize) -> (u16, Vec<andera_worker_sim::SimWorker>) {
    let port = free_port();
    let mut all = Vec::new();
    for n in 1..=3u8 {
        let ip = Ipv4Addr::new(127, 0, 0, n);
        all.push(
            sim(|c| {
                c.slots = slots;
                c.http_addr = SocketAddr::from((ip, port));
                c.ws_addr = Some(SocketAddr::from((ip, 0)));
            })
            .await,
        );
    }
    (port, all)
}

/// The load balancer on `dns+http://NAME:port`, asking `dns`, refreshing every 200 ms.
async fn lb_on(dns: &TestDns, port: u16) -> Lb {
    let yaml = format!(
        "workers:\n  reload_interval_ms: 100\n  dns:\n    refresh_ms: 200\n    server: \"{}\"\n",
        dns.addr
    );
    Lb::start_with(&[format!("dns+http://{NAME}:{port}")], &[], &yaml).await
}

/// The Workers on keyed `/health`, as their URLs, sorted.
fn listed(h: &Value) -> Vec<String> {
    let mut urls: Vec<String> = h["workers"]
        .as_array()
        .map(|w| {
            w.iter()
                .filter_map(|w| w["url"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    urls.sort();
    urls
}

fn urls(port: u16, octets: &[u8]) -> Vec<String> {
    octets
        .iter()
        .map(|n| format!("http://127.0.0.{n}:{port}"))
        .collect()
}

/// Waits until exactly the Workers at 127.0.0.`octets` are listed and available.
async fn wait_listed(lb: &Lb, port: u16, octets: &[u8]) -> Value {
    let want = urls(port, octets);
    lb.wait_until(
        |h| {
            listed(h) == want
                && h["components"]["discovery"]["available"].as_u64() == Some(want.len() as u64)
        },
        &format!("the Workers are {want:?}"),
    )
    .await
}

#[tokio::test]
async fn workers_appear_and_leave_as_records_do() {
    let (port, _workers) = workers(2).await;
    let dns = TestDns::start(&[1, 2]).await;
    let lb = lb_on(&dns, port).await;
    let h = wait_listed(&lb, port, &[1, 2]).await;
    let entry = &h["components"]["discovery"]["dns"][0];
    assert_eq!(entry["entry"], format!("dns+http://{NAME}:{port}"), "{h}");
    assert_eq!(
        (entry["workers"].as_u64(), entry["ok"].as_bool()),
        (Some(2), Some(true)),
        "{h}"
    );

    dns.set(&[1, 2, 3]);
    wait_listed(&lb, port, &[1, 2, 3]).await;
    dns.set(&[3]);
    wait_listed(&lb, port, &[3]).await;
    let (status, body) = lb.run(task("hello", json!({"name": "dns"}))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["result"]["message"], "Hello dns!");
}

#[tokio::test]
async fn a_removed_workers_running_task_finishes() {
    let (port, _workers) = workers(1).await;
    let dns = TestDns::start(&[1]).await;
    let lb = lb_on(&dns, port).await;
    wait_listed(&lb, port, &[1]).await;
    let running = tokio::spawn(lb.task(task("sleep", json!({"ms": 4000}))).send());
    lb.wait_until(
        |h| h["workers"][0]["lbInFlight"] == json!(1),
        "the task runs on 127.0.0.1",
    )
    .await;
    dns.set(&[2]);
    wait_listed(&lb, port, &[2]).await;
    let r = running.await.unwrap().unwrap();
    assert_eq!(r.status(), 200, "the task on the Worker that left finished");
    let (status, body) = lb.run(task("hello", json!({}))).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn a_failed_lookup_keeps_the_last_good_set() {
    let (port, _workers) = workers(2).await;
    let dns = TestDns::start(&[1, 2]).await;
    let lb = lb_on(&dns, port).await;
    wait_listed(&lb, port, &[1, 2]).await;

    dns.fail();
    let h = lb
        .wait_until(
            |h| h["components"]["discovery"]["dns"][0]["ok"] == json!(false),
            "the lookup fails",
        )
        .await;
    assert!(
        h["components"]["discovery"]["dns"][0]["error"].is_string(),
        "{h}"
    );
    assert_eq!(listed(&h), urls(port, &[1, 2]), "the last good set stays");
    let metrics = lb.scrape().await;
    assert!(
        metrics
            .lines()
            .any(|l| l == "andera_lb_dns_entries_failing 1"),
        "{metrics}"
    );
    let failures = metrics
        .lines()
        .find_map(|l| l.strip_prefix("andera_lb_dns_lookup_failures_total "))
        .and_then(|v| v.parse::<u64>().ok());
    assert!(failures.is_some_and(|n| n >= 1), "{metrics}");
    assert!(
        lb.log().contains("keeping the last good set"),
        "{}",
        lb.log()
    );
    let (status, body) = lb.run(task("hello", json!({}))).await;
    assert_eq!(status, 200, "tasks still run on the last set: {body}");

    dns.set(&[2]);
    let h = wait_listed(&lb, port, &[2]).await;
    assert_eq!(
        h["components"]["discovery"]["dns"][0]["ok"],
        json!(true),
        "{h}"
    );
}

#[tokio::test]
async fn https_workers_found_by_dns_keep_the_name_for_tls() {
    // One certificate naming NAME (not an address), served by both Workers.
    let (ca_pem, tls) = andera_worker_sim::test_ca_and_cert(NAME);
    let port = free_port();
    let mut all = Vec::new();
    for n in 1..=2u8 {
        let ip = Ipv4Addr::new(127, 0, 0, n);
        let tls = tls.clone();
        all.push(
            sim(|c| {
                c.tls = Some(tls);
                c.tls_host = NAME.into();
                c.http_addr = SocketAddr::from((ip, port));
                c.ws_addr = Some(SocketAddr::from((ip, 0)));
            })
            .await,
        );
    }
    let dns = TestDns::start(&[1, 2]).await;
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, ca_pem).unwrap();
    let yaml = format!(
        "upstream:\n  ca_file: {}\nworkers:\n  dns:\n    refresh_ms: 200\n    server: \"{}\"\n",
        ca.display(),
        dns.addr
    );
    let lb = Lb::start_with(&[format!("dns+https://{NAME}:{port}")], &[], &yaml).await;
    let h = lb
        .wait_until(
            |h| {
                h["components"]["discovery"]["available"] == json!(2)
                    && h["workers"]
                        .as_array()
                        .is_some_and(|w| w.iter().all(|w| w["websocket"] == json!("connected")))
            },
            "both https Workers are up with their wss feeds",
        )
        .await;
    let mut got = listed(&h);
    got.sort();
    assert_eq!(
        got,
        [
            format!("https://127.0.0.1:{port}"),
            format!("https://127.0.0.2:{port}")
        ],
        "{h}"
    );
    for _ in 0..4 {
        let (status, body) = lb.run(task("hello", json!({"name": "TLS"}))).await;
        assert_eq!(
            (status, body["result"]["message"].clone()),
            (200, json!("Hello TLS!"))
        );
    }
    let served: u64 = all.iter().map(|w| w.stats().received).sum();
    assert_eq!(served, 4);
}

#[tokio::test]
async fn a_malformed_dns_entry_is_refused_at_load_redacted() {
    for (entry, why) in [
        ("dns+http://admin:PassW0rd@workers.svc:3000", "credentials"),
        ("dns+http://10.0.0.5:3000", "not an IP address"),
        ("dns+gopher://workers.svc", "not an http:// or https://"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("workers.json"), json!([entry]).to_string()).unwrap();
        let out = lb_once(dir.path())
            .env("LB_AUTH_KEY", LB_KEY)
            .arg("-t")
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.status.code(), Some(2), "{entry}: {text}");
        assert!(
            text.contains("entry 0 refused") && text.contains(why),
            "{entry}: {text}"
        );
        assert!(!text.contains("PassW0rd"), "{text}");
    }
}

#[tokio::test]
async fn a_bad_dns_server_setting_names_the_key() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("workers.json"), "[]").unwrap();
    std::fs::write(
        dir.path().join("lb.yaml"),
        "workers:\n  dns:\n    server: nowhere\n",
    )
    .unwrap();
    let out = lb_once(dir.path())
        .env("LB_AUTH_KEY", LB_KEY)
        .args(["-t", "--config", "lb.yaml"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(text.contains("workers.dns.server"), "{text}");
}
