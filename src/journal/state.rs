//! Whether the journal can keep new tasks now, and why not: shown on keyed
//! `/health`, on the admin `/ready` and as `andera_lb_journal_state{state}`.

use super::JOURNAL_METRICS;

/// The journal's state. Default: [`JournalState::Ok`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum JournalState {
    /// New tasks are kept.
    #[default]
    Ok,
    /// No room for new tasks (disk full, or `tasks.journal_max_size` reached, or
    /// Redis at `maxmemory`); tasks already kept still run and are forgotten.
    Full,
    /// The journal cannot be used (its file was deleted or replaced, an I/O error,
    /// Redis unreachable): new tasks are refused.
    Unavailable,
}

impl JournalState {
    /// Every state, for the metric's label values.
    pub const ALL: [JournalState; 3] = [
        JournalState::Ok,
        JournalState::Full,
        JournalState::Unavailable,
    ];

    /// `ok`, `full` or `unavailable`.
    pub fn as_str(self) -> &'static str {
        match self {
            JournalState::Ok => "ok",
            JournalState::Full => "full",
            JournalState::Unavailable => "unavailable",
        }
    }
}

/// The journal's state with its detail, shared by the engine (which sets it) and
/// the routes (which show it). Each change is logged once: `error` when the
/// journal becomes unavailable, `warn` when full, `info` when it is ok again.
pub struct JournalHealth {
    now: parking_lot::Mutex<(JournalState, String)>,
    what: String,
}

impl JournalHealth {
    /// A journal named `what` (its file or URL, for the log), `ok`.
    pub fn new(what: impl Into<String>) -> JournalHealth {
        let health = JournalHealth {
            now: parking_lot::Mutex::new((JournalState::Ok, String::new())),
            what: what.into(),
        };
        health.gauge(JournalState::Ok);
        health
    }

    /// The state now.
    pub fn state(&self) -> JournalState {
        self.now.lock().0
    }

    /// The state now and what it is about (empty when ok).
    pub fn get(&self) -> (JournalState, String) {
        self.now.lock().clone()
    }

    /// Sets the state, logging the change (not a new detail for the same state).
    pub fn set(&self, state: JournalState, detail: impl Into<String>) {
        let detail = detail.into();
        let before = {
            let mut now = self.now.lock();
            let before = now.0;
            *now = (state, detail.clone());
            before
        };
        if before == state {
            return;
        }
        self.gauge(state);
        let what = &self.what;
        match state {
            JournalState::Unavailable => log::error!(
                "task journal {what} is unavailable: {detail}; new webhook tasks are refused with 503"
            ),
            JournalState::Full => log::warn!(
                "task journal {what} is full: {detail}; new webhook tasks are refused with 503 until there is room"
            ),
            JournalState::Ok => log::info!(
                "task journal {what} is {} again: new webhook tasks are accepted",
                if before == JournalState::Full { "writable" } else { "available" }
            ),
        }
    }

    /// Sets `ok` if the state is `from` (e.g. a read found Redis reachable again,
    /// which says nothing about its `maxmemory`).
    pub fn recovered_from(&self, from: JournalState) {
        if self.state() == from {
            self.set(JournalState::Ok, "");
        }
    }

    /// Sets `ok` (the usual case: cheap when it already is).
    pub fn ok(&self) {
        if self.state() != JournalState::Ok {
            self.set(JournalState::Ok, "");
        }
    }

    fn gauge(&self, state: JournalState) {
        for s in JournalState::ALL {
            JOURNAL_METRICS
                .state
                .with_label_values(&[s.as_str()])
                .set(i64::from(s == state));
        }
    }
}
