//! Integration tests of the job runtime: a real `Runtime` over a real store in a temporary
//! directory, the built-in handlers, and test-only handlers that block, gate or panic.
//!
//! - [`execution`]: success, retries with backoff, dead-lettering, retry by hand, timeouts,
//!   panics.
//! - [`cancel`]: cancelling running, queued and finished jobs.
//! - [`scheduling`]: `run_at`, per-type and global concurrency.
//! - [`recovery`]: crash recovery, stale attempt reports, graceful drain.
//! - [`sessions`]: sessions and the agent loop (with a scripted planner).
//! - [`callbacks`]: signed, allowlisted, retried callback deliveries to a real HTTP server.

mod callbacks;
mod cancel;
mod execution;
mod recovery;
mod scheduling;
mod sessions;
mod support;
