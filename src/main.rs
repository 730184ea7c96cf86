//! `andera-lb`: the Andera load balancer.

#![warn(clippy::unwrap_used)]

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use andera_lb::config;
use andera_lb::server::{self, RunFlags};
use andera_lb::startup::{self, DEFAULT_KEY_WARNING};
use clap::Parser;

/// Command line.
#[derive(Parser, Debug)]
#[command(
    name = "andera-lb",
    version,
    about = "Drop-in Andera load balancer on Pingora"
)]
struct Args {
    /// YAML configuration (see conf/andera-lb.yaml). Without it: ./workers.json and the environment.
    #[arg(short, long)]
    config: Option<PathBuf>,
    /// Validate the configuration and the Worker list, print every warning a start
    /// would log, then exit.
    #[arg(short = 't', long)]
    test: bool,
    /// Treat warnings as errors: with -t, or at start-up, exit with status 2 when
    /// the configuration or the Worker list has any.
    #[arg(long)]
    strict: bool,
    /// Take the listening sockets over from a running instance (zero-downtime upgrade).
    #[arg(short, long)]
    upgrade: bool,
    /// Run in the background.
    #[arg(short, long)]
    daemon: bool,
    /// Start even if the task journal is unreadable: it is moved aside (`<file>.corrupt-<time>`)
    /// and a new one is started.
    #[arg(long)]
    recover: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    // Before any thread starts: the process environment is changed here only.
    let dotenv = load_dotenv();
    let env = |k: &str| std::env::var(k).ok();
    let settings = match config::load(args.config.as_deref(), &env) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("andera-lb: configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    let listed = match startup::check(&settings, !(args.recover || args.test)) {
        Ok(listed) => listed,
        Err(e) => {
            eprintln!("andera-lb: {e}");
            return ExitCode::from(2);
        }
    };
    let warnings = startup::warnings(&settings, &listed, dotenv.as_ref().err().cloned());
    let workers = listed.urls;
    if args.test || (args.strict && !warnings.is_empty()) {
        for w in &warnings {
            eprintln!("andera-lb: warning: {w}");
        }
        if args.strict && !warnings.is_empty() {
            eprintln!(
                "andera-lb: {} warning(s), refused with --strict",
                warnings.len()
            );
            return ExitCode::from(2);
        }
        println!(
            "andera-lb: configuration OK ({}; {} worker(s); client {}, admin {})",
            settings.origin,
            workers.len(),
            settings.listen,
            settings.admin.listen
        );
        return ExitCode::SUCCESS;
    }
    let addrs = [
        ("listen", settings.listen),
        ("admin.listen", settings.admin.listen),
    ];
    if !args.upgrade {
        if let Err(e) = andera_lb::preflight::check_listen(&addrs) {
            eprintln!("andera-lb: {e}");
            return ExitCode::from(andera_lb::preflight::EXIT_BIND);
        }
    }
    andera_lb::preflight::exit_on_listener_failure(&addrs);
    andera_lb::logring::init(
        settings.logging.level,
        settings.logging.max_logs,
        settings.logging.max_logs_bytes,
    );
    if let Ok(Some(line)) = &dotenv {
        log::info!("{line}");
    }
    for w in &warnings {
        if w == DEFAULT_KEY_WARNING {
            log::warn!(
                "**************************************************************************"
            );
            log::warn!("{DEFAULT_KEY_WARNING}.");
            log::warn!("Set a secret LB_AUTH_KEY before exposing it.");
            log::warn!(
                "**************************************************************************"
            );
        } else {
            log::warn!("{w}");
        }
    }
    for var in ["REDIS_HOST", "REDIS_PORT"] {
        if std::env::var_os(var).is_some() {
            log::info!(
                "{var} is ignored: to share the webhook queue in Redis set TASK_JOURNAL=redis://host:port"
            );
        }
    }
    log::info!(
        "andera-lb {} starting: client {}, admin {}, {} worker(s)",
        env!("CARGO_PKG_VERSION"),
        settings.listen,
        settings.admin.listen,
        workers.len()
    );
    let flags = RunFlags {
        upgrade: args.upgrade,
        daemon: args.daemon,
        recover: args.recover,
    };
    let server = server::build(Arc::new(settings), workers, flags);
    server.run_forever();
}

/// Reads `./.env` like the original (the `dotenv` package): variables already in the
/// environment win. Returns a line to log once logging is up, or the warning for a
/// file that could not be read completely.
fn load_dotenv() -> Result<Option<String>, String> {
    match dotenvy::from_path(".env") {
        Ok(()) => Ok(Some(
            "read ./.env (variables set in the environment take precedence)".into(),
        )),
        Err(e) if e.not_found() => Ok(None),
        // The original's dotenv skips what it cannot read; so do we, loudly.
        Err(e) => Err(format!("./.env could not be read completely: {e}")),
    }
}
