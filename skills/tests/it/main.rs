//! Integration tests of the skills crate (one binary, modules per area).
//!
//! - [`http_request`]: `http.request` against a local server, through the outbound guard.
//! - [`manifests`]: skill manifests applied to a registry over a real store: reload rules and
//!   errors.
//! - [`shell`]: `shell.exec` running real processes.

mod github_comment;
mod http_request;
mod manifests;
mod shell;
