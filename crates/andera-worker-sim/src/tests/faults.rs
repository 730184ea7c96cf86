//! The simulator's task faults, seen on a raw socket.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{start, LB, WK};
use crate::TaskFault;

/// Sends one `POST /task` for `hello` and returns what arrives within `wait`.
async fn raw_task(w: &crate::SimWorker, wait: Duration) -> String {
    let mut s = tokio::net::TcpStream::connect(w.http_addr()).await.unwrap();
    let body = r#"{"group":"default","function":"hello","contract":1}"#;
    let req = format!(
        "POST /task HTTP/1.1\r\nhost: w\r\nx-lb-auth: {LB}\r\nauthorization: {WK}\r\n\
         content-type: application/json\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(wait, s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn interim_answers_precede_the_real_one_and_hang_never_answers() {
    let w = start(2).await;
    w.set_task_fault(TaskFault::Interim(103));
    let answer = raw_task(&w, Duration::from_secs(5)).await;
    assert!(
        answer.starts_with("HTTP/1.1 103 Early Hints\r\n"),
        "{answer}"
    );
    assert!(answer.contains("\r\n\r\nHTTP/1.1 200 OK\r\n"), "{answer}");
    assert!(answer.ends_with(r#""result":{"message":"Hello World!"},"success":true}"#));
    w.set_task_fault(TaskFault::Hang);
    assert_eq!(raw_task(&w, Duration::from_millis(500)).await, "");
    assert_eq!(w.stats().received, 2);
    w.set_task_fault(TaskFault::None);
    assert!(raw_task(&w, Duration::from_secs(5))
        .await
        .starts_with("HTTP/1.1 200 OK\r\n"));
    assert_eq!("interim-100".parse(), Ok(TaskFault::Interim(100)));
    assert!("interim-200".parse::<TaskFault>().is_err());
}

#[tokio::test]
async fn a_frozen_worker_answers_nothing_until_thawed() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::Message;

    let w = start(2).await;
    let mut req = w.ws_url().unwrap().as_str().into_client_request().unwrap();
    req.headers_mut()
        .insert("sec-websocket-protocol", LB.parse().unwrap());
    let (mut socket, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    socket.next().await.unwrap().unwrap(); // the first push
    w.set_task_fault(TaskFault::Frozen);
    // Drain what was already on its way, then silence on the feed, even to `ping`.
    while tokio::time::timeout(Duration::from_millis(300), socket.next())
        .await
        .is_ok()
    {}
    socket.send(Message::text("ping")).await.unwrap();
    let silent = tokio::time::timeout(Duration::from_millis(1500), socket.next()).await;
    assert!(silent.is_err(), "a frozen feed sent {silent:?}");
    let health = super::client()
        .get(format!("{}/health", w.url()))
        .header("x-lb-auth", LB)
        .timeout(Duration::from_millis(500))
        .send()
        .await;
    assert!(health.is_err(), "a frozen /health answered");
    assert_eq!(raw_task(&w, Duration::from_millis(500)).await, "");
    w.set_task_fault(TaskFault::None);
    let thawed = tokio::time::timeout(Duration::from_secs(3), socket.next()).await;
    assert!(thawed.is_ok(), "the feed speaks again once thawed");
    assert_eq!("frozen".parse(), Ok(TaskFault::Frozen));
}
