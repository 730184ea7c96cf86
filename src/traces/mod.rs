//! OpenTelemetry traces over OTLP/HTTP (`tracing:` in the YAML, the standard
//! `OTEL_*` variables): one trace per task, continuing the client's W3C trace
//! context, with the Worker and the webhook failure notice told their parent span.
//!
//! Off unless an endpoint is configured; then [`tracer`] is `None` and a task pays
//! one atomic load for tracing, nothing allocated. The pipeline (the SDK's batch
//! span processor, with its own thread, and the OTLP exporter over reqwest's
//! blocking client) is built at first use, after Pingora's daemon fork, so that its
//! threads belong to the process that serves.

mod export;
pub(crate) mod task;

use std::sync::OnceLock;
use std::time::Duration;

use async_trait::async_trait;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig as _, WithHttpConfig as _};
use opentelemetry_sdk::trace::{Sampler, SdkTracer, SdkTracerProvider};
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

pub(crate) use export::TRACE_METRICS;
pub(crate) use task::{TaskTrace, Traceparent};

use crate::config::traces::TraceSettings;

/// The settings tracing was turned on with ([`configure`]); unset: off.
static SETTINGS: OnceLock<TraceSettings> = OnceLock::new();

/// The pipeline, built at first use; `None` if it could not be built (logged).
static PIPELINE: OnceLock<Option<Pipeline>> = OnceLock::new();

/// The provider (which owns the batch processor) and its tracer.
struct Pipeline {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
}

/// Why the trace pipeline could not be built.
#[derive(Debug)]
pub(crate) struct TraceError(String);

impl std::fmt::Display for TraceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "tracing: {}", self.0)
    }
}

impl std::error::Error for TraceError {}

impl Pipeline {
    fn build(s: &TraceSettings) -> Result<Pipeline, TraceError> {
        let headers = s
            .headers
            .iter()
            .map(|h| (h.name.clone(), h.value.clone()))
            .collect();
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(s.traces_url.clone())
            .with_timeout(s.export_timeout)
            .with_headers(headers)
            .build()
            .map_err(|e| TraceError(format!("the OTLP exporter cannot be built: {e}")))?;
        let ratio = Sampler::TraceIdRatioBased(s.sampler.ratio);
        let sampler = if s.sampler.parent_based {
            Sampler::ParentBased(Box::new(ratio))
        } else {
            ratio
        };
        let resource = opentelemetry_sdk::Resource::builder()
            .with_service_name(s.service_name.clone())
            .build();
        let processor = export::Bounded::new(exporter, s.max_queue_size, s.batch_delay);
        let provider = SdkTracerProvider::builder()
            .with_span_processor(processor)
            .with_sampler(sampler)
            .with_resource(resource)
            .build();
        let tracer = provider.tracer("andera-lb");
        Ok(Pipeline { provider, tracer })
    }
}

/// Turns tracing on for this process (the first call wins). Registers the trace
/// counters either way, so that they are scraped at 0 with tracing off.
pub(crate) fn configure(settings: Option<&TraceSettings>) {
    let _ = &*TRACE_METRICS;
    if let Some(s) = settings {
        let _ = SETTINGS.set(s.clone());
    }
}

/// The tracer when tracing is on; builds the pipeline at the first call.
pub(crate) fn tracer() -> Option<&'static SdkTracer> {
    let settings = SETTINGS.get()?;
    PIPELINE
        .get_or_init(|| match Pipeline::build(settings) {
            Ok(p) => {
                log::info!(
                    "tracing: exporting spans to {} over OTLP/HTTP (sampler ratio {}{})",
                    settings.collector,
                    settings.sampler.ratio,
                    if settings.sampler.parent_based {
                        ", parent-based"
                    } else {
                        ""
                    }
                );
                Some(p)
            }
            Err(e) => {
                log::error!("{e}; no spans are exported");
                None
            }
        })
        .as_ref()
        .map(|p| &p.tracer)
}

/// How long the exit waits for the last spans to leave.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(2);

/// Exports what is queued and stops the pipeline (at exit), waiting at most a
/// couple of seconds for a collector that does not answer.
pub(crate) async fn shutdown() {
    let Some(Some(p)) = PIPELINE.get() else {
        return;
    };
    let provider = p.provider.clone();
    let stopped =
        tokio::task::spawn_blocking(move || provider.shutdown_with_timeout(FLUSH_TIMEOUT)).await;
    if let Ok(Err(e)) = stopped {
        log::warn!("tracing: the last spans may not have been exported: {e}");
    }
}

/// Background service that builds the pipeline as the server starts, off the
/// data path, so that the first task does not.
pub(crate) struct TraceService;

#[async_trait]
impl BackgroundService for TraceService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let _ = tokio::task::spawn_blocking(tracer).await;
        // Stays up until shutdown (Pingora logs a service that returns as exited);
        // the drain flushes the last spans.
        let _ = shutdown.changed().await;
    }
}
