//! Failure notices for webhook tasks: when a task the client was told "accepted"
//! finally fails before a Worker took it, nobody else will tell the webhook. With
//! `webhook.notify_failures`, the load balancer posts `{"success":false,"error":…}`
//! there itself, only to hosts on `webhook.allowed_hosts`.

use std::time::Duration;

use bytes::Bytes;
use pingora::http::RequestHeader;
use serde::Deserialize;
use serde_json::{Map, Value};
use tokio::time::Instant;

use crate::app::App;
use crate::config::headers::HOP_BY_HOP;
use crate::worker_url::WorkerUrl;

/// Longest wait for the webhook's answer.
const NOTIFY_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Deserialize)]
struct Body {
    webhook: Option<Target>,
}

#[derive(Deserialize)]
struct Target {
    url: String,
    #[serde(default)]
    headers: Map<String, Value>,
}

/// Headers of `webhook.headers` the notice writes itself: its framing and type.
const WRITTEN_BY_NOTICE: &[&str] = &["host", "content-length", "content-type"];

/// True for a `webhook.headers` name never sent: one the notice writes itself, or a
/// hop-by-hop one (the same list the Worker requests keep, [`HOP_BY_HOP`]).
fn reserved(name: &str) -> bool {
    WRITTEN_BY_NOTICE
        .iter()
        .chain(HOP_BY_HOP)
        .any(|h| h.eq_ignore_ascii_case(name))
}

/// Posts the failure of the webhook task whose body is `task_body`, in the
/// background, if the policy allows its webhook's host. Returns at once. A traced
/// task (`trace`) gets a span for the notice, which the webhook receives as the
/// parent in its `traceparent`.
pub(crate) fn failure(
    app: &App,
    task_id: &str,
    task_body: &[u8],
    error: &str,
    trace: Option<&crate::traces::TaskTrace>,
) {
    let policy = &app.settings().webhook_notify;
    if !policy.enabled {
        return;
    }
    let Some(target) = serde_json::from_slice::<Body>(task_body)
        .ok()
        .and_then(|b| b.webhook)
    else {
        return;
    };
    // The query goes back to the receiver (it often holds a token) but is never
    // logged; the URL parser of Worker addresses refuses queries.
    let (base, query) = split_query(&target.url);
    let url = match WorkerUrl::parse(base) {
        Ok(u) => u,
        Err(e) => {
            log::info!("task {task_id}: failure not posted: webhook.url {e}");
            return;
        }
    };
    if !policy.allows(&url.host, url.port) {
        log::info!(
            "task {task_id}: failure not posted: {} is not in webhook.allowed_hosts",
            url.authority()
        );
        return;
    }
    let Ok(mut request) = request(&url, query, &target.headers) else {
        return;
    };
    // Named by its host alone: the URL's path and query may carry a secret.
    let span = trace.map(|t| t.notice(&url.authority()));
    if let Some(span) = &span {
        // Replaces a `traceparent` of `webhook.headers`: the notice is our span.
        let _ = request.insert_header("traceparent", span.traceparent.as_str());
    }
    let body = Bytes::from(
        serde_json::to_vec(&serde_json::json!({"success": false, "error": error}))
            .unwrap_or_default(),
    );
    let notices = app.notices().clone();
    let task_id = task_id.to_string();
    tokio::spawn(async move {
        let deadline = Instant::now() + NOTIFY_TIMEOUT;
        let _ = request.insert_header(http::header::CONTENT_LENGTH, body.len());
        let limits = crate::upstream::Limits {
            deadline,
            response_header: None,
            body_idle: None,
        };
        let posted = match crate::upstream::wire_head(&request) {
            Ok(head) => notices.send(&url, head, &body, limits).await,
            Err(e) => Err(e),
        };
        match posted {
            Ok(mut exchange) => {
                let status = exchange.header().status.as_u16();
                while let Ok(Some(_)) = exchange.next_chunk().await {}
                exchange.finish();
                log::info!("task {task_id}: failure posted to its webhook ({status})");
                if let Some(span) = span {
                    span.posted(status);
                }
            }
            Err(e) => {
                log::warn!("task {task_id}: failure not posted to its webhook: {e}");
                if let Some(span) = span {
                    span.failed(e.to_string());
                }
            }
        }
    });
}

/// `webhook.url` without its fragment, split into what is dialled and its query.
fn split_query(raw: &str) -> (&str, Option<&str>) {
    let raw = raw.split_once('#').map_or(raw, |(before, _)| before);
    match raw.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (raw, None),
    }
}

fn request(
    url: &WorkerUrl,
    query: Option<&str>,
    extra: &Map<String, Value>,
) -> pingora::Result<RequestHeader> {
    let mut path = url.path("");
    if path.is_empty() {
        path.push('/');
    }
    if let Some(query) = query {
        path.push('?');
        path.push_str(query);
    }
    let mut req = RequestHeader::build("POST", path.as_bytes(), Some(extra.len() + 3))?;
    req.insert_header(http::header::HOST, url.host_header())?;
    req.insert_header(http::header::CONTENT_TYPE, "application/json")?;
    for (name, value) in extra {
        let Some(value) = value.as_str() else {
            continue;
        };
        if reserved(name) {
            continue;
        }
        // A name or value that is not a valid header is skipped, not fatal.
        let _ = req.append_header(name.clone(), value);
    }
    Ok(req)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_notice_keeps_its_own_framing_and_no_hop_by_hop_header() {
        for name in ["Host", "content-length", "Content-Type", "Connection", "TE"] {
            assert!(reserved(name), "{name}");
        }
        // In the shared hop-by-hop list, missing from the notice's own copy before.
        assert!(reserved("Proxy-Connection"));
        assert!(!reserved("x-signature"));
    }

    #[test]
    fn a_webhook_query_goes_back_to_the_receiver_without_its_fragment() {
        assert_eq!(
            split_query("http://h:1/hook?token=a&b=c#frag"),
            ("http://h:1/hook", Some("token=a&b=c"))
        );
        assert_eq!(split_query("http://h:1/hook"), ("http://h:1/hook", None));
        let url = WorkerUrl::parse("http://h:1/hook").unwrap();
        let req = request(&url, Some("token=a"), &Map::new()).unwrap();
        assert_eq!(req.uri.to_string(), "/hook?token=a");
    }
}
