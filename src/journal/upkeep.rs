//! The SQLite journal's upkeep, on its writer thread: room for new tasks (free
//! disk space, the reserve, `tasks.journal_max_size`), the file open still being
//! the file at the journal's path, and checkpoints that keep finished tasks out
//! of the WAL. What it finds is published in [`JournalHealth`].

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::disk::{self, Found, Reserve, Watch, SLACK_BYTES};
use super::recreate::recreate;
use super::store::Writer;
use super::{Detail, JournalError, JournalHealth, JournalState, JOURNAL_METRICS};

/// Idle time (no task written) after which the WAL is checkpointed and
/// truncated to zero bytes. Default 1 s.
pub(super) const IDLE_CHECKPOINT: Duration = Duration::from_secs(1);

/// Longest a busy journal goes without a truncating checkpoint. Default 30 s.
pub(super) const BUSY_CHECKPOINT: Duration = Duration::from_secs(30);

/// WAL size beyond which it is checkpointed at the next heartbeat, busy or not
/// (SQLite's own automatic checkpoint is off). Default 4 MiB.
pub(super) const WAL_CHECKPOINT_BYTES: u64 = 4 << 20;

/// Why new tasks do not fit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Full {
    /// The file system is (nearly) full.
    Disk,
    /// The database reached `tasks.journal_max_size`.
    Size,
}

/// Why the journal cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lost {
    /// Nothing is at its path: re-created as soon as that is safe.
    Gone,
    /// Another file is at its path: refused until a restart.
    Replaced,
    /// A write failed with an I/O error: writes are still tried.
    Io,
}

/// The writer thread's view of the journal's files and room.
pub(super) struct Upkeep {
    path: PathBuf,
    dir: PathBuf,
    wal: String,
    max_bytes: u64,
    health: Arc<JournalHealth>,
    reserve: Reserve,
    watch: Option<Watch>,
    full: Option<Full>,
    lost: Option<Lost>,
    /// Finished tasks whose delete could not be written yet: written with the next batch.
    pub unfinished: Vec<String>,
    dirty: bool,
    /// Bytes the database grows by at the next checkpoint, as last measured.
    growth: u64,
    last_task_write: Instant,
    last_checkpoint: Instant,
    /// Deletes should save space (`secure_delete=FAST`) from the next write on.
    thrifty: bool,
    thrifty_set: bool,
}

fn kib(bytes: u64) -> String {
    format!("{} KiB", bytes / 1024)
}

impl Upkeep {
    /// Upkeep of the journal at `path` (open), publishing to `health`; writes the reserve.
    pub(super) fn new(path: &Path, max_bytes: u64, health: Arc<JournalHealth>) -> Upkeep {
        let mut upkeep = Upkeep {
            path: path.to_path_buf(),
            dir: disk::dir_of(path),
            wal: format!("{}-wal", path.display()),
            max_bytes,
            health,
            reserve: Reserve::new(path, disk::reserve_bytes(&disk::dir_of(path))),
            watch: Watch::new(path).ok(),
            full: None,
            lost: None,
            unfinished: Vec::new(),
            dirty: false,
            growth: 0,
            last_task_write: Instant::now(),
            last_checkpoint: Instant::now(),
            thrifty: false,
            thrifty_set: false,
        };
        if let Err(e) = upkeep.reserve.fill() {
            upkeep.set_full(Full::Disk, format!("cannot write the space reserve: {e}"));
        }
        upkeep
    }

    fn set_full(&mut self, why: Full, detail: String) {
        self.thrifty = true;
        self.full = Some(why);
        if self.lost.is_none() {
            self.health.set(JournalState::Full, detail);
        }
    }

    fn set_lost(&mut self, why: Lost, detail: String) {
        self.lost = Some(why);
        self.health.set(JournalState::Unavailable, detail);
    }

    fn refusal(&self) -> JournalError {
        let (state, detail) = self.health.get();
        match state {
            JournalState::Full => JournalError::Full(Detail::new(detail)),
            _ => JournalError::Unavailable(Detail::new(detail)),
        }
    }

