//! The HTTP side of a simulated Worker: `/health`, `/logs`, `/task` and the
//! test helpers `/sim/stats` and `/sim/control`.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

use super::state::SimState;
use super::task::handle_task;

/// Largest accepted request body.
pub(crate) const BODY_LIMIT: usize = 64 * 1024 * 1024;

/// A JSON response with `status`.
pub(crate) fn json_response(status: StatusCode, body: Value) -> Response {
    (status, Json(body)).into_response()
}

/// `{"error": msg}` with `status`.
pub(crate) fn error_response(status: StatusCode, msg: &str) -> Response {
    json_response(status, json!({ "error": msg }))
}

/// `{"success": false, "error": msg}` with `status`.
pub(crate) fn failure_response(status: StatusCode, msg: &str) -> Response {
    json_response(status, json!({ "success": false, "error": msg }))
}

/// The router served on the Worker's HTTP address.
pub(crate) fn router(state: Arc<SimState>) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/logs", get(logs))
        .route("/task", post(handle_task))
        .route("/sim/stats", get(stats))
        .route("/sim/control", post(control))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(state)
}

fn lb_authorized(state: &SimState, headers: &HeaderMap) -> bool {
    SimState::key_matches(headers.get("x-lb-auth"), &state.cfg.lb_key)
}

async fn health(State(state): State<Arc<SimState>>, headers: HeaderMap) -> Response {
    if state.faults.frozen() {
        let stop = state.shutdown_signal();
        tokio::select! {
            _ = state.faults.thawed() => {}
            _ = stop => return error_response(StatusCode::SERVICE_UNAVAILABLE, "Worker is shutting down"),
        }
    }
    if lb_authorized(&state, &headers) {
        json_response(StatusCode::OK, state.health_json())
    } else {
        json_response(StatusCode::OK, json!({ "status": state.status() }))
    }
}

async fn logs(State(state): State<Arc<SimState>>, headers: HeaderMap) -> Response {
    if lb_authorized(&state, &headers) {
        json_response(StatusCode::OK, json!({ "logs": state.log_lines() }))
    } else {
        error_response(StatusCode::UNAUTHORIZED, "Unauthorized")
    }
}

async fn stats(State(state): State<Arc<SimState>>) -> Response {
    (StatusCode::OK, Json(state.stats())).into_response()
}

async fn control(
    State(state): State<Arc<SimState>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let Ok(body) = body else {
        return error_response(StatusCode::BAD_REQUEST, "Unreadable body");
    };
    let parsed: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return error_response(StatusCode::BAD_REQUEST, &format!("Invalid JSON: {e}")),
    };
    match parsed.get("status").and_then(Value::as_str) {
        Some(status) if !status.trim().is_empty() => {
            state.set_status(status.trim());
            json_response(StatusCode::OK, json!({ "status": state.status() }))
        }
        _ => error_response(
            StatusCode::BAD_REQUEST,
            "Expected {\"status\":\"ready\"|\"maintenance\"}",
        ),
    }
}

async fn not_found() -> Response {
    error_response(StatusCode::NOT_FOUND, "Not found")
}
