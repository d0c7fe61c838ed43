//! `/v1/jobs`: create, list, get, cancel, retry, logs, stream.

use axum::Extension;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use channels::Principal;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use store::{
    CreateOutcome, IdempotencyScope, Job, JobFilter, JobId, JobState, LogLine, StreamFilter,
    Timestamp,
};

use crate::api::sse;
use crate::error::ApiError;
use crate::extract::{Json, Path, Query};
use crate::state::AppState;

/// `POST /v1/jobs` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateJobRequest {
    /// The job type (see `GET /v1/job-types`).
    #[serde(rename = "type")]
    pub job_type: String,
    #[serde(default)]
    pub input: Value,
    pub max_attempts: Option<u32>,
    pub timeout_ms: Option<u64>,
    /// RFC 3339; not started before.
    pub run_at: Option<String>,
    /// POSTed the job when it ends (allowlisted hosts only).
    pub callback_url: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    pub state: Option<String>,
    #[serde(rename = "type")]
    pub job_type: Option<String>,
    pub session_id: Option<String>,
    /// 1 to 500, default 50.
    pub limit: Option<usize>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct JobList {
    pub jobs: Vec<Job>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct LogList {
    pub logs: Vec<LogLine>,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct LogsQuery {
    /// Only lines after this seq.
    pub after: Option<u64>,
    pub limit: Option<usize>,
}

/// Longest `Idempotency-Key`.
const MAX_IDEMPOTENCY_KEY: usize = 255;

#[utoipa::path(post, path = "/v1/jobs", tag = "jobs", request_body = CreateJobRequest,
    params(("Idempotency-Key" = Option<String>, Header, description = "replays the original job for the same body; 409 for another body")),
    responses(
        (status = 201, description = "created (durable)", body = Job),
        (status = 200, description = "replayed for the same Idempotency-Key and body", body = Job),
        (status = 400, description = "invalid input; details.field names it", body = crate::api::ErrorBody),
        (status = 409, description = "idempotency_conflict", body = crate::api::ErrorBody),
        (status = 413, body = crate::api::ErrorBody), (status = 415, body = crate::api::ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    headers: HeaderMap,
    body: Json<CreateJobRequest>,
) -> Result<Response, ApiError> {
    let idem = idempotency(&headers, &principal, &body.raw, &state)?;
    let req = body.value;
    let run_at = req
        .run_at
        .as_deref()
        .map(Timestamp::parse)
        .transpose()
        .map_err(|e| ApiError::invalid("run_at", e))?;
    let outcome = state.jobs.create(
        agentloop::CreateJob {
            job_type: req.job_type,
            input: req.input,
            max_attempts: req.max_attempts,
            timeout_ms: req.timeout_ms,
            run_at,
            callback_url: req.callback_url,
            session_id: None,
            run_id: None,
        },
        idem,
    )?;
    // Acknowledge only what is on disk.
    state.store.durable().await?;
    Ok(match outcome {
        CreateOutcome::Created(job) => {
            let location = HeaderValue::from_str(&format!("/v1/jobs/{}", job.id))
                .map_err(|e| ApiError::internal("location header", &e))?;
            (
                StatusCode::CREATED,
                [(header::LOCATION, location)],
                axum::Json(job),
            )
                .into_response()
        }
        CreateOutcome::Replayed(job) => (
            StatusCode::OK,
            [("idempotent-replayed", "true")],
            axum::Json(job),
        )
            .into_response(),
        CreateOutcome::Conflict { job_id } => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "idempotency_conflict",
                "this Idempotency-Key was used with a different body; use a new key for a new job",
            )
            .with_details(json!({ "job_id": job_id })));
        }
    })
}

fn idempotency(
    headers: &HeaderMap,
    principal: &Principal,
    raw: &Value,
    state: &AppState,
) -> Result<Option<IdempotencyScope>, ApiError> {
    Ok(
        idempotency_key(headers, raw)?.map(|(key, request_hash)| IdempotencyScope {
            scope: principal.id.clone(),
            key,
            request_hash,
            retention: state.config.idempotency_retention,
        }),
    )
}

/// The request's `Idempotency-Key`, checked, and a hash of its JSON body.
pub(crate) fn idempotency_key(
    headers: &HeaderMap,
    raw: &Value,
) -> Result<Option<(String, String)>, ApiError> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let key = value
        .to_str()
        .ok()
        .filter(|k| !k.is_empty() && k.len() <= MAX_IDEMPOTENCY_KEY)
        .ok_or_else(|| {
            ApiError::invalid(
                "Idempotency-Key",
                format!("must be 1 to {MAX_IDEMPOTENCY_KEY} visible ASCII characters"),
            )
        })?;
    // serde_json's maps are sorted, so equal JSON bodies hash equally whatever their key order.
    let canonical = serde_json::to_vec(raw).unwrap_or_default();
    Ok(Some((
        key.to_string(),
        hex::encode(Sha256::digest(&canonical)),
    )))
}

