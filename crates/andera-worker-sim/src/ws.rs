//! The WebSocket side of a simulated Worker: live slot reports on `/`.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use axum::routing::any;
use axum::Router;
use log::Level;
use serde_json::Value;
use subtle::ConstantTimeEq;
use tokio::time::MissedTickBehavior;

use super::http::error_response;
use super::state::SimState;
use super::WsMode;

/// Close code sent to a client with a wrong or missing key.
const CLOSE_UNAUTHORIZED: u16 = 4001;
/// Period of the unprompted status pushes.
const PUSH_INTERVAL: Duration = Duration::from_secs(1);

/// The router served on the Worker's WebSocket address.
pub(crate) fn router(state: Arc<SimState>) -> Router {
    Router::new()
        .route("/", any(upgrade))
        .fallback(|| async { error_response(StatusCode::NOT_FOUND, "Not found") })
        .with_state(state)
}

/// The sub-protocols offered by the client, in the order it sent them.
fn offered_protocols(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(str::to_string)
        .collect()
}

async fn upgrade(
    State(state): State<Arc<SimState>>,
    headers: HeaderMap,
    mut ws: WebSocketUpgrade,
) -> Response {
    let offered = offered_protocols(&headers);
    let key = state.cfg.lb_key.as_bytes();
    let authorized = !key.is_empty()
        && offered
            .iter()
            .fold(false, |acc, p| acc | bool::from(p.as_bytes().ct_eq(key)));
    // Like the original (Node `ws`), answer with an offered protocol so the
    // handshake completes; an unauthorized client is then closed with 4001.
    let selected = if authorized {
        Some(state.cfg.lb_key.as_str())
    } else {
        offered.first().map(String::as_str)
    };
    if let Some(value) = selected.and_then(|s| HeaderValue::from_str(s).ok()) {
        ws.set_selected_protocol(value);
    }
    ws.on_upgrade(move |socket| async move {
        let stop = state.shutdown_signal();
        tokio::select! {
            _ = stop => {}
            _ = session(Arc::clone(&state), socket, authorized) => {}
        }
    })
}

async fn session(state: Arc<SimState>, mut socket: WebSocket, authorized: bool) {
    if !authorized {
        state.log(Level::Warn, "websocket rejected: unauthorized");
        let frame = CloseFrame {
            code: CLOSE_UNAUTHORIZED,
            reason: "Unauthorized".into(),
        };
        if socket.send(Message::Close(Some(frame))).await.is_ok() {
            // Give the client a moment to answer the close handshake.
            let _ = tokio::time::timeout(Duration::from_secs(2), async {
                while let Some(Ok(_)) = socket.recv().await {}
            })
            .await;
        }
        return;
    }
    let _counted = ConnectionCount::new(&state);
    state.log(Level::Info, "websocket connected");
    match state.cfg.ws_mode {
        WsMode::Normal => report(&state, &mut socket).await,
        WsMode::Silent => while let Some(Ok(_)) = socket.recv().await {},
    }
    state.log(Level::Info, "websocket disconnected");
}

/// Counts an authorized connection in the stats while it lives.
struct ConnectionCount<'a>(&'a SimState);

impl<'a> ConnectionCount<'a> {
    fn new(state: &'a SimState) -> Self {
        state.ws_connections.fetch_add(1, Ordering::Relaxed);
        ConnectionCount(state)
    }
}

impl Drop for ConnectionCount<'_> {
    fn drop(&mut self) {
        self.0.ws_connections.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn send_json(socket: &mut WebSocket, value: &Value) -> bool {
    socket
        .send(Message::Text(value.to_string().into()))
        .await
        .is_ok()
}

/// Answers `ping`, pushes the status every second and on every slot change.
async fn report(state: &SimState, socket: &mut WebSocket) {
    let mut changes = state.slots.subscribe();
    let mut ticker = tokio::time::interval(PUSH_INTERVAL);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            msg = socket.recv() => match msg {
                Some(Ok(Message::Text(_))) if state.faults.frozen() => {}
                Some(Ok(Message::Text(text))) => {
                    if text.as_str().trim() == "ping" && !send_json(socket, &state.ws_pong_json()).await {
                        return;
                    }
                }
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return,
                Some(Ok(_)) => {}
            },
            _ = ticker.tick() => {
                if !state.faults.frozen() && !send_json(socket, &state.ws_push_json()).await {
                    return;
                }
            }
            changed = changes.changed() => {
                if changed.is_err() {
                    return;
                }
                if !state.faults.frozen() && !send_json(socket, &state.ws_push_json()).await {
                    return;
                }
            }
        }
    }
}
