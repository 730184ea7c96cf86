//! The bare Pingora pass-through for `bench/run` (row p): a `ProxyHttp` that checks
//! the LB key, rewrites the two auth headers as protocol §2 asks (the client's
//! `x-wr-auth` becomes `authorization`, the LB key goes in `x-lb-auth`) and sends
//! every request to one fixed upstream. No queue, no scheduler, no journal: the
//! framework's own cost per task, against which andera-lb's is compared.
//!
//! ```text
//! andera-pingora-floor --listen 127.0.0.1:8080 --upstream 127.0.0.1:9000 --lb-key KEY [--threads 2]
//! ```

use async_trait::async_trait;
use bytes::Bytes;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;
use pingora::server::configuration::ServerConf;

/// The pass-through: the key it expects and the one upstream it forwards to.
struct Floor {
    lb_key: String,
    upstream: std::net::SocketAddr,
}

/// Per-request state: the client's Worker key, moved to the upstream request.
#[derive(Default)]
struct Ctx {
    worker_key: Option<http::HeaderValue>,
}

/// Answers `status` with a JSON `{"error": ...}` body, as andera-lb does.
async fn refuse(session: &mut Session, status: u16, error: &'static str) -> Result<bool> {
    let body = Bytes::from(format!("{{\"error\":\"{error}\"}}"));
    let mut header = ResponseHeader::build(status, Some(2))?;
    header.insert_header("content-type", "application/json")?;
    header.insert_header("content-length", body.len())?;
    session
        .write_response_header(Box::new(header), false)
        .await?;
    session.write_response_body(Some(body), true).await?;
    Ok(true)
}

#[async_trait]
impl ProxyHttp for Floor {
    type CTX = Ctx;

    fn new_ctx(&self) -> Ctx {
        Ctx::default()
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        let req = session.req_header();
        let key = req
            .headers
            .get("authorization")
            .or_else(|| req.headers.get("x-lb-auth"))
            .map(|v| v.as_bytes())
            .map(|v| v.strip_prefix(b"Bearer ").unwrap_or(v));
        if key != Some(self.lb_key.as_bytes()) {
            return refuse(session, 401, "Unauthorized").await;
        }
        ctx.worker_key = req.headers.get("x-wr-auth").cloned();
        if ctx.worker_key.is_none() {
            return refuse(
                session,
                400,
                "Missing x-wr-auth header (worker AUTH_KEY) in request",
            )
            .await;
        }
        Ok(false)
    }

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        Ok(Box::new(HttpPeer::new(self.upstream, false, String::new())))
    }

    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        upstream: &mut RequestHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        upstream.remove_header("x-wr-auth");
        if let Some(worker_key) = ctx.worker_key.take() {
            upstream.insert_header("authorization", worker_key)?;
        }
        upstream.insert_header("x-lb-auth", self.lb_key.as_str())?;
        Ok(())
    }
}

/// The value following `--name` on the command line, or `default`.
fn arg(args: &[String], name: &str, default: Option<&str>) -> String {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
        .or_else(|| default.map(str::to_string))
        .unwrap_or_else(|| {
            eprintln!(
                "usage: andera-pingora-floor --listen ADDR --upstream ADDR --lb-key KEY [--threads N]"
            );
            std::process::exit(2)
        })
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let listen = arg(&args, "--listen", None);
    let upstream = arg(&args, "--upstream", None)
        .parse()
        .expect("--upstream is IP:PORT");
    let lb_key = arg(&args, "--lb-key", None);
    // Two threads: what the issue's floor figures were measured with.
    let threads: usize = arg(&args, "--threads", Some("2"))
        .parse()
        .expect("--threads is a number");

    let conf = ServerConf {
        threads,
        // bench/run stops it with SIGTERM between rows: no draining to wait for.
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(0),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let mut service = http_proxy_service(&server.configuration, Floor { lb_key, upstream });
    service.add_tcp(&listen);
    server.add_service(service);
    server.run_forever();
}
