//! The GitHub webhook channel: from a signed delivery to a durable, deduplicated event on the
//! `github` stream, with its session key, template context and command.
//!
//! - [`channel`]: the `GithubChannel` actor (stream → sessions) and [`GithubReplies`] (replies →
//!   `github.comment` jobs).
//! - [`signature`]: `X-Hub-Signature-256` (HMAC-SHA256, constant-time) verification.
//! - [`event`]: [`map_event`]: kind, session key, flattened context and command of a delivery;
//!   the session-key rules and the loop guard are documented there.
//! - [`ingress`]: [`GithubIngress`]: verify → parse → dedupe on `X-GitHub-Delivery` → one atomic
//!   write (dedupe record + `github.received` event) → flush → answer; retention purge; how a
//!   consumer follows the stream.

pub mod channel;
pub mod event;
pub mod ingress;
pub mod signature;

pub use channel::{GithubChannel, GithubChannelArgs, GithubReplies};
pub use event::{CommandRules, GithubEvent, REPLY_MARKER_PREFIX, map_event, parse_command};
pub use ingress::{
    Accepted, DeliveryHeaders, DeliveryRecord, DeliveryRoute, GITHUB_STREAM, GithubIngress,
    IngressConfig, IngressError, RECEIVED_KIND, StoredDelivery, follow, purge_deliveries,
};
pub use signature::{SignatureError, sign, verify};
