//! What a start checks before any service runs, in the order they are reported:
//! the Worker list, the CA file, the journal, the named clients and the access log;
//! then the warnings a start logs (and `-t` prints, and `--strict` refuses).

use crate::config::journal::Location;
use crate::config::{Settings, WorkerSource};
use crate::journal::Journal;

pub use crate::registry::watch::ListedWorkers;

/// A check that failed: its [`Display`](std::fmt::Display) is the one line a start
/// prints after `andera-lb: ` before it exits with status 2.
#[derive(Debug)]
pub struct StartError(String);

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for StartError {}

fn config_error(what: impl std::fmt::Display) -> StartError {
    StartError(format!("configuration error: {what}"))
}

/// Runs every check a start makes and returns the Worker list. A journal file is
/// opened and checked unless `journal_file_checked` is false (`--recover` moves a
/// bad one aside, `-t` must not lock it); a Redis journal is always tried, so that
/// `ExecStartPre=andera-lb -t` catches an unreachable Redis before the start does.
pub fn check(settings: &Settings, journal_file_checked: bool) -> Result<ListedWorkers, StartError> {
    let listed =
        crate::registry::watch::load_listed(&settings.workers.source).map_err(config_error)?;
    crate::upstream::tls_client_config(settings.upstream.ca_file.as_deref())
        .map_err(|e| config_error(format!("upstream.ca_file: {e}")))?;
    match &settings.tasks.journal {
        Some(location @ Location::File(_)) if journal_file_checked => {
            Journal::check(location).map_err(|e| StartError(format!("{e}{}", e.recover_hint())))?
        }
        // Nothing accepted could be kept: refuse to start rather than answer 503s.
        Some(location @ Location::Redis(_)) => {
            Journal::check(location).map_err(|e| StartError(e.to_string()))?
        }
        _ => {}
    }
    // Named clients: the clients file parses, and no name or key is given twice.
    crate::auth::ring_of(settings).map_err(config_error)?;
    if let Some(target) = &settings.logging.access_log {
        crate::access_log::open(target)
            .map_err(|e| config_error(format!("logging.access_log: {e}")))?;
    }
    Ok(listed)
}

/// The warning about the well-known LB key (a banner in the log).
pub const DEFAULT_KEY_WARNING: &str =
    "LB_AUTH_KEY is the well-known default key: anyone can use this load balancer";

/// Every warning a start logs, in order: the Worker list's, `extra` (e.g. `.env`'s),
/// the configuration's (values whose meaning was guessed) and the default key's.
pub fn warnings(settings: &Settings, listed: &ListedWorkers, extra: Option<String>) -> Vec<String> {
    let origin = match &settings.workers.source {
        WorkerSource::File(path) => path.display().to_string(),
        WorkerSource::Inline(_) => "workers.list".into(),
    };
    let mut all = listed.warnings(&origin);
    all.extend(extra);
    all.extend(
        settings
            .warnings
            .iter()
            .map(|w| format!("configuration: {w}")),
    );
    if settings.uses_default_key() {
        all.push(DEFAULT_KEY_WARNING.into());
    }
    all
}
