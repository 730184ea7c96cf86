//! The SQLite journal when its ground moves: a full disk (a small tmpfs, as root),
//! the file deleted or replaced under the running process, a directory it cannot
//! write, its files' modes under umask 022, and what the log says on a stop.
//! Against the real binary, a simulated Worker and a webhook receiver counting
//! deliveries by task.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::receiver::{settle, Receiver};
use common::*;
use serde_json::{json, Value};

/// Webhook task `name` (15 ms on the Worker) with `padding` bytes more in its body.
fn padded(name: &str, hook: &str, padding: usize) -> Value {
    let body = webhook_task(name, hook, 15);
    match padding {
        0 => body,
        n => with(body, "padding", json!("x".repeat(n))),
    }
}

/// The admin `/ready` status and body.
async fn ready(lb: &Lb) -> (u16, Value) {
    let r = lb.http.get(lb.admin_url("/ready")).send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

/// Polls until the journal's state on keyed `/health` is `state`.
async fn journal_state(lb: &Lb, state: &str) -> Value {
    lb.wait_until(
        |h| h["components"]["journal"]["status"] == state,
        &format!("the journal is {state}"),
    )
    .await
}

/// A sync task holding the Worker's only slot for `ms`, running once this returns.
async fn hold_slot(lb: &Lb, w: &andera_worker_sim::SimWorker, ms: u64) {
    let blocker = lb.task(task("hello", json!({"name": "blocker", "sleepMs": ms})));
    tokio::spawn(blocker.send());
    wait_for("the blocker runs", Duration::from_secs(10), || {
        w.stats().running > 0
    })
    .await;
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"))
}

/// A tmpfs mounted on a temporary directory, unmounted when dropped.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// Mounts one with `options` (e.g. `size=4m`), or says why not and returns
    /// `None`; with `ANDERA_DISKFULL_TEST=required`, not being able to is a failure.
    fn mount(test: &str, options: &str) -> Option<Tmpfs> {
        let required = std::env::var("ANDERA_DISKFULL_TEST").as_deref() == Ok("required");
        let dir = tempfile::tempdir().unwrap();
        let why = if !is_root() {
            "not root".to_string()
        } else {
            let out = Command::new("mount")
                .args(["-t", "tmpfs", "-o", options, "tmpfs"])
                .arg(dir.path())
                .output();
            match out {
                Ok(o) if o.status.success() => return Some(Tmpfs { dir }),
                Ok(o) => String::from_utf8_lossy(&o.stderr).trim().to_string(),
                Err(e) => e.to_string(),
            }
        };
        assert!(
            !required,
            "{test}: cannot mount a tmpfs ({why}) and ANDERA_DISKFULL_TEST=required"
        );
        println!("{test}: skipped: cannot mount a tmpfs ({why}); run as root to test it");
        None
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

/// Fills the file system holding `dir` with `dir/filler` until it is full.
fn fill(dir: &Path) -> PathBuf {
    use std::io::Write;
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path).unwrap();
    let block = vec![0x5au8; 4096];
    while f.write_all(&block).is_ok() {}
    let _ = f.sync_all();
    path
}

fn duplicated(counts: &std::collections::HashMap<String, u32>) -> Vec<(String, u32)> {
    let mut d: Vec<_> = counts
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(k, n)| (k.clone(), *n))
        .collect();
    d.sort();
    d
}

