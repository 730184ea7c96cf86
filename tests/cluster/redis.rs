//! A throw-away `redis-server` for tests/cluster.rs.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::common::free_port;

/// A throw-away `redis-server` on a free loopback port, without persistence.
pub struct Redis {
    child: Child,
    port: u16,
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
            assert!(
                std::env::var("ANDERA_REDIS_TEST").as_deref() != Ok("required"),
                "{test}: redis-server is not installed and ANDERA_REDIS_TEST=required"
            );
            println!("{test}: skipped: redis-server not installed (scripts/test installs it)");
            return None;
        }
        Some(Redis::start_on(free_port()))
    }

    pub fn start_on(port: u16) -> Redis {
        let dir = tempfile::tempdir().unwrap();
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

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn conn(&self) -> Option<redis::Connection> {
        let client = redis::Client::open(self.url()).ok()?;
        let mut c = client
            .get_connection_with_timeout(Duration::from_secs(1))
            .ok()?;
        redis::cmd("PING").query::<String>(&mut c).ok()?;
        Some(c)
    }

    /// `ZCARD key`.
    pub fn zcard(&self, key: &str) -> u64 {
        let mut c = self.conn().expect("redis answers");
        redis::cmd("ZCARD").arg(key).query(&mut c).unwrap_or(0)
    }

    /// The members and scores of the sorted set `key`.
    pub fn zrange(&self, key: &str) -> Vec<(String, f64)> {
        let mut c = self.conn().expect("redis answers");
        redis::cmd("ZRANGE")
            .arg(key)
            .arg(0)
            .arg(-1)
            .arg("WITHSCORES")
            .query(&mut c)
            .unwrap_or_default()
    }

    pub fn stop(mut self) -> u16 {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.port
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
