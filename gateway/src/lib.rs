//! The `rauskuclaw` binary's library: configuration, wiring, the HTTP API and the CLI.
//!
//! Only this crate reads the environment and configuration files and installs the tracing
//! subscriber and the metrics recorder.
//!
//! Layout:
//! - [`cli`]: subcommands (`serve`, `keys …`).
//! - [`config`]: raw layers (file, env, flags) → validated `Config`.
//! - [`server`]: `Gateway`: starts the store, registry, runtime and keys; serves; shuts down.
//! - [`app`]: the axum `Router` (built without a socket), auth and scope middleware.
//! - [`api`]: route handlers, one module per resource, and the OpenAPI document.
//! - [`error`], [`extract`]: the one JSON error type and extractors that reject with it.
//! - [`rate_limit`], [`state`]: per-key limits and the shared app state.

pub mod api;
pub mod app;
pub mod cli;
pub mod config;
pub mod error;
pub mod extract;
pub mod rate_limit;
pub mod server;
pub mod state;

pub use app::app;
pub use config::Config;
pub use server::Gateway;
