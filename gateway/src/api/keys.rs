//! `/v1/keys`: API keys (admin).

use axum::extract::State;
use axum::http::StatusCode;
use channels::AuthError;
use serde::{Deserialize, Serialize};
use store::{ApiKey, Scope};

use crate::error::ApiError;
use crate::extract::{Json, Path};
use crate::state::AppState;

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKeyRequest {
    pub name: String,
    pub scope: Scope,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct CreatedKey {
    pub key: ApiKey,
    /// The key to send as `Authorization: Bearer …`. Shown once; only its hash is stored.
    pub secret: String,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct KeyList {
    pub keys: Vec<ApiKey>,
}

fn auth_error(e: AuthError) -> ApiError {
    match e {
        AuthError::NotFound(_) => ApiError::not_found(e.to_string()),
        AuthError::InvalidName => ApiError::invalid("name", e.to_string()),
        AuthError::Store(e) => e.into(),
    }
}

#[utoipa::path(get, path = "/v1/keys", tag = "keys", responses((status = 200, body = KeyList)))]
pub async fn list(State(state): State<AppState>) -> axum::Json<KeyList> {
    axum::Json(KeyList {
        keys: state.keys.list(),
    })
}

#[utoipa::path(post, path = "/v1/keys", tag = "keys", request_body = CreateKeyRequest,
    responses((status = 201, body = CreatedKey), (status = 400, body = crate::api::ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    body: Json<CreateKeyRequest>,
) -> Result<(StatusCode, axum::Json<CreatedKey>), ApiError> {
    let (mut key, secret) = state
        .keys
        .create(&body.value.name, body.value.scope)
        .map_err(auth_error)?;
    state.store.durable().await?;
    key.secret_hash.clear();
    Ok((StatusCode::CREATED, axum::Json(CreatedKey { key, secret })))
}

#[utoipa::path(delete, path = "/v1/keys/{id}", tag = "keys", params(("id" = String, Path)),
    responses((status = 200, description = "revoked", body = ApiKey), (status = 404, body = crate::api::ErrorBody)))]
pub async fn revoke(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<axum::Json<ApiKey>, ApiError> {
    let key = state.keys.revoke(&id).map_err(auth_error)?;
    state.store.durable().await?;
    Ok(axum::Json(key))
}
