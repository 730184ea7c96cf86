//! Time limits on the data path's awaits that cost nothing when not needed.
//!
//! A task passes a dozen limits (body read, each write to the client, connect,
//! write and answer from the Worker, each answer chunk, the connection's header
//! deadline), and most of the awaits they bound are ready at once: a write into an
//! empty socket buffer, a chunk already read, a header that came whole. Tokio's
//! `timeout` reads the clock and looks up the runtime's timer handle when it is
//! created, ready or not: about 400 instructions per limit, a dozen times a task.
//!
//! These limits poll the future first and only arm a Tokio timer when it has to
//! wait, so a task pays for the two or three limits that really wait (the Worker's
//! answer, the client's next request). Same precision as Tokio's; also under
//! `tokio::time::pause`.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};

/// The limit passed before the future was ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Elapsed;

/// Runs `fut` until `deadline`: `Err(Elapsed)` if it is not ready by then.
pub(crate) fn by<F: Future>(deadline: Instant, fut: F) -> Limited<F> {
    Limited::new(fut, Until::By(deadline))
}

/// Runs `fut` for at most `limit`, counted from the first time it has to wait.
pub(crate) fn within<F: Future>(limit: Duration, fut: F) -> Limited<F> {
    Limited::new(fut, Until::For(limit))
}

/// [`within`] when there is a limit, else `fut` unbounded.
pub(crate) fn within_opt<F: Future>(limit: Option<Duration>, fut: F) -> Limited<F> {
    Limited::new(fut, limit.map_or(Until::Never, Until::For))
}

/// Resolves at `deadline`; never when there is none, and then arms no timer.
pub(crate) async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// When a [`Limited`] future gives up.
#[derive(Debug, Clone, Copy)]
enum Until {
    Never,
    For(Duration),
    By(Instant),
}

pin_project! {
    /// A future with a time limit, from [`by`], [`within`] or [`within_opt`]. A
    /// plain struct rather than an `async fn`, so that the future it bounds is
    /// built in place and never moved again.
    pub(crate) struct Limited<F> {
        #[pin]
        fut: F,
        until: Until,
        #[pin]
        timer: Option<Sleep>,
    }
}

impl<F> Limited<F> {
    fn new(fut: F, until: Until) -> Self {
        Limited {
            fut,
            until,
            timer: None,
        }
    }
}

impl<F: Future> Future for Limited<F> {
    type Output = Result<F::Output, Elapsed>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut me = self.project();
        if let Poll::Ready(v) = me.fut.poll(cx) {
            return Poll::Ready(Ok(v));
        }
        if me.timer.is_none() {
            let at = match *me.until {
                Until::Never => None,
                Until::For(limit) => Instant::now().checked_add(limit),
                Until::By(at) => Some(at),
            };
            // No limit, or one too far to represent: wait for the future alone.
            let Some(at) = at else {
                *me.until = Until::Never;
                return Poll::Pending;
            };
            me.timer.set(Some(tokio::time::sleep_until(at)));
        }
        match me.timer.as_pin_mut() {
            Some(timer) => timer.poll(cx).map(|()| Err(Elapsed)),
            None => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_ready_future_passes_even_a_past_deadline() {
        let past = Instant::now() - Duration::from_secs(1);
        assert_eq!(by(past, async { 7 }).await, Ok(7));
        assert_eq!(within(Duration::ZERO, async { 8 }).await, Ok(8));
    }

    #[tokio::test]
    async fn a_pending_future_is_cut_at_its_limit_and_not_before() {
        let started = std::time::Instant::now();
        let never = std::future::pending::<()>();
        assert_eq!(within(Duration::from_millis(50), never).await, Err(Elapsed));
        assert!(started.elapsed() >= Duration::from_millis(50));
        let started = std::time::Instant::now();
        let deadline = Instant::now() + Duration::from_millis(50);
        assert_eq!(
            by(deadline, std::future::pending::<()>()).await,
            Err(Elapsed)
        );
        assert!(started.elapsed() >= Duration::from_millis(50));
    }

    #[tokio::test]
    async fn a_future_that_waits_then_finishes_in_time_is_kept() {
        let slow = async {
            tokio::time::sleep(Duration::from_millis(20)).await;
            9
        };
        assert_eq!(within(Duration::from_secs(5), slow).await, Ok(9));
    }

    #[tokio::test(start_paused = true)]
    async fn no_limit_waits_for_the_future_alone() {
        let slow = async {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            1
        };
        assert_eq!(within_opt(None, slow).await, Ok(1));
        let far = within(Duration::MAX, async {
            tokio::time::sleep(Duration::from_secs(60)).await;
            2
        });
        assert_eq!(far.await, Ok(2));
    }

    #[tokio::test]
    async fn sleep_until_waits_for_its_deadline_and_none_never_ends() {
        let started = std::time::Instant::now();
        sleep_until(Some(Instant::now() + Duration::from_millis(30))).await;
        assert!(started.elapsed() >= Duration::from_millis(30));
        let never = tokio::time::timeout(Duration::from_millis(30), sleep_until(None)).await;
        assert!(never.is_err());
    }
}
