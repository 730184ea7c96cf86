//! andera-lb: a drop-in Andera load balancer built on Cloudflare Pingora.
//!
//! Modules by concern: `config` (YAML + environment), `registry` (Workers,
//! discovery, slot feeds), `scheduler` (slots and the priority queue), `dispatch`
//! (the one path from a task to a Worker), `proxy` (the client service), `admin`
//! (the sidecar), `journal` (durable webhook tasks), `traces` (OpenTelemetry spans
//! of each task). The Andera Worker simulator is its own crate, `andera-worker-sim`
//! (crates/andera-worker-sim), a dev-dependency only.
//!
//! Public are only the modules the binary ([`startup`], [`server`], [`preflight`],
//! [`logring`], [`config`]), the benches ([`scheduler`], [`journal`], [`task`],
//! [`worker_url`]) and the tests use; the rest is `pub(crate)`.

// Nothing is `pub` that this root does not reach.
#![warn(unreachable_pub)]
// A failure is an error with its context, never a bare unwrap (tests may: clippy.toml).
#![warn(clippy::unwrap_used)]

pub(crate) mod access_log;
pub(crate) mod admin;
pub(crate) mod app;
pub(crate) mod auth;
pub(crate) mod board;
pub(crate) mod budget;
pub(crate) mod cancel;
pub(crate) mod cluster;
pub mod config;
pub(crate) mod conn;
pub(crate) mod dispatch;
pub(crate) mod drain;
pub(crate) mod idempotency;
pub mod journal;
pub(crate) mod limit;
pub mod logring;
pub(crate) mod metrics;
pub mod preflight;
pub(crate) mod proxy;
pub(crate) mod reason;
pub(crate) mod registry;
pub(crate) mod respond;
pub(crate) mod routes;
pub(crate) mod sampler;
pub mod scheduler;
pub mod server;
pub(crate) mod shutdown;
pub mod startup;
pub mod task;
pub(crate) mod text;
pub(crate) mod traces;
pub(crate) mod upstream;
pub mod worker_url;
