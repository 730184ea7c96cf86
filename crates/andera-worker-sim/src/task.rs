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
    build_call, ms_duration, run_sync, stream_plan, with_defaults, Call, FunctionDef, RequestInfo,
};
use super::http::{error_response, failure_response, json_response};
use super::state::SimState;
use super::stats::{fnv1a64_hex, header_map};
use super::validate::{js_number, validate_input};

/// Highest valid task priority (1 is the most urgent).
const MAX_PRIORITY: f64 = 2_097_152.0;

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

/// A task that passed the checks made before it waits for a slot (protocol §5,
/// steps 1 to 11); its input is checked once it holds one.
struct Task {
    def: FunctionDef,
    /// The `input` member's JSON text (`None`: absent), checked in the client's
    /// key order.
    input_text: Option<String>,
    input: Map<String, Value>,
    info: RequestInfo,
    priority: u32,
    mode: Mode,
    webhook: Option<Webhook>,
    label: Option<String>,
}

type Rejection = (StatusCode, String);

fn bad(msg: impl Into<String>) -> Rejection {
    (StatusCode::BAD_REQUEST, msg.into())
}

/// JavaScript `Number(v)`.
fn js_to_number(v: &Value) -> f64 {
    match v {
        Value::Null => 0.0,
        Value::Bool(b) => f64::from(u8::from(*b)),
        Value::Number(n) => n.as_f64().unwrap_or(f64::NAN),
        Value::String(s) => {
            let t = s.trim();
            if t.is_empty() {
                0.0
            } else if t
                .bytes()
                .all(|b| b.is_ascii_digit() || b"+-.eE".contains(&b))
            {
                t.parse().unwrap_or(f64::NAN)
            } else {
                f64::NAN
            }
        }
        Value::Array(a) if a.is_empty() => 0.0,
        Value::Array(a) if a.len() == 1 && !a[0].is_array() && !a[0].is_object() => match &a[0] {
            Value::Null => 0.0,
            one => js_to_number(&Value::String(match one {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })),
        },
        _ => f64::NAN,
    }
}

/// JavaScript truthiness.
fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|x| x != 0.0),
        Value::String(s) => !s.is_empty(),
        _ => true,
    }
}

/// The body as worker-core's JSON body parser reads it: `{}` for an empty body or a
/// non-JSON Content-Type; `None` (the Worker's `500 Internal server error`) for
/// malformed JSON or a top-level scalar.
fn read_body(headers: &HeaderMap, body: &Bytes) -> Option<Map<String, Value>> {
    let json_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.to_ascii_lowercase().contains("json"));
    if !json_type || body.iter().all(u8::is_ascii_whitespace) {
        return Some(Map::new());
    }
    match serde_json::from_slice(body).ok()? {
        Value::Object(obj) => Some(obj),
        // An array passes the parser; it has none of the task's fields.
        Value::Array(_) => Some(Map::new()),
        _ => None,
    }
}

/// Steps 4 to 11 of protocol §5, in the Worker's order.
fn parse_task(
    state: &SimState,
    headers: &HeaderMap,
    body: &Bytes,
    obj: &Map<String, Value>,
) -> Result<Task, Rejection> {
    let priority = match obj.get("priority") {
        None => 1.0,
        Some(p) => js_to_number(p),
    };
    if !(1.0..=MAX_PRIORITY).contains(&priority) {
        return Err(bad(format!(
            "Invalid priority: must be between 1 and {MAX_PRIORITY}"
        )));
    }
    let function = match obj.get("function") {
        Some(Value::String(f)) if !f.is_empty() => f.clone(),
        _ => return Err(bad("Missing or invalid function name")),
    };
    let contract = match obj.get("contract") {
        Some(c @ Value::Number(n)) if truthy(c) => n.as_f64().unwrap_or(f64::NAN),
        _ => return Err(bad("Missing or invalid contract")),
    };
    let want = state.cfg.contract;
    if contract != want as f64 {
        return Err(bad(format!(
            "Contract version mismatch: requested {}, worker is {want}",
            js_number(contract)
        )));
    }
    let input = match obj.get("input") {
        None | Some(Value::Null) | Some(Value::Array(_)) => Map::new(),
        Some(Value::Object(m)) => m.clone(),
        Some(_) => return Err(bad("Invalid input: must be an object")),
    };
    let mode = match obj.get("mode") {
        Some(m) if truthy(m) => match m.as_str() {
            Some("sync") => Mode::Sync,
            Some("stream") => Mode::Stream,
            Some("webhook") => Mode::Webhook,
            _ => return Err(bad("Invalid mode")),
        },
        _ => Mode::Sync,
    };
    let Some(def) = state.functions.iter().find(|d| d.name == function) else {
        return Err((
            StatusCode::NOT_FOUND,
            format!("Function '{function}' not found"),
        ));
    };
    if mode == Mode::Stream && !matches!(def.name.as_str(), "hello" | "ticker") {
        return Err(bad(format!(
            "Function '{function}' does not support streaming"
        )));
    }
    let webhook = if mode == Mode::Webhook {
        Some(parse_webhook(obj.get("webhook"))?)
    } else {
        None
    };
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
    Ok(Task {
        def: def.clone(),
        input_text: input_text(body),
        label: input
            .get("label")
            .and_then(Value::as_str)
            .map(str::to_string),
        input,
        info,
        // The heap orders by the number; a fraction runs with its whole part.
        priority: priority as u32,
        mode,
        webhook,
    })
}