#[tokio::test]
async fn a_full_disk_never_delivers_a_task_twice_and_the_journal_recovers_by_itself() {
    let test = "a_full_disk";
    let Some(disk) = Tmpfs::mount(test, "size=4m") else {
        return;
    };
    let (rx, hook) = Receiver::start().await;
    let w = sim(|c| c.slots = 1).await;
    let journal = disk.path().join("tasks.db");
    let env = [("TASK_JOURNAL", journal.to_str().unwrap())];
    let mut lb = Lb::start(&[w.url()], &env).await;
    lb.wait_available(1).await;
    journal_state(&lb, "ok").await;
    // 60 tasks of 100 KB at once, queued behind a task holding the only slot; then
    // the disk is filled up by someone else while they wait; then 20 more.
    hold_slot(&lb, &w, 6000).await;
    let burst: Vec<_> = (0..60)
        .map(|i| lb.task(padded(&format!("t{i}"), &hook, 100_000)).send())
        .collect();
    let mut statuses: Vec<(u16, Value)> = Vec::new();
    for r in futures_util::future::join_all(burst).await {
        let r = r.expect("answered");
        statuses.push((r.status().as_u16(), r.json().await.unwrap_or(Value::Null)));
    }
    let filler = fill(disk.path());
    for i in 60..80 {
        let (s, b) = lb.run(padded(&format!("t{i}"), &hook, 100_000)).await;
        assert_eq!((s, &b["reason"]), (503, &json!("journal_full")), "{b}");
        statuses.push((s, b));
    }
    let accepted: Vec<String> = statuses
        .iter()
        .enumerate()
        .filter(|(_, (s, _))| *s == 200)
        .map(|(i, _)| format!("t{i}"))
        .collect();
    for (s, b) in &statuses {
        assert!(*s == 200 || *s == 503, "{s} {b}");
        if *s == 503 {
            assert_eq!(b["reason"], "journal_full", "{b}");
        }
    }
    assert!(
        !accepted.is_empty(),
        "nothing accepted before the disk filled"
    );
    // While full: shown on /health, /ready and in the metrics.
    let h = journal_state(&lb, "full").await;
    assert_eq!(h["services"]["redis"], "error", "{h}");
    assert_eq!(ready(&lb).await.0, 503);
    let text = lb.scrape().await;
    assert_eq!(
        metric(&text, "andera_lb_journal_state{state=\"full\"}").unwrap_or(0.0),
        1.0,
        "{text}"
    );
    assert!(
        w.stats().running > 0 && rx.snapshot().is_empty(),
        "the accepted tasks ran before the disk was full: nothing is tested"
    );
    // The accepted ones are marked, delivered (each once) and deleted on the full disk.
    let counts = settle(&rx, |c| accepted.iter().all(|n| c.contains_key(n))).await;
    let missing: Vec<_> = accepted
        .iter()
        .filter(|n| !counts.contains_key(*n))
        .collect();
    assert!(
        missing.is_empty(),
        "accepted, not delivered: {missing:?}\n{}",
        lb.log()
    );
    let text = lb.scrape().await;
    let write_errors = metric(&text, "andera_lb_journal_write_errors_total").unwrap_or(0.0);
    for line in lb
        .log()
        .lines()
        .filter(|l| l.contains("journal") && !l.contains("(503)"))
    {
        println!("{line}");
    }

    // Space returns: the journal takes tasks again without a restart.
    std::fs::remove_file(&filler).unwrap();
    journal_state(&lb, "ok").await;
    let (s, b) = lb.run(padded("after", &hook, 100_000)).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(ready(&lb).await.0, 200);
    settle(&rx, |c| c.contains_key("after")).await;

    // A restart finds nothing to deliver again.
    lb.kill();
    let lb = Lb::start(&[w.url()], &env).await;
    lb.wait_available(1).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let counts = settle(&rx, |_| true).await;
    let text = lb.scrape().await;
    println!(
        "full disk: {} accepted of 80, {} delivered, {write_errors} write errors while full, resumed {} after the restart",
        accepted.len(),
        counts.len(),
        metric(&text, "andera_lb_journal_resumed_total").unwrap_or(0.0)
    );
    assert_eq!(duplicated(&counts), vec![], "delivered twice\n{}", lb.log());
    drop(lb);
    drop(disk);
}

