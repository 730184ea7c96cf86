//! `/health` polling: one loop per Worker, so a dead or slow Worker never delays
//! the others.

use std::sync::Arc;
use std::time::Duration;

use super::record::HealthReport;
use super::Registry;
use crate::scheduler::WorkerId;
use crate::worker_url::WorkerUrl;

/// Largest `/health` body accepted.
const MAX_HEALTH_BODY: usize = 1 << 20;

/// Polls one Worker every discovery interval until aborted.
pub(crate) async fn poll_loop(registry: Arc<Registry>, id: WorkerId, url: Arc<WorkerUrl>) {
    let s = registry.settings.clone();
    loop {
        match poll_with_retries(&registry, id, &url).await {
            Ok(report) => registry.on_health(id, report),
            Err(why) => registry.on_poll_failed(id, why),
        }
        tokio::time::sleep(s.discovery.interval).await;
    }
}

/// One poll: up to `1 + retries` attempts, each bounded by the discovery timeout.
/// The first failed attempt is reported at once (the Worker shows `offline` while
/// the retries run), as the original did.
async fn poll_with_retries(
    registry: &Registry,
    id: WorkerId,
    url: &WorkerUrl,
) -> Result<HealthReport, String> {
    let s = &registry.settings;
    let mut last = String::new();
    for attempt in 0..=s.discovery.retries {
        if attempt > 0 {
            // Short pauses: a refused connection should not take the full interval to notice.
            let pause = Duration::from_millis(100 * u64::from(attempt)).min(Duration::from_secs(1));
            tokio::time::sleep(pause.min(s.discovery.interval)).await;
        }
        match poll_once(registry, url).await {
            Ok(r) => return Ok(r),
            Err(e) => {
                if attempt == 0 {
                    registry.on_poll_attempt_failed(id);
                }
                last = e;
            }
        }
    }
    Err(last)
}

async fn poll_once(registry: &Registry, url: &WorkerUrl) -> Result<HealthReport, String> {
    let s = &registry.settings;
    let (status, body) = registry
        .upstream
        .get(
            url,
            "/health",
            &[
                ("x-lb-auth", s.lb_key.expose()),
                ("accept", "application/json"),
            ],
            s.discovery.timeout,
            MAX_HEALTH_BODY,
        )
        .await
        .map_err(|e| format!("GET /health: {e}"))?;
    if status != 200 {
        return Err(format!("GET /health answered {status}"));
    }
    HealthReport::parse(&body)
}
