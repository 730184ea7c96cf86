//! Client-connection hardening against the real binary, with raw TCP clients:
//! header and idle deadlines, the header cap, JSON answers for protocol errors,
//! the send timeout, pipelining and HTTP/1.0 streams.

mod common;

use std::time::Duration;

use common::raw::{parse_one, read_to_close, refused, Answer, RawConn};
use common::*;
use serde_json::json;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::timeout;

/// Generous "does not hang" bound for limits configured at one second.
const CUT: Duration = Duration::from_secs(8);

async fn connect(port: u16) -> TcpStream {
    TcpStream::connect(("127.0.0.1", port)).await.unwrap()
}

fn client_yaml(lines: &str) -> String {
    format!("client:\n{lines}")
}

#[tokio::test]
async fn a_header_sent_byte_by_byte_is_cut_at_the_total_header_deadline() {
    let lb = Lb::start_with(&[], &[], &client_yaml("  header_timeout_ms: 1000\n")).await;
    let s = connect(lb.port).await;
    let (mut r, mut w) = s.into_split();
    w.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    // Slowloris: a byte every 200 ms keeps a per-read timeout happy forever.
    let trickle = tokio::spawn(async move {
        while w.write_all(b"X").await.is_ok() {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    let mut all = timeout(CUT, read_to_close(&mut r))
        .await
        .expect("the connection is cut at the header deadline");
    trickle.abort();
    let a = parse_one(&mut all, true, false).expect("a 408 answer");
    assert_eq!(a.status, 408);
    assert!(a.json()["error"].is_string());
}

#[tokio::test]
async fn an_idle_keepalive_connection_is_closed_after_the_idle_timeout_on_both_ports() {
    let lb = Lb::start_with(&[], &[], &client_yaml("  idle_timeout_ms: 1000\n")).await;
    for port in [lb.port, lb.admin_port] {
        let mut s = RawConn::connect(port).await;
        for _ in 0..2 {
            // Keep-alive still works within the idle timeout.
            // The admin port answers only Hosts that name it (localhost does).
            s.send(b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n")
                .await;
            assert_eq!(s.answer().await.status, 200, "port {port}");
        }
        let rest = s.rest_until_close(CUT).await;
        assert!(rest.is_empty(), "nothing is sent on idle close: {rest:?}");
    }
}

#[tokio::test]
async fn an_oversized_header_gets_431_json_on_both_ports() {
    let lb = Lb::start(&[], &[]).await;
    let big = format!(
        "GET /health HTTP/1.1\r\nHost: x\r\nX-Pad: {}\r\n\r\n",
        "a".repeat(20_000)
    );
    for port in [lb.port, lb.admin_port] {
        let a = refused(port, big.as_bytes()).await;
        assert_eq!(a.status, 431, "port {port}");
        assert!(a.head.contains("application/json"));
        assert_eq!(a.json()["error"], "Request header too large");
    }
    // Under the default 16 KiB cap is fine.
    let fits = format!(
        "GET /health HTTP/1.1\r\nHost: x\r\nX-Pad: {}\r\nConnection: close\r\n\r\n",
        "a".repeat(12_000)
    );
    let a = refused(lb.port, fits.as_bytes()).await;
    assert_eq!(a.status, 200);
    let metrics = lb.scrape().await;
    assert!(
        metrics
            .lines()
            .any(|l| l.contains("route=\"refused\"") && l.contains("status=\"431\"")),
        "refusals are counted"
    );
}

#[tokio::test]
async fn a_malformed_header_gets_400_json() {
    let lb = Lb::start(&[], &[]).await;
    for port in [lb.port, lb.admin_port] {
        let a = refused(
            port,
            b"GET /health HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n",
        )
        .await;
        assert_eq!(a.status, 400, "port {port}");
        assert!(a.json()["error"].is_string());
    }
}

fn task_head(extra: &str) -> String {
    format!(
        "POST /task HTTP/1.1\r\nHost: x\r\nAuthorization: {LB_KEY}\r\nx-wr-auth: {WK_KEY}\r\n\
         content-type: application/json\r\n{extra}\r\n"
    )
}

#[tokio::test]
async fn a_bad_chunk_size_gets_400_json() {
    let lb = Lb::start(&[], &[]).await;
    let req = format!(
        "{}zz\r\n{{}}\r\n0\r\n\r\n",
        task_head("transfer-encoding: chunked\r\n")
    );
    let a = refused(lb.port, req.as_bytes()).await;
    assert_eq!(a.status, 400);
    assert!(a.json()["error"].as_str().unwrap().contains("chunk"));
}

#[tokio::test]
async fn a_stalled_body_gets_408_json_after_the_body_timeout() {
    let lb = Lb::start_with(&[], &[], &client_yaml("  body_timeout_ms: 1000\n")).await;
    let mut s = connect(lb.port).await;
    let req = format!("{}{{\"group\":", task_head("content-length: 100\r\n"));
    s.write_all(req.as_bytes()).await.unwrap();
    let mut all = timeout(CUT, read_to_close(&mut s))
        .await
        .expect("a stalled body is cut");
    let a = parse_one(&mut all, true, false).expect("an answer");
    assert_eq!(a.status, 408);
    assert!(a.json()["error"].is_string());
}

#[tokio::test]
async fn pipelined_requests_are_all_answered_in_order() {
    let w = sim(|c| c.slots = 4).await;
    let lb = Lb::start(&[w.url()], &[]).await;
    lb.wait_available(1).await;
    let body = |label: &str| task("hello", json!({"name": label, "label": label})).to_string();
    let (one, two) = (body("one"), body("two"));
    let req = format!(
        "GET /health HTTP/1.1\r\nHost: x\r\n\r\n\
         GET /nope HTTP/1.1\r\nHost: x\r\n\r\n\
         {}{one}{}{two}",
        task_head(&format!("content-length: {}\r\n", one.len())),
        task_head(&format!(
            "content-length: {}\r\nconnection: close\r\n",
            two.len()
        )),
    );
    let mut s = connect(lb.port).await;
    s.write_all(req.as_bytes()).await.unwrap();
    let mut all = timeout(CUT, read_to_close(&mut s))
        .await
        .expect("all answered");
    let answers: Vec<Answer> = std::iter::from_fn(|| parse_one(&mut all, true, false)).collect();
    let statuses: Vec<u16> = answers.iter().map(|a| a.status).collect();
    assert_eq!(statuses, [200, 404, 200, 200]);
    assert_eq!(answers[2].json()["result"]["message"], "Hello one!");
    assert_eq!(answers[3].json()["result"]["message"], "Hello two!");
    assert_eq!(w.stats().order, ["one", "two"]);
}

#[tokio::test]
async fn an_http10_client_gets_a_close_delimited_stream() {
    let w = sim(|_| {}).await;
    let lb = Lb::start(&[w.url()], &[]).await;
    lb.wait_available(1).await;
    let mut body = task("ticker", json!({"count": 3, "intervalMs": 10}));
    body["mode"] = json!("stream");
    let body = body.to_string();
    let req = format!(
        "POST /task HTTP/1.0\r\nAuthorization: {LB_KEY}\r\nx-wr-auth: {WK_KEY}\r\n\
         content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut s = connect(lb.port).await;
    s.write_all(req.as_bytes()).await.unwrap();
    let mut all = timeout(CUT, read_to_close(&mut s))
        .await
        .expect("the stream ends with the connection");
    let a = parse_one(&mut all, true, false).expect("an answer");
    assert_eq!(a.status, 200);
    assert!(!a.head.contains("transfer-encoding"), "{}", a.head);
    assert_eq!(String::from_utf8_lossy(&a.body), "tick 1\ntick 2\ntick 3\n");
}

#[tokio::test]
async fn a_client_that_never_reads_its_answer_frees_the_slot_after_the_send_timeout() {
    let w = sim(|c| c.slots = 1).await;
    let lb = Lb::start_with(
        &[w.url()],
        &[("REQUEST_BODY_LIMIT", "20mb")],
        &client_yaml("  send_timeout_ms: 1000\n"),
    )
    .await;
    lb.wait_available(1).await;
    // An 8 MB answer cannot fit in the socket buffers of a client that reads nothing.
    let body = task("hello", json!({"name": "n".repeat(8 << 20)})).to_string();
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    let mut stalled = sock
        .connect(([127, 0, 0, 1], lb.port).into())
        .await
        .unwrap();
    let req = format!(
        "{}{body}",
        task_head(&format!("content-length: {}\r\n", body.len()))
    );
    stalled.write_all(req.as_bytes()).await.unwrap();

    // The task is recorded as failed, and the only slot serves the next task.
    let counted = async {
        loop {
            let m = lb.http.get(lb.admin_url("/metrics")).send().await;
            if let Ok(m) = m {
                // Counters exist at 0 from the start: the line must count one.
                let text = m.text().await.unwrap_or_default();
                if text.lines().any(|l| {
                    l.starts_with("andera_lb_tasks_total")
                        && l.contains("outcome=\"client_gone\"")
                        && !l.ends_with(" 0")
                }) {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    timeout(Duration::from_secs(20), counted)
        .await
        .expect("the stalled task is counted as failed");
    let (status, answer) = timeout(Duration::from_secs(20), lb.run(task("hello", json!({}))))
        .await
        .expect("the slot was freed");
    assert_eq!(status, 200, "{answer}");
    // And the stalled client's connection was closed.
    timeout(Duration::from_secs(20), read_to_close(&mut stalled))
        .await
        .expect("the stalled connection is closed");
}
