//! Graceful drain on SIGTERM (and after a listener hand-over on upgrade): readiness
//! turns false, in-flight and queued tasks get up to the grace period to finish,
//! whatever remains is answered with a JSON error, then the process exits 0.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use tokio::time::Instant;

use crate::app::App;

/// How long the drain waits for connections accepted just before shutdown to be
/// counted (they are handed to their task asynchronously after accept).
const ACCEPTED_SETTLE: Duration = Duration::from_millis(250);

/// How long tasks cut at the end of the grace period get to write their error.
const ABORT_FLUSH: Duration = Duration::from_secs(2);

/// Background service that runs the drain when Pingora begins its shutdown.
pub(crate) struct Drainer {
    /// Shared state.
    pub app: Arc<App>,
}

/// With a task journal, as soon as another instance shares it (an upgrade's
/// successor), gives it the queued webhook tasks instead of running them out here.
/// Never resolves without a journal.
async fn hand_over_to_successor(app: &App) {
    let Some(journal) = app.journal() else {
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
        app.begin_draining();
        let grace = app.settings().server.grace_period;
        let drain = app.drain();
        log::info!(
            "draining: {} task(s) in progress ({} queued); grace period {} s",
            drain.active(),
            app.scheduler().queued(),
            grace.as_secs()
        );
        let started = Instant::now();
        // A connection the listener accepted just before it stopped reaches our
        // connection loop (and is counted) a moment later: let it arrive before
        // "nothing in progress" can end the process under it.
        tokio::time::sleep(ACCEPTED_SETTLE).await;
        let handing_over = hand_over_to_successor(app);
        tokio::pin!(handing_over);
        let mut idle = tokio::select! {
            idle = drain.idle_by(started + grace) => idle,
            () = &mut handing_over => drain.idle_by(started + grace).await,
        };
        // Idle keep-alive connections stay open for `client.shutdown_idle_ms` (see
        // conn::GuardedApp::await_request): a request a proxy was already sending on
        // one is served, and is waited for like any other task.
        let window = app.settings().client.shutdown_idle;
        if idle && !window.is_zero() && drain.connections() > 0 {
            let window_end = (Instant::now() + window + ACCEPTED_SETTLE).min(started + grace);
            drain.connections_closed_by(window_end).await;
            idle = drain.idle_by(started + grace).await;
        }
        if idle {
            log::info!("drained in {} ms; exiting", started.elapsed().as_millis());
        } else {
            log::warn!(
                "grace period over: answering the {} remaining task(s) with 503",
                drain.active()
            );
            if let Some(journal) = app.journal() {
                // Queued webhook tasks stay journaled for the next instance instead of failing.
                match journal.release().await {
                    Ok(0) => {}
                    Ok(n) if journal.live_peers() > 0 || journal.is_shared_queue() => {
                        log::info!("handed {n} queued webhook task(s) to another instance")
                    }
                    Ok(n) => log::info!(
                        "{n} queued webhook task(s) stay in the journal for the next start"
                    ),
                    Err(e) => log::warn!("queued webhook tasks not released: {e}"),
                }
            }
            app.scheduler().close();
            drain.abort_all();
            drain.idle_by(Instant::now() + ABORT_FLUSH).await;
        }
        if let Some(journal) = app.journal() {
            journal.close().await;
        }
        app.registry().stop();
        // The spans of the tasks just ended are still queued for export.
        crate::traces::shutdown().await;
        // Pingora would sleep out its whole grace period; there is nothing left to wait for.
        std::process::exit(0);
    }
}
