//! Once a second: closes the dashboard's series sample and refreshes gauges.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use tokio::time::Instant;

use crate::app::App;
use crate::metrics::METRICS;

/// Background service feeding the series and the queue depth gauge.
pub(crate) struct Sampler {
    /// Shared state.
    pub app: Arc<App>,
}

#[async_trait]
impl BackgroundService for Sampler {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut ticker = tokio::time::interval(Duration::from_secs(1));
        let mut last = Instant::now();
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = ticker.tick() => {}
            }
            let depth = self.app.scheduler().queued();
            METRICS.queue_depth.set(depth as i64);
            self.app.board().sample(depth, last.elapsed());
            last = Instant::now();
        }
    }
}
