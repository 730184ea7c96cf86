//! Andera Worker simulator.
//!
//! [`SimWorker`] speaks the Worker side of the Andera wire contract
//! (`/work/shared/ANDERA-PROTOCOL.md`, section 2): `GET /health` discovery,
//! `POST /task` in sync, stream and webhook modes with an internal priority
//! queue in front of a fixed number of slots, `GET /logs`, and a WebSocket
//! listener that reports slots live. It also serves `GET /sim/stats` and
//! `POST /sim/control` so that tests can observe and steer it. It is used by
//! the README demo, the integration tests and the benchmarks.
//!
//! With [`SimConfig::tls`] set, both listeners speak TLS (`https://` and
//! `wss://`); [`test_ca_and_cert`] makes a private CA and a certificate signed
//! by it for tests.

mod faults;
mod functions;
mod http;
mod net;
mod slots;
mod state;
mod stats;
mod task;
mod tls;
mod validate;
mod ws;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;

pub use faults::TaskFault;
pub use functions::FunctionSet;
pub use stats::{fnv1a64_hex, SimStatsSnapshot};
pub use tls::{test_ca_and_cert, SimTls};
pub use validate::validate_input;

use net::{ConnRegistry, TrackedListener};
use state::SimState;
use tls::TlsListener;

/// How the simulated Worker behaves on its WebSocket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WsMode {
    /// Answer `ping` and push status every second and on slot changes.
    #[default]
    Normal,
    /// Accept the connection and never send anything.
    Silent,
}

impl std::str::FromStr for WsMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "normal" => Ok(WsMode::Normal),
            "silent" => Ok(WsMode::Silent),
            other => Err(format!(
                "unknown WebSocket mode {other:?} (expected normal or silent)"
            )),
        }
    }
}

/// Configuration of a simulated Worker.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// HTTP address; port 0 picks a free port.
    pub http_addr: SocketAddr,
    /// WebSocket address; port 0 picks a free port. `None`: no WebSocket
    /// listener at all (`/health` then reports a closed port).
    pub ws_addr: Option<SocketAddr>,
    /// Worker group.
    pub group: String,
    /// Contract (API) version.
    pub contract: u64,
    /// Number of tasks that may run at once (at least 1).
    pub slots: usize,
    /// The load balancer's key (`LB_AUTH_KEY`).
    pub lb_key: String,
    /// The Worker's own key (`AUTH_KEY`).
    pub auth_key: String,
    /// Initial status: `ready` or `maintenance`.
    pub status: String,
    /// Free-form tags reported in `/health`.
    pub tags: BTreeMap<String, String>,
    /// Services as `(name, state)`; state is `up`, `down` or `restarting`.
    pub services: Vec<(String, String)>,
    /// Which function catalogue to expose.
    pub function_set: FunctionSet,
    /// More functions, as `(name, params)`: each publishes `params` in `/health`,
    /// checks its input against it as a Worker does (protocol §5) and answers
    /// `{"success":true,"result":{"input": <its input>}}`. Default none.
    pub custom_functions: Vec<(String, serde_json::Value)>,
    /// WebSocket behaviour.
    pub ws_mode: WsMode,
    /// How `POST /task` misbehaves, if at all (plain HTTP only); see
    /// [`SimWorker::set_task_fault`] to change it at runtime.
    pub task_fault: TaskFault,
    /// Reported `system.cpuLoad`.
    pub cpu_load: f64,
    /// Reported `system.usedMemoryPercent`.
    pub used_memory_percent: f64,
    /// TLS certificate and key. `Some`: both listeners speak TLS, and
    /// [`SimWorker::url`] / [`SimWorker::ws_url`] are `https://` / `wss://`.
    pub tls: Option<SimTls>,
    /// The host name [`SimWorker::url`] and [`SimWorker::ws_url`] use when
    /// TLS is on (the certificate must name it); the listeners still bind
    /// `http_addr` / `ws_addr`. Ignored without TLS.
    pub tls_host: String,
}

