//! Why the journal could not do what was asked. The kind decides the client's
//! answer (`journal_full`, `journal_unavailable`) and the start-up hint; the
//! [`Detail`] names where it happened and keeps the engine's own error (rusqlite,
//! redis, io) as a typed cause, as Pingora's `Error` keeps its `cause`.

use std::error::Error as StdError;
use std::fmt;
use std::sync::Arc;

/// The underlying error, shared so that one failure can answer several waiters.
type Cause = Arc<dyn StdError + Send + Sync>;

/// Where a journal error happened (a file or a redacted URL, never a key) and the
/// error beneath it, when there is one.
#[derive(Debug, Clone)]
pub struct Detail {
    context: String,
    cause: Option<Cause>,
}

impl Detail {
    /// A detail with no underlying error (a state the journal found itself in).
    pub fn new(context: impl Into<String>) -> Detail {
        Detail {
            context: context.into(),
            cause: None,
        }
    }

    /// A detail whose underlying error is `cause`.
    pub fn caused(
        context: impl Into<String>,
        cause: impl StdError + Send + Sync + 'static,
    ) -> Detail {
        Detail {
            context: context.into(),
            cause: Some(Arc::new(cause)),
        }
    }

    /// The underlying error, if any.
    pub fn cause(&self) -> Option<&(dyn StdError + Send + Sync + 'static)> {
        self.cause.as_deref()
    }
}

impl fmt::Display for Detail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.context[..], &self.cause) {
            (context, None) => f.write_str(context),
            ("", Some(cause)) => write!(f, "{cause}"),
            (context, Some(cause)) => write!(f, "{context}: {cause}"),
        }
    }
}

/// Why the journal could not do what was asked.
#[derive(Debug, Clone)]
pub enum JournalError {
    /// The journal cannot be opened or reached, or is not a journal (names the file or URL).
    Open(Detail),
    /// A write failed (I/O error, Redis unreachable): the task is not kept.
    Write(Detail),
    /// No room for new tasks (disk full, `tasks.journal_max_size`, Redis `maxmemory`).
    Full(Detail),
    /// The journal cannot be used now (its file was deleted or replaced).
    Unavailable(Detail),
    /// The journal's file or directory cannot be written by this process (names it).
    Denied(Detail),
    /// The writer thread is gone.
    Closed,
}

impl JournalError {
    /// What to add to a start-up refusal: `--recover` for a file that is not a
    /// journal, nothing for a permission problem (which it cannot fix).
    pub fn recover_hint(&self) -> &'static str {
        match self {
            JournalError::Open(_) => "; start with --recover to move it aside and begin a new one",
            _ => "",
        }
    }

    /// The `reason` of a refused task's JSON: `journal_full` or `journal_unavailable`.
    pub fn reason(&self) -> &'static str {
        match self {
            JournalError::Full(_) => "journal_full",
            _ => "journal_unavailable",
        }
    }

    fn detail(&self) -> Option<&Detail> {
        match self {
            JournalError::Open(d)
            | JournalError::Write(d)
            | JournalError::Full(d)
            | JournalError::Unavailable(d)
            | JournalError::Denied(d) => Some(d),
            JournalError::Closed => None,
        }
    }
}

impl fmt::Display for JournalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JournalError::Open(m) => write!(f, "cannot open the task journal: {m}"),
            JournalError::Write(m) => write!(f, "cannot write the task journal: {m}"),
            JournalError::Full(m) => write!(f, "the task journal is full: {m}"),
            JournalError::Unavailable(m) => write!(f, "the task journal is unavailable: {m}"),
            JournalError::Denied(m) => write!(f, "cannot write the task journal: {m}"),
            JournalError::Closed => f.write_str("the task journal is closed"),
        }
    }
}

impl StdError for JournalError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        let cause = self.detail()?.cause()?;
        Some(cause)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cause_stays_typed_and_is_printed_after_the_context() {
        let io = std::io::Error::new(std::io::ErrorKind::StorageFull, "no space left");
        let e = JournalError::Full(Detail::caused("/var/lib/andera/tasks.db", io));
        assert_eq!(
            e.to_string(),
            "the task journal is full: /var/lib/andera/tasks.db: no space left"
        );
        let source = e.source().expect("a cause");
        let io = source
            .downcast_ref::<std::io::Error>()
            .expect("an io::Error");
        assert_eq!(io.kind(), std::io::ErrorKind::StorageFull);
        assert_eq!(e.reason(), "journal_full");
    }

    #[test]
    fn a_state_has_no_cause() {
        let e = JournalError::Unavailable(Detail::new("its file was deleted"));
        assert!(e.source().is_none());
        assert_eq!(
            e.to_string(),
            "the task journal is unavailable: its file was deleted"
        );
        assert!(JournalError::Closed.source().is_none());
    }
}
