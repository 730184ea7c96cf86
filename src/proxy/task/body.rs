//! Reading the body: the limit is checked before a byte is read, and a body that
//! pauses too long ends the task.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use pingora::prelude::*;
use pingora::proxy::Session;

pub(super) enum BodyError {
    TooLarge,
    Read(Box<Error>),
}

/// Reads the whole body; `pause` is the longest wait for its next chunk.
pub(super) async fn read_body(
    session: &mut Session,
    limit: usize,
    pause: Duration,
) -> Result<Bytes, BodyError> {
    let declared = session
        .req_header()
        .headers
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(BodyError::TooLarge);
    }
    let expects_continue = session
        .req_header()
        .headers
        .get("expect")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    if expects_continue {
        // curl and others wait a second for this before sending a large body.
        session
            .as_downstream_mut()
            .write_continue_response()
            .await
            .map_err(BodyError::Read)?;
    }
    // A body that arrives as one chunk (the usual case) is kept as it came, uncopied.
    let mut first: Option<Bytes> = None;
    let mut rest = BytesMut::new();
    loop {
        let chunk = crate::limit::within(pause, session.read_request_body())
            .await
            .map_err(|_| BodyError::Read(Error::explain(ReadTimedout, "reading the task body")))?
            .map_err(BodyError::Read)?;
        let Some(chunk) = chunk else { break };
        let so_far = first.as_ref().map_or(0, Bytes::len) + rest.len();
        if so_far + chunk.len() > limit {
            return Err(BodyError::TooLarge);
        }
        if first.is_none() && rest.is_empty() {
            first = Some(chunk);
            continue;
        }
        if let Some(earlier) = first.take() {
            rest.reserve(declared.unwrap_or(0).max(earlier.len() + chunk.len()));
            rest.extend_from_slice(&earlier);
        }
        rest.extend_from_slice(&chunk);
    }
    Ok(first.unwrap_or_else(|| rest.freeze()))
}
