//! What keeping an accepted webhook task costs, per engine: the time until the
//! client may be told "accepted" (one at a time, and 64 at once, where group commit
//! shares the fsync), the CPU the process spends per task (all threads, the SQLite
//! writer included), and the bytes the journal holds per waiting task.
//!
//! Run: `cargo bench --bench journal` (prints a table; the Redis rows need
//! `redis-server` on PATH and are skipped without it). `JOURNAL_BENCH_TASKS`
//! changes the number of tasks per concurrent run (default 20000).

// criterion_group!/criterion_main! generate undocumented public functions.
#![allow(missing_docs)]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use andera_lb::journal::{Journal, RedisJournal, SqliteJournal, StoredTask};

/// A typical webhook task: the README's hello body with a webhook, and the headers
/// the load balancer forwards.
fn task(i: usize) -> StoredTask {
    let body = format!(
        r#"{{"group":"default","function":"hello","contract":1,"input":{{"name":"task {i}"}},"mode":"webhook","webhook":{{"url":"http://127.0.0.1:9999/hook"}}}}"#
    );
    StoredTask {
        id: format!("0193a4c2-7b1e-7000-8000-{i:012x}"),
        priority: 1,
        accepted_ms: 1_765_000_000_000,
        deadline_ms: 1_765_000_300_000,
        headers: b"authorization: demo-worker-key\r\ncontent-type: application/json\r\nx-andera-task-id: 0193a4c2-7b1e-7000-8000-000000000000\r\n".to_vec(),
        body: body.into_bytes(),
        client: None,
        idempotency: None,
    }
}

/// User + system CPU time of this process (every thread), in µs.
fn cpu_us() -> f64 {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage fills the struct it is given; RUSAGE_SELF is always valid.
    let usage = unsafe {
        libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr());
        usage.assume_init()
    };
    let us = |t: libc::timeval| t.tv_sec as f64 * 1e6 + t.tv_usec as f64;
    us(usage.ru_utime) + us(usage.ru_stime)
}

/// One row of the table.
struct Row {
    engine: &'static str,
    mode: String,
    tasks: usize,
    wall_us: f64,
    cpu_us: f64,
    bytes: Option<f64>,
}

/// Accepts `n` tasks with `concurrency` in flight; returns wall and CPU µs per task.
async fn accept_all(
    journal: &Arc<Journal>,
    first: usize,
    n: usize,
    concurrency: usize,
) -> (f64, f64) {
    let cpu0 = cpu_us();
    let t0 = Instant::now();
    let mut running = tokio::task::JoinSet::new();
    for i in first..first + n {
        while running.len() >= concurrency {
            running.join_next().await.unwrap().unwrap();
        }
        let journal = journal.clone();
        running.spawn(async move { journal.accept(task(i)).await.expect("accepted") });
    }
    while let Some(r) = running.join_next().await {
        r.unwrap();
    }
    let wall = t0.elapsed().as_secs_f64() * 1e6 / n as f64;
    (wall, (cpu_us() - cpu0) / n as f64)
}

fn file_bytes(db: &Path) -> f64 {
    ["", "-wal", "-shm"]
        .iter()
        .filter_map(|s| std::fs::metadata(format!("{}{s}", db.display())).ok())
        .map(|m| m.len() as f64)
        .sum()
}

/// The two rows of one engine: `n / 20` tasks one at a time, then `n` with 64 in
/// flight, with `stored()` (the engine's bytes) read around the second run.
async fn engine_rows<F, Fut>(
    engine: &'static str,
    journal: Journal,
    n: usize,
    stored: F,
) -> Vec<Row>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = f64>,
{
    let journal = Arc::new(journal);
    let sequential = n / 20;
    let (wall, cpu) = accept_all(&journal, 0, sequential, 1).await;
    let one_at_a_time = Row {
        engine,
        mode: "one at a time".into(),
        tasks: sequential,
        wall_us: wall,
        cpu_us: cpu,
        bytes: None,
    };
    let before = stored().await;
    let (wall, cpu) = accept_all(&journal, sequential, n, 64).await;
    let concurrent = Row {
        engine,
        mode: "64 at once".into(),
        tasks: n,
        wall_us: wall,
        cpu_us: cpu,
        bytes: Some((stored().await - before).max(0.0) / n as f64),
    };
    journal.close().await;
    vec![one_at_a_time, concurrent]
}

async fn sqlite_rows(n: usize) -> Vec<Row> {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("tasks.db");
    let journal =
        Journal::Sqlite(SqliteJournal::open(&db, 1 << 30, false, false).expect("journal opens"));
    engine_rows("sqlite", journal, n, || std::future::ready(file_bytes(&db))).await
}

/// A throw-away `redis-server` on a free port, in its own directory; killed on drop.
struct RedisServer {
    child: Child,
    _dir: tempfile::TempDir,
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_redis() -> Option<(RedisServer, String)> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .ok()?
        .local_addr()
        .ok()?
        .port();
    let dir = tempfile::tempdir().ok()?;
    let child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let server = RedisServer { child, _dir: dir };
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if start.elapsed() > Duration::from_secs(10) {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Some((server, format!("redis://127.0.0.1:{port}")))
}

async fn redis_memory(url: &str) -> f64 {
    let client = redis::Client::open(url).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let info: String = redis::cmd("INFO")
        .arg("memory")
        .query_async(&mut conn)
        .await
        .unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

async fn redis_rows(n: usize) -> Vec<Row> {
    let Some((_server, url)) = start_redis() else {
        eprintln!("journal bench: redis-server not installed: Redis rows skipped");
        return Vec::new();
    };
    // Capacity 0: this instance only accepts; nothing is read back while measuring.
    let journal = Journal::Redis(
        RedisJournal::open(&url, Duration::from_secs(30), false, Box::new(|| 0))
            .await
            .expect("redis journal opens"),
    );
    engine_rows("redis", journal, n, || redis_memory(&url)).await
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing and must
    // stay quick.
    let benching = std::env::args().any(|a| a == "--bench");
    let n: usize = std::env::var("JOURNAL_BENCH_TASKS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if benching { 20_000 } else { 200 });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut rows = rt.block_on(sqlite_rows(n));
    rows.extend(rt.block_on(redis_rows(n)));
    let body_len = task(0).body.len() + task(0).headers.len();
    println!("\nCost of keeping one accepted webhook task ({body_len}-byte body + headers)\n");
    println!("| engine | accepts | tasks | µs until accepted (wall) | CPU µs per task | journal bytes per waiting task |");
    println!("|---|---|---|---|---|---|");
    for r in rows {
        println!(
            "| {} | {} | {} | {:.1} | {:.1} | {} |",
            r.engine,
            r.mode,
            r.tasks,
            r.wall_us,
            r.cpu_us,
            r.bytes.map_or("—".into(), |b| format!("{b:.0}"))
        );
    }
}