#[tokio::test]
async fn a_journal_deleted_under_the_process_is_re_created_with_its_tasks_and_none_is_lost() {
    let (rx, hook) = Receiver::start().await;
    let w = sim(|c| c.slots = 1).await;
    let state = tempfile::tempdir().unwrap();
    let journal = state.path().join("tasks.db");
    let env = [("TASK_JOURNAL", journal.to_str().unwrap())];
    let mut lb = Lb::start(&[w.url()], &env).await;
    lb.wait_available(1).await;
    journal_state(&lb, "ok").await;
    hold_slot(&lb, &w, 8000).await;
    let mut accepted = Vec::new();
    let mut refused = Vec::new();
    let send = |lb: &Lb, i: usize| {
        let rb = lb.task(padded(&format!("t{i}"), &hook, 0));
        async move { (i, rb.send().await.unwrap()) }
    };
    for i in 0..50 {
        let (i, r) = send(&lb, i).await;
        assert_eq!(r.status(), 200);
        accepted.push(format!("t{i}"));
    }
    for suffix in ["", "-wal", "-shm"] {
        std::fs::remove_file(format!("{}{suffix}", journal.display())).unwrap();
    }
    for i in 50..300 {
        let (i, r) = send(&lb, i).await;
        match r.status().as_u16() {
            200 => accepted.push(format!("t{i}")),
            s => {
                let b: Value = r.json().await.unwrap();
                assert_eq!(
                    (s, &b["reason"]),
                    (503, &json!("journal_unavailable")),
                    "{b}"
                );
                refused.push(i);
            }
        }
    }
    // Re-created at its path, with what it held.
    wait_for("the journal is re-created", Duration::from_secs(10), || {
        journal.exists()
    })
    .await;
    journal_state(&lb, "ok").await;
    let (s, _) = lb.run(padded("t300", &hook, 0)).await;
    assert_eq!(s, 200);
    accepted.push("t300".into());
    assert!(
        w.stats().running > 0,
        "the blocker ended: nothing is tested"
    );
    let log = lb.log();
    lb.kill();

    let lb = Lb::start(&[w.url()], &env).await;
    lb.wait_available(1).await;
    let counts = settle(&rx, |c| accepted.iter().all(|n| c.contains_key(n))).await;
    let text = lb.scrape().await;
    let lost: Vec<_> = accepted
        .iter()
        .filter(|n| !counts.contains_key(*n))
        .collect();
    println!(
        "deleted journal: {} accepted, {} refused, {} lost, resumed {}",
        accepted.len(),
        refused.len(),
        lost.len(),
        metric(&text, "andera_lb_journal_resumed_total").unwrap_or(0.0)
    );
    assert!(
        lost.is_empty(),
        "accepted, then lost: {lost:?}\n{}",
        lb.log()
    );
    assert_eq!(duplicated(&counts), vec![]);
    assert_eq!(
        log.matches("is unavailable: ").filter(|_| true).count()
            - log.matches("refused (503)").count(),
        1,
        "one loud line per change:\n{log}"
    );
    assert!(log.contains("re-created"), "{log}");
}

#[tokio::test]
async fn a_journal_directory_replaced_under_the_process_gets_a_new_journal_with_its_tasks() {
    let (rx, hook) = Receiver::start().await;
    let w = sim(|c| c.slots = 1).await;
    let state = tempfile::tempdir().unwrap();
    let dir = state.path().join("journal");
    let journal = dir.join("tasks.db");
    let env = [("TASK_JOURNAL", journal.to_str().unwrap())];
    let mut lb = Lb::start(&[w.url()], &env).await;
    lb.wait_available(1).await;
    journal_state(&lb, "ok").await;
    hold_slot(&lb, &w, 6000).await;
    let names: Vec<String> = (0..20).map(|i| format!("t{i}")).collect();
    for name in &names {
        assert_eq!(lb.run(padded(name, &hook, 0)).await.0, 200);
    }
    // The directory is moved away and an empty one put in its place.
    std::fs::rename(&dir, state.path().join("journal.old")).unwrap();
    std::fs::create_dir(&dir).unwrap();
    wait_for(
        "a journal in the new directory",
        Duration::from_secs(10),
        || journal.exists(),
    )
    .await;
    journal_state(&lb, "ok").await;
    assert!(
        w.stats().running > 0,
        "the blocker ended: nothing is tested"
    );
    let log = lb.log();
    lb.kill();
    let lb = Lb::start(&[w.url()], &env).await;
    lb.wait_available(1).await;
    let counts = settle(&rx, |c| names.iter().all(|n| c.contains_key(n))).await;
    let lost: Vec<_> = names.iter().filter(|n| !counts.contains_key(*n)).collect();
    assert!(lost.is_empty(), "lost: {lost:?}\n{log}");
    assert_eq!(duplicated(&counts), vec![]);
    assert!(log.contains("was moved or replaced"), "{log}");
}

