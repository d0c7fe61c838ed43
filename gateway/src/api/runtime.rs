//! `/health`, `/v1/runtime`, `/metrics`.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::config::ConfigSummary;
use crate::state::AppState;

pub const VERSION: &str = env!("CARGO_PKG_VERSION");

#[derive(Serialize, utoipa::ToSchema)]
pub struct Health {
    /// `ok`, or `degraded` when the store does not answer.
    pub status: &'static str,
    pub version: &'static str,
    pub uptime_s: u64,
    /// `ok` or `error`.
    pub store: &'static str,
}

#[utoipa::path(get, path = "/health", tag = "operations",
    responses((status = 200, body = Health), (status = 503, description = "the store does not answer", body = Health)))]
pub async fn health(State(state): State<AppState>) -> Response {
    let healthy = state.store.healthy();
    let body = Health {
        status: if healthy { "ok" } else { "degraded" },
        version: VERSION,
        uptime_s: state.started.elapsed().as_secs(),
        store: if healthy { "ok" } else { "error" },
    };
    let status = if healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(body)).into_response()
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct RuntimeInfo {
    pub version: &'static str,
    pub uptime_s: u64,
    pub config: ConfigSummary,
    pub job_types: Vec<String>,
    pub handlers: Vec<String>,
    /// Jobs per state.
    pub jobs: BTreeMap<String, u64>,
    pub supervisor: Option<agentloop::SupervisorSnapshot>,
    pub callbacks: Option<agentloop::CallbackSnapshot>,
    pub store: StoreInfo,
    /// Live SSE and bus subscribers.
    pub subscribers: usize,
    /// Sessions per state (`idle`, `running`, `waiting_approval`).
    pub sessions: BTreeMap<String, u64>,
    /// The session router: live session actors, spawns, restarts.
    pub router: Option<agentloop::RouterSnapshot>,
    /// The skills loaded from manifests (`RAUSKU_SKILLS_DIR`), by name, with their files.
    pub skills: Vec<SkillSource>,
    /// The playbooks in force (`RAUSKU_PLAYBOOKS_DIR`).
    pub playbooks: Vec<agentloop::PlaybookInfo>,
    pub planner: String,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct SkillSource {
    pub name: String,
    pub path: String,
    pub enabled: bool,
}

/// What `POST /v1/runtime/reload` changed.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ReloadResult {
    /// `null` when no `RAUSKU_SKILLS_DIR` is configured.
    pub skills: Option<skills::ReloadReport>,
    /// `null` when no `RAUSKU_PLAYBOOKS_DIR` is configured.
    pub playbooks: Option<agentloop::PlaybookReloadReport>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct StoreInfo {
    pub path: String,
    pub size_on_disk: u64,
    pub durable_global_seq: u64,
    pub commit: store::store::CommitStats,
}

#[utoipa::path(get, path = "/v1/runtime", tag = "operations", responses((status = 200, body = RuntimeInfo)))]
pub async fn runtime(State(state): State<AppState>) -> axum::Json<RuntimeInfo> {
    let jobs = state
        .store
        .job_counts()
        .into_iter()
        .map(|(s, n)| (s.to_string(), n))
        .collect();
    axum::Json(RuntimeInfo {
        version: VERSION,
        uptime_s: state.started.elapsed().as_secs(),
        config: state.config.summary(),
        job_types: state.registry.list().into_iter().map(|t| t.name).collect(),
        handlers: state
            .registry
            .handler_names()
            .into_iter()
            .map(String::from)
            .collect(),
        jobs,
        supervisor: state.jobs.snapshot().await.ok(),
        callbacks: state.runtime.callback_snapshot().await,
        store: StoreInfo {
            path: state.store.path().display().to_string(),
            size_on_disk: state.store.size_on_disk(),
            durable_global_seq: state.store.bus().durable_horizon(),
            commit: state.store.commit_stats(),
        },
        subscribers: state.store.bus().receivers(),
        sessions: session_counts(&state),
        router: state.runtime.sessions.snapshot().await.ok(),
        skills: state
            .registry
            .list()
            .into_iter()
            .filter_map(|t| {
                let path = t.source.manifest_path()?.to_owned();
                Some(SkillSource {
                    name: t.name,
                    path,
                    enabled: t.enabled,
                })
            })
            .collect(),
        playbooks: state.planner.playbooks().list(),
        planner: agentloop::Planner::name(&*state.planner).to_owned(),
    })
}

fn session_counts(state: &AppState) -> BTreeMap<String, u64> {
    let mut counts = BTreeMap::new();
    for s in state.runtime.sessions.list().unwrap_or_default() {
        let name = serde_json::to_value(s.state)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        *counts.entry(name).or_default() += 1;
    }
    counts
}

#[utoipa::path(post, path = "/v1/runtime/reload", tag = "operations",
    responses((status = 200, description = "what changed; files with errors are listed with path and line, and their previous version stays in force", body = ReloadResult),
        (status = 503, body = crate::api::ErrorBody)))]
pub async fn reload(
    State(state): State<AppState>,
) -> Result<axum::Json<ReloadResult>, crate::error::ApiError> {
    let skills = match &state.config.skills_dir {
        Some(dir) => {
            let (registry, dir) = (state.registry.clone(), dir.clone());
            let report = tokio::task::spawn_blocking(move || registry.load_manifests(&dir))
                .await
                .map_err(|e| crate::error::ApiError::internal("reload task", &e))??;
            Some(report)
        }
        None => None,
    };
    let playbooks = state
        .config
        .playbooks_dir
        .as_ref()
        .map(|dir| state.planner.playbooks().reload(dir));
    state.store.durable().await?;
    tracing::info!(
        skill_errors = skills.as_ref().map_or(0, |r| r.errors.len()),
        playbook_errors = playbooks.as_ref().map_or(0, |r| r.errors.len()),
        "reloaded skills and playbooks"
    );
    Ok(axum::Json(ReloadResult { skills, playbooks }))
}

/// Prometheus text exposition.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain")))]
pub async fn metrics(State(state): State<AppState>) -> Response {
    let Some(handle) = &state.metrics else {
        return (
            StatusCode::NOT_FOUND,
            "metrics are not enabled in this process\n",
        )
            .into_response();
    };
    for (st, n) in state.store.job_counts() {
        metrics::gauge!("rausku_jobs", "state" => st.as_str()).set(n as f64);
    }
    if let Ok(snap) = state.jobs.snapshot().await {
        metrics::gauge!("rausku_jobs_in_memory_queue").set(snap.queued as f64);
        metrics::gauge!("rausku_attempts_running").set(snap.running as f64);
    }
    let commit = state.store.commit_stats();
    metrics::gauge!("rausku_store_flushes").set(commit.flushes as f64);
    metrics::gauge!("rausku_store_size_bytes").set(state.store.size_on_disk() as f64);
    metrics::gauge!("rausku_uptime_seconds").set(state.started.elapsed().as_secs_f64());
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        handle.render(),
    )
        .into_response()
}