impl SimConfig {
    /// Defaults: both listeners on `127.0.0.1:0`, group `default`, contract 1,
    /// 4 slots, status `ready`, no tags or services, standard functions (no custom ones),
    /// normal WebSocket, no task fault, zero CPU and memory load, no TLS (`tls_host`
    /// `localhost`).
    pub fn new(lb_key: impl Into<String>, auth_key: impl Into<String>) -> Self {
        let local = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0);
        SimConfig {
            http_addr: local,
            ws_addr: Some(local),
            group: "default".to_string(),
            contract: 1,
            slots: 4,
            lb_key: lb_key.into(),
            auth_key: auth_key.into(),
            status: "ready".to_string(),
            tags: BTreeMap::new(),
            services: Vec::new(),
            function_set: FunctionSet::Standard,
            custom_functions: Vec::new(),
            ws_mode: WsMode::Normal,
            task_fault: TaskFault::None,
            cpu_load: 0.0,
            used_memory_percent: 0.0,
            tls: None,
            tls_host: "localhost".to_string(),
        }
    }
}

/// A running simulated Worker. Dropping it has the same effect as
/// [`SimWorker::shutdown`] except that it does not wait for the listeners to
/// be closed.
pub struct SimWorker {
    state: Arc<SimState>,
    http_addr: SocketAddr,
    ws_addr: Option<SocketAddr>,
    /// `Some(host)` when the listeners speak TLS.
    tls_host: Option<String>,
    registry: Arc<ConnRegistry>,
    servers: Vec<JoinHandle<()>>,
}

/// A port on `ip` that nothing listens on (bound, then released).
fn closed_port(ip: IpAddr) -> io::Result<u16> {
    let listener = std::net::TcpListener::bind(SocketAddr::new(ip, 0))?;
    listener.local_addr().map(|a| a.port())
}

/// An address clients can connect to (`0.0.0.0` becomes `127.0.0.1`).
fn connectable(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), addr.port())
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::new(IpAddr::V6(std::net::Ipv6Addr::LOCALHOST), addr.port())
        }
        _ => addr,
    }
}

