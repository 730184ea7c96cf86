//! A slot kept counted after its task was cancelled while running: the Worker
//! goes on running a task whose connection closed (protocol §5), so its slot is
//! not free until the Worker itself reports it free.

use super::{Scheduler, State};

impl Scheduler {
    /// Counts one slot of the Worker at `url` (its list spelling, as on the board)
    /// as used by someone else until the Worker's next report of its used slots:
    /// called before a cancelled running task gives its lease back, so that the
    /// slot is not handed to the next task meanwhile. False if no such Worker.
    pub fn hold_cancelled_slot(&self, url: &str) -> bool {
        let mut st = self.state.lock();
        let State { workers, pools, .. } = &mut *st;
        let Some((&id, w)) = workers.iter_mut().find(|(_, w)| w.url.raw == url) else {
            return false;
        };
        w.external = w.external.saturating_add(1);
        let (group, contract) = w.pool.clone();
        if let Some(pool) = pools.get_mut(&group).and_then(|p| p.get_mut(&contract)) {
            pool.refresh(workers, id);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use crate::scheduler::{Acquire, Scheduler, SlotRequest, WorkerSlots};
    use crate::worker_url::WorkerUrl;

    fn worker(reported_used: Option<u32>) -> WorkerSlots {
        WorkerSlots {
            url: Arc::new(WorkerUrl::parse("http://127.0.0.1:1").unwrap()),
            group: "g".into(),
            contract: 1,
            functions: Arc::new(["hello".to_string()].into_iter().collect()),
            eligible: true,
            valid: true,
            heard_at: None,
            busy: false,
            limit: 1,
            reported_used,
            penalty_milli: 0,
        }
    }

    const REQ: SlotRequest<'static> = SlotRequest {
        group: "g",
        contract: 1,
        function: "hello",
        priority: 1,
        client: None,
    };

    #[test]
    fn a_cancelled_running_tasks_slot_stays_used_until_the_worker_reports_it_free() {
        let s = Scheduler::new(10);
        s.upsert_worker(1, worker(None));
        let Ok(Acquire::Ready(lease)) = s.acquire(&REQ) else {
            panic!("a free slot");
        };
        let url = lease.url().raw.clone();
        assert!(s.hold_cancelled_slot(&url));
        drop(lease);
        assert_eq!(s.free_slots(), Some(0), "still running on the Worker");
        assert!(matches!(s.acquire(&REQ), Ok(Acquire::Queued(_))));
        // The Worker says it still runs it, then that it is free.
        s.upsert_worker(1, worker(Some(1)));
        assert_eq!(s.usage(1).map(|u| u.external), Some(1));
        s.upsert_worker(1, worker(Some(0)));
        assert_eq!(s.usage(1).map(|u| u.external), Some(0));
        assert!(!s.hold_cancelled_slot("http://127.0.0.1:2"));
    }
}