    /// Checks that new tasks of `bytes` fit: the journal is usable, not full, and
    /// the disk keeps room for them in the WAL, for the next checkpoint (what the
    /// database grows by, theirs included) and [`SLACK_BYTES`]. Checkpoints first
    /// once the database would grow by more than a quarter of the reserve, so that
    /// the reserve always covers the next checkpoint.
    pub(super) fn room_for(&mut self, w: &Writer, bytes: u64) -> Result<(), JournalError> {
        self.growth = w.checkpoint_growth();
        if self.growth > self.reserve.bytes() / 4 && self.checkpoint_fits() {
            if let Ok(true) = w.checkpoint(false) {
                self.growth = 0;
            }
        }
        if matches!(self.lost, Some(Lost::Gone | Lost::Replaced)) || self.full.is_some() {
            return Err(self.refusal());
        }
        let free = disk::free_bytes(&self.dir).unwrap_or(u64::MAX);
        // In the WAL, then in the database beyond its free pages, at the next checkpoint.
        let need = self.growth + bytes + bytes.saturating_sub(w.free_page_bytes()) + SLACK_BYTES;
        if free < need {
            let detail = format!(
                "disk nearly full: {} free in {}, {} needed",
                kib(free),
                self.dir.display(),
                kib(need)
            );
            self.set_full(Full::Disk, detail);
            return Err(self.refusal());
        }
        Ok(())
    }

    /// Most bytes of new tasks written in one transaction: half the reserve, so
    /// that what the database grows by at the next checkpoint (at most a quarter
    /// of the reserve before a batch, see [`Upkeep::room_for`]) fits in the reserve.
    pub(super) fn batch_bytes(&self) -> u64 {
        self.reserve.bytes() / 2
    }

    /// After a batch with new tasks of `bytes` failed with `e`: finds out why
    /// (giving up the reserve when the disk is full) and returns the refusal for them.
    pub(super) fn failed(&mut self, e: &JournalError, w: &mut Writer, bytes: u64) -> JournalError {
        JOURNAL_METRICS.write_errors.inc();
        if !matches!(e, JournalError::Full(_)) {
            self.look(w, Some(e));
            return match self.lost {
                Some(_) => self.refusal(),
                None => e.clone(),
            };
        }
        let pages = bytes / 4096 + 16;
        if w.page_use().is_ok_and(|u| u.used + pages >= u.max) {
            let detail = format!("tasks.journal_max_size ({}) reached", kib(self.max_bytes));
            self.set_full(Full::Size, detail);
        } else {
            let released = self.reserve.release();
            let free = disk::free_bytes(&self.dir).unwrap_or(0);
            let detail = format!(
                "disk full: {} free in {}{}",
                kib(free),
                self.dir.display(),
                if released {
                    "; the space reserve was given up for the tasks already accepted"
                } else {
                    ""
                }
            );
            self.set_full(Full::Disk, detail);
        }
        self.refusal()
    }

    /// After a write that failed without new tasks in it (marks, deletes).
    pub(super) fn failed_without_tasks(&mut self, e: &JournalError, w: &mut Writer) {
        JOURNAL_METRICS.write_errors.inc();
        if !matches!(e, JournalError::Full(_)) {
            return self.look(w, Some(e));
        }
        if self.reserve.release() {
            log::warn!("task journal: disk full; the space reserve was given up");
        }
        if self.full.is_none() {
            let detail = format!("disk full in {}", self.dir.display());
            self.set_full(Full::Disk, detail);
        }
        self.before_write(w);
    }

    /// Before each write while the disk is full: checkpoints (keeping the WAL's
    /// space) when the disk has room for it, so that the write starts the WAL over
    /// instead of growing it into the last free bytes.
    pub(super) fn before_write(&mut self, w: &Writer) {
        if self.full != Some(Full::Disk) {
            return;
        }
        self.growth = w.checkpoint_growth();
        if self.checkpoint_fits() && matches!(w.checkpoint(false), Ok(true)) {
            self.growth = 0;
        }
    }

    /// After a write that succeeded; `tasks` when it wrote tasks (not just a heartbeat).
    pub(super) fn wrote(&mut self, tasks: bool) {
        if tasks {
            self.dirty = true;
            self.last_task_write = Instant::now();
        }
        if self.lost == Some(Lost::Io) {
            self.lost = None;
            match self.full {
                None => self.health.ok(),
                Some(_) => self.health.set(JournalState::Full, "no room for new tasks"),
            }
        }
    }

    /// Every heartbeat: the file at the path, recovery from full, the checkpoint.
    pub(super) fn tick(&mut self, w: &mut Writer) {
        self.look(w, None);
        self.growth = w.checkpoint_growth();
        self.checkpoint(w);
        self.recover(w);
        self.settle_thrift(w);
    }

    /// Applies [`Writer::thrifty`] when it changed; called before each write.
    pub(super) fn settle_thrift(&mut self, w: &Writer) {
        if self.thrifty != self.thrifty_set {
            w.thrifty(self.thrifty);
            self.thrifty_set = self.thrifty;
        }
    }

