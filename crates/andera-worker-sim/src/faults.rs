//! Ways a simulated Worker can misbehave on `POST /task`, for tests of the load
//! balancer's defences: interim (1xx) answers before the real one, tasks that
//! are accepted but never answered, and a Worker frozen on every channel. (A slow stream needs no fault: `ticker` with a
//! long `intervalMs` is one.)

use std::sync::Arc;

use bytes::Bytes;
use parking_lot::RwLock;

/// How a simulated Worker answers `POST /task`. Default: [`TaskFault::None`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TaskFault {
    /// Answer normally.
    #[default]
    None,
    /// Write `HTTP/1.1 <code> ...` with an empty header section (e.g. `100 Continue`,
    /// `103 Early Hints`, or a bogus `101`) just before the real answer.
    Interim(u16),
    /// Read the task, count it as received, and never answer (until shutdown).
    Hang,
    /// Read the task, count it as received, and answer it normally once the fault is
    /// switched to anything else: a test's gate for "this task holds its slot until I
    /// say so".
    Hold,
    /// The whole Worker freezes, like a stopped process whose kernel still accepts
    /// connections: `POST /task` and `GET /health` are read and never answered, and
    /// the WebSocket sends nothing (no pushes, no answers to `ping`), until the
    /// fault is switched to anything else.
    Frozen,
}

impl std::str::FromStr for TaskFault {
    type Err = String;

    /// `none`, `hang`, `hold`, `frozen`, or `interim-<code>` with a 1xx code (e.g. `interim-103`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.to_ascii_lowercase();
        match s.as_str() {
            "none" => return Ok(TaskFault::None),
            "hang" => return Ok(TaskFault::Hang),
            "hold" => return Ok(TaskFault::Hold),
            "frozen" => return Ok(TaskFault::Frozen),
            _ => {}
        }
        match s.strip_prefix("interim-").map(str::parse::<u16>) {
            Some(Ok(code @ 100..=199)) => Ok(TaskFault::Interim(code)),
            _ => Err(format!(
                "unknown task fault {s:?} (expected none, hang, hold, frozen or interim-1xx)"
            )),
        }
    }
}

/// The current fault, shared by the `/task` handler and the HTTP connections.
#[derive(Debug, Default)]
pub(crate) struct FaultCell(RwLock<TaskFault>);

impl FaultCell {
    pub(crate) fn new(fault: TaskFault) -> Arc<Self> {
        Arc::new(FaultCell(RwLock::new(fault)))
    }

    pub(crate) fn get(&self) -> TaskFault {
        *self.0.read()
    }

    pub(crate) fn set(&self, fault: TaskFault) {
        *self.0.write() = fault;
    }

    /// True while the whole Worker is frozen ([`TaskFault::Frozen`]).
    pub(crate) fn frozen(&self) -> bool {
        self.get() == TaskFault::Frozen
    }

    /// Returns once the Worker is no longer frozen (at once if it is not).
    pub(crate) async fn thawed(&self) {
        while self.frozen() {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }

    /// The bytes to write before the answer to a request whose first bytes are
    /// `head`, if the fault asks for an interim answer there. hyper cannot send a
    /// 1xx of our choosing, so it goes in below it, on the connection itself.
    pub(crate) fn interim_for(&self, head: &[u8]) -> Option<Bytes> {
        match self.get() {
            TaskFault::Interim(code) if head.starts_with(b"POST /task") => {
                let reason = match code {
                    100 => "Continue",
                    101 => "Switching Protocols",
                    102 => "Processing",
                    103 => "Early Hints",
                    _ => "Informational",
                };
                let extra = if code == 103 {
                    "link: </style.css>; rel=preload; as=style\r\n"
                } else {
                    ""
                };
                Some(Bytes::from(format!(
                    "HTTP/1.1 {code} {reason}\r\n{extra}\r\n"
                )))
            }
            _ => None,
        }
    }
}
