//! Integration tests of the store: a real sled database in a temporary directory.
//!
//! - [`jobs`]: creating, reading, listing and counting jobs; the active index.
//! - [`idempotency`]: replay, conflict, expiry, scoping and races of idempotency keys.
//! - [`events`]: dense seqs, `events_after`, followers across replay/live and lag, durability
//!   of what subscribers see.
//! - [`durability`]: reopening, corrupt records, job logs.

mod durability;
mod events;
mod idempotency;
mod jobs;
mod memory;
mod support;