/// `host:port` for a URL (an IPv6 literal gets brackets).
fn url_authority(host: &str, port: u16) -> String {
    if host.parse::<std::net::Ipv6Addr>().is_ok() {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

fn spawn_server(
    listener: TcpListener,
    registry: &Arc<ConnRegistry>,
    tls: Option<&Arc<rustls::ServerConfig>>,
    router: axum::Router,
    faults: Option<Arc<faults::FaultCell>>,
    what: &'static str,
) -> JoinHandle<()> {
    let listener = TrackedListener::new(listener, Arc::clone(registry), faults);
    let tls = tls.map(Arc::clone);
    tokio::spawn(async move {
        let served = match tls {
            Some(config) => axum::serve(TlsListener::new(listener, config), router).await,
            None => axum::serve(listener, router).await,
        };
        if let Err(e) = served {
            log::error!("sim: {what} server stopped: {e}");
        }
    })
}

impl SimWorker {
    /// Binds the listeners, spawns the servers and returns once both accept
    /// connections.
    pub async fn start(cfg: SimConfig) -> io::Result<SimWorker> {
        if cfg.slots == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a Worker needs at least one slot",
            ));
        }
        let tls_config = match &cfg.tls {
            Some(tls) => Some(tls::server_config(tls)?),
            None => None,
        };
        let tls_host = tls_config.as_ref().map(|_| cfg.tls_host.clone());
        let http_listener = TcpListener::bind(cfg.http_addr).await?;
        let http_addr = http_listener.local_addr()?;
        let ws_listener = match cfg.ws_addr {
            Some(addr) => Some(TcpListener::bind(addr).await?),
            None => None,
        };
        let ws_addr = match &ws_listener {
            Some(l) => Some(l.local_addr()?),
            None => None,
        };
        let websocket_port = match ws_addr {
            Some(addr) => addr.port(),
            None => closed_port(connectable(http_addr).ip())?,
        };
        let state = SimState::new(cfg, websocket_port);
        let registry = Arc::new(ConnRegistry::default());
        let mut servers = vec![spawn_server(
            http_listener,
            &registry,
            tls_config.as_ref(),
            http::router(Arc::clone(&state)),
            Some(Arc::clone(&state.faults)),
            "HTTP",
        )];
        if let Some(listener) = ws_listener {
            servers.push(spawn_server(
                listener,
                &registry,
                tls_config.as_ref(),
                ws::router(Arc::clone(&state)),
                None,
                "WebSocket",
            ));
        }
        state.log(
            log::Level::Info,
            &format!(
                "worker started on {http_addr}{} (group {}, contract {}, {} slots)",
                if tls_host.is_some() { " with TLS" } else { "" },
                state.cfg.group,
                state.cfg.contract,
                state.cfg.slots
            ),
        );
        Ok(SimWorker {
            state,
            http_addr,
            ws_addr,
            tls_host,
            registry,
            servers,
        })
    }

    /// The bound HTTP address.
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// The bound WebSocket address, if there is a WebSocket listener.
    pub fn ws_addr(&self) -> Option<SocketAddr> {
        self.ws_addr
    }

    /// Whether the listeners speak TLS.
    pub fn is_tls(&self) -> bool {
        self.tls_host.is_some()
    }

    /// The Worker's base URL, e.g. `http://127.0.0.1:3000`, or with TLS
    /// `https://localhost:3000` (the host is [`SimConfig::tls_host`]).
    pub fn url(&self) -> String {
        match &self.tls_host {
            Some(host) => format!("https://{}", url_authority(host, self.http_addr.port())),
            None => format!("http://{}", connectable(self.http_addr)),
        }
    }

    /// The WebSocket URL, e.g. `ws://127.0.0.1:3001/`, or with TLS
    /// `wss://localhost:3001/`, if there is a listener.
    pub fn ws_url(&self) -> Option<String> {
        self.ws_addr.map(|a| match &self.tls_host {
            Some(host) => format!("wss://{}/", url_authority(host, a.port())),
            None => format!("ws://{}/", connectable(a)),
        })
    }

    /// The port `/health` reports as `websocketPort`.
    pub fn websocket_port(&self) -> u16 {
        self.state.websocket_port
    }

    /// A snapshot of the statistics (the same as `GET /sim/stats`).
    pub fn stats(&self) -> SimStatsSnapshot {
        self.state.stats()
    }

    /// The current status.
    pub fn status(&self) -> String {
        self.state.status()
    }

    /// Switches the status at runtime (`ready` or `maintenance`); WebSocket
    /// listeners are told at once.
    pub fn set_status(&self, status: &str) {
        self.state.set_status(status);
    }

    /// Switches how `POST /task` misbehaves from the next task on.
    pub fn set_task_fault(&self, fault: TaskFault) {
        self.state.faults.set(fault);
        self.state
            .log(log::Level::Info, &format!("task fault set to {fault:?}"));
    }

    fn kill(&self) {
        for server in &self.servers {
            server.abort();
        }
        self.state.trigger_shutdown();
        self.registry.kill_all();
    }

    /// Simulates a crash: closes the listeners and cuts every open
    /// connection (HTTP and WebSocket) and in-flight task at once. Returns
    /// when the listening ports are closed.
    pub async fn shutdown(mut self) {
        self.state.log(log::Level::Warn, "worker shutting down");
        self.kill();
        for server in std::mem::take(&mut self.servers) {
            let _ = server.await;
        }
    }
}

impl Drop for SimWorker {
    fn drop(&mut self) {
        self.kill();
    }
}
