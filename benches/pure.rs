//! Micro-benchmarks of the pure pieces of the data path (no sockets):
//!
//! - `task::parse`: validating a task body (small, and 100 KB of input);
//! - worker selection: `Scheduler::acquire` + dropping the `Lease`, with 10,
//!   1,000 and 10,000 Workers registered in one pool (must stay flat);
//! - the wait queue: `acquire` → `Queued`, then dropping the `Waiting`, with an
//!   empty queue and with 10,000 tasks already waiting;
//! - the hand-off: dropping a lease gives the slot to the head waiter, which
//!   collects it.
//!
//! Run: `cargo bench --bench pure` (add `-- --quick` for a fast pass).

// criterion_group!/criterion_main! generate undocumented public functions.
#![allow(missing_docs)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use andera_lb::scheduler::{Acquire, Scheduler, SlotRequest, Waiting, WorkerSlots};
use andera_lb::task;
use andera_lb::worker_url::WorkerUrl;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

const SMALL: &str =
    r#"{"group":"default","function":"hello","contract":1,"input":{"name":"Andera"}}"#;

/// A realistic ~100 KB body: an input object holding an array of records.
fn big_body() -> String {
    let mut items = Vec::new();
    let mut len = 0;
    let mut i = 0;
    while len < 100 * 1024 {
        let item = format!(
            r#"{{"id":{i},"name":"item-{i}","price":{}.{:02},"tags":["alpha","beta","gamma"],"note":"caf\u00e9 \"quoted\" text"}}"#,
            i * 7 % 1000,
            i % 100
        );
        len += item.len() + 1;
        items.push(item);
        i += 1;
    }
    format!(
        r#"{{"group":"default","function":"hello","contract":1,"priority":3,"mode":"sync","input":{{"items":[{}]}},"extra":{{"trace":"abc"}}}}"#,
        items.join(",")
    )
}

fn worker(port: u16, limit: u32) -> WorkerSlots {
    WorkerSlots {
        url: Arc::new(WorkerUrl::parse(&format!("http://127.0.0.1:{port}/w")).unwrap()),
        group: "default".into(),
        contract: 1,
        functions: Arc::new(["hello".to_string()].into_iter().collect()),
        eligible: true,
        valid: true,
        heard_at: None,
        busy: false,
        limit,
        reported_used: None,
        penalty_milli: 0,
    }
}

fn req() -> SlotRequest<'static> {
    SlotRequest {
        group: "default",
        contract: 1,
        function: "hello",
        priority: 1,
        client: None,
    }
}

fn scheduler_with(workers: u64, limit: u32) -> Arc<Scheduler> {
    let s = Scheduler::new(1_000_000);
    for id in 1..=workers {
        s.upsert_worker(id, worker((id % 60000) as u16 + 1, limit));
    }
    s
}

fn bench_parse(c: &mut Criterion) {
    let mut g = c.benchmark_group("task::parse");
    let big = big_body();
    for (name, body) in [("small", SMALL.as_bytes()), ("100KB", big.as_bytes())] {
        assert!(task::parse(body).is_ok(), "{name} body must be valid");
        g.throughput(Throughput::Bytes(body.len() as u64));
        g.bench_with_input(BenchmarkId::from_parameter(name), body, |b, body| {
            b.iter(|| task::parse(black_box(body)).unwrap())
        });
    }
    g.finish();
}

fn bench_select(c: &mut Criterion) {
    let mut g = c.benchmark_group("select acquire+drop");
    for n in [10u64, 1_000, 10_000] {
        let s = scheduler_with(n, 1_000_000);
        let r = req();
        g.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| match s.acquire(black_box(&r)).unwrap() {
                Acquire::Ready(lease) => drop(lease),
                Acquire::Queued(_) => unreachable!("slots are plentiful"),
            })
        });
    }
    g.finish();
}

fn bench_queue(c: &mut Criterion) {
    let mut g = c.benchmark_group("queue push+cancel");
    for waiting in [0usize, 10_000] {
        let s = scheduler_with(1, 1);
        let r = req();
        let _held = match s.acquire(&r).unwrap() {
            Acquire::Ready(l) => l,
            Acquire::Queued(_) => unreachable!(),
        };
        let _queue: Vec<Waiting> = (0..waiting)
            .map(|_| match s.acquire(&r).unwrap() {
                Acquire::Queued(w) => w,
                Acquire::Ready(_) => unreachable!(),
            })
            .collect();
        g.bench_with_input(BenchmarkId::new("waiting", waiting), &waiting, |b, _| {
            b.iter(|| match s.acquire(black_box(&r)).unwrap() {
                Acquire::Queued(w) => drop(w),
                Acquire::Ready(_) => unreachable!("the only slot is held"),
            })
        });
    }
    g.finish();
}

fn bench_handoff(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let s = scheduler_with(1, 1);
    let r = req();
    c.bench_function("hand-off release→next waiter", |b| {
        let mut lease = Some(match s.acquire(&r).unwrap() {
            Acquire::Ready(l) => l,
            Acquire::Queued(_) => unreachable!(),
        });
        let far = tokio::time::Instant::now() + Duration::from_secs(3600);
        b.iter(|| {
            let w = match s.acquire(black_box(&r)).unwrap() {
                Acquire::Queued(w) => w,
                Acquire::Ready(_) => unreachable!("the only slot is held"),
            };
            // Freeing the slot hands it to `w` under the lock; `w` then collects it.
            drop(lease.take());
            lease = Some(rt.block_on(w.until(far)).expect("hand-off"));
        })
    });
}

