//! Skills: the code that does the work of jobs, and the registry of named job types.
//!
//! Layout:
//! - [`handler`]: the `Handler` trait, `JobContext`, `AttemptOutcome`, `InputError`.
//! - [`builtin`]: built-in handlers (`echo`, `sleep`, `flaky`, `http.request`, `shell.exec`).
//! - [`net`]: the outbound-HTTP guard shared by `http.request` and callbacks: host allowlist,
//!   refusal of loopback/private/link-local addresses, no redirects, capped responses.
//! - [`registry`]: handlers by name and the persisted job types built over them.

pub mod builtin;
pub mod handler;
pub mod net;
pub mod registry;

pub use handler::{AttemptOutcome, BoxFuture, DynHandler, Handler, InputError, JobContext, JobLog};
pub use registry::{JobTypePatch, JobTypeSpec, Registry, RegistryError};
