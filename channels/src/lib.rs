//! Channels: how people and systems reach RauskuClaw. For now, the API-key authentication that
//! every REST route uses and the GitHub webhook ingress; the REST session channel, the local
//! stdin channel and the WebSocket console come with the sessions and channels issues.
//!
//! Layout:
//! - [`auth`]: `ApiKeys`: the bootstrap key, stored keys (hashed), scopes, constant-time checks.
//! - [`github`]: the GitHub webhook: signature check, event mapping (session keys, context,
//!   commands), and the durable, deduplicated ingress onto the `github` stream.
//! - [`local`]: `LocalChannel`: `rauskuclaw local`, stdin lines in, session events out.

pub mod auth;
pub mod github;
pub mod local;

pub use auth::{ApiKeys, AuthError, Principal};
pub use github::{GithubIngress, IngressConfig};
pub use local::{LocalChannel, LocalChannelArgs, LocalSummary};
