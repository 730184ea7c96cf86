//! andera-lb: a drop-in Andera load balancer built on Cloudflare Pingora.
//!
//! Modules by concern: [`config`] (YAML + environment), [`registry`] (Workers,
//! discovery, slot feeds), [`scheduler`] (slots and the priority queue),
//! [`dispatch`] (the one path from a task to a Worker), [`proxy`] (the client
//! service), [`admin`] (the sidecar), [`journal`] (durable webhook tasks), [`traces`]
//! (OpenTelemetry spans of each task). The
//! Andera Worker simulator is its own crate, `andera-worker-sim`
//! (crates/andera-worker-sim), a dev-dependency only.

// Nothing is `pub` that this root does not reach: what the binary, benches and tests
// use is what the modules below export.
#![warn(unreachable_pub)]

pub mod access_log;
pub mod admin;
pub mod app;
pub mod auth;
pub mod board;
pub mod budget;
pub mod cancel;
pub mod cluster;
pub mod config;
pub mod conn;
pub mod dispatch;
pub mod drain;
pub mod idempotency;
pub mod journal;
pub mod limit;
pub mod logring;
pub mod metrics;
pub mod preflight;
pub mod proxy;
pub mod reason;
pub mod registry;
pub mod respond;
pub mod routes;
pub mod sampler;
pub mod scheduler;
pub mod server;
pub mod shutdown;
pub mod task;
pub mod text;
pub mod traces;
pub mod upstream;
pub mod worker_url;
