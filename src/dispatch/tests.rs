//! Header rewriting and the failure mapping of the dispatch path.

use super::*;

#[test]
fn worker_failures_keep_pingora_types_and_read_plainly() {
    let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "Connection refused");
    let inner = pingora::Error::because(
        pingora::ErrorType::ConnectRefused,
        "Fail to connect to 10.0.0.5:3000",
        io,
    );
    let e = TaskError::WorkerFailed {
        worker: "http://10.0.0.5:3000".into(),
        error: inner,
        delivered: false,
    };
    assert_eq!(e.status(), 502);
    assert_eq!(
        e.message(),
        "Worker failed: http://10.0.0.5:3000 unreachable: ConnectRefused: Fail to connect to 10.0.0.5:3000 (Connection refused)"
    );
    let TaskError::WorkerFailed { error, .. } = &e else {
        unreachable!()
    };
    assert_eq!(error.etype(), &pingora::ErrorType::ConnectRefused);
}

#[test]
fn hop_by_hop_headers_and_the_ones_connection_names_are_dropped() {
    let mut client = RequestHeader::build("POST", b"/task", None).unwrap();
    for (n, v) in [
        ("connection", "keep-alive, X-Private"),
        ("x-private", "1"),
        ("te", "trailers"),
        ("upgrade", "h2c"),
        ("x-andera-task-id", "forged"),
        ("x-kept", "1"),
    ] {
        client.append_header(n, v).unwrap();
    }
    let fwd = ForwardHeaders::new(&client, HeaderValue::from_static("wk"), "lb", "id-1");
    let names: Vec<&str> = fwd.headers.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "x-kept",
            "authorization",
            "x-lb-auth",
            "content-type",
            "x-andera-task-id"
        ]
    );
    let ids: Vec<_> = fwd
        .headers
        .iter()
        .filter(|(n, _)| n == "x-andera-task-id")
        .map(|(_, v)| v.clone())
        .collect();
    assert_eq!(ids, ["id-1"]);
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
    let mut client = RequestHeader::build("POST", b"/task", None).unwrap();
    client.append_header("x-kept", "1").unwrap();
    client
        .append_header("content-type", "application/json")
        .unwrap();
    let fwd = ForwardHeaders::new(&client, HeaderValue::from_static("wk"), "lb", "id-1");
    let url = crate::worker_url::WorkerUrl::parse("http://10.0.0.5:3000/w3/").unwrap();
    let head = fwd.request_head(&url, 62);
    assert_eq!(
        std::str::from_utf8(&head).unwrap(),
        "POST /w3/task HTTP/1.1\r\nhost: 10.0.0.5:3000\r\nx-kept: 1\r\n\
         content-type: application/json\r\nauthorization: wk\r\nx-lb-auth: lb\r\n\
         x-andera-task-id: id-1\r\ncontent-length: 62\r\n\r\n"
    );
}
