//! The failure mapping of the dispatch path (header tests: `headers.rs`).

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
