//! A task's timeline: what happened to it and when, kept as data on the data path
//! and written out only when the board is read.

use std::time::SystemTime;

/// One timeline entry.
#[derive(Debug, Clone)]
pub(super) struct Event {
    pub(super) at: SystemTime,
    pub(super) event: &'static str,
    pub(super) detail: Detail,
}

/// What a timeline event says: kept as data on the data path and written out only
/// when the board is read.
#[derive(Debug, Clone)]
pub(super) enum Detail {
    /// `priority P mode M`.
    Received { priority: u32, mode: &'static str },
    /// `N task(s) waiting`.
    Queued { ahead: usize },
    /// `attempt N to WORKER`.
    Attempt {
        attempt: u32,
        worker: compact_str::CompactString,
    },
    /// `STATUS OUTCOME`.
    Finished { status: u16, outcome: &'static str },
    /// Anything else, capped at `MAX_FIELD_BYTES`.
    Text(String),
}

impl Detail {
    /// About the length of the detail as shown: what the board's byte budget counts,
    /// as it did when details were kept as text.
    pub(super) fn shown_len(&self) -> usize {
        match self {
            Detail::Received { mode, .. } => 16 + mode.len(),
            Detail::Queued { .. } => 20,
            Detail::Attempt { worker, .. } => 16 + worker.len(),
            Detail::Finished { outcome, .. } => 4 + outcome.len(),
            Detail::Text(text) => text.len(),
        }
    }
}

impl std::fmt::Display for Detail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Detail::Received { priority, mode } => write!(f, "priority {priority} mode {mode}"),
            Detail::Queued { ahead } => write!(f, "{ahead} task(s) waiting"),
            Detail::Attempt { attempt, worker } => write!(f, "attempt {attempt} to {worker}"),
            Detail::Finished { status, outcome } => write!(f, "{status} {outcome}"),
            Detail::Text(text) => f.write_str(text),
        }
    }
}
