//! `POST /task`: authentication, validation, slot scheduling and the three
//! result modes (sync, stream, webhook).

use std::io;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::rejection::{BytesRejection, FailedToBufferBody};
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::Response;
use log::Level;
use serde_json::{json, Map, Value};
use tokio::sync::mpsc;

use super::functions::{
    build_call, ms_duration, run_sync, stream_plan, validate_input, Call, RequestInfo,
};
use super::http::{error_response, failure_response, json_response};
use super::state::SimState;
use super::stats::{fnv1a64_hex, header_map};

/// Highest valid task priority (1 is the most urgent).
const MAX_PRIORITY: u64 = 2_097_152;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Sync,
    Stream,
    Webhook,
}

struct Webhook {
    url: reqwest::Url,
    headers: Map<String, Value>,
}

/// A validated task.
struct Task {
    function: String,
    call: Call,
    priority: u32,
    mode: Mode,
    webhook: Option<Webhook>,
    label: Option<String>,
    delay: Duration,
}

type Rejection = (StatusCode, String);

fn bad(msg: impl Into<String>) -> Rejection {
    (StatusCode::BAD_REQUEST, msg.into())
}

fn parse_task(state: &SimState, headers: &HeaderMap, body: &Bytes) -> Result<Task, Rejection> {
    let parsed: Value =
        serde_json::from_slice(body).map_err(|e| bad(format!("Invalid JSON body: {e}")))?;
    let Value::Object(obj) = parsed else {
        return Err(bad("Request body must be a JSON object"));
    };
    let want = state.cfg.contract;
    match obj.get("contract") {
        // JavaScript numbers: `1.0` is `1`.
        Some(c) if c.as_f64() == Some(want as f64) => {}
        Some(c) => {
            return Err(bad(format!(
                "Contract mismatch: worker has contract {want}, task has {c}"
            )))
        }
        None => {
            return Err(bad(format!(
                "Contract mismatch: worker has contract {want}, task has none"
            )))
        }
    }
    // Like the real Worker: an absent priority is the default, `null` is refused.
    let priority = match obj.get("priority") {
        None => 1,
        Some(p) => match p.as_f64().filter(|f| f.fract() == 0.0 && *f >= 1.0) {
            Some(n) if n as u64 <= MAX_PRIORITY => n as u32,
            _ => {
                return Err(bad(format!(
                    "Invalid priority {p}: must be an integer between 1 and {MAX_PRIORITY}"
                )))
            }
        },
    };
    let mode = match obj.get("mode") {
        None | Some(Value::Null) => Mode::Sync,
        Some(Value::String(m)) if m == "sync" => Mode::Sync,
        Some(Value::String(m)) if m == "stream" => Mode::Stream,
        Some(Value::String(m)) if m == "webhook" => Mode::Webhook,
        Some(m) => {
            return Err(bad(format!(
                "Invalid mode {m}: expected sync, stream or webhook"
            )))
        }
    };
    let webhook = if mode == Mode::Webhook {
        Some(parse_webhook(obj.get("webhook"))?)
    } else {
        None
    };
    let Some(function) = obj.get("function").and_then(Value::as_str) else {
        return Err(bad("Missing or invalid function"));
    };
    let Some(def) = state.functions.iter().find(|d| d.name == function) else {
        return Err((
            StatusCode::NOT_FOUND,
            format!("Function not found: {function}"),
        ));
    };
    let input = match obj.get("input") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(m)) => m.clone(),
        Some(_) => return Err(bad("Invalid input: must be a JSON object")),
    };
    let input = validate_input(def, input).map_err(bad)?;
    let info = RequestInfo {
        body_len: body.len(),
        body_fnv64: fnv1a64_hex(body),
        headers: header_map(headers)
            .into_iter()
            .map(|(k, v)| (k, Value::String(v)))
            .collect(),
        response_headers: input
            .get("responseHeaders")
            .and_then(Value::as_object)
            .map(|h| {
                h.iter()
                    .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                    .collect()
            })
            .unwrap_or_default(),
    };
    let call = build_call(def.name, &input, info).ok_or_else(|| {
        (
            StatusCode::NOT_FOUND,
            format!("Function not found: {function}"),
        )
    })?;
    Ok(Task {
        function: def.name.to_string(),
        call,
        priority,
        mode,
        webhook,
        label: input
            .get("label")
            .and_then(Value::as_str)
            .map(str::to_string),
        delay: ms_duration(input.get("sleepMs").and_then(Value::as_f64).unwrap_or(0.0)),
    })
}

