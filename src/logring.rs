//! The load balancer's own log: every line goes to stderr and into a ring of the
//! last `MAX_LOGS` lines served by `/logs`. Callers never pass keys or task bodies.

use std::collections::VecDeque;
use std::sync::Arc;

use parking_lot::Mutex;
use std::sync::OnceLock;

/// Longest log line kept or printed, in bytes; longer lines are cut with a marker
/// (`…(+N bytes)`), e.g. a Worker's multi-megabyte error string.
pub const MAX_LINE_BYTES: usize = 4096;

/// Default byte budget of the ring (`logging.max_logs_bytes`): 4 MiB.
pub const DEFAULT_MAX_BYTES: usize = 4 << 20;

struct Lines {
    lines: VecDeque<String>,
    bytes: usize,
}

/// The last N log lines, oldest first, bounded in count and in bytes.
pub struct LogRing {
    lines: Mutex<Lines>,
    capacity: usize,
    max_bytes: usize,
}

impl LogRing {
    /// A ring holding at most `capacity` lines and `max_bytes` bytes of them.
    pub fn new(capacity: usize, max_bytes: usize) -> Self {
        LogRing {
            lines: Mutex::new(Lines {
                lines: VecDeque::with_capacity(capacity.min(4096)),
                bytes: 0,
            }),
            capacity: capacity.max(1),
            max_bytes: max_bytes.max(1),
        }
    }

    /// Appends a line (cut to [`MAX_LINE_BYTES`]), dropping the oldest ones while the
    /// ring is over its count or byte budget.
    pub fn push(&self, mut line: String) {
        crate::text::truncate(&mut line, MAX_LINE_BYTES);
        let mut ring = self.lines.lock();
        while !ring.lines.is_empty()
            && (ring.lines.len() >= self.capacity || ring.bytes + line.len() > self.max_bytes)
        {
            if let Some(old) = ring.lines.pop_front() {
                ring.bytes -= old.len();
            }
        }
        ring.bytes += line.len();
        ring.lines.push_back(line);
    }

    /// A copy of the lines, oldest first.
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().lines.iter().cloned().collect()
    }

    /// Bytes of the lines kept.
    pub fn bytes(&self) -> usize {
        self.lines.lock().bytes
    }
}

static RING: OnceLock<Arc<LogRing>> = OnceLock::new();

/// The process-wide ring (a small default one until [`init`] runs).
pub fn ring() -> Arc<LogRing> {
    RING.get_or_init(|| Arc::new(LogRing::new(1000, DEFAULT_MAX_BYTES)))
        .clone()
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
        // Lines carry client and Worker strings: bounded, and no raw control characters
        // (a group name must not forge a log line or drive the terminal).
        let mut msg = record.args().to_string();
        crate::text::truncate(&mut msg, MAX_LINE_BYTES);
        let msg = crate::text::escape_controls(&msg);
        self.stderr.log(
            &log::Record::builder()
                .args(format_args!("{msg}"))
                .metadata(record.metadata().clone())
                .module_path(record.module_path())
                .file(record.file())
                .line(record.line())
                .build(),
        );
        let now = humantime::format_rfc3339_millis(std::time::SystemTime::now());
        self.ring
            .push(format!("[{now}] [{}] {msg}", record.level()));
    }

    fn flush(&self) {
        self.stderr.flush();
    }
}

/// Installs the logger: stderr at `level` (`RUST_LOG` may refine it) plus the ring of
/// `max_logs` lines and `max_bytes` bytes.
pub fn init(level: log::LevelFilter, max_logs: usize, max_bytes: usize) {
    let ring = RING
        .get_or_init(|| Arc::new(LogRing::new(max_logs, max_bytes)))
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
        let r = LogRing::new(3, 1000);
        for i in 0..5 {
            r.push(format!("l{i}"));
        }
        assert_eq!(r.lines(), ["l2", "l3", "l4"]);
    }

    #[test]
    fn the_ring_is_bounded_in_bytes_and_long_lines_are_cut() {
        let r = LogRing::new(100, 10_000);
        for i in 0..10 {
            r.push(format!("{i}{}", "x".repeat(2999)));
        }
        assert_eq!(r.lines().len(), 3);
        assert!(r.bytes() <= 10_000);
        assert!(r.lines()[2].starts_with('9'));
        r.push("y".repeat(1 << 20));
        let last = r.lines().pop().unwrap();
        assert!(last.len() < MAX_LINE_BYTES + 32, "{}", last.len());
        assert!(last.ends_with(&format!("…(+{} bytes)", (1 << 20) - MAX_LINE_BYTES)));
    }
}
