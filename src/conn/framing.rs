//! Request heads that Pingora parses but RFC 9112 (and nginx, HAProxy) refuse.
//!
//! Pingora accepts any transfer coding list that ends in `chunked`, several
//! `Transfer-Encoding` fields, and an HTTP/1.1 request without `Host`. A proxy in
//! front that reads such a head differently from us is how requests are smuggled, so
//! both ports refuse them before routing, and close the connection: the body's
//! framing is exactly what is in doubt.

use pingora::http::RequestHeader;

/// Why a request head is refused: the status and the JSON error message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FramingRefusal {
    /// `400` for a malformed head, `501` for a transfer coding we do not implement.
    pub status: u16,
    /// The `{"error": ...}` text.
    pub message: &'static str,
}

/// The refusal for `req`, or `None` when its framing is unambiguous.
pub(crate) fn refusal(req: &RequestHeader) -> Option<FramingRefusal> {
    let refuse = |status, message| Some(FramingRefusal { status, message });
    let mut codings = req.headers.get_all(http::header::TRANSFER_ENCODING).iter();
    if let Some(first) = codings.next() {
        if codings.next().is_some() {
            return refuse(400, "Transfer-Encoding is repeated");
        }
        // RFC 9112 §6.1: `chunked` is the only coding a server must know; nginx
        // answers 501 for any other, HAProxy 422. We implement no other.
        let only_chunked = first
            .to_str()
            .is_ok_and(|v| v.trim().eq_ignore_ascii_case("chunked"));
        if !only_chunked {
            return refuse(501, "Transfer-Encoding other than chunked is not supported");
        }
    }
    // RFC 9112 §3.2: a server MUST answer 400 to an HTTP/1.1 request without Host.
    if req.version == http::Version::HTTP_11 && !req.headers.contains_key(http::header::HOST) {
        return refuse(400, "Missing Host header");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(version: http::Version, fields: &[(&str, &str)]) -> RequestHeader {
        let mut req = RequestHeader::build("POST", b"/task", None).unwrap();
        req.set_version(version);
        for (name, value) in fields {
            req.append_header(name.to_string(), *value).unwrap();
        }
        req
    }

    fn status(version: http::Version, fields: &[(&str, &str)]) -> Option<u16> {
        refusal(&head(version, fields)).map(|r| r.status)
    }

    #[test]
    fn only_a_lone_chunked_coding_with_a_host_passes() {
        const HTTP_10: http::Version = http::Version::HTTP_10;
        const HTTP_11: http::Version = http::Version::HTTP_11;
        let host = ("host", "lb");
        assert_eq!(status(HTTP_11, &[host]), None);
        assert_eq!(
            status(HTTP_11, &[host, ("transfer-encoding", "chunked")]),
            None
        );
        assert_eq!(
            status(HTTP_11, &[host, ("transfer-encoding", " Chunked ")]),
            None
        );
        assert_eq!(status(HTTP_10, &[]), None, "HTTP/1.0 needs no Host");
        assert_eq!(status(HTTP_11, &[]), Some(400));
        for coding in [
            "gzip, chunked",
            "identity, chunked",
            "gzip",
            "chunked, chunked",
        ] {
            let refused = status(HTTP_11, &[host, ("transfer-encoding", coding)]);
            assert_eq!(refused, Some(501), "{coding}");
        }
        let twice = [
            host,
            ("transfer-encoding", "chunked"),
            ("transfer-encoding", "chunked"),
        ];
        assert_eq!(status(HTTP_11, &twice), Some(400));
    }
}
