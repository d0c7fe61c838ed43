//! `/v1/job-types`: the registry's named skills.

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use skills::{JobTypePatch, JobTypeSpec};
use store::JobType;

use crate::error::ApiError;
use crate::extract::{Json, Path};
use crate::state::AppState;

#[derive(Serialize, utoipa::ToSchema)]
pub struct JobTypeList {
    pub job_types: Vec<JobType>,
    /// Handlers a new job type can be built over.
    pub handlers: Vec<String>,
}

#[utoipa::path(get, path = "/v1/job-types", tag = "job-types", responses((status = 200, body = JobTypeList)))]
pub async fn list(State(state): State<AppState>) -> axum::Json<JobTypeList> {
    axum::Json(JobTypeList {
        job_types: state.registry.list(),
        handlers: state
            .registry
            .handler_names()
            .into_iter()
            .map(String::from)
            .collect(),
    })
}

#[utoipa::path(get, path = "/v1/job-types/{name}", tag = "job-types", params(("name" = String, Path)),
    responses((status = 200, body = JobType), (status = 404, body = crate::api::ErrorBody)))]
pub async fn get_one(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<axum::Json<JobType>, ApiError> {
    state.registry.get(&name).map(axum::Json).ok_or_else(|| {
        ApiError::not_found(format!(
            "no job type named `{name}`; GET /v1/job-types lists them"
        ))
    })
}

#[utoipa::path(post, path = "/v1/job-types", tag = "job-types", request_body = JobTypeSpec,
    responses((status = 201, body = JobType), (status = 400, body = crate::api::ErrorBody),
        (status = 409, description = "already_exists", body = crate::api::ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    body: Json<JobTypeSpec>,
) -> Result<Response, ApiError> {
    let jt = state.registry.create(body.value)?;
    state.store.durable().await?;
    let location = HeaderValue::from_str(&format!("/v1/job-types/{}", jt.name))
        .map_err(|e| ApiError::internal("location header", &e))?;
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        axum::Json(jt),
    )
        .into_response())
}

#[utoipa::path(patch, path = "/v1/job-types/{name}", tag = "job-types", params(("name" = String, Path)),
    request_body = JobTypePatch,
    responses((status = 200, body = JobType), (status = 400, body = crate::api::ErrorBody), (status = 404, body = crate::api::ErrorBody)))]
pub async fn patch(
    State(state): State<AppState>,
    Path(name): Path<String>,
    body: Json<JobTypePatch>,
) -> Result<axum::Json<JobType>, ApiError> {
    let jt = state.registry.patch(&name, body.value)?;
    state.store.durable().await?;
    Ok(axum::Json(jt))
}
