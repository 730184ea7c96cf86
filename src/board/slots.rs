//! Where the board's records live: fixed slots in chunks that are allocated as
//! the ring first fills and then reused in place, never moved or freed while the
//! board lives; and a live task's handle on its slot.
//!
//! Ten thousand records allocated one by one among the data path's short-lived
//! allocations pin the heap open: every request's buffers then land in holes spread
//! over megabytes, and glibc searches its bins for them. In chunks of their own
//! (each above glibc's mmap threshold) the records leave the heap compact, and the
//! ring writes them in address order.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use parking_lot::Mutex;

use super::key::TaskId;
use super::record::TaskRecord;
use crate::budget::Reserved;

/// Slots per chunk: 256 records are about 160 KiB, one mmap'd allocation.
const CHUNK: usize = 256;

/// What one slot takes, kept or not: what the board's byte budget counts a record
/// for besides its strings.
pub(super) const SLOT_BYTES: usize = std::mem::size_of::<Mutex<Slot>>();

/// [`CHUNK`] slots in one allocation, made on first use.
type Chunk = OnceLock<Box<[Mutex<Slot>]>>;

/// One slot: a task's number (from 1) and its record, or nothing.
#[derive(Default)]
pub(super) struct Slot(Option<(u64, TaskRecord)>);

/// The board's slots, one per record it may keep, and the bytes its records weigh.
pub(super) struct Shelf {
    chunks: Box<[Chunk]>,
    capacity: usize,
    bytes: AtomicUsize,
}

impl Shelf {
    /// Room for `capacity` records (at least 1); nothing is allocated until used.
    pub(super) fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        Shelf {
            chunks: (0..capacity.div_ceil(CHUNK))
                .map(|_| OnceLock::new())
                .collect(),
            capacity,
            bytes: AtomicUsize::new(0),
        }
    }

    /// Records kept at most.
    pub(super) fn capacity(&self) -> usize {
        self.capacity
    }

    /// Bytes the kept records weigh.
    pub(super) fn bytes(&self) -> usize {
        self.bytes.load(Ordering::Acquire)
    }

    /// The slot task `seq` is kept in, shared with every `capacity`-th task.
    fn slot(&self, seq: u64) -> &Mutex<Slot> {
        let i = ((seq - 1) % self.capacity as u64) as usize;
        let chunk = i / CHUNK;
        let slots = self.chunks[chunk].get_or_init(|| {
            let len = CHUNK.min(self.capacity - chunk * CHUNK);
            (0..len).map(|_| Mutex::new(Slot::default())).collect()
        });
        &slots[i % CHUNK]
    }

    /// Keeps `record` as task `seq`'s. The board has emptied the slot first.
    pub(super) fn put(&self, seq: u64, record: TaskRecord) {
        self.bytes.fetch_add(record.weight, Ordering::AcqRel);
        let mut slot = self.slot(seq).lock();
        debug_assert!(slot.0.is_none(), "slot of task {seq} still full");
        slot.0 = Some((seq, record));
    }

    /// Empties task `seq`'s slot, returning its record if it was still there.
    pub(super) fn take(&self, seq: u64) -> Option<TaskRecord> {
        let (_, record) = self.slot(seq).lock().0.take_if(|(kept, _)| *kept == seq)?;
        self.bytes.fetch_sub(record.weight, Ordering::AcqRel);
        Some(record)
    }

    /// `read` of task `seq`'s record, if it is still kept.
    pub(super) fn read<T>(&self, seq: u64, read: impl FnOnce(&TaskRecord) -> T) -> Option<T> {
        match &self.slot(seq).lock().0 {
            Some((kept, record)) if *kept == seq => Some(read(record)),
            _ => None,
        }
    }

    /// Changes task `seq`'s record, if it is still kept, and its weight in the total.
    fn update(&self, seq: u64, change: impl FnOnce(&mut TaskRecord)) {
        let mut slot = self.slot(seq).lock();
        let Some((_, record)) = slot.0.as_mut().filter(|(kept, _)| *kept == seq) else {
            return;
        };
        change(record);
        let size = record.size();
        if size >= record.weight {
            self.bytes.fetch_add(size - record.weight, Ordering::AcqRel);
        } else {
            self.bytes.fetch_sub(record.weight - size, Ordering::AcqRel);
        }
        record.weight = size;
    }
}

