//! The export side: the SDK's batch span processor and the OTLP/HTTP exporter,
//! wrapped so that the queue between them has one hard bound and every span that
//! does not reach the collector is counted.
//!
//! A task's spans are handed over with a `try_send` on a bounded channel and leave
//! the process on the batch processor's own thread, so a slow or dead collector
//! never holds a task up: it costs at most `tracing.max_queue_size` spans of memory
//! and a counter, `andera_lb_trace_spans_dropped_total`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use opentelemetry::Context;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Span, SpanData, SpanExporter, SpanProcessor,
};
use opentelemetry_sdk::Resource;
use prometheus::{IntCounter, IntCounterVec, Opts};

/// Reasons of `andera_lb_trace_spans_dropped_total`, all at 0 from the start.
pub(super) const DROP_REASONS: [&str; 2] = [QUEUE_FULL, EXPORT_FAILED];
/// The export queue was full (the collector is slow or unreachable).
const QUEUE_FULL: &str = "queue_full";
/// The collector refused the batch, or did not answer within the export timeout.
const EXPORT_FAILED: &str = "export_failed";

/// The trace export counters (registered with the other metrics at start-up).
pub(crate) struct TraceMetrics {
    /// Spans the collector accepted.
    pub exported: IntCounter,
    /// Spans that never reached the collector, by reason.
    pub dropped: IntCounterVec,
}

/// The trace export counters, registered at first use (`server::build` forces it).
pub(crate) static TRACE_METRICS: LazyLock<TraceMetrics> = LazyLock::new(|| {
    let r = &crate::metrics::METRICS.registry;
    let exported = IntCounter::with_opts(
        Opts::new(
            "trace_spans_exported_total",
            "Spans exported to the OTLP collector.",
        )
        .namespace("andera_lb"),
    )
    .expect("valid metric");
    r.register(Box::new(exported.clone()))
        .expect("unique metric");
    let dropped = IntCounterVec::new(
        Opts::new(
            "trace_spans_dropped_total",
            "Spans that never reached the OTLP collector, by reason (queue_full, export_failed).",
        )
        .namespace("andera_lb"),
        &["reason"],
    )
    .expect("valid metric");
    r.register(Box::new(dropped.clone()))
        .expect("unique metric");
    for reason in DROP_REASONS {
        dropped.with_label_values(&[reason]);
    }
    TraceMetrics { exported, dropped }
});

/// Spans handed to the batch processor and not yet taken by an export.
type Pending = Arc<AtomicUsize>;

/// The OTLP exporter, counting what each batch became.
#[derive(Debug)]
struct Counted<E> {
    inner: E,
    pending: Pending,
}

impl<E: SpanExporter> SpanExporter for Counted<E> {
    fn export(
        &self,
        batch: Vec<SpanData>,
    ) -> impl std::future::Future<Output = OTelSdkResult> + Send {
        let n = batch.len();
        // Taken off the queue: room for n more spans.
        self.pending.fetch_sub(n, Ordering::AcqRel);
        let export = self.inner.export(batch);
        async move {
            let result = export.await;
            let m = &*TRACE_METRICS;
            match &result {
                Ok(()) => m.exported.inc_by(n as u64),
                Err(e) => {
                    m.dropped
                        .with_label_values(&[EXPORT_FAILED])
                        .inc_by(n as u64);
                    log::debug!("trace export of {n} span(s) failed: {e}");
                }
            }
            result
        }
    }

    fn shutdown_with_timeout(&mut self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&mut self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// The batch processor behind a hard bound of `max` spans waiting: past it a span
/// is dropped and counted here, before it reaches the processor's channel.
#[derive(Debug)]
pub(super) struct Bounded {
    inner: BatchSpanProcessor,
    pending: Pending,
    max: usize,
}

impl Bounded {
    /// A batch processor exporting through `exporter` every `delay` (or as soon as
    /// a batch is full), holding at most `max` spans.
    pub(super) fn new<E: SpanExporter + 'static>(exporter: E, max: usize, delay: Duration) -> Self {
        let pending = Pending::default();
        let config = BatchConfigBuilder::default()
            // The processor's channel never fills: `pending` counts it and the
            // batch being built, and refuses first.
            .with_max_queue_size(max)
            .with_max_export_batch_size(max.min(512))
            .with_scheduled_delay(delay)
            .build();
        let exporter = Counted {
            inner: exporter,
            pending: pending.clone(),
        };
        Bounded {
            inner: BatchSpanProcessor::builder(exporter)
                .with_batch_config(config)
                .build(),
            pending,
            max,
        }
    }
}

impl SpanProcessor for Bounded {
    fn on_start(&self, span: &mut Span, cx: &Context) {
        self.inner.on_start(span, cx);
    }

    fn on_end(&self, span: SpanData) {
        if !span.span_context.is_sampled() {
            return;
        }
        if self.pending.fetch_add(1, Ordering::AcqRel) >= self.max {
            self.pending.fetch_sub(1, Ordering::AcqRel);
            TRACE_METRICS.dropped.with_label_values(&[QUEUE_FULL]).inc();
            return;
        }
        self.inner.on_end(span);
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::{Tracer as _, TracerProvider as _};
    use opentelemetry_sdk::trace::SdkTracerProvider;

    /// An exporter that never finishes an export until told to.
    #[derive(Debug, Clone)]
    struct Stuck(Arc<std::sync::Mutex<bool>>, Arc<std::sync::Condvar>);

    impl SpanExporter for Stuck {
        fn export(
            &self,
            _batch: Vec<SpanData>,
        ) -> impl std::future::Future<Output = OTelSdkResult> + Send {
            let (open, cv) = (self.0.clone(), self.1.clone());
            async move {
                let mut g = open.lock().unwrap();
                while !*g {
                    g = cv.wait(g).unwrap();
                }
                Ok(())
            }
        }
    }

    #[test]
    fn a_stuck_collector_costs_a_bounded_queue_and_a_counter() {
        let stuck = Stuck(Default::default(), Default::default());
        let processor = Bounded::new(stuck.clone(), 8, Duration::from_millis(10));
        let pending = processor.pending.clone();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(processor)
            .build();
        let tracer = provider.tracer("test");
        let dropped = || TRACE_METRICS.dropped.with_label_values(&[QUEUE_FULL]).get();
        let before = dropped();
        // One batch is taken by the stuck export at most; the rest queues up to 8.
        for _ in 0..100 {
            tracer.start("s");
        }
        assert!(pending.load(Ordering::Acquire) <= 8);
        let lost = dropped() - before;
        assert!((100 - 8 - 8..=100 - 8).contains(&lost), "dropped {lost}");
        *stuck.0.lock().unwrap() = true;
        stuck.1.notify_all();
        provider.shutdown().unwrap();
    }
}
