//! Writing JSON answers to a client session.

use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::prelude::*;
use pingora::proxy::Session;
use serde_json::Value;

/// Writes `status` with a JSON body and any extra headers, ending the response.
pub async fn json(
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
    session
        .write_response_header(Box::new(header), false)
        .await?;
    session.write_response_body(Some(bytes), true).await
}

/// Writes `{"error": message}` with `status`.
pub async fn error(
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

/// Writes a static asset.
pub async fn asset(session: &mut Session, content_type: &str, body: &'static [u8]) -> Result<()> {
    let mut header = ResponseHeader::build(200, Some(3))?;
    header.insert_header("content-type", content_type)?;
    header.insert_header("content-length", body.len())?;
    header.insert_header("cache-control", "no-cache")?;
    session
        .write_response_header(Box::new(header), false)
        .await?;
    session
        .write_response_body(Some(Bytes::from_static(body)), true)
        .await
}
