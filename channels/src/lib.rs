//! Channels: how people and systems reach RauskuClaw. The API-key authentication that every
//! REST route uses, the GitHub webhook ingress, the local stdin channel and the WebSocket
//! console.
//!
//! Layout:
//! - [`auth`]: `ApiKeys`: the bootstrap key, stored keys (hashed), scopes, constant-time checks.
//! - [`github`]: the GitHub webhook: signature check, event mapping (session keys, context,
//!   commands), and the durable, deduplicated ingress onto the `github` stream.
//! - [`local`]: `LocalChannel`: `rauskuclaw local`, stdin lines in, session events out.
//! - [`console`]: `Console`: one actor per WebSocket connection of `GET /v1/console` (the
//!   protocol is in `channels/CONSOLE.md`); the gateway only pumps the socket.

pub mod auth;
pub mod console;
pub mod github;
pub mod local;

pub use auth::{ApiKeys, AuthError, Principal};
pub use console::{
    Console, ConsoleConfig, ConsoleConnection, ConsoleServices, ConsoleSnapshot, FrameCache,
    Incoming, Outgoing,
};
pub use github::{GithubIngress, IngressConfig};
pub use local::{LocalChannel, LocalChannelArgs, LocalSummary};
