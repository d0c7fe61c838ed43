//! Integration tests of the `rauskuclaw` binary: each test starts the real binary on a
//! temporary data directory (see [`harness`]) and talks to it over HTTP only.
//!
//! Layout, one module per area:
//! - [`auth`]: keys, scopes, bootstrap admin key, the `keys` subcommands.
//! - [`errors`]: the JSON error shape, status codes and `details.field`.
//! - [`jobs`]: lifecycle, listing, cancel, timeouts, retries, `run_at`.
//! - [`idempotency`]: `Idempotency-Key` replay, conflicts, scoping, concurrency.
//! - [`rate_limit`]: 429 with `Retry-After`.
//! - [`callbacks`]: allowlist, signature, retries, refusal of private addresses.
//! - [`streams`]: SSE of a job and of the global feed, `Last-Event-ID`, event paging.
//! - [`operations`]: `/health`, `/v1/runtime`, `/metrics`, `/v1/openapi.json`.
//! - [`job_types`]: the registry API.
//! - [`shutdown`]: SIGTERM drains and exits 0.
//! - [`crash`]: SIGKILL under load loses nothing that was acknowledged.
//! - [`smoke`]: `scripts/smoke.sh` against the binary.
//! - [`shell`]: `shell.exec` is off until programs are allowlisted.
//! - [`memory`]: `memory.write` / `memory.search` jobs.
//! - [`github`]: `POST /webhooks/github` with the real payloads; `github.comment` jobs.
//! - [`sessions`]: the REST channel, playbooks, manifests, approvals, reload, `local`, SIGKILL mid-run.
//! - [`devops`]: the DevOps example pack (`examples/devops/`), walked as its README walks it.
//! - [`console`]: the WebSocket console with a real client: auth by first frame, scopes, bad
//!   frames, gap-free subscriptions, runs/jobs/approvals, slow clients lagged, shutdown.

mod harness;

mod auth;
mod callbacks;
mod console;
mod crash;
mod devops;
mod errors;
mod github;
mod idempotency;
mod job_types;
mod jobs;
mod memory;
mod operations;
mod rate_limit;
mod sessions;
mod shell;
mod shutdown;
mod smoke;
mod streams;
