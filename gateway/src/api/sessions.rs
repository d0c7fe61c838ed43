//! `/v1/sessions`: the REST channel. Messages in, events out (paged or streamed), interrupts.
//!
//! A REST client talks to sessions keyed `rest:<name>`; a key without a channel (`ops`) means
//! `rest:ops`. Other channels' sessions can be read here, but messages to them come through
//! their own channel (or the console).

use agentloop::{Inbound, RouteError, SessionSnapshot};
use axum::Extension;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use channels::Principal;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use store::{MessageDedupe, Session, StreamFilter, session_stream};

use crate::api::events::EventList;
use crate::api::jobs::idempotency_key;
use crate::api::sse;
use crate::error::ApiError;
use crate::extract::{Json, Path, Query};
use crate::state::AppState;

/// The longest message text a client may send, in bytes.
pub const MAX_TEXT_BYTES: usize = store::session::MAX_MESSAGE_BYTES;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MessageRequest {
    /// What to say: a command (`/run echo {"x":1}`, `/help`) or text a playbook matches.
    pub text: String,
    /// Structured data for the planner (playbook templates see it as `data`).
    #[serde(default)]
    pub data: Option<Value>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct MessageAccepted {
    pub session_id: String,
    /// The seq of the `message.received` event in the session's stream.
    pub seq: u64,
}

/// A session record with its live actor state, if it is running.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SessionView {
    #[serde(flatten)]
    pub session: Session,
    pub live: Option<SessionSnapshot>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Interrupted {
    /// Whether a run was going (and is now aborted).
    pub interrupted: bool,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct SessionEventsQuery {
    /// Only events with `seq` greater than this.
    pub after: Option<u64>,
    /// 1 to 1000, default 100.
    pub limit: Option<usize>,
}

/// `ops` → `rest:ops`; a key with a channel is kept.
fn full_key(key: &str) -> String {
    if key.contains(':') {
        key.to_owned()
    } else {
        format!("rest:{key}")
    }
}

fn find(state: &AppState, key: &str) -> Result<Session, ApiError> {
    let key = full_key(key);
    state.runtime.sessions.get(&key)?.ok_or_else(|| {
        ApiError::not_found(format!(
            "no session `{key}`; POST /v1/sessions/{{key}}/messages creates one"
        ))
    })
}

pub(crate) fn route_error(e: RouteError) -> ApiError {
    match e {
        RouteError::Invalid(msg) => ApiError::invalid("key", msg),
        RouteError::Conflict { session_id, seq } => {
            ApiError::new(StatusCode::CONFLICT, "idempotency_conflict", e.to_string())
                .with_details(json!({ "session_id": session_id, "seq": seq }))
        }
        RouteError::NotFound(_) => ApiError::not_found(e.to_string()),
        RouteError::Store(e) => e.into(),
        RouteError::Unavailable => {
            ApiError::unavailable("the sessions are not running (shutting down?); retry shortly")
        }
    }
}

#[utoipa::path(get, path = "/v1/sessions", tag = "sessions",
    responses((status = 200, body = Vec<Session>)))]
pub async fn list(State(state): State<AppState>) -> Result<axum::Json<Vec<Session>>, ApiError> {
    Ok(axum::Json(state.runtime.sessions.list()?))
}

#[utoipa::path(get, path = "/v1/sessions/{key}", tag = "sessions",
    params(("key" = String, Path, description = "the session key, URL-encoded (`rest%3Aops`)")),
    responses((status = 200, body = SessionView), (status = 404, body = crate::api::ErrorBody)))]
pub async fn get_one(
    State(state): State<AppState>,
    Path(key): Path<String>,
) -> Result<axum::Json<SessionView>, ApiError> {
    let session = find(&state, &key)?;
    let live = state.runtime.sessions.live(&session.key).await;
    Ok(axum::Json(SessionView { session, live }))
}

#[utoipa::path(post, path = "/v1/sessions/{key}/messages", tag = "sessions",
    request_body = MessageRequest,
    params(("key" = String, Path, description = "`rest:<name>` (or just `<name>`), URL-encoded"),
        ("Idempotency-Key" = Option<String>, Header, description = "the same key and body is the same message")),
    responses(
        (status = 202, description = "the message is durable; a run starts or it is queued", body = MessageAccepted),
        (status = 400, body = crate::api::ErrorBody),
        (status = 409, description = "idempotency_conflict", body = crate::api::ErrorBody)))]
