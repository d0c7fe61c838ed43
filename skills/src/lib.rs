//! Skills: the code that does the work of jobs, and the registry of named job types.
//!
//! Layout:
//! - [`handler`]: the `Handler` trait, `JobContext`, `AttemptOutcome`, `InputError`.
//! - [`builtin`]: built-in handlers (`echo`, `sleep`, `flaky`, `http.request`, `shell.exec`,
//!   `github.comment`, `memory.*`).
//! - [`net`]: the outbound-HTTP guard shared by `http.request` and callbacks: host allowlist,
//!   refusal of loopback/private/link-local addresses, no redirects, capped responses.
//! - [`manifest`]: skill manifests, TOML files that define job types, read from a directory
//!   and applied to the registry by `Registry::apply_manifests`.
//! - [`registry`]: handlers by name and the persisted job types built over them (from
//!   built-in handlers, the API and manifests).
//! - [`schema`]: the JSON Schema subset a job type's `input_schema` may use, checked when the
//!   type is created and enforced on every input before a job is created.

pub mod builtin;
pub mod handler;
pub mod manifest;
pub mod net;
pub mod registry;
pub mod schema;

pub use handler::{AttemptOutcome, BoxFuture, DynHandler, Handler, InputError, JobContext, JobLog};
pub use manifest::{Manifest, ManifestError, ManifestSet, ReloadReport, load_dir};
pub use registry::{JobTypePatch, JobTypeSpec, Registry, RegistryError};
