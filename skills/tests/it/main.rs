//! Integration tests of the skills crate (one binary, modules per area).

mod http_request;
mod shell;
