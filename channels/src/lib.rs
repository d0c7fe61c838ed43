//! Channels: how people and systems reach RauskuClaw. For now, the API-key authentication that
//! every REST route uses; the REST session channel, the local stdin channel, the GitHub webhook
//! channel and the WebSocket console come with the sessions and channels issues.
//!
//! Layout:
//! - [`auth`]: `ApiKeys`: the bootstrap key, stored keys (hashed), scopes, constant-time checks.

pub mod auth;

pub use auth::{ApiKeys, AuthError, Principal};
