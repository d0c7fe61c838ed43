//! `POST /webhooks/github`: GitHub deliveries, authenticated by their signature (no API key).
//!
//! Off (404) until `RAUSKU_GITHUB_WEBHOOK_SECRET` is set. Per client address rate limit (the TCP
//! peer, see [`crate::rate_limit`]), then the body (at most
//! [`GITHUB_BODY_LIMIT`](crate::app::GITHUB_BODY_LIMIT)), then [`GithubIngress::accept`]: the
//! signature is checked before anything reads the body, and the answer comes once the delivery
//! is durable: 202 stored, 200 for a duplicate or a ping.

use std::net::SocketAddr;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, FromRequest, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use channels::github::signature::{LEGACY_SIGNATURE_HEADER, SIGNATURE_HEADER};
use channels::github::{Accepted, DeliveryHeaders, GithubIngress, ingress};
use serde::Serialize;

use crate::error::ApiError;
use crate::extract::body_error;
use crate::state::AppState;

/// The answer to an accepted delivery.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct WebhookReceipt {
    /// `X-GitHub-Delivery`.
    pub delivery: String,
    /// The delivery's seq on the `github` event stream (the original's, for a duplicate).
    pub seq: u64,
    /// `stored` (202), `duplicate` or `ping` (200).
    pub outcome: &'static str,
}

#[utoipa::path(post, path = "/webhooks/github", tag = "channels",
    request_body(content = Object, content_type = "application/json",
        description = "the delivery as GitHub sends it (at most 25 MiB), signed with the webhook secret"),
    params(
        ("X-Hub-Signature-256" = String, Header, description = "`sha256=<hex HMAC-SHA256 of the raw body>`"),
        ("X-GitHub-Delivery" = String, Header, description = "unique per delivery; the dedupe key"),
        ("X-GitHub-Event" = String, Header, description = "the event, e.g. `pull_request`"),
    ),
    security(()),
    responses(
        (status = 202, description = "stored durably on the `github` stream", body = WebhookReceipt),
        (status = 200, description = "a duplicate delivery id (nothing new stored), or a ping", body = WebhookReceipt),
        (status = 400, description = "a missing header or a body that is not a JSON object", body = crate::api::ErrorBody),
        (status = 401, description = "`invalid_signature`: missing, malformed, SHA-1 only or wrong; nothing stored", body = crate::api::ErrorBody),
        (status = 404, description = "the webhook is off: no `RAUSKU_GITHUB_WEBHOOK_SECRET`", body = crate::api::ErrorBody),
        (status = 413, description = "the body is larger than 25 MiB", body = crate::api::ErrorBody),
        (status = 429, description = "`rate_limited` per client address; see `Retry-After`", body = crate::api::ErrorBody),
        (status = 503, description = "the store cannot be written; retry (redeliver)", body = crate::api::ErrorBody),
    ))]
pub async fn receive(State(state): State<AppState>, req: Request) -> Result<Response, ApiError> {
    let Some(github) = state.github.clone() else {
        return Err(ApiError::not_found(
            "the GitHub webhook is off; set RAUSKU_GITHUB_WEBHOOK_SECRET to the secret of the \
             GitHub webhook to turn it on",
        ));
    };
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    if let Err(wait) = state.limits.check_addr(peer) {
        ingress::count("rate_limited");
        let mut e = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!("too many webhook deliveries from this address; retry in {wait} s"),
        );
        e.retry_after = Some(wait);
        return Err(e);
    }
    let headers = delivery_headers(req.headers());
    let body = Bytes::from_request(req, &state).await.map_err(|rej| {
        let e = body_error(rej);
        if e.status == StatusCode::PAYLOAD_TOO_LARGE {
            ingress::count("too_large");
        }
        e
    })?;
    accept(&github, headers, body).await
}

async fn accept(
    github: &GithubIngress,
    headers: DeliveryHeaders,
    body: Bytes,
) -> Result<Response, ApiError> {
    let accepted = github.accept(headers, body).await?;
    let status = match accepted {
        Accepted::Stored { .. } => StatusCode::ACCEPTED,
        Accepted::Duplicate { .. } | Accepted::Ping { .. } => StatusCode::OK,
    };
    let receipt = WebhookReceipt {
        delivery: accepted.delivery().to_string(),
        seq: accepted.seq(),
        outcome: accepted.outcome(),
    };
    Ok((status, axum::Json(receipt)).into_response())
}

/// The headers the ingress reads. The legacy SHA-1 signature is passed on only when the SHA-256
/// one is absent, so the refusal can say why.
fn delivery_headers(h: &HeaderMap) -> DeliveryHeaders {
    let text = |name: &str| {
        h.get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    };
    DeliveryHeaders {
        event: text("x-github-event"),
        delivery: text("x-github-delivery"),
        signature: text(SIGNATURE_HEADER).or_else(|| text(LEGACY_SIGNATURE_HEADER)),
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    #[test]
    fn the_sha256_signature_wins_over_the_legacy_one() {
        let mut h = HeaderMap::new();
        h.insert("x-hub-signature", HeaderValue::from_static("sha1=abc"));
        assert_eq!(delivery_headers(&h).signature.as_deref(), Some("sha1=abc"));
        h.insert(
            "x-hub-signature-256",
            HeaderValue::from_static("sha256=def"),
        );
        h.insert("x-github-event", HeaderValue::from_static("push"));
        h.insert("x-github-delivery", HeaderValue::from_static("d-1"));
        let d = delivery_headers(&h);
        assert_eq!(d.signature.as_deref(), Some("sha256=def"));
        assert_eq!(d.event.as_deref(), Some("push"));
        assert_eq!(d.delivery.as_deref(), Some("d-1"));
    }
}