#[utoipa::path(get, path = "/v1/jobs", tag = "jobs", params(ListQuery),
    responses((status = 200, body = JobList), (status = 400, body = crate::api::ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    Query(q): Query<ListQuery>,
) -> Result<axum::Json<JobList>, ApiError> {
    let limit = q.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::invalid(
            "limit",
            "limit must be between 1 and 500",
        ));
    }
    let filter = JobFilter {
        state: q
            .state
            .as_deref()
            .map(str::parse::<JobState>)
            .transpose()
            .map_err(|e| ApiError::invalid("state", e))?,
        job_type: q.job_type,
        session_id: q.session_id,
        before: q
            .cursor
            .as_deref()
            .map(|c| {
                c.parse::<JobId>()
                    .map_err(|_| ApiError::invalid("cursor", "not a cursor returned by this API"))
            })
            .transpose()?,
        limit,
    };
    let jobs = state.jobs.list(&filter)?;
    let next_cursor = (jobs.len() == limit)
        .then(|| jobs.last().map(|j| j.id.to_string()))
        .flatten();
    Ok(axum::Json(JobList { jobs, next_cursor }))
}

fn parse_id(id: &str) -> Result<JobId, ApiError> {
    id.parse()
        .map_err(|_| ApiError::not_found(format!("job {id} not found (job ids are UUIDs)")))
}

#[utoipa::path(get, path = "/v1/jobs/{id}", tag = "jobs", params(("id" = String, Path)),
    responses((status = 200, body = Job), (status = 404, body = crate::api::ErrorBody)))]
pub async fn get_one(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<axum::Json<Job>, ApiError> {
    Ok(axum::Json(state.jobs.get(parse_id(&id)?)?))
}

#[utoipa::path(post, path = "/v1/jobs/{id}/cancel", tag = "jobs", params(("id" = String, Path)),
    responses((status = 200, description = "cancelled; a running attempt was stopped", body = Job),
        (status = 404, body = crate::api::ErrorBody), (status = 409, description = "invalid_state: already finished", body = crate::api::ErrorBody)))]
pub async fn cancel(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<axum::Json<Job>, ApiError> {
    let job = state.jobs.cancel(parse_id(&id)?).await?;
    state.store.durable().await?;
    Ok(axum::Json(job))
}

#[utoipa::path(post, path = "/v1/jobs/{id}/retry", tag = "jobs", params(("id" = String, Path)),
    responses((status = 200, description = "re-queued with fresh attempts", body = Job),
        (status = 404, body = crate::api::ErrorBody), (status = 409, description = "invalid_state: not failed or cancelled", body = crate::api::ErrorBody)))]
pub async fn retry(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<axum::Json<Job>, ApiError> {
    let job = state.jobs.retry(parse_id(&id)?).await?;
    state.store.durable().await?;
    Ok(axum::Json(job))
}

#[utoipa::path(get, path = "/v1/jobs/{id}/logs", tag = "jobs", params(("id" = String, Path), LogsQuery),
    responses((status = 200, body = LogList), (status = 404, body = crate::api::ErrorBody)))]
pub async fn logs(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<LogsQuery>,
) -> Result<axum::Json<LogList>, ApiError> {
    let id = parse_id(&id)?;
    state.jobs.get(id)?;
    let limit = q.limit.unwrap_or(1000).clamp(1, 10_000);
    Ok(axum::Json(LogList {
        logs: state.store.job_logs(id, q.after.unwrap_or(0), limit)?,
    }))
}

#[utoipa::path(get, path = "/v1/jobs/{id}/stream", tag = "jobs", params(("id" = String, Path),
        ("Last-Event-ID" = Option<u64>, Header, description = "resume after this seq")),
    responses((status = 200, description = "text/event-stream: `event: job` (the job) and `event: log` (a log line), `id:` = seq; ends after the terminal state", content_type = "text/event-stream"),
        (status = 404, body = crate::api::ErrorBody)))]
pub async fn stream(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    let stream_name = store::job_stream(id);
    // Read the head before the job: the snapshot then covers every state event up to it.
    let head = state.store.stream_head(&stream_name)?;
    let job = state.jobs.get(id)?;
    let after = sse::last_event_id(&headers).unwrap_or(0);
    let first = sse::json_event("job", None, &job);
    if job.state.is_terminal() && head <= after {
        // Finished, and the client has seen everything: send the job and end.
        let s = futures_util::stream::iter([Ok::<_, std::convert::Infallible>(first)]);
        return Ok(axum::response::sse::Sse::new(s).into_response());
    }
    // A job that is already finished ends the stream once the replay reaches the head.
    let end_at = job.state.is_terminal().then_some(head);
    let follower = store::Follower::new(&state.store, StreamFilter::Stream(stream_name), after);
    let store = state.store.clone();
    let map: sse::Mapper = Box::new(move |e| {
        let replay_done = end_at.is_some_and(|h| e.seq >= h);
        if e.kind == "job.log" {
            let line = json!({ "seq": e.seq, "ts": e.ts, "level": e.data["level"], "message": e.data["message"] });
            return (
                Some(sse::json_event("log", Some(e.seq), &line)),
                replay_done,
            );
        }
        if e.kind.starts_with("job.") {
            if e.seq <= head {
                // Already told by the snapshot sent on connect.
                return (None, replay_done);
            }
            let terminal = matches!(
                e.kind.as_str(),
                "job.succeeded" | "job.failed" | "job.cancelled"
            );
            // End after a terminal state unless the job has been re-queued since.
            let end = terminal
                && store
                    .job(id)
                    .ok()
                    .flatten()
                    .is_none_or(|j| j.state.is_terminal());
            return (Some(sse::json_event("job", Some(e.seq), &e.data)), end);
        }
        (
            Some(sse::json_event(&e.kind, Some(e.seq), &e.data)),
            replay_done,
        )
    });
    Ok(sse::stream(Some(first), follower, state.shutdown.clone(), map).into_response())
}