#[tokio::test]
async fn a_journal_replaced_under_the_process_refuses_webhook_tasks_until_it_is_moved_away() {
    let (rx, hook) = Receiver::start().await;
    let w = sim(|_| {}).await;
    let state = tempfile::tempdir().unwrap();
    let journal = state.path().join("tasks.db");
    let env = [("TASK_JOURNAL", journal.to_str().unwrap())];
    let lb = Lb::start(&[w.url()], &env).await;
    lb.wait_available(1).await;
    journal_state(&lb, "ok").await;
    // Another file takes its path at once (never absent, so never re-created over).
    let other = state.path().join("other.db");
    std::fs::write(&other, b"someone else's file").unwrap();
    std::fs::rename(&other, &journal).unwrap();
    let h = journal_state(&lb, "unavailable").await;
    let detail = h["components"]["journal"]["detail"].as_str().unwrap_or("");
    assert!(detail.contains("another file"), "{h}");
    assert_eq!(h["services"]["redis"], "error", "{h}");
    let (s, b) = lb.run(padded("refused", &hook, 0)).await;
    assert_eq!(
        (s, &b["reason"]),
        (503, &json!("journal_unavailable")),
        "{b}"
    );
    let (status, body) = ready(&lb).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["journal"], "unavailable", "{body}");
    let text = lb.scrape().await;
    assert_eq!(
        metric(&text, "andera_lb_journal_state{state=\"unavailable\"}").unwrap_or(0.0),
        1.0
    );
    // Sync tasks do not need the journal.
    assert_eq!(lb.run(task("hello", json!({"name": "s"}))).await.0, 200);
    // Once the foreign file is moved away, the journal is re-created.
    std::fs::rename(&journal, &other).unwrap();
    journal_state(&lb, "ok").await;
    assert_eq!(std::fs::read(&other).unwrap(), b"someone else's file");
    let (s, b) = lb.run(padded("kept", &hook, 0)).await;
    assert_eq!(s, 200, "{b}");
    let counts = settle(&rx, |c| c.contains_key("kept")).await;
    assert_eq!(counts.get("refused"), None);
    assert_eq!(ready(&lb).await.0, 200);
}

/// Starts the binary of `lb` (stopped) again under `sh -c 'umask 022; exec …'`,
/// with `extra` environment.
fn spawn_with_umask(lb: &Lb, extra: &[(&str, &str)]) -> std::process::Child {
    let c = &lb.command;
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg("umask 022; exec \"$0\" \"$@\"")
        .arg(c.get_program())
        .args(c.get_args())
        .env_clear()
        .current_dir(c.get_current_dir().unwrap())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(lb.dir.path().join("lb.log")).unwrap());
    for (k, v) in c.get_envs() {
        if let Some(v) = v {
            cmd.env(k, v);
        }
    }
    cmd.envs(extra.iter().copied());
    cmd.spawn().unwrap()
}

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[tokio::test]
async fn journal_files_are_owner_only_under_umask_022_and_the_wal_is_emptied_when_idle() {
    let (rx, hook) = Receiver::start().await;
    let w = sim(|_| {}).await;
    let mut lb = Lb::start(&[w.url()], &[]).await;
    lb.kill();
    let state = tempfile::tempdir().unwrap();
    let journal = state.path().join("new/sub/tasks.db");
    let mut child = spawn_with_umask(&lb, &[("TASK_JOURNAL", journal.to_str().unwrap())]);
    journal_state(&lb, "ok").await;
    lb.wait_available(1).await;
    for i in 0..20 {
        let (s, b) = lb.run(padded(&format!("t{i}"), &hook, 2000)).await;
        assert_eq!(s, 200, "{b}");
    }
    settle(&rx, |c| c.len() >= 20).await;
    let wal = PathBuf::from(format!("{}-wal", journal.display()));
    let shm = PathBuf::from(format!("{}-shm", journal.display()));
    let modes = [&journal, &wal, &shm].map(|p| (p.display().to_string(), mode(p)));
    let dirs = [
        mode(&state.path().join("new")),
        mode(&state.path().join("new/sub")),
    ];
    // Finished tasks do not stay in the WAL.
    let start = Instant::now();
    while std::fs::metadata(&wal).map_or(0, |m| m.len()) > 0
        && start.elapsed() < Duration::from_secs(10)
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let wal_len = std::fs::metadata(&wal).map_or(0, |m| m.len());
    let db = std::fs::read(&journal).unwrap();
    let key_in_db = db.windows(WK_KEY.len()).any(|w| w == WK_KEY.as_bytes());
    let _ = child.kill();
    let _ = child.wait();
    for (file, m) in &modes {
        assert_eq!(*m, 0o600, "{file} is {m:o}");
    }
    assert_eq!(dirs, [0o700, 0o700], "directories created");
    assert_eq!(
        wal_len, 0,
        "the WAL still holds {wal_len} bytes after 10 s idle"
    );
    assert!(
        !key_in_db,
        "a finished task's Worker key is still in the database file"
    );
}

