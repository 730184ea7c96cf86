//! The live slot feed: one WebSocket client per Worker, authenticated with the LB
//! key as subprotocol, pinged every heartbeat interval, reconnected with backoff.

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use http::HeaderValue;
use tokio::time::{sleep, sleep_until, Instant};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

use super::record::FeedState;
use super::Registry;
use crate::scheduler::WorkerId;
use crate::worker_url::WorkerUrl;

/// Read buffer of one slot feed.
const FEED_BUFFER: usize = 4096;

/// Longest pause between reconnects, as a multiple of the first one.
const MAX_BACKOFF_FACTOR: u32 = 8;

/// Keeps a slot feed open to one Worker until aborted.
pub(crate) async fn feed_loop(registry: Arc<Registry>, id: WorkerId, url: Arc<WorkerUrl>) {
    let s = registry.settings.clone();
    let mut backoff = s.websocket.reconnect;
    loop {
        let Some(port) = registry.ws_port(id) else {
            // Not polled yet: the port comes from /health.
            sleep(Duration::from_millis(200)).await;
            continue;
        };
        let ws_url = url.websocket(port);
        let dial = url.dial.as_deref().map(|ip| (ip, port));
        match run_feed(&registry, id, &ws_url, dial).await {
            FeedEnd::Failed(e) => {
                log::debug!("slot feed {ws_url}: {e}");
                registry.on_feed_state(
                    id,
                    FeedState::Disconnected,
                    Some(format!("websocket: {e}")),
                    false,
                );
            }
            FeedEnd::Lost(e) => {
                log::warn!("slot feed {ws_url} lost: {e}");
                registry.on_feed_state(
                    id,
                    FeedState::Disconnected,
                    Some(format!("websocket: {e}")),
                    true,
                );
                backoff = s.websocket.reconnect;
            }
        }
        sleep(backoff).await;
        backoff = (backoff * 2).min(s.websocket.reconnect * MAX_BACKOFF_FACTOR);
    }
}

enum FeedEnd {
    /// Could not connect: the Worker stays usable on its polled figures.
    Failed(String),
    /// Was connected and went away or silent: offline until it answers again.
    Lost(String),
}

/// Runs one feed connection to `ws_url`; `dial` is the address to connect to
/// instead of resolving its host (a `dns+https` Worker, which keeps NAME for TLS).
async fn run_feed(
    registry: &Registry,
    id: WorkerId,
    ws_url: &str,
    dial: Option<(&str, u16)>,
) -> FeedEnd {
    let s = &registry.settings;
    let mut request = match ws_url.into_client_request() {
        Ok(r) => r,
        Err(e) => return FeedEnd::Failed(e.to_string()),
    };
    match HeaderValue::from_str(s.lb_key.expose()) {
        Ok(v) => {
            request.headers_mut().insert("sec-websocket-protocol", v);
        }
        Err(_) => return FeedEnd::Failed("LB key is not a valid header value".into()),
    }
    let tls = tokio_tungstenite::Connector::Rustls(registry.ws_tls.clone());
    // Slot messages are a few hundred bytes: tungstenite's 128 KiB default buffers
    // would cost 1.3 GiB across 10,000 Workers.
    let config = WebSocketConfig::default()
        .read_buffer_size(FEED_BUFFER)
        .write_buffer_size(0)
        .max_message_size(Some(1 << 20))
        .max_frame_size(Some(1 << 20));
    let connect = async {
        let Some((ip, port)) = dial else {
            return tokio_tungstenite::connect_async_tls_with_config(
                request,
                Some(config),
                false,
                Some(tls),
            )
            .await;
        };
        let tcp = tokio::net::TcpStream::connect((ip, port)).await?;
        tokio_tungstenite::client_async_tls_with_config(request, tcp, Some(config), Some(tls)).await
    };
    let mut ws = match tokio::time::timeout(s.discovery.timeout, connect).await {
        Err(_) => return FeedEnd::Failed("connect timed out".into()),
        Ok(Err(e)) => return FeedEnd::Failed(e.to_string()),
        Ok(Ok((ws, _))) => ws,
    };
    registry.on_feed_state(id, FeedState::Connected, None, false);
    let mut ticker = tokio::time::interval(s.websocket.heartbeat_interval);
    let mut ping_sent: Option<Instant> = None;
    loop {
        let silence_deadline = ping_sent.map(|t| t + s.websocket.heartbeat_timeout);
        tokio::select! {
            _ = ticker.tick() => {
                if let Err(e) = ws.send(Message::text("ping")).await {
                    return FeedEnd::Lost(e.to_string());
                }
                ping_sent.get_or_insert_with(Instant::now);
            }
            _ = async { sleep_until(silence_deadline.unwrap_or_else(Instant::now)).await }, if silence_deadline.is_some() => {
                return FeedEnd::Lost(format!("no answer within {} ms of a ping", s.websocket.heartbeat_timeout.as_millis()));
            }
            msg = ws.next() => match msg {
                Some(Ok(Message::Text(text))) => {
                    ping_sent = None;
                    match serde_json::from_str::<serde_json::Value>(&text) {
                        Ok(v) => registry.on_feed_message(id, &v),
                        Err(_) => log::debug!("slot feed {ws_url}: ignoring a non-JSON message"),
                    }
                }
                Some(Ok(Message::Close(frame))) => {
                    let why = frame.map_or("closed".to_string(), |f| format!("closed with code {} {}", u16::from(f.code), f.reason));
                    return FeedEnd::Lost(why);
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return FeedEnd::Lost(e.to_string()),
                None => return FeedEnd::Lost("connection closed".into()),
            }
        }
    }
}
