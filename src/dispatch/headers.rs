//! What a Worker receives in its request head, and what a Worker's answer loses
//! on its way to the client: the header policy of the dispatch path.
//!
//! A Worker gets the set the original sent (protocol §2 and §6): `host`,
//! `authorization` (the client's `x-wr-auth`, as sent), `x-lb-auth` (the LB key),
//! `content-type: application/json` and `content-length`, plus the load balancer's
//! own `x-andera-task-id`, the client's W3C trace context (`traceparent`,
//! `tracestate`) and the client headers an operator lists in
//! `upstream.forward_headers`. No other client header crosses: not its cookies, its
//! `user-agent`, its `content-type` or its `accept-encoding`.

use std::fmt::Write;

use bytes::{BufMut, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue};
use pingora::http::RequestHeader;

use crate::config::headers::{ForwardList, HOP_BY_HOP, TRACE_CONTEXT};

/// The header names listed in `headers`' `Connection` values, lowercased.
fn connection_named(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|name| name.trim().to_ascii_lowercase())
        .filter(|name| !name.is_empty())
        .collect()
}

/// True for a header that stays on its hop, given the names `Connection` lists.
fn is_hop_by_hop(name: &str, named: &[String]) -> bool {
    HOP_BY_HOP.contains(&name) || named.iter().any(|n| n == name)
}

/// Removes the hop-by-hop headers of a Worker's answer before it is relayed, and
/// frames the body for the client's hop: the Worker's length when it gave one,
/// else chunked.
pub(crate) fn strip_response_hop_headers(header: &mut pingora::http::ResponseHeader) {
    let named = connection_named(&header.headers);
    let drop: Vec<HeaderName> = header
        .headers
        .keys()
        .filter(|n| is_hop_by_hop(n.as_str(), &named))
        .cloned()
        .collect();
    for name in drop {
        header.remove_header(&name);
    }
    let bodyless = matches!(header.status.as_u16(), 204 | 304);
    if !bodyless && !header.headers.contains_key(http::header::CONTENT_LENGTH) {
        let _ = header.insert_header(http::header::TRANSFER_ENCODING, "chunked");
    }
}

/// The headers a Worker receives for one task (`host` and `content-length` are
/// added per attempt), prepared once per task.
pub(crate) struct ForwardHeaders {
    pub(super) headers: Vec<(HeaderName, HeaderValue)>,
}

impl ForwardHeaders {
    /// The original's set (the client's `x-wr-auth` as `authorization`, the LB key
    /// in `x-lb-auth`, `content-type: application/json`), our `x-andera-task-id`,
    /// then the client's trace context and the headers `extra` lists, in that order.
    /// A listed header that the client's `Connection` names stays on its hop.
    pub(crate) fn new(
        client: &RequestHeader,
        worker_key: HeaderValue,
        lb_key: &str,
        task_id: &str,
        extra: &ForwardList,
    ) -> Self {
        let mut headers = Vec::with_capacity(6 + extra.names().len());
        headers.push((http::header::AUTHORIZATION, worker_key));
        if let Ok(v) = HeaderValue::from_str(lb_key) {
            headers.push((HeaderName::from_static("x-lb-auth"), v));
        }
        headers.push((
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        ));
        if let Ok(v) = HeaderValue::from_str(task_id) {
            headers.push((HeaderName::from_static("x-andera-task-id"), v));
        }
        let h = &client.headers;
        // Usually no listed header is present: then nothing is allocated here.
        let mut passed: Vec<(&HeaderName, &HeaderValue)> = Vec::new();
        for name in TRACE_CONTEXT.iter().chain(extra.names()) {
            passed.extend(h.get_all(name).iter().map(|value| (name, value)));
        }
        if !passed.is_empty() {
            let named = connection_named(h);
            headers.extend(
                passed
                    .into_iter()
                    .filter(|(n, _)| !is_hop_by_hop(n.as_str(), &named))
                    .map(|(n, v)| (n.clone(), v.clone())),
            );
        }
        ForwardHeaders { headers }
    }

    /// The headers as an HTTP/1 header block (`name: value\r\n`…) without the LB
    /// key, for the task journal: a resumed task is sent what it would have been sent.
    pub(crate) fn to_block(&self) -> Vec<u8> {
        let mut block = Vec::new();
        self.write_lines(&mut block, |name| name != "x-lb-auth");
        block
    }

    /// Writes the headers `keep` accepts as HTTP/1 header lines (`name: value\r\n`).
    fn write_lines(&self, out: &mut impl BufMut, keep: impl Fn(&HeaderName) -> bool) {
        for (name, value) in self.headers.iter().filter(|(n, _)| keep(n)) {
            out.put_slice(name.as_str().as_bytes());
            out.put_slice(b": ");
            out.put_slice(value.as_bytes());
            out.put_slice(b"\r\n");
        }
    }

