//! A throw-away `redis-server` for the tests of the Redis engine, task control
//! across instances and the cluster: on a free loopback port, without persistence.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::free_port;

/// A throw-away `redis-server` on a free loopback port, without persistence.
pub struct Redis {
    child: Child,
    /// Its port on 127.0.0.1.
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl Redis {
    /// Starts one, or `None` (after saying so) when `redis-server` is not installed.
    pub fn start(test: &str) -> Option<Redis> {
        let installed = Command::new("redis-server")
            .arg("--version")
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !installed {
            // scripts/test installs it and sets this: there, a missing Redis fails.
            assert!(
                std::env::var("ANDERA_REDIS_TEST").as_deref() != Ok("required"),
                "{test}: redis-server is not installed and ANDERA_REDIS_TEST=required"
            );
            println!("{test}: skipped: redis-server not installed (scripts/test installs it)");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        Some(Redis::start_in(dir, free_port()))
    }

    /// Starts one on `port` with its files in `dir` (as after [`Redis::stop`]).
    pub fn start_in(dir: tempfile::TempDir, port: u16) -> Redis {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        let redis = Redis {
            child,
            port,
            _dir: dir,
        };
        let start = Instant::now();
        while redis.conn().is_none() {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "redis-server did not answer"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        redis
    }

    /// Its `redis://` URL.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// A connection that answered `PING`, if it answers.
    pub fn conn(&self) -> Option<redis::Connection> {
        let client = redis::Client::open(self.url()).ok()?;
        let mut c = client
            .get_connection_with_timeout(Duration::from_secs(1))
            .ok()?;
        redis::cmd("PING").query::<String>(&mut c).ok()?;
        Some(c)
    }

    /// Stops it (as a crash would) and hands back its directory, to start it again.
    pub fn stop(mut self) -> tempfile::TempDir {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let dir = tempfile::tempdir().unwrap();
        std::mem::replace(&mut self._dir, dir)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
