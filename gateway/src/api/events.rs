//! `/v1/events`: the global event feed, paged or streamed.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use store::{Event, Follower, StreamFilter};

use crate::api::sse;
use crate::error::ApiError;
use crate::extract::Query;
use crate::state::AppState;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    /// Only events with `global_seq` greater than this.
    pub after: Option<u64>,
    /// 1 to 1000, default 100.
    pub limit: Option<usize>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct EventList {
    pub events: Vec<Event>,
    /// Pass as `after` for the next page.
    pub next_after: u64,
}

#[utoipa::path(get, path = "/v1/events", tag = "events", params(EventsQuery),
    responses((status = 200, body = EventList), (status = 400, body = crate::api::ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    Query(q): Query<EventsQuery>,
) -> Result<axum::Json<EventList>, ApiError> {
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::invalid(
            "limit",
            "limit must be between 1 and 1000",
        ));
    }
    let after = q.after.unwrap_or(0);
    let events = state
        .store
        .events_after(&StreamFilter::Global, after, limit)?;
    let next_after = events.last().map_or(after, |e| e.global_seq);
    Ok(axum::Json(EventList { events, next_after }))
}

#[utoipa::path(get, path = "/v1/events/stream", tag = "events",
    params(("Last-Event-ID" = Option<u64>, Header, description = "resume after this global seq"),
        ("after" = Option<u64>, Query, description = "start after this global seq (default: only new events)")),
    responses((status = 200, description = "text/event-stream; `event:` = the kind, `id:` = global seq", content_type = "text/event-stream")))]
pub async fn stream(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<EventsQuery>,
) -> Result<Response, ApiError> {
    let after = sse::last_event_id(&headers)
        .or(q.after)
        .unwrap_or_else(|| state.store.bus().durable_horizon());
    let follower = Follower::new(&state.store, StreamFilter::Global, after);
    let map: sse::Mapper =
        Box::new(|e| (Some(sse::json_event(&e.kind, Some(e.global_seq), e)), false));
    Ok(sse::stream(None, follower, state.shutdown.clone(), map).into_response())
}
