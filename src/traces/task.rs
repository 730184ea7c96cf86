//! One task's spans: the SERVER span of the task (from its receipt to
//! [`crate::board::TaskHandle::close`]), an INTERNAL span for its wait in the queue,
//! a CLIENT span per Worker attempt, and a CLIENT span for a webhook failure notice.
//!
//! Attributes name what routes a task (group, function, mode, priority, client,
//! Worker) and how it ended (status, outcome, reason); never a key, a body or a
//! webhook URL's path or query.

use std::io::Write as _;
use std::time::SystemTime;

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{
    Span as _, SpanContext, SpanKind, Status, TraceContextExt, Tracer as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{SdkTracer, Span};
use parking_lot::Mutex;

use crate::task::TaskSpec;

/// A W3C `traceparent` value, `00-<trace id>-<span id>-<flags>`: 55 bytes, no
/// allocation.
#[derive(Clone, Copy)]
pub(crate) struct Traceparent([u8; 55]);

impl Traceparent {
    /// The `traceparent` naming the span `cx` as the parent.
    pub(crate) fn of(cx: &SpanContext) -> Traceparent {
        let mut out = [0u8; 55];
        let mut w = &mut out[..];
        // 2 + 1 + 32 + 1 + 16 + 1 + 2 bytes: always fits.
        let _ = write!(
            w,
            "00-{}-{}-{:02x}",
            cx.trace_id(),
            cx.span_id(),
            cx.trace_flags().to_u8()
        );
        Traceparent(out)
    }

    /// The header value.
    pub(crate) fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

/// The spans that come and go within a task.
#[derive(Default)]
struct Children {
    /// The wait for a slot, while it lasts.
    queue: Option<Span>,
    /// The Worker attempt under way.
    attempt: Option<Span>,
}

/// A traced task: its SERVER span, and the child spans under way.
pub(crate) struct TaskTrace {
    tracer: SdkTracer,
    /// Holds the SERVER span: the parent of every other span of the task.
    server: Context,
    /// The task is sampled: its spans are recorded and exported.
    recording: bool,
    children: Mutex<Children>,
}

impl TaskTrace {
    /// Starts the SERVER span of a task received at `received`, continuing the
    /// client's W3C `traceparent`/`tracestate` from `client` when it sent one.
    pub(crate) fn start(
        tracer: &SdkTracer,
        client: &http::HeaderMap,
        spec: &TaskSpec,
        task_id: &str,
        received: SystemTime,
    ) -> TaskTrace {
        let extractor = opentelemetry_http::HeaderExtractor(client);
        let parent = TraceContextPropagator::new().extract(&extractor);
        let mut span = tracer
            .span_builder("POST /task")
            .with_kind(SpanKind::Server)
            .with_start_time(received)
            .start_with_context(tracer, &parent);
        // Attributes only for a sampled task: one sampled out copies no string.
        let recording = span.is_recording();
        if recording {
            span.set_attributes([
                KeyValue::new("http.request.method", "POST"),
                KeyValue::new("url.path", "/task"),
                KeyValue::new("andera.task_id", task_id.to_string()),
                KeyValue::new("andera.group", spec.group.clone()),
                KeyValue::new("andera.function", spec.function.clone()),
                KeyValue::new("andera.mode", spec.mode.as_str()),
                KeyValue::new("andera.priority", i64::from(spec.priority)),
                KeyValue::new("andera.client", spec.client_name().to_string()),
            ]);
        }
        TaskTrace {
            tracer: tracer.clone(),
            server: Context::new().with_span(span),
            recording,
            children: Mutex::default(),
        }
    }

    /// The task's trace id, 32 hex digits (the client's when it sent a `traceparent`).
    pub(crate) fn trace_id(&self) -> String {
        self.server.span().span_context().trace_id().to_string()
    }

    /// The task starts waiting for a slot.
    pub(crate) fn queued(&self) {
        if !self.recording {
            return;
        }
        let span = self
            .tracer
            .span_builder("queue wait")
            .with_kind(SpanKind::Internal)
            .start_with_context(&self.tracer, &self.server);
        self.children.lock().queue = Some(span);
    }

    /// Attempt `attempt` of the task goes to `worker`: the queue wait (if any) ends
    /// and the attempt's CLIENT span starts. Returns the `traceparent` the Worker
    /// receives: its parent is this attempt's span.
    pub(crate) fn dispatched(&self, worker: &str, attempt: u32) -> Traceparent {
        if !self.recording {
            // Sampled out: no span would be exported, so none is made; the Worker
            // still joins the trace (as not sampled), under the task's span.
            return Traceparent::of(self.server.span().span_context());
        }
        let mut span = self
            .tracer
            .span_builder("POST /task")
            .with_kind(SpanKind::Client)
            .start_with_context(&self.tracer, &self.server);
        if span.is_recording() {
            span.set_attributes([
                KeyValue::new("andera.worker", worker.to_string()),
                KeyValue::new("andera.attempt", i64::from(attempt)),
                KeyValue::new("http.request.method", "POST"),
            ]);
        }
        let parent = Traceparent::of(span.span_context());
        let mut children = self.children.lock();
        if let Some(mut queue) = children.queue.take() {
            queue.end();
        }
        if let Some(mut earlier) = children.attempt.replace(span) {
            earlier.end();
        }
        parent
    }

    /// The Worker of the attempt under way answered `status` (its head).
    pub(crate) fn answered(&self, status: u16) {
        if let Some(span) = self.children.lock().attempt.as_mut() {
            span.set_attribute(KeyValue::new(
                "http.response.status_code",
                i64::from(status),
            ));
            if status >= 400 {
                span.set_status(Status::error(format!("the Worker answered {status}")));
            }
        }
    }

    /// The attempt under way failed before the Worker started the task (`why`);
    /// another one follows.
    pub(crate) fn retried(&self, why: &str) {
        if let Some(mut span) = self.children.lock().attempt.take() {
            span.set_status(Status::error(why.to_string()));
            span.end();
        }
    }

    /// The `traceparent` of a webhook failure notice, under its own CLIENT span
    /// (a child of the task's), which the returned [`NoticeSpan`] ends.
    pub(crate) fn notice(&self, host: &str) -> NoticeSpan {
        let mut span = self
            .tracer
            .span_builder("webhook failure notice")
            .with_kind(SpanKind::Client)
            .start_with_context(&self.tracer, &self.server);
        if span.is_recording() {
            span.set_attributes([
                KeyValue::new("http.request.method", "POST"),
                KeyValue::new("server.address", host.to_string()),
            ]);
        }
        NoticeSpan {
            traceparent: Traceparent::of(span.span_context()),
            span,
        }
    }

    /// The task ended with `status` (0: nothing was sent), counted as `outcome`,
    /// answered by the load balancer for `reason` (`None`: the Worker's answer was
    /// relayed). Ends every span of the task still open.
    pub(crate) fn close(
        &self,
        status: u16,
        outcome: &str,
        reason: Option<&str>,
        detail: Option<&str>,
    ) {
        let failed = status >= 500 || status == 0 && outcome != "ok";
        self.end(status, outcome, reason, detail, failed);
    }

    /// The task left this instance without an end of its own (handed to another
    /// instance, or `unknown` after a crash): its spans end as `outcome`, not failed.
    pub(crate) fn set_aside(&self, outcome: &str, detail: Option<&str>) {
        self.end(0, outcome, None, detail, false);
    }

    fn end(
        &self,
        status: u16,
        outcome: &str,
        reason: Option<&str>,
        detail: Option<&str>,
        failed: bool,
    ) {
        let error = || Status::error(detail.unwrap_or(outcome).to_string());
        let mut children = self.children.lock();
        if let Some(mut queue) = children.queue.take() {
            // Still waiting: the task ended in the queue (timed out, cancelled, left).
            queue.set_status(error());
            queue.end();
        }
        if let Some(mut attempt) = children.attempt.take() {
            if reason.is_some() && failed {
                attempt.set_status(error());
            }
            attempt.end();
        }
        drop(children);
        let server = self.server.span();
        if !server.is_recording() {
            server.end();
            return;
        }
        server.set_attribute(KeyValue::new(
            "http.response.status_code",
            i64::from(status),
        ));
        server.set_attribute(KeyValue::new("andera.outcome", outcome.to_string()));
        if let Some(reason) = reason {
            server.set_attribute(KeyValue::new("andera.reason", reason.to_string()));
        }
        if failed {
            server.set_status(error());
        }
        server.end();
    }
}

/// A webhook failure notice's span, ended by [`NoticeSpan::posted`] or
/// [`NoticeSpan::failed`] (or when dropped).
pub(crate) struct NoticeSpan {
    span: Span,
    /// What the webhook receives as `traceparent`: this span is its parent.
    pub traceparent: Traceparent,
}

impl NoticeSpan {
    /// The webhook answered `status`.
    pub(crate) fn posted(mut self, status: u16) {
        self.span.set_attribute(KeyValue::new(
            "http.response.status_code",
            i64::from(status),
        ));
        if status >= 400 {
            self.span
                .set_status(Status::error(format!("the webhook answered {status}")));
        }
        self.span.end();
    }

    /// The notice could not be posted.
    pub(crate) fn failed(mut self, why: String) {
        self.span.set_status(Status::error(why));
        self.span.end();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_sdk::error::OTelSdkResult;
    use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData, SpanExporter};
    use std::sync::Arc;

    /// Keeps what is exported, in order.
    #[derive(Debug, Clone, Default)]
    struct Collect(Arc<std::sync::Mutex<Vec<SpanData>>>);

    impl SpanExporter for Collect {
        fn export(
            &self,
            batch: Vec<SpanData>,
        ) -> impl std::future::Future<Output = OTelSdkResult> + Send {
            self.0.lock().unwrap().extend(batch);
            std::future::ready(Ok(()))
        }
    }

    impl Collect {
        fn get_finished_spans(&self) -> Result<Vec<SpanData>, ()> {
            Ok(self.0.lock().unwrap().clone())
        }
    }

    fn traced() -> (SdkTracerProvider, Collect) {
        let exporter = Collect::default();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(exporter.clone())
            .build();
        (provider, exporter)
    }

    #[test]
    fn a_retried_task_continues_the_clients_trace() {
        let (provider, exporter) = traced();
        let tracer = provider.tracer("test");
        let mut headers = http::HeaderMap::new();
        let client_parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        headers.insert("traceparent", client_parent.parse().unwrap());
        let spec = crate::task::parse(br#"{"group":"g","function":"f","contract":1}"#).unwrap();
        let trace = TaskTrace::start(&tracer, &headers, &spec, "t1", SystemTime::now());
        assert_eq!(trace.trace_id(), "0af7651916cd43dd8448eb211c80319c");
        trace.queued();
        let first = trace.dispatched("http://w1:3000", 1);
        trace.retried("w1 unreachable");
        let second = trace.dispatched("http://w2:3000", 2);
        trace.answered(200);
        trace.close(200, "ok", None, None);
        let spans = exporter.get_finished_spans().unwrap();
        let names: Vec<(&str, SpanKind)> = spans
            .iter()
            .map(|s| (&*s.name, s.span_kind.clone()))
            .collect();
        assert_eq!(
            names,
            [
                ("queue wait", SpanKind::Internal),
                ("POST /task", SpanKind::Client),
                ("POST /task", SpanKind::Client),
                ("POST /task", SpanKind::Server),
            ]
        );
        let server = &spans[3];
        assert_eq!(server.parent_span_id.to_string(), "b7ad6b7169203331");
        assert!(spans[..3]
            .iter()
            .all(|s| s.parent_span_id == server.span_context.span_id()));
        assert!(spans
            .iter()
            .all(|s| s.span_context.trace_id().to_string() == trace.trace_id()));
        // Each Worker gets a traceparent whose parent is its attempt's span.
        for (sent, span) in [(first, &spans[1]), (second, &spans[2])] {
            let want = format!(
                "00-0af7651916cd43dd8448eb211c80319c-{}-01",
                span.span_context.span_id()
            );
            assert_eq!(sent.as_str(), want);
        }
        assert!(matches!(spans[1].status, Status::Error { .. }));
        assert_eq!(spans[2].status, Status::Unset);
    }

    #[test]
    fn a_sampled_out_task_exports_nothing_and_tells_the_worker_so() {
        let exporter = Collect::default();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(exporter.clone())
            .with_sampler(opentelemetry_sdk::trace::Sampler::ParentBased(Box::new(
                opentelemetry_sdk::trace::Sampler::TraceIdRatioBased(0.0),
            )))
            .build();
        let tracer = provider.tracer("test");
        let spec = crate::task::parse(br#"{"group":"g","function":"f","contract":1}"#).unwrap();
        let trace = TaskTrace::start(
            &tracer,
            &http::HeaderMap::new(),
            &spec,
            "t3",
            SystemTime::now(),
        );
        let sent = trace.dispatched("http://w:3000", 1);
        trace.close(200, "ok", None, None);
        assert!(exporter.get_finished_spans().unwrap().is_empty());
        // The Worker still joins the trace, told that it is not sampled.
        assert!(sent
            .as_str()
            .starts_with(&format!("00-{}-", trace.trace_id())));
        assert!(sent.as_str().ends_with("-00"), "{}", sent.as_str());
        // A client's sampled flag wins over the ratio (parent-based).
        let mut headers = http::HeaderMap::new();
        let parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        headers.insert("traceparent", parent.parse().unwrap());
        let trace = TaskTrace::start(&tracer, &headers, &spec, "t4", SystemTime::now());
        trace.close(200, "ok", None, None);
        assert_eq!(exporter.get_finished_spans().unwrap().len(), 1);
    }

    #[test]
    fn without_a_client_trace_a_new_one_starts() {
        let (provider, exporter) = traced();
        let tracer = provider.tracer("test");
        let spec = crate::task::parse(br#"{"group":"g","function":"f","contract":1}"#).unwrap();
        let trace = TaskTrace::start(
            &tracer,
            &http::HeaderMap::new(),
            &spec,
            "t2",
            SystemTime::now(),
        );
        trace.queued();
        trace.close(504, "queue_timeout", Some("queue_timeout"), Some("waited"));
        let spans = exporter.get_finished_spans().unwrap();
        assert_eq!(spans.len(), 2);
        assert_eq!(
            spans[1].parent_span_id,
            opentelemetry::trace::SpanId::INVALID
        );
        assert!(matches!(spans[0].status, Status::Error { .. }));
        let attrs: Vec<String> = spans[1]
            .attributes
            .iter()
            .map(|kv| format!("{}={}", kv.key, kv.value))
            .collect();
        assert!(
            attrs.contains(&"andera.reason=queue_timeout".to_string()),
            "{attrs:?}"
        );
        assert!(
            attrs.contains(&"http.response.status_code=504".to_string()),
            "{attrs:?}"
        );
    }
}
