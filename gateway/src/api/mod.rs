//! Route handlers, one module per resource.

pub mod approvals;
pub mod console;
pub mod events;
pub mod github;
pub mod job_types;
pub mod jobs;
pub mod keys;
pub mod openapi;
pub mod runtime;
pub mod sessions;
pub mod sse;

use serde::Serialize;

/// The error body every failing route returns (for the OpenAPI document).
#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// snake_case, e.g. `invalid_input`, `idempotency_conflict`.
    pub code: String,
    /// What went wrong and what to do.
    pub message: String,
    /// E.g. `{"field": "input.ms"}`.
    pub details: serde_json::Value,
}
