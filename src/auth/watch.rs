//! Re-reads the clients file (`auth.clients_file`) when it changes and puts the new
//! key ring in force: keys added, removed or rotated and limits changed take effect
//! without a restart. A file that does not parse, or names a client or a key twice,
//! is refused with one log line naming the file and the problem, and the last good
//! list stays in force (`andera_lb_clients_reloads_total{result="error"}`).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use crate::app::App;
use crate::metrics::METRICS;

/// What identifies a version of the file without reading it.
type Stamp = Option<(SystemTime, u64, u64)>;

fn stamp(path: &PathBuf) -> Stamp {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len(), m.ino()))
}

/// The background service that watches the clients file.
pub(crate) struct ClientsWatcher {
    /// Shared state (its key ring is replaced).
    pub app: Arc<App>,
    /// The file (`auth.clients_file`).
    pub path: PathBuf,
    /// How often the file is checked (`workers.reload_interval_ms`, as for the
    /// Worker list).
    pub every: Duration,
}

impl ClientsWatcher {
    /// Rebuilds the ring from the file as it is now.
    fn reload(&self) {
        match crate::auth::ring_of(self.app.settings()) {
            Ok(ring) => {
                let names: Vec<&str> = ring.clients().iter().map(|c| &*c.name).collect();
                log::info!(
                    "named clients reloaded from {}: {}",
                    self.path.display(),
                    names.join(", ")
                );
                self.app.replace_keys(ring);
                METRICS.clients.reloads.with_label_values(&["ok"]).inc();
            }
            Err(e) => {
                log::error!("named clients not reloaded, the last good list stays: {e}");
                METRICS.clients.reloads.with_label_values(&["error"]).inc();
            }
        }
    }
}

#[async_trait]
impl BackgroundService for ClientsWatcher {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut seen = stamp(&self.path);
        loop {
            tokio::select! {
                _ = tokio::time::sleep(self.every) => {}
                _ = shutdown.changed() => return,
            }
            let now = stamp(&self.path);
            if now != seen {
                seen = now;
                self.reload();
            }
        }
    }
}
