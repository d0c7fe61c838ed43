//! The axum app, built without a socket so tests can call it directly.

use std::time::Instant;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, OriginalUri, Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use store::Scope;

use crate::api;
use crate::error::ApiError;
use crate::state::AppState;

/// Largest body of `POST /v1/jobs`.
pub const JOB_BODY_LIMIT: usize = 1 << 20;
/// Largest body of any other route.
pub const DEFAULT_BODY_LIMIT: usize = 64 << 10;
/// Largest body of `POST /webhooks/github`: GitHub caps payloads at 25 MB.
pub const GITHUB_BODY_LIMIT: usize = 25 << 20;

pub fn app(state: AppState) -> Router {
    let v1 = Router::new()
        .route(
            "/jobs",
            post(api::jobs::create)
                .layer(DefaultBodyLimit::max(JOB_BODY_LIMIT))
                .get(api::jobs::list),
        )
        .route("/jobs/{id}", get(api::jobs::get_one))
        .route("/jobs/{id}/cancel", post(api::jobs::cancel))
        .route("/jobs/{id}/retry", post(api::jobs::retry))
        .route("/jobs/{id}/logs", get(api::jobs::logs))
        .route("/jobs/{id}/stream", get(api::jobs::stream))
        .route(
            "/job-types",
            get(api::job_types::list).post(api::job_types::create),
        )
        .route(
            "/job-types/{name}",
            get(api::job_types::get_one).patch(api::job_types::patch),
        )
        .route("/keys", get(api::keys::list).post(api::keys::create))
        .route("/keys/{id}", axum::routing::delete(api::keys::revoke))
        .route("/sessions", get(api::sessions::list))
        .route("/sessions/{key}", get(api::sessions::get_one))
        .route("/sessions/{key}/messages", post(api::sessions::send))
        .route("/sessions/{key}/interrupt", post(api::sessions::interrupt))
        .route("/sessions/{key}/events", get(api::sessions::events))
        .route("/sessions/{key}/stream", get(api::sessions::stream))
        .route("/approvals", get(api::approvals::list))
        .route("/approvals/{id}", post(api::approvals::decide))
        .route("/events", get(api::events::list))
        .route("/events/stream", get(api::events::stream))
        .route("/runtime", get(api::runtime::runtime))
        .route("/runtime/reload", post(api::runtime::reload))
        .route("/openapi.json", get(api::openapi::openapi))
        .layer(middleware::from_fn_with_state(state.clone(), authenticate))
        .layer(DefaultBodyLimit::max(DEFAULT_BODY_LIMIT));
    Router::new()
        .route("/health", get(api::runtime::health))
        .route("/metrics", get(api::runtime::metrics))
        // Outside the nest, so the header-key middleware does not see it: a WebSocket
        // authenticates with its first frame. No timeout layer applies to it.
        .route("/v1/console", get(api::console::console))
        // Authenticated by its signature, not by an API key: outside `/v1`.
        .route(
            "/webhooks/github",
            post(api::github::receive).layer(DefaultBodyLimit::max(GITHUB_BODY_LIMIT)),
        )
        .nest("/v1", v1)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        // Applied per route (after matching), so it sees the matched route: a bounded label.
        .layer(middleware::from_fn(record_http_metrics))
        .with_state(state)
}

/// The scope a request needs: admin for configuration, operator for other changes, read for GET.
fn required_scope(method: &Method, path: &str) -> Scope {
    let admin_area = ["/v1/job-types", "/v1/keys", "/v1/runtime"]
        .iter()
        .any(|p| path.starts_with(p));
    match *method {
        Method::GET | Method::HEAD if path.starts_with("/v1/keys") => Scope::Admin,
        Method::GET | Method::HEAD => Scope::Read,
        _ if admin_area => Scope::Admin,
        _ => Scope::Operator,
    }
}

/// Finds the caller's key, checks its scope and its rate limit.
async fn authenticate(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .or_else(|| req.headers().get("x-api-key").and_then(|v| v.to_str().ok()))
        .map(str::trim);
    let Some(presented) = presented else {
        return ApiError::unauthorized(
            "an API key is required: send `Authorization: Bearer <key>` or `X-API-Key`",
        )
        .into_response();
    };
    let Some(principal) = state.keys.authenticate(presented) else {
        return ApiError::unauthorized("the API key is not valid (unknown, revoked, or mistyped)")
            .into_response();
    };
    // Inside the `/v1` nest the request's URI has the prefix stripped; the scope table (and the
    // message) use the full path.
    let path = req
        .extensions()
        .get::<OriginalUri>()
        .map_or_else(|| req.uri().path().to_string(), |u| u.path().to_string());
    let needed = required_scope(req.method(), &path);
    if principal.scope < needed {
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!(
                "this key has scope `{}`; {} {path} needs `{needed}`",
                principal.scope,
                req.method()
            ),
        )
        .with_details(serde_json::json!({ "scope": principal.scope, "required": needed }))
        .into_response();
    }
    if let Err(wait) = state.limits.check_key(&principal.id) {
        let mut e = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!("too many requests for this key; retry in {wait} s"),
        );
        e.retry_after = Some(wait);
        return e.into_response();
    }
    req.extensions_mut().insert(principal);
    next.run(req).await
}

async fn record_http_metrics(req: Request, next: Next) -> Response {
    let start = Instant::now();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    let method = req.method().to_string();
    let resp = next.run(req).await;
    metrics::histogram!(
        "rausku_http_request_duration_seconds",
        "method" => method,
        "route" => route,
        "status" => resp.status().as_u16().to_string()
    )
    .record(start.elapsed().as_secs_f64());
    resp
}

async fn not_found(req: Request) -> ApiError {
    ApiError::not_found(format!(
        "no route for {} {}; see GET /v1/openapi.json",
        req.method(),
        req.uri().path()
    ))
}

async fn method_not_allowed(req: Request) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{} is not allowed on {}", req.method(), req.uri().path()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scope_table() {
        let table = [
            (Method::GET, "/v1/jobs", Scope::Read),
            (Method::POST, "/v1/jobs", Scope::Operator),
            (Method::POST, "/v1/jobs/x/cancel", Scope::Operator),
            (Method::GET, "/v1/job-types", Scope::Read),
            (Method::POST, "/v1/job-types", Scope::Admin),
            (Method::PATCH, "/v1/job-types/echo", Scope::Admin),
            (Method::GET, "/v1/keys", Scope::Admin),
            (Method::DELETE, "/v1/keys/x", Scope::Admin),
            (Method::POST, "/v1/runtime/reload", Scope::Admin),
            (Method::GET, "/v1/runtime", Scope::Read),
        ];
        for (m, p, want) in table {
            assert_eq!(required_scope(&m, p), want, "{m} {p}");
        }
    }
}
