use std::time::Duration;

use super::*;
use tokio::time::Instant;

fn slots(group: &str, limit: u32, eligible: bool) -> WorkerSlots {
    WorkerSlots {
        url: Arc::new(WorkerUrl::parse("http://127.0.0.1:1").unwrap()),
        group: group.into(),
        contract: 1,
        functions: Arc::new(["hello".to_string()].into_iter().collect()),
        eligible,
        valid: true,
        heard_at: None,
        busy: false,
        limit,
        reported_used: None,
        penalty_milli: 0,
    }
}

fn req(priority: u32) -> SlotRequest<'static> {
    SlotRequest {
        group: "g",
        contract: 1,
        function: "hello",
        priority,
        client: None,
    }
}

fn ready(s: &Arc<Scheduler>, p: u32) -> Lease {
    match s.acquire(&req(p)).unwrap() {
        Acquire::Ready(l) => l,
        Acquire::Queued(_) => panic!("expected a free slot"),
    }
}

fn queued(s: &Arc<Scheduler>, p: u32) -> Waiting {
    match s.acquire(&req(p)).unwrap() {
        Acquire::Queued(w) => w,
        Acquire::Ready(_) => panic!("expected to queue"),
    }
}

fn far() -> Instant {
    Instant::now() + Duration::from_secs(30)
}

#[test]
fn unknown_pool_function_and_down_are_distinct() {
    let s = Scheduler::new(10);
    assert_eq!(s.acquire(&req(1)).err(), Some(AcquireError::UnknownPool));
    s.upsert_worker(1, slots("g", 1, false));
    assert_eq!(s.acquire(&req(1)).err(), Some(AcquireError::NoWorkerUp));
    s.upsert_worker(1, slots("g", 1, true));
    let bad = SlotRequest {
        function: "nope",
        ..req(1)
    };
    assert_eq!(s.acquire(&bad).err(), Some(AcquireError::UnknownFunction));
}

#[test]
fn prefers_most_free_slots() {
    let s = Scheduler::new(10);
    s.upsert_worker(1, slots("g", 2, true));
    s.upsert_worker(2, slots("g", 5, true));
    let held: Vec<Lease> = (0..5).map(|_| ready(&s, 1)).collect();
    let order: Vec<WorkerId> = held.iter().map(Lease::worker).collect();
    // 5 free beats 2 free until they tie at 2; ties go to the lower id.
    assert_eq!(order, [2, 2, 2, 1, 2]);
}

#[tokio::test]
async fn priority_then_fifo_and_direct_handoff() {
    let s = Scheduler::new(10);
    s.upsert_worker(1, slots("g", 1, true));
    let first = ready(&s, 1);
    let w5a = queued(&s, 5);
    let w5b = queued(&s, 5);
    let w1 = queued(&s, 1);
    assert_eq!(s.queued(), 3);
    let mut order = Vec::new();
    drop(first);
    let l = w1.until(far()).await.unwrap();
    order.push("p1");
    drop(l);
    let l = w5a.until(far()).await.unwrap();
    order.push("p5a");
    drop(l);
    let l = w5b.until(far()).await.unwrap();
    order.push("p5b");
    assert_eq!(order, ["p1", "p5a", "p5b"]);
    assert_eq!(s.queued(), 0);
    assert_eq!(s.usage(1).unwrap().in_flight, 1);
    drop(l);
    assert_eq!(s.usage(1).unwrap().in_flight, 0);
}

#[tokio::test]
async fn a_dropped_waiter_leaves_at_once_and_loses_no_slot() {
    let s = Scheduler::new(10);
    s.upsert_worker(1, slots("g", 1, true));
    let held = ready(&s, 1);
    let gone = queued(&s, 1);
    let next = queued(&s, 2);
    drop(gone);
    assert_eq!(s.queued(), 1);
    drop(held);
    let l = next.until(far()).await.unwrap();
    assert_eq!(s.usage(1).unwrap().in_flight, 1);
    drop(l);
    assert_eq!(s.usage(1).unwrap().in_flight, 0);
}

#[tokio::test]
async fn granted_but_never_collected_slot_comes_back() {
    let s = Scheduler::new(10);
    s.upsert_worker(1, slots("g", 1, true));
    let held = ready(&s, 1);
    let w = queued(&s, 1);
    drop(held); // grant sits in w's channel
    assert_eq!(s.usage(1).unwrap().in_flight, 1);
    drop(w);
    assert_eq!(s.usage(1).unwrap().in_flight, 0);
}

#[tokio::test]
async fn times_out_and_bounded_queue() {
    let s = Scheduler::new(1);
    s.upsert_worker(1, slots("g", 1, true));
    let _held = ready(&s, 1);
    let w = queued(&s, 1);
    assert_eq!(s.acquire(&req(1)).err(), Some(AcquireError::QueueFull));
    let r = w.until(Instant::now() + Duration::from_millis(20)).await;
    assert_eq!(r.err(), Some(AcquireError::TimedOut));
    assert_eq!(s.queued(), 0);
}

