//! The load balancer's own log: every line goes to stderr and into a ring of the
//! last `MAX_LOGS` lines served by `/logs`. Callers never pass keys or task bodies.

use std::collections::VecDeque;
use std::sync::Arc;

use once_cell::sync::OnceCell;
use parking_lot::Mutex;

/// The last N log lines, oldest first.
pub struct LogRing {
    lines: Mutex<VecDeque<String>>,
    capacity: usize,
}

impl LogRing {
    /// A ring holding at most `capacity` lines.
    pub fn new(capacity: usize) -> Self {
        LogRing {
            lines: Mutex::new(VecDeque::with_capacity(capacity.min(4096))),
            capacity: capacity.max(1),
        }
    }

    /// Appends a line, dropping the oldest when full.
    pub fn push(&self, line: String) {
        let mut lines = self.lines.lock();
        if lines.len() == self.capacity {
            lines.pop_front();
        }
        lines.push_back(line);
    }

    /// A copy of the lines, oldest first.
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().iter().cloned().collect()
    }
}

static RING: OnceCell<Arc<LogRing>> = OnceCell::new();

/// The process-wide ring (a small default one until [`init`] runs).
pub fn ring() -> Arc<LogRing> {
    RING.get_or_init(|| Arc::new(LogRing::new(1000))).clone()
}

struct RingLogger {
    stderr: env_logger::Logger,
    ring: Arc<LogRing>,
    level: log::LevelFilter,
}

impl log::Log for RingLogger {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        metadata.level() <= self.level
    }

    fn log(&self, record: &log::Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        self.stderr.log(record);
        let now = humantime::format_rfc3339_millis(std::time::SystemTime::now());
        self.ring
            .push(format!("[{now}] [{}] {}", record.level(), record.args()));
    }

    fn flush(&self) {
        self.stderr.flush();
    }
}

/// Installs the logger: stderr at `level` (`RUST_LOG` may refine it) plus the ring.
pub fn init(level: log::LevelFilter, max_logs: usize) {
    let ring = RING
        .get_or_init(|| Arc::new(LogRing::new(max_logs)))
        .clone();
    let stderr = env_logger::Builder::new()
        .filter_level(level)
        .parse_env("RUST_LOG")
        .build();
    let logger = RingLogger {
        stderr,
        ring,
        level,
    };
    if log::set_boxed_logger(Box::new(logger)).is_ok() {
        log::set_max_level(level);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_last_lines_in_order() {
        let r = LogRing::new(3);
        for i in 0..5 {
            r.push(format!("l{i}"));
        }
        assert_eq!(r.lines(), ["l2", "l3", "l4"]);
    }
}