/// A request of named client `name` (weight 1, no limits) at `priority`.
fn client_req(name: &Arc<str>, priority: u32) -> SlotRequest<'_> {
    SlotRequest {
        priority,
        client: Some(andera_lb::scheduler::ClientShare {
            name,
            weight: 1,
            max_running: 0,
            max_queued: 0,
        }),
        ..req()
    }
}

/// Named clients' fair sharing (#22): queueing a task behind 10,000 waiting tasks of
/// 1 or 1,000 clients (tag + ordered insert, then cancel), and the hand-off of a
/// freed slot with 10,000 tasks of 100 clients queued.
fn bench_clients(c: &mut Criterion) {
    let mut g = c.benchmark_group("fair queue push+cancel, 10,000 waiting");
    for clients in [1usize, 1_000] {
        let s = scheduler_with(1, 1);
        let names: Vec<Arc<str>> = (0..clients).map(|i| format!("c{i}").into()).collect();
        let _held = match s.acquire(&client_req(&names[0], 1)).unwrap() {
            Acquire::Ready(l) => l,
            Acquire::Queued(_) => unreachable!(),
        };
        let _queue: Vec<Waiting> = (0..10_000)
            .map(
                |i| match s.acquire(&client_req(&names[i % clients], 1)).unwrap() {
                    Acquire::Queued(w) => w,
                    Acquire::Ready(_) => unreachable!(),
                },
            )
            .collect();
        let mut next = 0;
        g.bench_with_input(BenchmarkId::new("clients", clients), &clients, |b, _| {
            b.iter(|| {
                next = (next + 1) % clients;
                match s.acquire(black_box(&client_req(&names[next], 1))).unwrap() {
                    Acquire::Queued(w) => drop(w),
                    Acquire::Ready(_) => unreachable!("the only slot is held"),
                }
            })
        });
    }
    g.finish();

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let s = scheduler_with(1, 1);
    let names: Vec<Arc<str>> = (0..100).map(|i| format!("c{i}").into()).collect();
    // 10,000 tasks of 100 clients wait at priority 2; the measured one at 1 is next.
    let mut lease = Some(match s.acquire(&client_req(&names[0], 1)).unwrap() {
        Acquire::Ready(l) => l,
        Acquire::Queued(_) => unreachable!(),
    });
    let _behind: Vec<Waiting> = (0..10_000)
        .map(
            |i| match s.acquire(&client_req(&names[i % 100], 2)).unwrap() {
                Acquire::Queued(w) => w,
                Acquire::Ready(_) => unreachable!(),
            },
        )
        .collect();
    let far = tokio::time::Instant::now() + Duration::from_secs(3600);
    let mut next = 0;
    c.bench_function("fair hand-off, 10,000 queued over 100 clients", |b| {
        b.iter(|| {
            next = (next + 1) % 100;
            let w = match s.acquire(black_box(&client_req(&names[next], 1))).unwrap() {
                Acquire::Queued(w) => w,
                Acquire::Ready(_) => unreachable!("the only slot is held"),
            };
            drop(lease.take());
            lease = Some(rt.block_on(w.until(far)).expect("hand-off"));
        })
    });
}

/// The edge input check (#23) on one task: the input read in key order and judged
/// against a compiled schema; and the slowest `pattern` test the check admits
/// (backtracking bound just under `MAX_STEPS`: `a*a*b` on 124 `a`s, no match).
fn bench_edge_check(c: &mut Criterion) {
    use andera_lb::task::pattern::{Pattern, MAX_STEPS};
    use andera_lb::task::schema::{Schema, Verdict};
    let mut g = c.benchmark_group("edge check");
    let compile = |v: serde_json::Value| Schema::compile(Some(&v)).expect("well formed");
    let hello = compile(serde_json::json!({
        "name": {"type": "string", "required": false, "default": "World"},
        "label": {"type": "string"}, "sleepMs": {"type": "number", "min": 0}
    }));
    let lower = compile(serde_json::json!({
        "s": {"type": "string", "pattern": "^[a-z]+$", "min": 2, "max": 5}
    }));
    let cases = [
        ("hello pass", &hello, r#"{"name":"Andera"}"#, Verdict::Pass),
        (
            "hello refuse",
            &hello,
            r#"{"nmae":"Andera"}"#,
            Verdict::Refuse("Unexpected param: nmae".into()),
        ),
        ("pattern pass", &lower, r#"{"s":"abc"}"#, Verdict::Pass),
    ];
    for (name, schema, input, want) in cases {
        assert_eq!(schema.check_json(Some(input)), want, "{name}");
        g.bench_function(name, |b| {
            b.iter(|| schema.check_json(black_box(Some(input))))
        });
    }
    let slow = Pattern::compile("a*a*b").unwrap();
    let text = "a".repeat(124);
    assert!(slow.worst_steps(124) <= MAX_STEPS);
    assert_eq!(slow.test(&text), Some(false));
    g.bench_function("worst admitted pattern", |b| {
        b.iter(|| slow.test(black_box(&text)))
    });
    g.finish();
}

criterion_group!(
    benches,
    bench_parse,
    bench_select,
    bench_queue,
    bench_handoff,
    bench_clients,
    bench_edge_check
);
criterion_main!(benches);
