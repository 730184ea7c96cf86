//! A task the Worker has answered: the rest of the exchange, owned in one place.
//! The client-facing code reads a head already stripped of hop-by-hop fields and
//! body chunks whose failures are already counted against the Worker.

use bytes::Bytes;
use pingora::http::ResponseHeader;

use super::Dispatcher;
use crate::scheduler::Lease;
use crate::upstream::{Exchange, ExchangeError};
use crate::worker_url::WorkerUrl;

/// A task delivered to a Worker whose response header has arrived. Dropping it
/// closes the Worker's connection and gives the slot back; [`Delivery::finish`]
/// keeps the connection for the next task when the answer was read to its end.
pub(crate) struct Delivery<'a> {
    dispatcher: &'a Dispatcher,
    lease: Lease,
    exchange: Exchange<'a>,
    attempts: u32,
}

impl<'a> Delivery<'a> {
    pub(super) fn new(
        dispatcher: &'a Dispatcher,
        lease: Lease,
        exchange: Exchange<'a>,
        attempts: u32,
    ) -> Self {
        Delivery {
            dispatcher,
            lease,
            exchange,
            attempts,
        }
    }

    /// The Worker's status code.
    pub(crate) fn status(&self) -> u16 {
        self.exchange.header().status.as_u16()
    }

    /// The Worker's response head as the client may see it: a copy without the
    /// hop-by-hop fields (`connection`, `keep-alive`, `proxy-*`, `upgrade`, …).
    pub(crate) fn client_head(&self) -> ResponseHeader {
        let mut head = self.exchange.header().clone();
        super::headers::strip_response_hop_headers(&mut head);
        head
    }

    /// The Worker that has the task.
    pub(crate) fn worker(&self) -> &WorkerUrl {
        self.lease.url()
    }

    /// Attempts made, this one included.
    pub(crate) fn attempts(&self) -> u32 {
        self.attempts
    }

    /// The next chunk of the answer, or `None` at its end. A failure (reset, stall,
    /// deadline) is counted against the Worker here, as one before the head is.
    pub(crate) async fn next_chunk(&mut self) -> Result<Option<Bytes>, ExchangeError> {
        let chunk = self.exchange.next_chunk().await;
        if let Err(e) = &chunk {
            self.dispatcher.attempt_failed(&self.lease, e);
        }
        chunk
    }

    /// True once the whole answer has been read.
    pub(crate) fn body_done(&mut self) -> bool {
        self.exchange.body_done()
    }

    /// Ends a fully read answer: the connection goes back to the pool (if the Worker
    /// keeps it alive) and the slot to the scheduler.
    pub(crate) fn finish(self) {
        self.exchange.finish();
        drop(self.lease);
    }
}
