//! Integration tests of the channels crate (one binary, modules per area).
//!
//! - [`fixtures`]: the 273 real GitHub payloads in `tests/fixtures/github-webhooks/`.
//! - [`github_mapping`]: every real payload maps to a kind and a session key; exact mappings.
//! - [`github_ingress`]: signature first, dedupe, atomic durable storage, purge, following.

mod fixtures;
mod github_ingress;
mod github_mapping;