    /// Compares the file open with the file at the path; re-creates the journal
    /// when it is gone and that is safe.
    fn look(&mut self, w: &mut Writer, error: Option<&JournalError>) {
        let Some(found) = self.watch.as_ref().map(Watch::check) else {
            return;
        };
        match found {
            Found::Same => {
                if let Some(e) = error {
                    self.set_lost(Lost::Io, e.to_string());
                }
            }
            Found::Gone(why) => {
                if self.lost != Some(Lost::Gone) {
                    let detail = format!(
                        "{}: {why}; tasks accepted until now are kept in memory and written to a new journal as soon as {} can be written",
                        self.path.display(),
                        self.dir.display()
                    );
                    self.set_lost(Lost::Gone, detail);
                }
                self.try_recreate(w);
            }
            Found::Replaced(why) => {
                if self.lost != Some(Lost::Replaced) {
                    let detail = format!(
                        "{}: {why}; it is not used under a running instance (it may hold another journal's tasks): move it away to let this instance re-create the journal, or restart andera-lb to use it",
                        self.path.display()
                    );
                    self.set_lost(Lost::Replaced, detail);
                }
            }
        }
    }

    /// Writes a new journal at the path with every row the open (deleted) file holds.
    fn try_recreate(&mut self, w: &mut Writer) {
        if !self.dir.is_dir() || disk::writable_dir(&self.dir).is_err() {
            return;
        }
        match recreate(w.conn(), &self.path, self.max_bytes) {
            Ok((conn, copied)) => {
                // Neither the deleted file's connection nor its watch is ever closed:
                // closing the connection would delete the new file's WAL by name, and
                // closing a descriptor drops the process's locks on that file.
                std::mem::forget(w.swap_conn(conn));
                std::mem::forget(self.watch.take());
                self.watch = Watch::new(&self.path).ok();
                self.lost = None;
                self.full = None;
                log::warn!(
                    "task journal {} re-created, with the {copied} task(s) it held",
                    self.path.display()
                );
                match self.reserve.fill() {
                    Ok(()) => self.health.ok(),
                    Err(e) => {
                        self.set_full(Full::Disk, format!("cannot write the space reserve: {e}"))
                    }
                }
            }
            Err(e) => log::debug!("task journal: not re-created yet: {e}"),
        }
    }

    /// Leaves the full state once there is room again: the reserve written back,
    /// and space for the WAL; or, for `journal_max_size`, a tenth of it free.
    fn recover(&mut self, w: &Writer) {
        let Some(why) = self.full else { return };
        if self.lost.is_some() {
            return;
        }
        let room = match why {
            Full::Size => w.page_use().is_ok_and(|u| u.used * 10 < u.max * 9),
            Full::Disk => {
                let free = disk::free_bytes(&self.dir).unwrap_or(0);
                let missing = if self.reserve.is_held() {
                    0
                } else {
                    self.reserve.bytes()
                };
                free >= missing + self.growth + SLACK_BYTES && self.reserve.fill().is_ok()
            }
        };
        if room {
            self.full = None;
            self.thrifty = false;
            self.health.ok();
        }
    }

    /// True when the disk has room for what a checkpoint adds to the database
    /// file (as last measured): one that fails half-way keeps the space it took,
    /// and the WAL cannot start over.
    fn checkpoint_fits(&self) -> bool {
        let free = disk::free_bytes(&self.dir).unwrap_or(u64::MAX);
        free >= self.growth.saturating_add(SLACK_BYTES / 4)
    }

    /// Checkpoints at each heartbeat when it fits: truncating the WAL after
    /// [`IDLE_CHECKPOINT`] without task writes (or every [`BUSY_CHECKPOINT`] while
    /// busy); else restarting it (keeping its space) when the disk is full, or when
    /// it passes [`WAL_CHECKPOINT_BYTES`] or the database would grow by more than a
    /// quarter of the reserve.
    fn checkpoint(&mut self, w: &Writer) {
        if !self.checkpoint_fits() {
            return;
        }
        let tidy = self.dirty
            && self.full.is_none()
            && (self.last_task_write.elapsed() >= IDLE_CHECKPOINT
                || self.last_checkpoint.elapsed() >= BUSY_CHECKPOINT);
        let reuse = self.full == Some(Full::Disk)
            || self.growth > self.reserve.bytes() / 4
            || disk::len_of(&self.wal) > WAL_CHECKPOINT_BYTES;
        if !tidy && !reuse {
            return;
        }
        self.last_checkpoint = Instant::now();
        match w.checkpoint(tidy) {
            Ok(done) => {
                self.dirty &= !(done && tidy);
                if done {
                    self.growth = 0;
                }
            }
            Err(e) => log::debug!("task journal checkpoint: {e}"),
        }
    }
}
