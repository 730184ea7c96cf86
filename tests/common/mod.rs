//! Test harness: the real `andera-lb` binary on free loopback ports, in front of
//! simulated Andera Workers listening on real sockets.
#![allow(dead_code)]

pub mod front;
pub mod raw;
pub mod receiver;
pub mod redis_server;

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use andera_worker_sim::{SimConfig, SimWorker};
use serde_json::{json, Value};

pub const LB_KEY: &str = "test-lb-key";
pub const WK_KEY: &str = "test-worker-key";

/// A loopback port for a server the test starts, never handed out twice in this process.
///
/// Ports come from below the kernel's ephemeral range (32768+ on Linux), so an outgoing
/// connection can never take one between this check and the server's bind; each test
/// process starts at its own offset (from its pid), so parallel test binaries do not
/// walk the same ports either.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const FIRST: u32 = 12000;
    const SPAN: u32 = 20000;
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let _ = NEXT.compare_exchange(
        u32::MAX,
        (std::process::id() * 7919) % SPAN,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    for _ in 0..SPAN {
        let port = (FIRST + NEXT.fetch_add(1, Ordering::SeqCst) % SPAN) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port in {FIRST}..{}", FIRST + SPAN)
}

/// Polls `cond` every 20 ms until it holds; panics naming `what` after `limit`.
pub async fn wait_for(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The value of `series` in a Prometheus text scrape: a family name, with its labels
/// as the scrape renders them (`andera_lb_tasks_total{group="default",…}`).
pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

/// Polls `probe` every 20 ms until it gives `Some`, and returns that; panics naming
/// `what` after `limit`. The async counterpart of [`wait_for`], for conditions that
/// need a request to find out.
pub async fn eventually<T, F, Fut>(what: &str, limit: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(found) = probe().await {
            return found;
        }
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A simulated Worker with the test keys.
pub async fn sim(configure: impl FnOnce(&mut SimConfig)) -> SimWorker {
    let mut cfg = SimConfig::new(LB_KEY, WK_KEY);
    configure(&mut cfg);
    SimWorker::start(cfg).await.expect("simulator starts")
}

/// A running load balancer process.
pub struct Lb {
    /// The command that started it (to start a successor with `--upgrade`).
    pub command: Command,
    child: Child,
    pub port: u16,
    pub admin_port: u16,
    pub dir: tempfile::TempDir,
    pub http: reqwest::Client,
}

/// How a test starts the load balancer: the binary in a fresh directory, on fresh
/// ports, with fast discovery, its `workers.json`, a YAML file, and what the test adds.
pub struct LbBuilder {
    workers: Vec<String>,
    env: Vec<(String, String)>,
    yaml: String,
    dotenv: Option<String>,
}

impl LbBuilder {
    /// Sets `key` in its environment (over the harness's own values).
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Sets each of `pairs` in its environment.
    pub fn envs(self, pairs: &[(&str, &str)]) -> Self {
        pairs.iter().fold(self, |b, (k, v)| b.env(k, v))
    }

    /// Appends `yaml` to its configuration file: lines of the `server:` section
    /// (indented by two spaces) or further top-level sections.
    pub fn yaml(mut self, yaml: &str) -> Self {
        self.yaml.push_str(yaml);
        self
    }

    /// Writes `text` to `.env` in its working directory.
    pub fn dotenv(mut self, text: &str) -> Self {
        self.dotenv = Some(text.into());
        self
    }

    /// Starts it and waits until its client port answers.
    pub async fn start(self) -> Lb {
        Lb::launch(self).await
    }
}

impl Lb {
    /// How to start one: its Worker list now, and more with the builder's methods.
    pub fn builder(workers: &[String]) -> LbBuilder {
        LbBuilder {
            workers: workers.to_vec(),
            env: Vec::new(),
            yaml: String::new(),
            dotenv: None,
        }
    }

    /// Starts the binary with `workers` in its `workers.json` and extra environment.
    pub async fn start(workers: &[String], env: &[(&str, &str)]) -> Lb {
        Lb::builder(workers).envs(env).start().await
    }

    /// Like [`Lb::start`], with extra lines appended to the YAML's `server:` section
    /// (indented by two spaces) or further top-level sections.
    pub async fn start_with(workers: &[String], env: &[(&str, &str)], yaml: &str) -> Lb {
        Lb::builder(workers).envs(env).yaml(yaml).start().await
    }

    async fn launch(b: LbBuilder) -> Lb {
        let LbBuilder {
            workers,
            env,
            yaml,
            dotenv,
        } = b;
        let dir = tempfile::tempdir().unwrap();
        if let Some(text) = dotenv {
            std::fs::write(dir.path().join(".env"), text).unwrap();
        }
        std::fs::write(dir.path().join("workers.json"), json!(workers).to_string()).unwrap();
        let port = free_port();
        let admin_port = free_port();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_andera-lb"));
        cmd.current_dir(dir.path())
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("PORT", port.to_string())
            .env("ADMIN_PORT", admin_port.to_string())
            .env("LB_AUTH_KEY", LB_KEY)
            .env("WORKER_DISCOVERY_INTERVAL", "200")
            .env("WORKER_DISCOVERY_TIMEOUT", "1000")
            .env("WORKER_DISCOVERY_RETRIES", "1")
            .env("WS_HEARTBEAT_INTERVAL", "500")
            .env("WS_HEARTBEAT_TIMEOUT", "1000")
            .env("LOG_LEVEL", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::File::create(dir.path().join("lb.log")).unwrap(),
            ));
        let pid = dir.path().join("lb.pid");
        let sock = dir.path().join("upgrade.sock");
        let conf = dir.path().join("lb.yaml");
        std::fs::write(
            &conf,
            format!(
                "server:\n  pid_file: {}\n  upgrade_sock: {}\n  threads: 2\n{yaml}",
                pid.display(),
                sock.display()
            ),
        )
        .unwrap();
        cmd.arg("--config").arg(&conf);
        for (k, v) in &env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("andera-lb starts");
        let command = cmd;
        let lb = Lb {
            command,
            child,
            port,
            admin_port,
            dir,
            http: reqwest::Client::builder()
                .pool_max_idle_per_host(0)
                .build()
                .unwrap(),
        };
        lb.wait_until(|h| h.get("status").is_some(), "the client port answers")
            .await;
        lb
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.admin_port)
    }

    /// The socket a successor started with `--upgrade` listens on for the listeners;
    /// it exists once the successor is ready to take them.
    pub fn upgrade_socket(&self) -> PathBuf {
        self.dir.path().join("upgrade.sock")
    }

    pub fn workers_file(&self) -> PathBuf {
        self.dir.path().join("workers.json")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("lb.log")).unwrap_or_default()
    }

    /// Authenticated `/health`, or `Null` while the port is not answering.
    pub async fn health(&self) -> Value {
        match self
            .http
            .get(self.url("/health"))
            .header("x-lb-auth", LB_KEY)
            .send()
            .await
        {
            Ok(r) => r.json().await.unwrap_or(Value::Null),
            Err(_) => Value::Null,
        }
    }

    /// `/metrics` of the admin port (empty while it does not answer).
    pub async fn scrape(&self) -> String {
        match self.http.get(self.admin_url("/metrics")).send().await {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    }

    /// `GET url` as JSON, with the LB key in `x-lb-auth` when `keyed`.
    pub async fn get_json(&self, url: &str, keyed: bool) -> Value {
        let mut r = self.http.get(url);
        if keyed {
            r = r.header("x-lb-auth", LB_KEY);
        }
        r.send().await.unwrap().json().await.unwrap()
    }

    /// Task `id`'s record on the board (`/bull/api/tasks/:id` on the admin port).
    pub async fn board_record(&self, id: &str) -> Value {
        self.get_json(&self.admin_url(&format!("/bull/api/tasks/{id}")), true)
            .await
    }

    /// Polls authenticated `/health` until `pred` holds (10 s at most).
    pub async fn wait_until(&self, pred: impl Fn(&Value) -> bool, what: &str) -> Value {
        let start = Instant::now();
        loop {
            let h = self.health().await;
            if pred(&h) {
                return h;
            }
            if start.elapsed() > Duration::from_secs(10) {
                panic!(
                    "timed out waiting until {what}; last /health: {h}\nlog:\n{}",
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until `n` Workers are available for tasks.
    pub async fn wait_available(&self, n: u64) -> Value {
        self.wait_until(
            |h| h["components"]["discovery"]["available"].as_u64() == Some(n),
            &format!("{n} worker(s) are available"),
        )
        .await
    }

    /// Waits until the queue holds `n` tasks.
    pub async fn wait_queued(&self, n: u64) {
        self.wait_until(
            |h| h["queue"]["depth"].as_u64() == Some(n),
            &format!("{n} task(s) are queued"),
        )
        .await;
    }

    /// A `POST /task` request with both keys.
    pub fn task(&self, body: Value) -> reqwest::RequestBuilder {
        self.http
            .post(self.url("/task"))
            .header("authorization", LB_KEY)
            .header("x-wr-auth", WK_KEY)
            .json(&body)
    }

    /// Sends a task and returns `(status, JSON body)`.
    pub async fn run(&self, body: Value) -> (u16, Value) {
        let r = self
            .task(body)
            .send()
            .await
            .expect("the load balancer answers");
        let status = r.status().as_u16();
        let text = r.text().await.unwrap_or_default();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// Sends a signal (e.g. "TERM", "QUIT") to the process.
    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .expect("kill runs")
            .success();
        assert!(ok, "kill -{sig} failed");
    }

    /// Waits for the process to exit (up to `limit`), returning its exit code.
    pub async fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        None
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn child(&mut self) -> &mut Child {
        &mut self.child
    }
}

impl Drop for Lb {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The task id the LB answered with (`x-andera-task-id`).
pub fn task_id(r: &reqwest::Response) -> String {
    r.headers()["x-andera-task-id"]
        .to_str()
        .unwrap()
        .to_string()
}

/// The binary in `dir` with a clean environment (`PATH` only: no key) and fresh
/// ports, for a run that ends by itself: `-t`, a refused start. The test adds its
/// environment and arguments, then `.output()`. Long-running instances are [`Lb`]s.
pub fn lb_once(dir: &std::path::Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_andera-lb"));
    cmd.current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("PORT", free_port().to_string())
        .env("ADMIN_PORT", free_port().to_string())
        .stdin(Stdio::null());
    cmd
}

/// `{"group":"default","function":f,"contract":1,"input":input}` plus extra fields.
pub fn task(function: &str, input: Value) -> Value {
    json!({"group": "default", "function": function, "contract": 1, "input": input})
}

/// A webhook task: `hello` to `name`, taking `sleep_ms` on the Worker, its result
/// posted to `hook`.
pub fn webhook_task(name: &str, hook: &str, sleep_ms: u64) -> Value {
    let mut body = task("hello", json!({"name": name, "sleepMs": sleep_ms}));
    body["mode"] = json!("webhook");
    body["webhook"] = json!({"url": hook});
    body
}

/// `body` with `field` set to `value` (a task's `priority`, a padding, its `webhook`).
pub fn with(mut body: Value, field: &str, value: Value) -> Value {
    body[field] = value;
    body
}
