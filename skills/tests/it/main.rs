//! Integration tests of the skills crate (one binary, modules per area).

mod github_comment;
mod http_request;
mod shell;
