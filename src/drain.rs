//! Graceful drain on SIGTERM (and after a listener hand-over on upgrade): readiness
//! turns false, in-flight and queued tasks get up to the grace period to finish,
//! whatever remains is answered with a JSON error, then the process exits 0.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::task::{task_tracker::TaskTrackerToken, TaskTracker};

use crate::proxy::App;

/// How long tasks cut at the end of the grace period get to write their error.
const ABORT_FLUSH: Duration = Duration::from_secs(2);

/// Counts tasks in progress and tells them when to give up.
pub struct Drain {
    tasks: TaskTracker,
    abort: watch::Sender<bool>,
}

impl Default for Drain {
    fn default() -> Self {
        Drain {
            tasks: TaskTracker::new(),
            abort: watch::channel(false).0,
        }
    }
}

impl Drain {
    /// Marks a task as in progress until the guard is dropped.
    pub fn track(self: &Arc<Self>) -> ActiveTask {
        ActiveTask {
            _token: self.tasks.token(),
        }
    }

    /// Tasks in progress.
    pub fn active(&self) -> usize {
        self.tasks.len()
    }

    /// Resolves when the grace period is over and remaining tasks must end.
    pub async fn aborted(&self) {
        let mut rx = self.abort.subscribe();
        let _ = rx.wait_for(|cut| *cut).await;
    }

    fn abort_all(&self) {
        self.abort.send_replace(true);
    }
}

/// A task in progress (see [`Drain::track`]); it stops counting when dropped.
pub struct ActiveTask {
    _token: TaskTrackerToken,
}

/// Background service that runs the drain when Pingora begins its shutdown.
pub struct Drainer {
    /// Shared state.
    pub app: Arc<App>,
}

/// True once no task is in progress, false if `until` comes first.
async fn wait_idle(drain: &Drain, until: Instant) -> bool {
    // Closing only lets `wait` resolve at zero: tasks may still be added (a webhook
    // task's runner) and are waited for too.
    drain.tasks.close();
    tokio::time::timeout_at(until, drain.tasks.wait())
        .await
        .is_ok()
}

/// With a task journal, as soon as another instance shares it (an upgrade's
/// successor), gives it the queued webhook tasks instead of running them out here.
/// Never resolves without a journal.
async fn hand_over_to_successor(app: &App) {
    let Some(journal) = app.journal.get() else {
        return std::future::pending().await;
    };
    while journal.live_peers() == 0 {
        tokio::time::sleep(crate::journal::HEARTBEAT / 2).await;
    }
    match journal.release().await {
        Ok(n) => log::info!("handed {n} queued webhook task(s) to the successor instance"),
        Err(e) => log::warn!("could not hand queued webhook tasks over: {e}"),
    }
}

#[async_trait]
impl BackgroundService for Drainer {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        while !*shutdown.borrow() {
            if shutdown.changed().await.is_err() {
                return;
            }
        }
        let app = &self.app;
        app.draining.store(true, Ordering::Relaxed);
        let grace = app.settings.grace_period;
        let drain = &app.drain;
        log::info!(
            "draining: {} task(s) in progress ({} queued); grace period {} s",
            drain.active(),
            app.dispatcher.scheduler.queued(),
            grace.as_secs()
        );
        let started = Instant::now();
        let handing_over = hand_over_to_successor(app);
        tokio::pin!(handing_over);
        let idle = tokio::select! {
            idle = wait_idle(drain, started + grace) => idle,
            () = &mut handing_over => wait_idle(drain, started + grace).await,
        };
        if idle {
            log::info!("drained in {} ms; exiting", started.elapsed().as_millis());
        } else {
            log::warn!(
                "grace period over: answering the {} remaining task(s) with 503",
                drain.active()
            );
            if let Some(journal) = app.journal.get() {
                // Queued webhook tasks stay journaled for the next instance instead of failing.
                let _ = journal.release().await;
            }
            app.dispatcher.scheduler.close();
            drain.abort_all();
            wait_idle(drain, Instant::now() + ABORT_FLUSH).await;
        }
        if let Some(journal) = app.journal.get() {
            journal.close().await;
        }
        app.registry.stop();
        // Pingora would sleep out its whole grace period; there is nothing left to wait for.
        std::process::exit(0);
    }
}
