//! Channels: how people and systems reach RauskuClaw. For now, the API-key authentication that
//! every REST route uses; the REST session channel, the local stdin channel, the GitHub webhook
//! channel and the WebSocket console come with the sessions and channels issues.
//!
//! Layout:
//! - [`auth`]: `ApiKeys`: the bootstrap key, stored keys (hashed), scopes, constant-time checks.
//! - [`local`]: `LocalChannel`: `rauskuclaw local`, stdin lines in, session events out.

pub mod auth;
pub mod local;

pub use auth::{ApiKeys, AuthError, Principal};
pub use local::{LocalChannel, LocalChannelArgs, LocalSummary};