#[tokio::test]
async fn waiters_fail_when_the_last_worker_goes_and_leases_survive_removal() {
    let s = Scheduler::new(10);
    s.upsert_worker(1, slots("g", 1, true));
    let held = ready(&s, 1);
    let w = queued(&s, 1);
    s.remove_worker(1);
    assert_eq!(w.until(far()).await.err(), Some(AcquireError::UnknownPool));
    drop(held); // no panic, no effect
    assert!(s.usage(1).is_none());
}

#[test]
fn worker_report_counts_other_users() {
    let s = Scheduler::new(10);
    s.upsert_worker(1, slots("g", 3, true));
    let _mine = ready(&s, 1);
    // The Worker says 3 used: ours plus two from elsewhere.
    s.upsert_worker(
        1,
        WorkerSlots {
            reported_used: Some(3),
            ..slots("g", 3, true)
        },
    );
    assert_eq!(s.usage(1).unwrap().external, 2);
    assert!(matches!(s.acquire(&req(1)), Ok(Acquire::Queued(_))));
}

#[test]
fn never_more_than_the_limit() {
    let s = Scheduler::new(1000);
    s.upsert_worker(1, slots("g", 3, true));
    s.upsert_worker(2, slots("g", 2, true));
    let mut leases = Vec::new();
    let mut waits = Vec::new();
    for i in 0..50 {
        match s.acquire(&req(1 + i % 7)).unwrap() {
            Acquire::Ready(l) => leases.push(l),
            Acquire::Queued(w) => waits.push(w),
        }
        assert!(s.usage(1).unwrap().in_flight <= 3);
        assert!(s.usage(2).unwrap().in_flight <= 2);
    }
    assert_eq!(leases.len(), 5);
    assert_eq!(s.queued(), 45);
}

#[tokio::test(start_paused = true)]
async fn an_ejected_worker_survives_its_own_reports_and_returns_after_the_back_off() {
    let s = Scheduler::new(10);
    s.upsert_worker(1, slots("g", 2, true));
    s.upsert_worker(2, slots("g", 2, true));
    let policy = OutlierPolicy {
        max_fails: 2,
        fail_timeout: Duration::from_secs(10),
    };
    assert!(s.worker_failed(1, "slow", &policy).is_none());
    let e = s
        .worker_failed(1, "slow", &policy)
        .expect("second failure ejects");
    assert_eq!(e.consecutive_failures, 2);
    // Reports keep coming (the Worker answers /health): it stays out.
    s.upsert_worker(1, slots("g", 2, true));
    let leases: Vec<Lease> = (0..2).map(|_| ready(&s, 1)).collect();
    assert!(leases.iter().all(|l| l.worker() == 2));
    let waiting = queued(&s, 1);
    tokio::time::sleep(Duration::from_secs(11)).await;
    // Back in rotation: the waiter gets its slot on Worker 1.
    let lease = waiting.until(far()).await.unwrap();
    assert_eq!(lease.worker(), 1);
    assert!(s.ejection(1).is_none());
    // On probation one failure ejects again, for twice as long.
    let again = s.worker_failed(1, "slow", &policy).expect("probation");
    assert_eq!(again.backoff, Duration::from_secs(20));
    // The last Worker out fails the waiters at once.
    s.worker_failed(2, "x", &policy);
    let last = queued(&s, 1);
    s.worker_failed(2, "x", &policy);
    assert_eq!(
        last.until(far()).await.err(),
        Some(AcquireError::NoWorkerUp)
    );
}

#[test]
#[should_panic(expected = "would go below zero")]
fn a_count_given_back_twice_is_caught_not_wrapped() {
    let mut in_flight: u32 = 1;
    super::count_down(&mut in_flight, 1, "in_flight");
    assert_eq!(in_flight, 0);
    super::count_down(&mut in_flight, 1, "in_flight");
}

#[tokio::test(start_paused = true)]
async fn alive_and_busy_needs_a_recent_answer_and_a_used_slot() {
    let s = Scheduler::new(10);
    let window = Duration::from_secs(2);
    s.upsert_worker(1, slots("g", 2, true));
    assert!(!s.alive_and_busy(1, window), "never heard from");
    let heard = |busy| WorkerSlots {
        heard_at: Some(Instant::now()),
        busy,
        ..slots("g", 2, true)
    };
    s.upsert_worker(1, heard(false));
    assert!(!s.alive_and_busy(1, window), "alive, but no slot used");
    s.upsert_worker(1, heard(true));
    assert!(s.alive_and_busy(1, window));
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(!s.alive_and_busy(1, window), "silent since");
    assert!(!s.alive_and_busy(2, window), "unknown Worker");
}

#[test]
fn only_valid_workers_say_what_a_pool_exposes() {
    let s = Scheduler::new(10);
    s.upsert_worker(1, slots("g", 2, true));
    let invalid = WorkerSlots {
        functions: Arc::new(
            ["hello".to_string(), "extra".to_string()]
                .into_iter()
                .collect(),
        ),
        eligible: false,
        valid: false,
        ..slots("g", 2, false)
    };
    s.upsert_worker(2, invalid);
    let extra = SlotRequest {
        function: "extra",
        ..req(1)
    };
    assert_eq!(s.acquire(&extra).err(), Some(AcquireError::UnknownFunction));
    assert!(matches!(s.acquire(&req(1)), Ok(Acquire::Ready(_))));
}
