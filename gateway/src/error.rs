//! The one HTTP error type. Every failure the API returns is
//! `{"error": {"code", "message", "details"}}`; internal errors are logged once and never leaked.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use agentloop::JobError;
use channels::github::IngressError;
use skills::RegistryError;
use store::StoreError;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub details: Value,
    /// Seconds, for 429 and 503.
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            details: json!({}),
            retry_after: None,
        }
    }

    pub fn with_details(mut self, details: Value) -> Self {
        self.details = details;
        self
    }

    /// 400 naming the field to fix.
    pub fn invalid(field: &str, message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_input", message)
            .with_details(json!({ "field": field }))
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        let mut e = ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message);
        e.retry_after = Some(5);
        e
    }

    /// A failure that is our fault: logged here, once, with its cause; the client gets a
    /// generic message.
    pub fn internal(context: &str, err: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %err, "{context}");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the gateway failed to handle this request; see its log for details",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({
            "error": { "code": self.code, "message": self.message, "details": self.details }
        });
        let mut resp = (self.status, axum::Json(body)).into_response();
        if let Some(secs) = self.retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        resp
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Closed => {
                ApiError::unavailable("the gateway is shutting down; retry shortly")
            }
            StoreError::JobNotFound(id) => ApiError::not_found(format!("job {id} not found")),
            StoreError::Invalid(msg) => ApiError::invalid("body", msg),
            StoreError::Io(_) | StoreError::Locked { .. } => {
                tracing::error!(error = %e, "store unavailable");
                ApiError::unavailable("the store cannot be written right now; retry shortly")
            }
            StoreError::Corrupt { .. } => ApiError::internal("corrupt store record", &e),
        }
    }
}

impl From<RegistryError> for ApiError {
    fn from(e: RegistryError) -> Self {
        let msg = e.to_string();
        match e {
            RegistryError::Exists(name) => {
                ApiError::new(StatusCode::CONFLICT, "already_exists", msg)
                    .with_details(json!({ "name": name }))
            }
            RegistryError::NotFound(_) => ApiError::not_found(msg),
            RegistryError::UnknownType { .. } | RegistryError::Disabled(_) => {
                ApiError::invalid("type", msg)
            }
            RegistryError::UnknownHandler { .. } => ApiError::invalid("handler", msg),
            RegistryError::Invalid { field, message } => ApiError::invalid(&field, message),
            RegistryError::Input(input) => ApiError::invalid(&input.field, input.message),
            RegistryError::Store(e) => e.into(),
        }
    }
}

impl From<IngressError> for ApiError {
    fn from(e: IngressError) -> Self {
        let msg = e.to_string();
        match e {
            IngressError::Signature(_) => {
                ApiError::new(StatusCode::UNAUTHORIZED, "invalid_signature", msg)
            }
            IngressError::MissingDelivery | IngressError::InvalidDelivery(_) => {
                ApiError::invalid("X-GitHub-Delivery", msg)
            }
            IngressError::MissingEvent | IngressError::InvalidEvent(_) => {
                ApiError::invalid("X-GitHub-Event", msg)
            }
            IngressError::InvalidJson(_) => {
                ApiError::new(StatusCode::BAD_REQUEST, "invalid_json", msg)
            }
            IngressError::NotAnObject(_) => ApiError::invalid("body", msg),
            IngressError::Store(e) => e.into(),
        }
    }
}

impl From<JobError> for ApiError {
    fn from(e: JobError) -> Self {
        let msg = e.to_string();
        match e {
            JobError::Invalid { field, message } => ApiError::invalid(&field, message),
            JobError::Registry(e) => e.into(),
            JobError::NotFound(_) => ApiError::not_found(msg),
            JobError::InvalidState { id, state, .. } => {
                ApiError::new(StatusCode::CONFLICT, "invalid_state", msg)
                    .with_details(json!({ "id": id, "state": state }))
            }
            JobError::Store(e) => e.into(),
            JobError::Unavailable => {
                ApiError::unavailable("the job runtime is not running; retry shortly")
            }
        }
    }
}