/// A live task's handle on its record. Once the ring has evicted the record, its
/// changes go nowhere; the handle keeps what the task itself needs (id, age, its
/// share of the queued-bytes budget).
pub(crate) struct TaskHandle {
    shelf: Arc<Shelf>,
    seq: u64,
    id: TaskId,
    received_at: SystemTime,
    /// The task's share of the queued-bytes budget, held until it leaves the queue.
    queued_bytes: Mutex<Option<Reserved>>,
    /// Its spans, when tracing is on (boxed: a handle without one stays small).
    trace: Option<Box<crate::traces::TaskTrace>>,
}

impl TaskHandle {
    /// The handle of task `seq`, received at `received_at`.
    pub(super) fn new(shelf: Arc<Shelf>, seq: u64, id: TaskId, received_at: SystemTime) -> Self {
        TaskHandle {
            shelf,
            seq,
            id,
            received_at,
            queued_bytes: Mutex::new(None),
            trace: None,
        }
    }

    /// Traces the task with `trace` (its SERVER span ends at the task's close).
    pub(crate) fn traced(&mut self, trace: crate::traces::TaskTrace) {
        self.trace = Some(Box::new(trace));
    }

    /// The task's spans, when it is traced.
    pub(crate) fn trace(&self) -> Option<&crate::traces::TaskTrace> {
        self.trace.as_deref()
    }

    /// The task's number on the board.
    #[cfg(test)]
    pub(super) fn seq(&self) -> u64 {
        self.seq
    }

    /// Holds the task's share of the queued-bytes budget until it is dispatched or ends.
    pub(crate) fn hold_while_queued(&self, bytes: Reserved) {
        *self.queued_bytes.lock() = Some(bytes);
    }

    /// The named client that sent the task.
    pub(crate) fn client(&self, name: &str) {
        self.shelf.update(self.seq, |r| r.client(name));
    }

    /// The task waits for a slot.
    pub(crate) fn queued(&self, depth_ahead: usize) {
        if let Some(t) = &self.trace {
            t.queued();
        }
        self.shelf.update(self.seq, |r| r.queued(depth_ahead));
    }

    /// The task was sent to `worker`. Returns the `traceparent` the Worker gets
    /// when the task is traced (its parent: this attempt's span).
    pub(crate) fn dispatched(
        &self,
        worker: &str,
        attempt: u32,
    ) -> Option<crate::traces::Traceparent> {
        self.queued_bytes.lock().take();
        self.shelf
            .update(self.seq, |r| r.dispatched(worker, attempt));
        self.trace.as_ref().map(|t| t.dispatched(worker, attempt))
    }

    /// The Worker of the attempt under way answered `status` (its head).
    pub(crate) fn answered(&self, status: u16) {
        if let Some(t) = &self.trace {
            t.answered(status);
        }
    }

    /// An attempt failed before the Worker started the task.
    pub(crate) fn retried(&self, why: &str) {
        if let Some(t) = &self.trace {
            t.retried(why);
        }
        self.shelf.update(self.seq, |r| r.retried(why));
    }

    /// The task ended.
    pub(crate) fn finished(
        &self,
        state: super::TaskState,
        status: u16,
        outcome: &'static str,
        error: Option<String>,
    ) {
        self.queued_bytes.lock().take();
        self.shelf
            .update(self.seq, |r| r.finished(state, status, outcome, error));
    }

    /// Time since the task was received.
    pub(crate) fn age(&self) -> Duration {
        self.received_at.elapsed().unwrap_or_default()
    }

    /// The task's id.
    pub(crate) fn id(&self) -> String {
        self.id.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_are_allocated_as_slots_are_first_used() {
        let shelf = Shelf::new(CHUNK * 2 + 3);
        assert_eq!(shelf.chunks.len(), 3);
        assert!(shelf.chunks.iter().all(|c| c.get().is_none()));
        shelf.read(CHUNK as u64 * 2 + 1, |_| ());
        assert_eq!(shelf.chunks[2].get().map(|c| c.len()), Some(3));
        assert!(shelf.chunks[0].get().is_none() && shelf.chunks[1].get().is_none());
        // Task capacity + 1 shares task 1's slot.
        assert!(std::ptr::eq(
            shelf.slot(1),
            shelf.slot(shelf.capacity() as u64 + 1)
        ));
    }
}
