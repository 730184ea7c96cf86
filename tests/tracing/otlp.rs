//! The in-test OTLP/HTTP collector of tests/tracing.rs: decodes every
//! `POST /v1/traces` (protobuf, `opentelemetry-proto`) into [`Got`] spans.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
pub use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use prost::Message as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::wait_for;

/// One exported span, decoded, with its resource's `service.name`.
#[derive(Debug, Clone)]
pub struct Got {
    pub service: String,
    pub trace_id: String,
    pub span_id: String,
    pub parent: String,
    pub name: String,
    pub kind: SpanKind,
    pub attrs: BTreeMap<String, String>,
    pub error: bool,
}

impl Got {
    pub fn attr(&self, key: &str) -> &str {
        self.attrs.get(key).map_or("", String::as_str)
    }
}

fn text(v: &Option<opentelemetry_proto::tonic::common::v1::AnyValue>) -> String {
    match v.as_ref().and_then(|v| v.value.as_ref()) {
        Some(AnyValue::StringValue(s)) => s.clone(),
        Some(AnyValue::IntValue(i)) => i.to_string(),
        Some(AnyValue::BoolValue(b)) => b.to_string(),
        Some(AnyValue::DoubleValue(d)) => d.to_string(),
        other => format!("{other:?}"),
    }
}

/// An OTLP/HTTP collector on loopback: decodes every `POST /v1/traces`.
#[derive(Clone, Default)]
pub struct Collector {
    pub spans: Arc<Mutex<Vec<Got>>>,
    /// The request heads of the exports, lower-cased.
    pub heads: Arc<Mutex<Vec<String>>>,
}

impl Collector {
    pub async fn start() -> (Collector, String) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let c = Collector::default();
        let served = c.clone();
        tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                tokio::spawn(served.clone().serve(sock));
            }
        });
        (c, endpoint)
    }

    async fn serve(self, mut sock: tokio::net::TcpStream) {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 16384];
        loop {
            let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                match sock.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
                continue;
            };
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            while buf.len() < end + 4 + len {
                match sock.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
            let body = buf[end + 4..end + 4 + len].to_vec();
            buf.drain(..end + 4 + len);
            let request = ExportTraceServiceRequest::decode(&body[..]).expect("OTLP protobuf");
            self.keep(request);
            self.heads.lock().unwrap().push(head);
            let answer = b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n";
            if sock.write_all(answer).await.is_err() {
                return;
            }
        }
    }

    fn keep(&self, request: ExportTraceServiceRequest) {
        let mut spans = self.spans.lock().unwrap();
        for rs in request.resource_spans {
            let service = rs
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|kv| kv.key == "service.name")
                .map(|kv| text(&kv.value))
                .unwrap_or_default();
            for s in rs.scope_spans.into_iter().flat_map(|ss| ss.spans) {
                spans.push(Got {
                    service: service.clone(),
                    trace_id: hex(&s.trace_id),
                    span_id: hex(&s.span_id),
                    parent: hex(&s.parent_span_id),
                    name: s.name.clone(),
                    kind: SpanKind::try_from(s.kind).unwrap_or(SpanKind::Unspecified),
                    attrs: s
                        .attributes
                        .iter()
                        .map(|kv| (kv.key.clone(), text(&kv.value)))
                        .collect(),
                    error: s
                        .status
                        .as_ref()
                        .is_some_and(|st| st.code == StatusCode::Error as i32),
                });
            }
        }
    }

    /// The spans of trace `trace_id` once its SERVER span has arrived with
    /// `children` other spans.
    pub async fn trace(&self, trace_id: &str, children: usize) -> Vec<Got> {
        let of = |spans: &Vec<Got>| -> Vec<Got> {
            spans
                .iter()
                .filter(|s| s.trace_id == trace_id)
                .cloned()
                .collect()
        };
        let start = std::time::Instant::now();
        loop {
            let got = of(&self.spans.lock().unwrap());
            if got.iter().any(|s| s.kind == SpanKind::Server) && got.len() > children {
                break;
            }
            let waited = start.elapsed() > Duration::from_secs(20);
            assert!(
                !waited,
                "trace {trace_id}: {} of its spans: {got:#?}",
                got.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Anything more of the same trace would show by now.
        tokio::time::sleep(Duration::from_millis(300)).await;
        of(&self.spans.lock().unwrap())
    }

    /// The trace of task `id` (its SERVER span names it).
    pub async fn trace_of_task(&self, id: &str, children: usize) -> Vec<Got> {
        let find = || {
            self.spans
                .lock()
                .unwrap()
                .iter()
                .find(|s| s.kind == SpanKind::Server && s.attr("andera.task_id") == id)
                .map(|s| s.trace_id.clone())
        };
        wait_for(
            &format!("the SERVER span of task {id}"),
            Duration::from_secs(20),
            || find().is_some(),
        )
        .await;
        let trace_id = find().unwrap();
        self.trace(&trace_id, children).await
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
