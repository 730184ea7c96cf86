//! The shipped fronting proxies, run for real: `deploy/Caddyfile` under Caddy and
//! `deploy/nginx.conf` under nginx, in front of a running [`Lb`], terminating TLS
//! with a throw-away certificate. The test changes only what a deployment changes:
//! the site address and listen ports, the certificate paths, the upstream ports, and
//! where logs, the pid file and the password file live.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{free_port, Lb};

/// Which shipped proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `deploy/Caddyfile` under `caddy run`.
    Caddy,
    /// `deploy/nginx.conf` under `nginx`.
    Nginx,
}

impl Kind {
    /// The proxy's program name.
    pub fn program(self) -> &'static str {
        match self {
            Kind::Caddy => "caddy",
            Kind::Nginx => "nginx",
        }
    }
}

/// The basic-auth credentials the test configures for the admin pages.
pub const ADMIN_USER: &str = "admin";
/// Their password.
pub const ADMIN_PASSWORD: &str = "front-test-password";

/// Whether `kind`'s program is installed. When it is not, the test is skipped with a
/// message, unless `ANDERA_FRONTING_TEST=required` (set by `scripts/test`), which
/// makes it fail instead.
pub fn available(kind: Kind) -> bool {
    let found = Command::new(kind.program())
        .arg(if kind == Kind::Caddy { "version" } else { "-v" })
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        assert!(
            std::env::var("ANDERA_FRONTING_TEST").as_deref() != Ok("required"),
            "{} is not installed (ANDERA_FRONTING_TEST=required)",
            kind.program()
        );
        eprintln!("SKIP: {} is not installed", kind.program());
    }
    found
}

/// A running fronting proxy.
pub struct Front {
    /// Which one.
    pub kind: Kind,
    /// Its HTTPS port on 127.0.0.1 (site `https://localhost:<port>`).
    pub port: u16,
    /// The CA certificate that signed its certificate (PEM file), for clients.
    pub ca: PathBuf,
    dir: tempfile::TempDir,
    child: Child,
}

/// The repository's `deploy/` directory.
fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy")
}

/// Replaces `from` by `to` in `text`, panicking when the shipped file no longer has
/// `from` (the test would otherwise run a config other than the shipped one).
fn swap(text: &str, from: &str, to: &str) -> String {
    assert!(text.contains(from), "the shipped config has no {from:?}");
    text.replace(from, to)
}

impl Front {
    /// Starts `kind` with the shipped config in front of `lb`, and waits until it
    /// serves `/health` through TLS.
    pub async fn start(kind: Kind, lb: &Lb) -> Front {
        let dir = tempfile::tempdir().unwrap();
        let (ca_pem, tls) = andera_worker_sim::test_ca_and_cert("localhost");
        let ca = dir.path().join("ca.pem");
        let cert = dir.path().join("cert.pem");
        let key = dir.path().join("key.pem");
        std::fs::write(&ca, ca_pem).unwrap();
        std::fs::write(&cert, tls.cert_chain_pem).unwrap();
        std::fs::write(&key, tls.key_pem).unwrap();
        let port = free_port();
        let child = match kind {
            Kind::Caddy => start_caddy(dir.path(), port, lb, &cert, &key),
            Kind::Nginx => start_nginx(dir.path(), port, lb, &cert, &key),
        };
        let front = Front {
            kind,
            port,
            ca,
            dir,
            child,
        };
        front.wait_ready().await;
        front
    }

    /// `https://localhost:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.port)
    }

    /// What the proxy wrote to its error log and standard error.
    pub fn log(&self) -> String {
        ["front.log", "error.log"]
            .iter()
            .map(|f| std::fs::read_to_string(self.dir.path().join(f)).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// A `curl` command for `path` through the proxy, trusting the test CA.
    pub fn curl(&self, path: &str) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new("curl");
        cmd.args(["-sS", "--max-time", "120", "--cacert"])
            .arg(&self.ca)
            .arg(self.url(path))
            .stdin(Stdio::null())
            .kill_on_drop(true);
        cmd
    }

    /// Runs `cmd` (from [`Front::curl`]) and returns the status and the body.
    pub async fn fetch(&self, cmd: &mut tokio::process::Command) -> (u16, String) {
        let out = cmd
            .args(["-o", "-", "-w", "\n%{http_code}"])
            .output()
            .await
            .expect("curl runs");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, status) = text.rsplit_once('\n').unwrap_or(("", &text));
        let status = status.trim().parse().unwrap_or_else(|_| {
            panic!(
                "{:?}: no status from curl: {text:?} {}\n{}",
                self.kind,
                String::from_utf8_lossy(&out.stderr),
                self.log()
            )
        });
        (status, body.to_string())
    }

    async fn wait_ready(&self) {
        for _ in 0..200 {
            let (status, _) = self.fetch(&mut self.curl("/health")).await;
            if status == 200 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("{:?} did not serve /health:\n{}", self.kind, self.log());
    }
}

