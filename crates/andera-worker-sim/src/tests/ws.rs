//! WebSocket, shutdown and scheduler tests.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

use super::super::{SimConfig, SimWorker, WsMode};
use super::{start, LB, WK};

#[tokio::test]
async fn websocket_ping_push_and_unauthorized_close() {
    let w = start(2).await;
    let ws_url = w.ws_url().unwrap();

    let mut req = ws_url.as_str().into_client_request().unwrap();
    req.headers_mut()
        .insert("sec-websocket-protocol", LB.parse().unwrap());
    let (mut socket, resp) = tokio_tungstenite::connect_async(req).await.unwrap();
    assert_eq!(resp.headers()["sec-websocket-protocol"], LB);
    // The first unprompted push arrives at once.
    let first = socket.next().await.unwrap().unwrap();
    let first: Value = serde_json::from_str(first.to_text().unwrap()).unwrap();
    assert_eq!(first["slots"]["limit"], 2);
    assert!(first["system"]["uptime"].is_number());
    socket.send(Message::text("ping")).await.unwrap();
    let pong = tokio::time::timeout(Duration::from_secs(2), async {
        loop {
            let msg = socket.next().await.unwrap().unwrap();
            let v: Value = serde_json::from_str(msg.to_text().unwrap()).unwrap();
            if v.get("system").is_none() {
                return v;
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(
        pong,
        json!({"status":"ready","slots":{"used":0,"available":2,"limit":2,"queue":0}})
    );
    assert_eq!(w.stats().ws_connections, 1);

    let mut bad = ws_url.as_str().into_client_request().unwrap();
    bad.headers_mut()
        .insert("sec-websocket-protocol", "wrong".parse().unwrap());
    let (mut rejected, _) = tokio_tungstenite::connect_async(bad).await.unwrap();
    match rejected.next().await {
        Some(Ok(Message::Close(Some(frame)))) => {
            assert_eq!(frame.code, CloseCode::from(4001));
            assert_eq!(frame.reason.as_str(), "Unauthorized");
        }
        other => panic!("expected a 4001 close, got {other:?}"),
    }

    w.shutdown().await;
    let end = tokio::time::timeout(Duration::from_secs(2), async {
        loop {
            match socket.next().await {
                Some(Ok(Message::Text(_))) => continue,
                other => return other.map(|r| r.is_ok()),
            }
        }
    })
    .await
    .expect("the WebSocket must be cut by shutdown");
    assert_ne!(end, Some(true));
}

#[tokio::test]
async fn silent_websocket_and_no_ws_listener() {
    let mut cfg = SimConfig::new(LB, WK);
    cfg.ws_mode = WsMode::Silent;
    let w = SimWorker::start(cfg).await.unwrap();
    let mut req = w.ws_url().unwrap().into_client_request().unwrap();
    req.headers_mut()
        .insert("sec-websocket-protocol", LB.parse().unwrap());
    let (mut socket, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    socket.send(Message::text("ping")).await.unwrap();
    let got = tokio::time::timeout(Duration::from_millis(1300), socket.next()).await;
    assert!(got.is_err(), "a silent Worker sent {got:?}");
    w.shutdown().await;

    let mut cfg = SimConfig::new(LB, WK);
    cfg.ws_addr = None;
    let w = SimWorker::start(cfg).await.unwrap();
    assert!(w.ws_addr().is_none());
    let port = w.websocket_port();
    assert!(tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err());
    w.shutdown().await;
}

#[tokio::test]
async fn slots_run_by_priority_then_arrival() {
    let slots = super::super::slots::Slots::new(1);
    let held = slots.acquire(1).await;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut waiters = Vec::new();
    for (name, priority) in [("c", 3), ("a1", 1), ("b", 2), ("a2", 1)] {
        let pool = std::sync::Arc::clone(&slots);
        let tx = tx.clone();
        waiters.push(tokio::spawn(async move {
            let _permit = pool.acquire(priority).await;
            let _ = tx.send(name);
        }));
        tokio::task::yield_now().await;
        while slots.counts().queued < waiters.len() {
            tokio::task::yield_now().await;
        }
    }
    // An abandoned waiter leaves the queue cleanly.
    let abandoned = {
        let slots = std::sync::Arc::clone(&slots);
        tokio::spawn(async move {
            let _permit = slots.acquire(1).await;
        })
    };
    while slots.counts().queued < 5 {
        tokio::task::yield_now().await;
    }
    abandoned.abort();
    let _ = abandoned.await;
    assert_eq!(slots.counts().queued, 4);
    drop(held);
    let mut order = Vec::new();
    for _ in 0..4 {
        order.push(rx.recv().await.unwrap());
    }
    assert_eq!(order, ["a1", "a2", "b", "c"]);
    let counts = slots.counts();
    assert_eq!(
        (counts.running, counts.queued, counts.max_running),
        (0, 0, 1)
    );
}