/// The raw JSON text of the body's `input` member (the last one, as `JSON.parse`).
fn input_text(body: &Bytes) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Raw<'a> {
        #[serde(borrow)]
        input: Option<&'a serde_json::value::RawValue>,
    }
    let raw: Raw = serde_json::from_slice(body).ok()?;
    raw.input.map(|r| r.get().to_string())
}

/// Once the task holds a slot: its input checked against the schema (the Worker's
/// `500` message otherwise), then its call and its `sleepMs` delay.
fn prepare(task: &Task) -> Result<(Call, Duration), String> {
    if !task.def.open {
        validate_input(&task.def.params, task.input_text.as_deref())?;
    }
    let input = with_defaults(&task.def, task.input.clone());
    let call = if task.def.custom {
        Call::Custom {
            input: Value::Object(task.input.clone()),
        }
    } else {
        build_call(&task.def.name, &input, task.info.clone())
            .ok_or_else(|| format!("Function '{}' not found", task.def.name))?
    };
    let delay = ms_duration(input.get("sleepMs").and_then(Value::as_f64).unwrap_or(0.0));
    Ok((call, delay))
}

fn parse_webhook(value: Option<&Value>) -> Result<Webhook, Rejection> {
    const INVALID: &str = "Missing or invalid webhook.url for mode webhook";
    let url = value
        .filter(|w| w.is_object())
        .and_then(|w| w.get("url"))
        .and_then(Value::as_str)
        .ok_or_else(|| bad(INVALID))?;
    let url = reqwest::Url::parse(url).map_err(|_| bad(INVALID))?;
    let headers = match value.and_then(|w| w.get("headers")) {
        Some(Value::Object(h)) => h.clone(),
        _ => Map::new(),
    };
    Ok(Webhook { url, headers })
}

/// Handler of `POST /task`.
pub(crate) async fn handle_task(
    State(state): State<Arc<SimState>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    // Step 1: the body is read before auth; what the parser refuses is a 500.
    let body = match body {
        Ok(body) => body,
        Err(rejection) => {
            state.counters().record_request(header_map(&headers), &[]);
            if let BytesRejection::FailedToBufferBody(FailedToBufferBody::LengthLimitError(_)) =
                rejection
            {
                state.log(Level::Warn, "task rejected: body too large");
            }
            return error_response(StatusCode::INTERNAL_SERVER_ERROR, "Internal server error");
        }
    };
    state.counters().record_request(header_map(&headers), &body);
    let Some(obj) = read_body(&headers, &body) else {
        state.log(Level::Warn, "task rejected: body is not a JSON object");
        return error_response(StatusCode::INTERNAL_SERVER_ERROR, "Internal server error");
    };
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
    let task = match parse_task(&state, &headers, &body, &obj) {
        Ok(task) => task,
        Err((status, msg)) => {
            state.log(Level::Warn, &format!("task rejected: {msg}"));
            return error_response(status, &msg);
        }
    };
    state.counters().record_received(task.label.as_deref());
    state.log(
        Level::Info,
        &format!(
            "task {} received (priority {}, mode {:?})",
            task.def.name, task.priority, task.mode
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
    let function = task.def.name.clone();
    let (call, delay) = match prepare(&task) {
        Ok(ready) => ready,
        Err(msg) => {
            drop(permit);
            let body = json!({"success": false, "error": msg});
            finish(&state, &function, false, &body);
            let mut response = failure_response(StatusCode::INTERNAL_SERVER_ERROR, &msg);
            if task.mode == Mode::Stream {
                response.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; charset=utf-8"),
                );
            }
            return response;
        }
    };
    tokio::time::sleep(delay).await;
    if task.mode == Mode::Stream {
        if let Some(plan) = stream_plan(&call) {
            let (tx, rx) = mpsc::channel::<Chunk>(16);
            let st = Arc::clone(&state);
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
    let (ok, body) = run_sync(&call).await;
    drop(permit);
    finish(&state, &function, ok, &body);
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::INTERNAL_SERVER_ERROR
    };
    let mut response = json_response(status, body);
    if let Call::Echo(info) = &call {
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
    let (ok, body) = match prepare(&task) {
        Ok((call, delay)) => {
            tokio::time::sleep(delay).await;
            run_sync(&call).await
        }
        // A failed check posts the same body as a failed function.
        Err(msg) => (false, json!({"success": false, "error": msg})),
    };
    drop(permit);
    finish(&state, &task.def.name, ok, &body);
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
            &format!("webhook for task {} delivered", task.def.name),
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
