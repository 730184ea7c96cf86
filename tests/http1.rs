//! HTTP/1 requests that RFC 9112 (and nginx, HAProxy) treat strictly, and the admin
//! port's `Host` guard, against the real binary with raw TCP clients.

mod common;

use common::raw::{refused, RawConn};
use common::*;
use serde_json::json;

fn task_head(extra: &str) -> String {
    format!(
        "POST /task HTTP/1.1\r\nHost: x\r\nAuthorization: {LB_KEY}\r\nx-wr-auth: {WK_KEY}\r\n\
         content-type: application/json\r\n{extra}\r\n"
    )
}

fn chunked(body: &str) -> String {
    format!("{:x}\r\n{body}\r\n0\r\n\r\n", body.len())
}

#[tokio::test]
async fn request_heads_are_parsed_as_rfc_9112_and_nginx_do() {
    let w = sim(|_| {}).await;
    let lb = Lb::start(&[w.url()], &[]).await;
    lb.wait_available(1).await;
    let body = task("hello", json!({})).to_string();
    // (case, request, status nginx answers, error text)
    let cases = [
        (
            "gzip, chunked",
            format!(
                "{}{}",
                task_head("transfer-encoding: gzip, chunked\r\n"),
                chunked(&body)
            ),
            501,
            "Transfer-Encoding",
        ),
        (
            "identity, chunked",
            format!(
                "{}{}",
                task_head("transfer-encoding: identity, chunked\r\n"),
                chunked(&body)
            ),
            501,
            "Transfer-Encoding",
        ),
        (
            "Transfer-Encoding twice",
            format!(
                "{}{}",
                task_head("transfer-encoding: chunked\r\ntransfer-encoding: chunked\r\n"),
                chunked(&body)
            ),
            400,
            "Transfer-Encoding",
        ),
        (
            "HTTP/1.1 without Host",
            "GET /health HTTP/1.1\r\n\r\n".to_string(),
            400,
            "Host",
        ),
    ];
    for (case, request, status, error) in cases {
        let a = refused(lb.port, request.as_bytes()).await;
        assert_eq!(a.status, status, "{case}: {}", a.head);
        let message = a.json()["error"].as_str().unwrap().to_string();
        assert!(message.contains(error), "{case}: {message}");
        assert_eq!(a.header("connection"), Some("close"), "{case}");
    }
    assert_eq!(w.stats().requests, 0, "none of them reached the Worker");

    // A lone chunked coding still works, and so does HTTP/1.0 without Host.
    let mut c = RawConn::connect(lb.port).await;
    c.send(format!(
        "{}{}",
        task_head("transfer-encoding: chunked\r\n"),
        chunked(&body)
    ))
    .await;
    assert_eq!(c.answer().await.status, 200);
    let a = refused(lb.port, b"GET /health HTTP/1.0\r\n\r\n").await;
    assert_eq!(a.status, 200);
}

#[tokio::test]
async fn head_health_and_a_later_minor_version_are_answered_like_get_over_http_1_1() {
    let lb = Lb::start(&[], &[]).await;
    for port in [lb.port, lb.admin_port] {
        let mut c = RawConn::connect(port).await;
        c.send("HEAD /health HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .await;
        let head = c.head_answer().await;
        assert_eq!(head.status, 200, "port {port}: {}", head.head);
        assert!(head.body.is_empty());
        // Nothing but the head was sent: the next answer on the connection is whole.
        c.send("GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .await;
        let get = c.answer().await;
        assert_eq!(get.status, 200);
        assert_eq!(get.json()["status"], "ready");
        assert_eq!(
            head.header("content-length"),
            get.header("content-length"),
            "HEAD announces the GET body's length"
        );

        let mut c = RawConn::connect(port).await;
        c.send("GET /health HTTP/1.2\r\nHost: localhost\r\n\r\n")
            .await;
        let a = c.answer().await;
        assert_eq!(a.status, 200, "port {port}: {}", a.head);
        assert_eq!(a.version(), "http/1.1");
    }
}

#[tokio::test]
async fn a_huge_chunk_extension_or_trailer_is_refused_and_the_client_reads_the_answer() {
    let lb = Lb::start(&[], &[("REQUEST_BODY_LIMIT", "20mb")]).await;
    let big = "e".repeat(100_000);
    // More than the socket buffers hold, so the client is still writing when the LB
    // answers: a close without lingering resets the connection under the write.
    let body = task("hello", json!({"pad": "p".repeat(16 << 20)})).to_string();
    let extension = format!(
        "{}{:x};ext={big}\r\n{body}\r\n0\r\n\r\n",
        task_head("transfer-encoding: chunked\r\n"),
        body.len()
    );
    let trailer = format!(
        "{}{:x}\r\n{body}\r\n0\r\nx-trailer: {big}\r\n\r\n",
        task_head("transfer-encoding: chunked\r\n"),
        body.len()
    );
    for (case, request) in [("extension", extension), ("trailer", trailer)] {
        // The whole request is written before anything is read, as simple clients do:
        // closing on the unread rest would reset the connection, answer included.
        let a = refused(lb.port, request.as_bytes()).await;
        assert_eq!(a.status, 400, "{case}: {}", a.head);
        assert!(a.json()["error"].is_string(), "{case}");
    }
}

#[tokio::test]
async fn the_admin_port_answers_only_hosts_that_name_it() {
    let lb = Lb::start_with(&[], &[], "admin:\n  allowed_hosts: [lb.internal]\n").await;
    let get =
        |host: &str| format!("GET /metrics HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    let port = lb.admin_port;
    for host in [
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        "lb.internal".to_string(),
        format!("LB.internal:{port}"),
    ] {
        let a = refused(port, get(&host).as_bytes()).await;
        assert_eq!(a.status, 200, "Host {host}");
    }
    // DNS rebinding: a hostile page's name pointed at the admin address.
    for host in ["attacker.example", &format!("attacker.example:{port}")] {
        let a = refused(port, get(host).as_bytes()).await;
        assert_eq!(a.status, 421, "Host {host}");
        assert_eq!(a.json()["reason"], "host_not_allowed");
        let dashboard =
            format!("GET /dashboard HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        assert_eq!(refused(port, dashboard.as_bytes()).await.status, 421);
    }
    // The client port is public: any Host is fine there.
    let a = refused(lb.port, get("attacker.example").as_bytes()).await;
    assert_ne!(a.status, 421);
}