fn parse_webhook(value: Option<&Value>) -> Result<Webhook, Rejection> {
    const INVALID: &str = "Missing or invalid webhook.url for mode webhook";
    let url = value
        .and_then(|w| w.get("url"))
        .and_then(Value::as_str)
        .ok_or_else(|| bad(INVALID))?;
    let url = reqwest::Url::parse(url).map_err(|e| bad(format!("{INVALID}: {e}")))?;
    let headers = match value.and_then(|w| w.get("headers")) {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(h)) => h.clone(),
        Some(_) => return Err(bad("Invalid webhook.headers: must be an object")),
    };
    Ok(Webhook { url, headers })
}

/// Handler of `POST /task`.
pub(crate) async fn handle_task(
    State(state): State<Arc<SimState>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let body = match body {
        Ok(body) => body,
        Err(rejection) => {
            state.counters().record_request(header_map(&headers), &[]);
            if let BytesRejection::FailedToBufferBody(FailedToBufferBody::LengthLimitError(_)) =
                rejection
            {
                state.log(Level::Warn, "task rejected: body too large");
                return failure_response(StatusCode::PAYLOAD_TOO_LARGE, "Request body too large");
            }
            return failure_response(StatusCode::BAD_REQUEST, "Unreadable request body");
        }
    };
    state.counters().record_request(header_map(&headers), &body);
    let lb_ok = SimState::key_matches(headers.get("x-lb-auth"), &state.cfg.lb_key);
    let wk_ok = SimState::key_matches(headers.get(header::AUTHORIZATION), &state.cfg.auth_key);
    if !(lb_ok && wk_ok) {
        state.log(Level::Warn, "task rejected: unauthorized");
        return error_response(StatusCode::UNAUTHORIZED, "Unauthorized");
    }
    if state.status() == "maintenance" {
        return error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "Worker is in maintenance mode",
        );
    }
    let task = match parse_task(&state, &headers, &body) {
        Ok(task) => task,
        Err((status, msg)) => {
            state.log(Level::Warn, &format!("task rejected: {msg}"));
            return failure_response(status, &msg);
        }
    };
    state.counters().record_received(task.label.as_deref());
    state.log(
        Level::Info,
        &format!(
            "task {} received (priority {}, mode {:?})",
            task.function, task.priority, task.mode
        ),
    );
    if matches!(
        state.faults.get(),
        super::TaskFault::Hang | super::TaskFault::Frozen
    ) {
        // Accepted and never answered: only a shutdown ends it.
        state.shutdown_signal().await;
        return failure_response(StatusCode::SERVICE_UNAVAILABLE, "Worker is shutting down");
    }
    if state.faults.get() == super::TaskFault::Hold {
        let released = async {
            while state.faults.get() == super::TaskFault::Hold {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
        };
        tokio::select! {
            _ = released => {}
            _ = state.shutdown_signal() => {
                return failure_response(StatusCode::SERVICE_UNAVAILABLE, "Worker is shutting down");
            }
        }
    }
    if task.mode == Mode::Webhook {
        let st = Arc::clone(&state);
        state.spawn_guarded(run_webhook(st, task));
        return json_response(
            StatusCode::OK,
            json!({"success": true, "message": "Task accepted, result will be sent to webhook"}),
        );
    }
    let stop = state.shutdown_signal();
    tokio::select! {
        response = execute(Arc::clone(&state), task) => response,
        _ = stop => failure_response(StatusCode::SERVICE_UNAVAILABLE, "Worker is shutting down"),
    }
}

fn finish(state: &SimState, function: &str, ok: bool, body: &Value) {
    state.counters().completed += 1;
    if ok {
        state.log(Level::Info, &format!("task {function} done"));
    } else {
        let err = body.get("error").and_then(Value::as_str).unwrap_or("");
        state.log(Level::Error, &format!("task {function} failed: {err}"));
    }
}

