//! Integration tests of the job runtime and the planners: a real `Runtime` over a real store in a temporary
//! directory, the built-in handlers, and test-only handlers that block, gate or panic.
//!
//! - [`execution`]: success, retries with backoff, dead-lettering, retry by hand, timeouts,
//!   panics.
//! - [`cancel`]: cancelling running, queued and finished jobs.
//! - [`scheduling`]: `run_at`, per-type and global concurrency.
//! - [`recovery`]: crash recovery, stale attempt reports, graceful drain.
//! - [`sessions`]: sessions and the agent loop (with a scripted planner).
//! - [`callbacks`]: signed, allowlisted, retried callback deliveries to a real HTTP server.
//! - [`planner`]: the default planner over the test playbooks in `tests/fixtures/playbooks`,
//!   its decisions run as real jobs (memory commands, `/run`, a playbook's failure branch).

mod callbacks;
mod cancel;
mod execution;
mod planner;
mod recovery;
mod scheduling;
mod sessions;
mod support;
