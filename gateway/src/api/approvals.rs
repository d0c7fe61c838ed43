//! `/v1/approvals`: the humans in the loop. A step whose policy wants an approval parks its run
//! until someone decides here (or in the console); the first decision wins.

use axum::Extension;
use axum::extract::State;
use axum::http::StatusCode;
use channels::Principal;
use serde::Deserialize;
use serde_json::json;
use store::{ApprovalId, ApprovalRequest, ApprovalState, DecideError};

use crate::error::ApiError;
use crate::extract::{Json, Path, Query};
use crate::state::AppState;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ApprovalsQuery {
    /// `pending`, `approved`, `denied`, `expired` or `cancelled`; all when absent.
    pub state: Option<String>,
    /// 1 to 500, default 100.
    pub limit: Option<usize>,
}

#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct ApprovalList {
    /// Newest first.
    pub approvals: Vec<ApprovalRequest>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DecisionRequest {
    /// `approve` or `deny`.
    pub decision: String,
    #[serde(default)]
    pub note: Option<String>,
}

/// The longest note, in bytes.
const MAX_NOTE_BYTES: usize = 4096;

#[utoipa::path(get, path = "/v1/approvals", tag = "approvals", params(ApprovalsQuery),
    responses((status = 200, body = ApprovalList), (status = 400, body = crate::api::ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    Query(q): Query<ApprovalsQuery>,
) -> Result<axum::Json<ApprovalList>, ApiError> {
    let filter = match q.state.as_deref() {
        None => None,
        Some(s) => Some(ApprovalState::parse(s).ok_or_else(|| {
            ApiError::invalid(
                "state",
                format!("unknown state `{s}`; use pending, approved, denied, expired or cancelled"),
            )
        })?),
    };
    let limit = q.limit.unwrap_or(100);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::invalid(
            "limit",
            "limit must be between 1 and 500",
        ));
    }
    let approvals = state.runtime.sessions.approvals(filter, limit)?;
    Ok(axum::Json(ApprovalList { approvals }))
}

#[utoipa::path(post, path = "/v1/approvals/{id}", tag = "approvals", request_body = DecisionRequest,
    params(("id" = String, Path, description = "the approval id")),
    responses((status = 200, description = "decided (durable); the run continues", body = ApprovalRequest),
        (status = 400, body = crate::api::ErrorBody), (status = 404, body = crate::api::ErrorBody),
        (status = 409, description = "already decided (or expired)", body = crate::api::ErrorBody)))]
pub async fn decide(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
    body: Json<DecisionRequest>,
) -> Result<axum::Json<ApprovalRequest>, ApiError> {
    let id: ApprovalId = id
        .parse()
        .map_err(|_| ApiError::invalid("id", format!("`{id}` is not an approval id (a UUID)")))?;
    let req = body.value;
    let decision = match req.decision.as_str() {
        "approve" | "approved" => ApprovalState::Approved,
        "deny" | "denied" => ApprovalState::Denied,
        other => {
            return Err(ApiError::invalid(
                "decision",
                format!("unknown decision `{other}`; use `approve` or `deny`"),
            ));
        }
    };
    if req.note.as_ref().is_some_and(|n| n.len() > MAX_NOTE_BYTES) {
        return Err(ApiError::invalid(
            "note",
            format!("note is longer than {MAX_NOTE_BYTES} bytes"),
        ));
    }
    let approval = decide_approval(&state, id, decision, &principal.name, req.note)?;
    state.store.durable().await?;
    Ok(axum::Json(approval))
}

/// Decides an approval, mapping refusals to API errors (shared with the console).
pub(crate) fn decide_approval(
    state: &AppState,
    id: ApprovalId,
    decision: ApprovalState,
    by: &str,
    note: Option<String>,
) -> Result<ApprovalRequest, ApiError> {
    state
        .runtime
        .sessions
        .decide(id, decision, by, note)
        .map_err(|e| match e {
            DecideError::NotFound(_) => ApiError::not_found(e.to_string()),
            DecideError::AlreadyDecided(ref a) => ApiError::new(
                StatusCode::CONFLICT,
                "invalid_state",
                format!("{e}; the first decision wins"),
            )
            .with_details(json!({ "state": a.state, "decided_by": a.decided_by })),
            DecideError::Store(e) => e.into(),
        })
}