#[tokio::test]
async fn a_journal_directory_the_process_cannot_write_is_named_as_such() {
    // As root, permissions do not stop the process: a read-only mount does.
    let dir = tempfile::tempdir().unwrap();
    let _ro;
    let journal_dir = if is_root() {
        match Tmpfs::mount("unwritable_dir", "ro,size=1m") {
            Some(m) => {
                let p = m.path().to_path_buf();
                _ro = m;
                p
            }
            None => return,
        }
    } else {
        let p = dir.path().join("ro");
        std::fs::create_dir(&p).unwrap();
        std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o555)).unwrap();
        p
    };
    std::fs::write(dir.path().join("workers.json"), "[]").unwrap();
    let out = lb_once(dir.path())
        .env("LB_AUTH_KEY", LB_KEY)
        .env("TASK_JOURNAL", journal_dir.join("tasks.db"))
        .env("PORT", free_port().to_string())
        .env("ADMIN_PORT", free_port().to_string())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("not writable"), "{stderr}");
    assert!(stderr.contains(journal_dir.to_str().unwrap()), "{stderr}");
    assert!(!stderr.contains("start with --recover"), "{stderr}");
}

#[tokio::test]
async fn on_sigterm_without_a_successor_queued_webhook_tasks_are_said_to_stay_in_the_journal() {
    let (rx, hook) = Receiver::start().await;
    let w = sim(|c| c.slots = 1).await;
    let state = tempfile::tempdir().unwrap();
    let journal = state.path().join("tasks.db");
    let env = [("TASK_JOURNAL", journal.to_str().unwrap())];
    let mut lb = Lb::start_with(&[w.url()], &env, "  grace_period_s: 1\n").await;
    lb.wait_available(1).await;
    hold_slot(&lb, &w, 4000).await;
    for i in 0..5 {
        assert_eq!(lb.run(padded(&format!("t{i}"), &hook, 0)).await.0, 200);
    }
    lb.signal("TERM");
    assert_eq!(lb.wait_exit(Duration::from_secs(15)).await, Some(0));
    let log = lb.log();
    assert!(!log.contains("handed over to another instance"), "{log}");
    assert!(
        log.contains("stay in the journal for the next start"),
        "{log}"
    );
    // And they do.
    let lb = Lb::start(&[w.url()], &env).await;
    lb.wait_available(1).await;
    let counts = settle(&rx, |c| (0..5).all(|i| c.contains_key(&format!("t{i}")))).await;
    assert_eq!(counts.len(), 5, "{counts:?}");
}

#[tokio::test]
async fn without_a_journal_no_service_is_logged_as_exited() {
    let w = sim(|_| {}).await;
    let lb = Lb::start(&[w.url()], &[]).await;
    lb.wait_available(1).await;
    assert_eq!(lb.run(task("hello", json!({}))).await.0, 200);
    let log = lb.log();
    assert!(!log.contains("exited"), "{log}");
}
