//! The courant server and CLI as a library, so the integration tests drive the same code the
//! binary runs.
//!
//! # Layout
//! - [`config`]: the configuration tree and its validation.
//! - [`wiring`]: builds providers, the runner, the workers and the servers (`dev`, `serve`).
//! - [`api`]: the HTTP API (axum); `api::router(state)` needs no socket.
//! - [`auth`]: API keys.
//! - [`events`]: publishes each committed transition on the live feed (`GET /v1/events`).
//! - [`cli`]: the ops commands that talk to a server.
//! - [`metrics`]: `GET /metrics`, and the classification of committed transitions it shares
//!   with [`stats`].
//! - [`stats`]: the runner observer that keeps the delivery statistics of `courant stats` in
//!   the store.
//! - [`simulate`]: `courant simulate`, the simulator's command line.
//! - [`templates`]: loads the templates directory.
//! - [`telemetry`]: the log subscriber and the optional OpenTelemetry span export.

pub mod api;
pub mod auth;
pub mod cli;
pub mod config;
pub mod events;
pub mod metrics;
pub mod simulate;
pub mod stats;
pub mod telemetry;
pub mod templates;
pub mod wiring;

/// Which parts of the server a `serve` process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Role {
    /// The HTTP API only.
    Api,
    /// Workers only.
    Worker,
    /// Both.
    All,
}