    /// Headers read back from [`ForwardHeaders::to_block`], with the LB key added again.
    /// Lines that are not valid headers are skipped.
    pub(crate) fn from_block(block: &[u8], lb_key: &str) -> Self {
        let mut headers: Vec<(HeaderName, HeaderValue)> = block
            .split(|b| *b == b'\n')
            .filter_map(|line| {
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                let colon = line.iter().position(|b| *b == b':')?;
                let name = HeaderName::from_bytes(&line[..colon]).ok()?;
                let value = line[colon + 1..]
                    .strip_prefix(b" ")
                    .unwrap_or(&line[colon + 1..]);
                Some((name, HeaderValue::from_bytes(value).ok()?))
            })
            .collect();
        if let Ok(v) = HeaderValue::from_str(lb_key) {
            headers.push((HeaderName::from_static("x-lb-auth"), v));
        }
        ForwardHeaders { headers }
    }

    /// The request head for the Worker at `url`, written straight to the wire
    /// (`POST <base>/task`, `host`, these headers, `content-length`): the names and
    /// values were validated when parsed, so no header map is built per attempt.
    /// With `traceparent` (a traced task: its attempt's span), that replaces the
    /// client's; the client's `tracestate` goes on as it came.
    pub(super) fn request_head(
        &self,
        url: &crate::worker_url::WorkerUrl,
        body_len: usize,
        traceparent: Option<&crate::traces::Traceparent>,
    ) -> BytesMut {
        let lines: usize = self
            .headers
            .iter()
            .map(|(n, v)| n.as_str().len() + v.len() + 4)
            .sum();
        let mut head = BytesMut::with_capacity(url.base_path.len() + url.host.len() + lines + 80);
        head.extend_from_slice(b"POST ");
        head.extend_from_slice(url.base_path.as_bytes());
        head.extend_from_slice(b"/task HTTP/1.1\r\nhost: ");
        let _ = url.write_host_header(&mut head);
        head.extend_from_slice(b"\r\n");
        match traceparent {
            None => self.write_lines(&mut head, |_| true),
            Some(parent) => {
                self.write_lines(&mut head, |name| *name != TRACE_CONTEXT[0]);
                head.extend_from_slice(b"traceparent: ");
                head.extend_from_slice(parent.as_str().as_bytes());
                head.extend_from_slice(b"\r\n");
            }
        }
        let _ = write!(head, "content-length: {body_len}\r\n\r\n");
        head
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(pairs: &[(&str, &str)]) -> RequestHeader {
        let mut client = RequestHeader::build("POST", b"/task", None).unwrap();
        for (n, v) in pairs {
            client.append_header(n.to_string(), *v).unwrap();
        }
        client
    }

    fn names(fwd: &ForwardHeaders) -> Vec<&str> {
        fwd.headers.iter().map(|(n, _)| n.as_str()).collect()
    }

    fn list(names: &[&str]) -> ForwardList {
        ForwardList::resolve(&names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap()
    }

    const OWN: [&str; 4] = [
        "authorization",
        "x-lb-auth",
        "content-type",
        "x-andera-task-id",
    ];

    #[test]
    fn a_worker_gets_the_originals_set_and_no_client_header() {
        let c = client(&[
            ("cookie", "s=1"),
            ("user-agent", "curl/8"),
            ("x-forwarded-for", "10.0.0.1"),
            ("accept-encoding", "gzip"),
            ("content-type", "text/plain"),
            ("x-custom", "1"),
            ("x-andera-task-id", "forged"),
            ("authorization", "the-lb-key"),
            ("x-wr-auth", "wk"),
        ]);
        let fwd = ForwardHeaders::new(
            &c,
            HeaderValue::from_static("wk"),
            "lb",
            "id-1",
            &ForwardList::default(),
        );
        assert_eq!(names(&fwd), OWN);
        let values: Vec<&[u8]> = fwd.headers.iter().map(|(_, v)| v.as_bytes()).collect();
        assert_eq!(
            values,
            [&b"wk"[..], b"lb", b"application/json", b"id-1"],
            "the Worker key as sent, our content type and task id"
        );
    }

    #[test]
    fn trace_context_and_listed_headers_pass_unless_connection_names_them() {
        let c = client(&[
            ("connection", "keep-alive, X-Private"),
            ("x-private", "1"),
            ("x-custom", "a"),
            ("x-custom", "b"),
            (
                "traceparent",
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            ),
            ("tracestate", "k=v"),
            ("x-other", "1"),
        ]);
        let fwd = ForwardHeaders::new(
            &c,
            HeaderValue::from_static("wk"),
            "lb",
            "id-1",
            &list(&["X-Custom", "x-private", "x-absent"]),
        );
        let mut want = OWN.to_vec();
        want.extend(["traceparent", "tracestate", "x-custom", "x-custom"]);
        assert_eq!(names(&fwd), want);
    }

    #[test]
    fn the_journal_block_reads_back_with_the_lb_key() {
        let c = client(&[("traceparent", "00-a-b-01"), ("cookie", "s=1")]);
        let fwd = ForwardHeaders::new(
            &c,
            HeaderValue::from_static("wk"),
            "lb",
            "id-1",
            &ForwardList::default(),
        );
        let block = fwd.to_block();
        assert_eq!(
            std::str::from_utf8(&block).unwrap(),
            "authorization: wk\r\ncontent-type: application/json\r\n\
             x-andera-task-id: id-1\r\ntraceparent: 00-a-b-01\r\n"
        );
        let back = ForwardHeaders::from_block(&block, "lb");
        let mut want = names(&fwd);
        want.retain(|n| *n != "x-lb-auth");
        want.push("x-lb-auth");
        assert_eq!(names(&back), want);
    }

    #[test]
    fn a_workers_hop_headers_are_dropped_and_the_body_reframed() {
        let mut resp = pingora::http::ResponseHeader::build(200, None).unwrap();
        for (n, v) in [
            ("connection", "x-hop"),
            ("x-hop", "1"),
            ("keep-alive", "timeout=5"),
            ("transfer-encoding", "chunked"),
            ("trailer", "x-sum"),
            ("content-type", "text/plain"),
        ] {
            resp.append_header(n, v).unwrap();
        }
        strip_response_hop_headers(&mut resp);
        let mut names: Vec<&str> = resp.headers.keys().map(|n| n.as_str()).collect();
        names.sort_unstable();
        assert_eq!(names, ["content-type", "transfer-encoding"]);
        let mut sized = pingora::http::ResponseHeader::build(200, None).unwrap();
        sized.append_header("content-length", "2").unwrap();
        strip_response_hop_headers(&mut sized);
        assert!(!sized.headers.contains_key("transfer-encoding"));
    }

    #[test]
    fn the_request_head_is_written_without_a_header_map() {
        let c = client(&[("x-kept", "1"), ("content-type", "application/json")]);
        let fwd = ForwardHeaders::new(
            &c,
            HeaderValue::from_static("wk"),
            "lb",
            "id-1",
            &list(&["x-kept"]),
        );
        let url = crate::worker_url::WorkerUrl::parse("http://10.0.0.5:3000/w3/").unwrap();
        let head = fwd.request_head(&url, 62, None);
        assert_eq!(
            std::str::from_utf8(&head).unwrap(),
            "POST /w3/task HTTP/1.1\r\nhost: 10.0.0.5:3000\r\nauthorization: wk\r\n\
             x-lb-auth: lb\r\ncontent-type: application/json\r\n\
             x-andera-task-id: id-1\r\nx-kept: 1\r\ncontent-length: 62\r\n\r\n"
        );
    }

    #[test]
    fn a_traced_attempt_sends_its_own_traceparent_and_the_clients_tracestate() {
        let c = client(&[
            (
                "traceparent",
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            ),
            ("tracestate", "vendor=1"),
        ]);
        let fwd = ForwardHeaders::new(
            &c,
            HeaderValue::from_static("wk"),
            "lb",
            "id-1",
            &ForwardList::default(),
        );
        let url = crate::worker_url::WorkerUrl::parse("http://10.0.0.5:3000").unwrap();
        let span = opentelemetry::trace::SpanContext::new(
            opentelemetry::trace::TraceId::from_hex("0af7651916cd43dd8448eb211c80319c").unwrap(),
            opentelemetry::trace::SpanId::from_hex("00f067aa0ba902b7").unwrap(),
            opentelemetry::trace::TraceFlags::SAMPLED,
            false,
            Default::default(),
        );
        let ours = crate::traces::Traceparent::of(&span);
        let head = fwd.request_head(&url, 2, Some(&ours));
        let head = std::str::from_utf8(&head).unwrap();
        let trace_lines: Vec<&str> = head.lines().filter(|l| l.starts_with("trace")).collect();
        assert_eq!(
            trace_lines,
            [
                "tracestate: vendor=1",
                "traceparent: 00-0af7651916cd43dd8448eb211c80319c-00f067aa0ba902b7-01"
            ]
        );
        // Untraced, the client's own pass as before.
        let plain = fwd.request_head(&url, 2, None);
        assert!(std::str::from_utf8(&plain)
            .unwrap()
            .contains("traceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\r\n"));
    }
}