impl Drop for Front {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn stderr_to(dir: &Path) -> Stdio {
    Stdio::from(std::fs::File::create(dir.join("front.log")).unwrap())
}

/// The shipped Caddyfile with the test's site, certificate, ports and log path, and
/// a global block that keeps Caddy's admin API, HTTP port and storage out of the way
/// of other tests running at the same time.
fn start_caddy(dir: &Path, port: u16, lb: &Lb, cert: &Path, key: &Path) -> Child {
    let shipped = std::fs::read_to_string(deploy_dir().join("Caddyfile")).unwrap();
    let site = "{$ANDERA_LB_HOST:lb.example.com} {\n";
    let mut text = swap(
        &shipped,
        site,
        &format!("{site}\ttls {} {}\n", cert.display(), key.display()),
    );
    text = swap(
        &text,
        "127.0.0.1:4001",
        &format!("127.0.0.1:{}", lb.admin_port),
    );
    text = swap(&text, "127.0.0.1:4000", &format!("127.0.0.1:{}", lb.port));
    text = swap(
        &text,
        "health_port 4001",
        &format!("health_port {}", lb.admin_port),
    );
    text = swap(
        &text,
        "/var/log/caddy/andera-lb.access.log",
        &dir.join("access.log").display().to_string(),
    );
    let global = format!(
        "{{\n\tadmin off\n\tauto_https disable_redirects\n\thttp_port {}\n\thttps_port {port}\n\tstorage file_system {}\n}}\n\n",
        free_port(),
        dir.join("storage").display()
    );
    let config = dir.join("Caddyfile");
    std::fs::write(&config, global + &text).unwrap();
    let hash = Command::new("caddy")
        .args(["hash-password", "--plaintext", ADMIN_PASSWORD])
        .output()
        .expect("caddy hash-password runs");
    let hash = String::from_utf8(hash.stdout).unwrap().trim().to_string();
    Command::new("caddy")
        .args(["run", "--adapter", "caddyfile", "--config"])
        .arg(&config)
        .env("HOME", dir)
        .env("XDG_DATA_HOME", dir.join("data"))
        .env("XDG_CONFIG_HOME", dir.join("config"))
        .env("ANDERA_LB_HOST", format!("https://localhost:{port}"))
        .env("ANDERA_ADMIN_USER", ADMIN_USER)
        .env("ANDERA_ADMIN_HASH", hash)
        .stdout(Stdio::null())
        .stderr(stderr_to(dir))
        .spawn()
        .expect("caddy starts")
}

/// The shipped nginx.conf with the test's listen ports (loopback only), certificate
/// and password file, upstream ports, and pid and log files in the test's directory.
fn start_nginx(dir: &Path, port: u16, lb: &Lb, cert: &Path, key: &Path) -> Child {
    let shipped = std::fs::read_to_string(deploy_dir().join("nginx.conf")).unwrap();
    let root = running_as_root();
    let mut text = swap(
        &shipped,
        "user www-data;",
        if root { "user root;" } else { "" },
    );
    let path = |name: &str| dir.join(name).display().to_string();
    text = swap(
        &text,
        "pid /run/nginx.pid;",
        &format!("pid {};", path("nginx.pid")),
    );
    text = swap(&text, "/var/log/nginx/error.log", &path("error.log"));
    text = swap(
        &text,
        "/var/log/nginx/andera-lb.access.log",
        &path("access.log"),
    );
    text = swap(
        &text,
        "listen 80;",
        &format!("listen 127.0.0.1:{};", free_port()),
    );
    text = swap(&text, "listen [::]:80;", "");
    text = swap(
        &text,
        "listen 443 ssl http2;",
        &format!("listen 127.0.0.1:{port} ssl http2;"),
    );
    text = swap(&text, "listen [::]:443 ssl http2;", "");
    text = swap(
        &text,
        "/etc/letsencrypt/live/lb.example.com/fullchain.pem",
        &cert.display().to_string(),
    );
    text = swap(
        &text,
        "/etc/letsencrypt/live/lb.example.com/privkey.pem",
        &key.display().to_string(),
    );
    text = swap(
        &text,
        "server 127.0.0.1:4000",
        &format!("server 127.0.0.1:{}", lb.port),
    );
    text = swap(
        &text,
        "server 127.0.0.1:4001",
        &format!("server 127.0.0.1:{}", lb.admin_port),
    );
    text = swap(
        &text,
        "server_name lb.example.com;",
        "server_name localhost;",
    );
    text = swap(&text, "/etc/nginx/andera-lb.htpasswd", &path("htpasswd"));
    std::fs::write(
        dir.join("htpasswd"),
        format!("{ADMIN_USER}:{{PLAIN}}{ADMIN_PASSWORD}\n"),
    )
    .unwrap();
    let config = dir.join("nginx.conf");
    std::fs::write(&config, text).unwrap();
    Command::new("nginx")
        .arg("-p")
        .arg(dir)
        .arg("-e")
        .arg(dir.join("error.log"))
        .arg("-c")
        .arg(&config)
        .args(["-g", "daemon off;"])
        .stdout(Stdio::null())
        .stderr(stderr_to(dir))
        .spawn()
        .expect("nginx starts")
}

/// Whether the tests run as root (nginx then needs `user root;` to read the test's
/// private files from its workers).
fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).map(|u| u == "0"))
        })
        .unwrap_or(false)
}
