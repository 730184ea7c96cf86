//! Writing JSON answers to a client session.

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use futures_util::FutureExt;
use pingora::http::ResponseHeader;
use pingora::prelude::*;
use pingora::proxy::{FailToProxy, Session};
use serde_json::Value;

use crate::reason::Reason;

/// Writes `status` with a JSON body and any extra headers, ending the response.
pub(crate) async fn json(
    session: &mut Session,
    status: u16,
    body: &Value,
    extra: &[(&'static str, String)],
) -> Result<()> {
    let bytes = Bytes::from(serde_json::to_vec(body).unwrap_or_else(|_| b"{}".to_vec()));
    let mut header = ResponseHeader::build(status, Some(3 + extra.len()))?;
    header.insert_header("content-type", "application/json; charset=utf-8")?;
    header.insert_header("content-length", bytes.len())?;
    header.insert_header("cache-control", "no-store")?;
    for (name, value) in extra {
        header.insert_header(*name, value.as_str())?;
    }
    let limit = send_limit(session);
    within(
        limit,
        session.write_response_header(Box::new(header), false),
    )
    .await?;
    within(limit, session.write_response_body(Some(bytes), true)).await
}

/// Writes `{"error": message}` with `status`.
pub(crate) async fn error(
    session: &mut Session,
    status: u16,
    message: &str,
    extra: &[(&'static str, String)],
) -> Result<()> {
    json(
        session,
        status,
        &serde_json::json!({ "error": message }),
        extra,
    )
    .await
}

/// Writes the load balancer's own refusal: `status` with `{"error": message,
/// "reason": reason}`, the `x-andera-reason` header and any extra headers.
pub(crate) async fn refuse(
    session: &mut Session,
    status: u16,
    reason: Reason,
    message: &str,
    extra: &[(&'static str, String)],
) -> Result<()> {
    let body = serde_json::json!({ "error": message, "reason": reason.as_str() });
    let mut headers = Vec::with_capacity(extra.len() + 1);
    headers.push(reason.header());
    headers.extend_from_slice(extra);
    json(session, status, &body, &headers).await
}

/// Writes `403 {"error": message, "reason": "forbidden"}`: a valid key, not for this.
pub(crate) async fn forbidden(session: &mut Session, message: &str) -> Result<()> {
    refuse(session, 403, Reason::Forbidden, message, &[]).await
}

/// Writes a static asset.
pub(crate) async fn asset(
    session: &mut Session,
    content_type: &str,
    body: &'static [u8],
) -> Result<()> {
    let mut header = ResponseHeader::build(200, Some(3))?;
    header.insert_header("content-type", content_type)?;
    header.insert_header("content-length", body.len())?;
    header.insert_header("cache-control", "no-cache")?;
    let limit = send_limit(session);
    within(
        limit,
        session.write_response_header(Box::new(header), false),
    )
    .await?;
    within(
        limit,
        session.write_response_body(Some(Bytes::from_static(body)), true),
    )
    .await
}

/// Answers an `OPTIONS` request as Express did: `200`, `Allow: methods`, and the
/// methods as a `text/plain` body.
pub(crate) async fn allow(session: &mut Session, methods: &'static str) -> Result<()> {
    let mut header = ResponseHeader::build(200, Some(3))?;
    header.insert_header("allow", methods)?;
    header.insert_header("content-type", "text/plain; charset=utf-8")?;
    header.insert_header("content-length", methods.len())?;
    let limit = send_limit(session);
    within(
        limit,
        session.write_response_header(Box::new(header), false),
    )
    .await?;
    within(
        limit,
        session.write_response_body(Some(Bytes::from_static(methods.as_bytes())), true),
    )
    .await
}

/// The connection's send timeout (`client.send_timeout_ms`, set on every session).
pub(crate) fn send_limit(session: &Session) -> Option<Duration> {
    session.as_downstream().get_write_timeout()
}

/// Bounds one write to the client, flush included (Pingora's own write timeout
/// leaves out header writes and the final flush): a client that accepts no answer
/// bytes for `limit` is treated as gone. No timer is armed unless the write waits.
pub(crate) fn within<F: Future<Output = Result<()>>>(
    limit: Option<Duration>,
    write: F,
) -> impl Future<Output = Result<()>> {
    crate::limit::within_opt(limit, write).map(move |done| {
        done.unwrap_or_else(|_| {
            Error::e_explain(
                WriteTimedout,
                format!(
                    "the client accepted no answer bytes for {:?}",
                    limit.unwrap_or_default()
                ),
            )
        })
    })
}

/// Status and message for an error that ended a request before it was answered;
/// status 0 when the connection is already dead and nothing can be sent.
pub(crate) fn failure_status(e: &Error) -> (u16, &'static str) {
    match e.etype() {
        ErrorType::HTTPStatus(code) => (*code, "Request failed"),
        ErrorType::ReadTimedout => (408, "Request body timed out"),
        ErrorType::InvalidHTTPHeader => (400, "Malformed request"),
        ErrorType::Custom("InvalidChunk" | "InvalidTrailerEnd") => {
            (400, "Malformed request body (bad chunked encoding)")
        }
        ErrorType::ReadError
        | ErrorType::WriteError
        | ErrorType::WriteTimedout
        | ErrorType::ConnectionClosed
        | ErrorType::Custom("PrematureBodyEnd") => (0, ""),
        _ if e.esource() == &ErrorSource::Downstream => (400, "Bad request"),
        _ if e.esource() == &ErrorSource::Upstream => (502, "Bad gateway"),
        _ => (500, "Internal error"),
    }
}

/// The reason of a [`failure_status`]: the client's mistakes and a Worker's
/// failure; none for the load balancer's own `500`.
fn failure_reason(code: u16) -> Option<Reason> {
    match code {
        413 => Some(Reason::BodyTooLarge),
        400..=499 => Some(Reason::BadRequest),
        502 => Some(Reason::WorkerFailed),
        _ => None,
    }
}

/// The `fail_to_proxy` of both services: a JSON error instead of Pingora's bodiless
/// one, unless an answer was already started. The connection is not reused: after
/// a failed request its state is unknown.
pub(crate) async fn failure(session: &mut Session, e: &Error) -> FailToProxy {
    let (code, message) = failure_status(e);
    if code > 0 && session.response_written().is_none() {
        session.set_keepalive(None);
        let written = match failure_reason(code) {
            Some(reason) => refuse(session, code, reason, message, &[]).await,
            None => error(session, code, message, &[]).await,
        };
        if let Err(w) = written {
            log::debug!("could not send the {code} answer: {w}");
        }
    }
    FailToProxy {
        error_code: code,
        can_reuse_downstream: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_protocol_errors_map_to_4xx_and_dead_connections_to_nothing() {
        let status = |t: ErrorType| failure_status(&Error::explain(t, "x")).0;
        assert_eq!(status(ErrorType::ReadTimedout), 408);
        assert_eq!(status(ErrorType::InvalidHTTPHeader), 400);
        assert_eq!(status(ErrorType::Custom("InvalidChunk")), 400);
        assert_eq!(status(ErrorType::HTTPStatus(413)), 413);
        assert_eq!(status(ErrorType::ConnectionClosed), 0);
        assert_eq!(status(ErrorType::WriteTimedout), 0);
        assert_eq!(status(ErrorType::InternalError), 500);
    }

    #[test]
    fn failures_answered_with_a_status_name_their_reason() {
        let reason = |t: ErrorType| failure_reason(failure_status(&Error::explain(t, "x")).0);
        assert_eq!(
            reason(ErrorType::HTTPStatus(413)),
            Some(Reason::BodyTooLarge)
        );
        assert_eq!(reason(ErrorType::ReadTimedout), Some(Reason::BadRequest));
        assert_eq!(
            reason(ErrorType::InvalidHTTPHeader),
            Some(Reason::BadRequest)
        );
        assert_eq!(reason(ErrorType::InternalError), None);
    }
}