/// Runs a sync or stream task once it holds a slot.
async fn execute(state: Arc<SimState>, task: Task) -> Response {
    let permit = state.slots.acquire(task.priority).await;
    tokio::time::sleep(task.delay).await;
    if task.mode == Mode::Stream {
        if let Some(plan) = stream_plan(&task.call) {
            let (tx, rx) = mpsc::channel::<Chunk>(16);
            let st = Arc::clone(&state);
            let function = task.function;
            state.spawn_guarded(async move {
                let _permit = permit;
                for (delay, text) in plan {
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = tx.closed() => return,
                    }
                    if tx.send(Chunk::Data(Bytes::from(text))).await.is_err() {
                        st.log(Level::Warn, &format!("task {function}: client went away"));
                        return;
                    }
                }
                let _ = tx.send(Chunk::End).await;
                finish(&st, &function, true, &Value::Null);
            });
            return stream_response(rx);
        }
    }
    let (ok, body) = run_sync(&task.call).await;
    drop(permit);
    finish(&state, &task.function, ok, &body);
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::INTERNAL_SERVER_ERROR
    };
    let mut response = json_response(status, body);
    if let Call::Echo(info) = &task.call {
        for (name, value) in &info.response_headers {
            if let (Ok(n), Ok(v)) = (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_str(value),
            ) {
                response.headers_mut().append(n, v);
            }
        }
    }
    response
}

/// A message from a stream producer to the response body.
enum Chunk {
    Data(Bytes),
    End,
}

/// A chunked `text/plain` response fed by `rx`. If the producer stops without
/// `Chunk::End` (shutdown), the body fails instead of ending cleanly.
fn stream_response(rx: mpsc::Receiver<Chunk>) -> Response {
    let stream = futures_util::stream::unfold(Some(rx), |rx| async move {
        let mut rx = rx?;
        match rx.recv().await {
            Some(Chunk::Data(bytes)) => Some((Ok(bytes), Some(rx))),
            Some(Chunk::End) => None,
            None => Some((
                Err(io::Error::new(
                    io::ErrorKind::ConnectionAborted,
                    "worker stopped mid-stream",
                )),
                None,
            )),
        }
    });
    let mut response = Response::new(Body::from_stream(stream));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// Runs a webhook task, then POSTs its result to the webhook as the real Worker
/// (worker-core 0.1.3) does: the bare function result (`{"message":"Hello w!"}`)
/// with `User-Agent: Andera`; a failed function posts its sync-mode error body.
async fn run_webhook(state: Arc<SimState>, task: Task) {
    let permit = state.slots.acquire(task.priority).await;
    tokio::time::sleep(task.delay).await;
    let (ok, body) = run_sync(&task.call).await;
    drop(permit);
    finish(&state, &task.function, ok, &body);
    let Some(webhook) = task.webhook else { return };
    let mut request = state
        .webhook_client
        .post(webhook.url.clone())
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::USER_AGENT, "Andera");
    for (name, value) in &webhook.headers {
        let text = match value {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        match (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(&text),
        ) {
            (Ok(n), Ok(v)) => request = request.header(n, v),
            _ => state.log(
                Level::Warn,
                &format!("webhook: skipping bad header {name:?}"),
            ),
        }
    }
    let posted = match body.get("result") {
        Some(result) if ok => result,
        _ => &body,
    };
    let payload = match serde_json::to_vec(posted) {
        Ok(p) => p,
        Err(e) => {
            state.log(Level::Error, &format!("webhook: cannot encode result: {e}"));
            return;
        }
    };
    match request.body(payload).send().await {
        Ok(resp) if resp.status().is_success() => state.log(
            Level::Info,
            &format!("webhook for task {} delivered", task.function),
        ),
        Ok(resp) => state.log(
            Level::Error,
            &format!("webhook {} answered {}", webhook.url, resp.status()),
        ),
        Err(e) => state.log(
            Level::Error,
            &format!("webhook {} failed: {e}", webhook.url),
        ),
    }
}