pub async fn send(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(key): Path<String>,
    headers: HeaderMap,
    body: Json<MessageRequest>,
) -> Result<Response, ApiError> {
    let key = full_key(&key);
    if !key.starts_with("rest:") {
        return Err(ApiError::invalid(
            "key",
            format!(
                "REST clients send to `rest:<name>` sessions; `{key}` belongs to another channel (steer it from the console)"
            ),
        ));
    }
    let req = body.value;
    if req.text.trim().is_empty() {
        return Err(ApiError::invalid(
            "text",
            "text is empty; say something, e.g. /help",
        ));
    }
    if req.text.len() > MAX_TEXT_BYTES {
        return Err(ApiError::invalid(
            "text",
            format!(
                "text is {} bytes; the limit is {MAX_TEXT_BYTES}",
                req.text.len()
            ),
        ));
    }
    let dedupe = idempotency_key(&headers, &body.raw)?.map(|(key, request_hash)| MessageDedupe {
        scope: principal.id.clone(),
        key,
        request_hash,
        retention: state.config.idempotency_retention,
    });
    let routed = state
        .runtime
        .sessions
        .send(Inbound {
            key,
            text: req.text,
            data: req.data.unwrap_or(Value::Null),
            event: None,
            sender: Some(principal.name.clone()),
            dedupe,
        })
        .await
        .map_err(route_error)?;
    // Acknowledge only what is on disk.
    state.store.durable().await?;
    let body = axum::Json(MessageAccepted {
        session_id: routed.session_id.to_string(),
        seq: routed.seq,
    });
    Ok(if routed.replayed {
        (
            StatusCode::ACCEPTED,
            [("idempotent-replayed", "true")],
            body,
        )
            .into_response()
    } else {
        (StatusCode::ACCEPTED, body).into_response()
    })
}

#[utoipa::path(post, path = "/v1/sessions/{key}/interrupt", tag = "sessions",
    params(("key" = String, Path, description = "the session key, URL-encoded")),
    responses((status = 200, body = Interrupted), (status = 404, body = crate::api::ErrorBody)))]
pub async fn interrupt(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(key): Path<String>,
) -> Result<axum::Json<Interrupted>, ApiError> {
    let session = find(&state, &key)?;
    let interrupted = state
        .runtime
        .sessions
        .interrupt(&session.key, &principal.name)
        .await
        .map_err(route_error)?;
    state.store.durable().await?;
    Ok(axum::Json(Interrupted { interrupted }))
}

#[utoipa::path(get, path = "/v1/sessions/{key}/events", tag = "sessions",
    params(("key" = String, Path, description = "the session key, URL-encoded"), SessionEventsQuery),
    responses((status = 200, description = "`next_after` is the last seq", body = EventList),
        (status = 404, body = crate::api::ErrorBody)))]
pub async fn events(
    State(state): State<AppState>,
    Path(key): Path<String>,
    Query(q): Query<SessionEventsQuery>,
) -> Result<axum::Json<EventList>, ApiError> {
    let session = find(&state, &key)?;
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::invalid(
            "limit",
            "limit must be between 1 and 1000",
        ));
    }
    let after = q.after.unwrap_or(0);
    let events = state.store.events_after(
        &StreamFilter::Stream(session_stream(session.id)),
        after,
        limit,
    )?;
    let next_after = events.last().map_or(after, |e| e.seq);
    Ok(axum::Json(EventList { events, next_after }))
}

#[utoipa::path(get, path = "/v1/sessions/{key}/stream", tag = "sessions",
    params(("key" = String, Path, description = "the session key, URL-encoded"),
        ("Last-Event-ID" = Option<u64>, Header, description = "resume after this seq"),
        ("after" = Option<u64>, Query, description = "start after this seq (default 0: the whole session)")),
    responses((status = 200, description = "text/event-stream; `event:` = the kind, `id:` = the seq", content_type = "text/event-stream"),
        (status = 404, body = crate::api::ErrorBody)))]
pub async fn stream(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(key): Path<String>,
    Query(q): Query<SessionEventsQuery>,
) -> Result<Response, ApiError> {
    let session = find(&state, &key)?;
    let after = sse::last_event_id(&headers).or(q.after).unwrap_or(0);
    let follower = store::Follower::new(
        &state.store,
        StreamFilter::Stream(session_stream(session.id)),
        after,
    );
    let map: sse::Mapper = Box::new(|e| (Some(sse::json_event(&e.kind, Some(e.seq), e)), false));
    Ok(sse::stream(None, follower, state.shutdown.clone(), map).into_response())
}
