//! Assembles the Pingora server: the client service, the admin sidecar and the
//! background Worker list service, from validated [`Settings`].

use std::sync::Arc;

use pingora::listeners::ListenerConfig;
use pingora::prelude::*;
use pingora::protocols::l4::stream::L4BufferSettings;
use pingora::server::configuration::{Opt, ServerConf};
use pingora::services::background::background_service;
use pingora::services::listening::Service;

use crate::admin::AdminProxy;
use crate::app::App;
use crate::config::Settings;
use crate::conn::GuardedApp;
use crate::proxy::ClientProxy;
use crate::registry::watch::ListWatcher;
use crate::worker_url::WorkerUrl;

/// Process-level switches from the command line.
#[derive(Debug, Clone, Copy, Default)]
pub struct RunFlags {
    /// Take the listening sockets over from a running instance.
    pub upgrade: bool,
    /// Run in the background.
    pub daemon: bool,
    /// Move an unreadable task journal aside instead of refusing to start.
    pub recover: bool,
}

/// Read buffer per client connection: none. Pingora's default is 64 KiB, zero-filled
/// at accept, which with 10,000 tasks queued is 640 MiB. The HTTP reader reads
/// headers and bodies into buffers of its own, so nothing is read in smaller pieces.
const CLIENT_READ_BUFFER: usize = 0;

fn client_listener(addr: &str) -> ListenerConfig {
    ListenerConfig::tcp(addr).l4_buffer(L4BufferSettings::new(
        CLIENT_READ_BUFFER,
        pingora::protocols::l4::stream::DEFAULT_L4_WRITE_BUFFER_SIZE,
    ))
}

/// Pingora's own configuration derived from ours.
fn server_conf(settings: &Settings, flags: RunFlags) -> ServerConf {
    ServerConf {
        daemon: flags.daemon,
        pid_file: settings.server.pid_file.clone(),
        upgrade_sock: settings.server.upgrade_sock.clone(),
        threads: settings.server.threads,
        // Our drainer exits as soon as tasks are done; Pingora's own wait is only a backstop.
        grace_period_seconds: Some(settings.server.grace_period.as_secs() + 10),
        graceful_shutdown_timeout_seconds: Some(5),
        ..ServerConf::default()
    }
}

/// Builds a ready-to-run server. `workers` is the list loaded (and validated) at start-up.
pub fn build(settings: Arc<Settings>, workers: Vec<WorkerUrl>, flags: RunFlags) -> Server {
    let opt = Opt {
        upgrade: flags.upgrade,
        daemon: flags.daemon,
        ..Opt::default()
    };
    let mut server = Server::new_with_opt_and_conf(opt, server_conf(&settings, flags));
    server.bootstrap();
    let app = App::new(settings.clone());

    // Both services run Pingora's proxy inside our guarded connection loop.
    let client_proxy =
        pingora::proxy::http_proxy(&server.configuration, ClientProxy { app: app.clone() });
    let mut client = Service::new(
        "andera-lb client".into(),
        GuardedApp::new(
            client_proxy,
            settings.client.clone(),
            "client",
            app.drain().clone(),
        ),
    );
    client.add_listener(client_listener(&settings.listen.to_string()));

    let admin_proxy =
        pingora::proxy::http_proxy(&server.configuration, AdminProxy { app: app.clone() });
    let mut admin = Service::new(
        "andera-lb admin".into(),
        GuardedApp::new(
            admin_proxy,
            settings.client.clone(),
            "admin",
            app.drain().clone(),
        ),
    );
    admin.add_tcp(&settings.admin.listen.to_string());
    admin.threads = Some(1);

    let watcher = background_service(
        "worker list",
        ListWatcher {
            registry: app.registry().clone(),
            initial: workers,
        },
    );
    add_background_services(&mut server, &app, flags);
    server.add_service(client);
    server.add_service(admin);
    server.add_service(watcher);
    server
}

/// The services that run beside the two listeners: the sampler, the drain, and
/// those the settings ask for (tracing, the journal, the cluster, the clients file,
/// the access log).
fn add_background_services(server: &mut Server, app: &Arc<App>, flags: RunFlags) {
    let sampler = background_service("sampler", crate::sampler::Sampler { app: app.clone() });
    server.add_service(sampler);
    let drainer = background_service("drain", crate::shutdown::Drainer { app: app.clone() });
    server.add_service(drainer);
    crate::traces::configure(app.settings().tracing.as_ref());
    if app.settings().tracing.is_some() {
        server.add_service(background_service("tracing", crate::traces::TraceService));
    }
    // Without a journal there is nothing to run (and Pingora would log the
    // service's immediate end as "exited").
    if app.settings().tasks.journal.is_some() {
        let journal = background_service(
            "task journal",
            crate::proxy::webhook::JournalService {
                app: app.clone(),
                recover: flags.recover,
            },
        );
        server.add_service(journal);
    }
    if let Some(cluster) = app.cluster() {
        server.add_service(background_service(
            "cluster",
            crate::cluster::ClusterService {
                cluster: cluster.clone(),
            },
        ));
    }
    if let Some(path) = &app.settings().auth.clients.file {
        server.add_service(background_service(
            "clients file",
            crate::auth::watch::ClientsWatcher {
                app: app.clone(),
                path: path.clone(),
                every: app.settings().workers.reload_interval,
            },
        ));
    }
    if let Some(target) = &app.settings().logging.access_log {
        // main checked that it opens; a failure here (a race) only loses the log.
        match crate::access_log::open(target) {
            Ok((log, writer)) => {
                app.set_access_log(log);
                server.add_service(background_service(
                    "access log",
                    crate::access_log::AccessLogService {
                        writer: parking_lot::Mutex::new(Some(writer)),
                        app: app.clone(),
                    },
                ));
            }
            Err(e) => log::error!("access log: {e}; no access log is written"),
        }
    }
}
