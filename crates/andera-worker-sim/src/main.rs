//! `andera-worker-sim`: a simulated Andera Worker for demos, tests and
//! benchmarks. See the `andera_worker_sim` library for the behaviour.
//!
//! Keys come from `LB_AUTH_KEY` (required) and `AUTH_KEY` (default
//! `default-worker-key`), or from `--lb-key` / `--auth-key`.
//!
//! `--tls-cert` and `--tls-key` (PEM files, both or neither) make both
//! listeners speak TLS (`https://` and `wss://`).

use std::collections::BTreeMap;
use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;

use andera_worker_sim::{FunctionSet, SimConfig, SimTls, SimWorker, TaskFault, WsMode};
use clap::Parser;

/// Default Worker key when neither `AUTH_KEY` nor `--auth-key` is given.
const DEFAULT_AUTH_KEY: &str = "default-worker-key";

/// A simulated Andera Worker.
#[derive(Debug, Parser)]
#[command(
    name = "andera-worker-sim",
    version,
    about = "A simulated Andera Worker (keys: LB_AUTH_KEY required, AUTH_KEY default default-worker-key)"
)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    host: IpAddr,
    /// HTTP port (0 picks a free one).
    #[arg(long, default_value_t = 3000)]
    port: u16,
    /// WebSocket port (0 picks a free one).
    #[arg(long, default_value_t = 3001)]
    ws_port: u16,
    /// Do not listen for WebSockets at all.
    #[arg(long, conflicts_with = "ws_port")]
    no_ws: bool,
    /// Worker group.
    #[arg(long, default_value = "default")]
    group: String,
    /// Contract (API) version.
    #[arg(long, default_value_t = 1)]
    contract: u64,
    /// Tasks that may run at once.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    slots: u64,
    /// A tag `name=value` (repeatable).
    #[arg(long = "tag", value_name = "NAME=VALUE", value_parser = parse_pair)]
    tags: Vec<(String, String)>,
    /// A service `name=state`, state up|down|restarting (repeatable).
    #[arg(long = "service", value_name = "NAME=STATE", value_parser = parse_pair)]
    services: Vec<(String, String)>,
    /// Initial status: ready or maintenance.
    #[arg(long, default_value = "ready")]
    status: String,
    /// Function catalogue: standard, alternate or extended (standard plus `shout`).
    #[arg(long, default_value = "standard")]
    function_set: FunctionSet,
    /// WebSocket behaviour: normal or silent.
    #[arg(long, default_value = "normal")]
    ws_mode: WsMode,
    /// How POST /task misbehaves: none, hang, hold, frozen (the whole Worker), or interim-1xx (e.g. interim-103).
    #[arg(long, default_value = "none")]
    task_fault: TaskFault,
    /// Reported CPU load.
    #[arg(long, default_value_t = 0.0)]
    cpu_load: f64,
    /// Reported used memory, in percent.
    #[arg(long, default_value_t = 0.0)]
    mem_percent: f64,
    /// Load balancer key (overrides LB_AUTH_KEY).
    #[arg(long)]
    lb_key: Option<String>,
    /// Worker key (overrides AUTH_KEY).
    #[arg(long)]
    auth_key: Option<String>,
    /// Serve HTTPS and WSS with this certificate chain (PEM file; needs
    /// --tls-key).
    #[arg(long, value_name = "PEM_FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM file; needs --tls-cert).
    #[arg(long, value_name = "PEM_FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Host name in the printed https/wss URLs; the certificate must name it
    /// [default: localhost].
    #[arg(long, value_name = "NAME", requires = "tls_cert")]
    tls_host: Option<String>,
}

fn parse_pair(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.trim().to_string())),
        _ => Err(format!("expected NAME=VALUE, got {s:?}")),
    }
}

fn non_empty_env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn config(args: Args) -> Result<SimConfig, String> {
    let lb_key = args
        .lb_key
        .filter(|k| !k.is_empty())
        .or_else(|| non_empty_env("LB_AUTH_KEY"))
        .ok_or("LB_AUTH_KEY is not set (set the environment variable or pass --lb-key)")?;
    let auth_key = args
        .auth_key
        .filter(|k| !k.is_empty())
        .or_else(|| non_empty_env("AUTH_KEY"))
        .unwrap_or_else(|| DEFAULT_AUTH_KEY.to_string());
    let slots = usize::try_from(args.slots).map_err(|e| format!("invalid --slots: {e}"))?;
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(
            SimTls::from_pem_files(cert, key).map_err(|e| format!("cannot use TLS files: {e}"))?,
        ),
        (None, None) => None,
        _ => return Err("--tls-cert and --tls-key go together: give both or neither".into()),
    };
    let mut cfg = SimConfig::new(lb_key, auth_key);
    cfg.http_addr = SocketAddr::new(args.host, args.port);
    cfg.ws_addr = (!args.no_ws).then(|| SocketAddr::new(args.host, args.ws_port));
    cfg.group = args.group;
    cfg.contract = args.contract;
    cfg.slots = slots;
    cfg.tags = args.tags.into_iter().collect::<BTreeMap<_, _>>();
    cfg.services = args.services;
    cfg.status = args.status;
    cfg.function_set = args.function_set;
    cfg.ws_mode = args.ws_mode;
    cfg.task_fault = args.task_fault;
    cfg.cpu_load = args.cpu_load;
    cfg.used_memory_percent = args.mem_percent;
    cfg.tls = tls;
    if let Some(host) = args.tls_host.filter(|h| !h.is_empty()) {
        cfg.tls_host = host;
    }
    Ok(cfg)
}

/// Resolves on SIGINT or SIGTERM.
async fn termination() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(e) => {
                log::warn!("cannot listen for SIGTERM: {e}");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let args = Args::parse();
    let cfg = match config(args) {
        Ok(cfg) => cfg,
        Err(e) => {
            eprintln!("andera-worker-sim: {e}");
            return ExitCode::from(2);
        }
    };
    let (group, contract, slots) = (cfg.group.clone(), cfg.contract, cfg.slots);
    let http_addr = cfg.http_addr;
    let worker = match SimWorker::start(cfg).await {
        Ok(w) => w,
        Err(e) => {
            eprintln!("andera-worker-sim: cannot listen on {http_addr} or its WebSocket port: {e}");
            return ExitCode::FAILURE;
        }
    };
    let ws = worker.ws_url().map_or_else(
        || "none".to_string(),
        |u| u.trim_end_matches('/').to_string(),
    );
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "andera-worker-sim ready http={} ws={ws} group={group} contract={contract} slots={slots}",
        worker.url()
    );
    let _ = out.flush();
    drop(out);
    termination().await;
    log::info!("andera-worker-sim: stopping");
    worker.shutdown().await;
    ExitCode::SUCCESS
}
