//! Scenario (a): durable `POST /v1/jobs` over loopback, many concurrent keep-alive clients.
//!
//! RauskuClaw: the real `rauskuclaw serve` binary ([`Gateway`]).
//!
//! Baseline: a raw axum handler in this process, on its own tokio runtime and threads
//! ([`ServerThread`]), doing the same durable writes: deserialize the JSON, insert the job
//! record, its `job.queued` event and the stream index in one sled transaction over three
//! trees, wait for a shared group-commit flush, answer 201 with the job as JSON.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Context;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::Value;
use sled::Transactional;
use sled::transaction::ConflictableTransactionError;
use tempfile::TempDir;

use crate::baseline::{event_record, job_stream_key, new_job, open_db, record};
use crate::group_commit::GroupCommit;
use crate::load::{LoadShape, MakeRequest, against_gateway, drive, rows};
use crate::report::Row;
use crate::servers::{ServerThread, serve_axum};
use crate::stats::thousands;

/// Both runs, and the table rows.
pub async fn run(base: &Path, shape: LoadShape) -> anyhow::Result<Vec<Row>> {
    let key = format!("bench-{}", uuid::Uuid::now_v7().simple());
    let scenario = format!(
        "(a) durable POST /v1/jobs, {} clients, {} requests",
        shape.clients,
        thousands(shape.requests as u64)
    );

    eprintln!("(a) baseline: raw axum + sled + group commit …");
    let raw = {
        let server = BaselineServer::start(base, &key)?;
        let load = drive(
            shape,
            create_requests(&server.thread.url(), &key),
            StatusCode::CREATED,
        )
        .await
        .context("(a) baseline")?;
        eprintln!("    flushes: {}", thousands(server.commit.flushes()));
        load
    };
    raw.report();

    let ours = against_gateway("(a)", base, &key, &[], shape, StatusCode::CREATED, |url| {
        create_requests(url, &key)
    })
    .await?;
    Ok(rows(&scenario, ours.as_ref(), &raw, 0.6))
}

/// Echo-job creations, each with its own input.
fn create_requests(base_url: &str, key: &str) -> MakeRequest {
    let url = format!("{base_url}/v1/jobs");
    let auth = format!("Bearer {key}");
    Arc::new(move |client, i| {
        client
            .post(&url)
            .header(header::AUTHORIZATION, &auth)
            .header(header::CONTENT_TYPE, "application/json")
            .body(format!(
                r#"{{"type":"echo","input":{{"i":{i},"bench":true}}}}"#
            ))
    })
}

// ----- the baseline server -----

/// The raw axum + sled server; stopped on drop.
struct BaselineServer {
    thread: ServerThread,
    commit: Arc<GroupCommit>,
    // Dropped after the server thread ended.
    _dir: TempDir,
}

struct BaselineState {
    key: String,
    jobs: sled::Tree,
    events: sled::Tree,
    streams: sled::Tree,
    next_global: AtomicU64,
    commit: Arc<GroupCommit>,
}

#[derive(Deserialize)]
struct CreateRequest {
    #[serde(rename = "type")]
    job_type: String,
    #[serde(default)]
    input: Value,
}

impl BaselineServer {
    fn start(base: &Path, key: &str) -> anyhow::Result<BaselineServer> {
        let dir = tempfile::Builder::new()
            .prefix("bench-raw-http-")
            .tempdir_in(base)?;
        let db = open_db(dir.path())?;
        let commit = Arc::new(GroupCommit::start(db.clone())?);
        let state = Arc::new(BaselineState {
            key: key.to_string(),
            jobs: db.open_tree("jobs")?,
            events: db.open_tree("events")?,
            streams: db.open_tree("streams")?,
            next_global: AtomicU64::new(1),
            commit: commit.clone(),
        });
        let app = Router::new()
            .route("/health", get(|| async { "ok" }))
            .route("/v1/jobs", post(create_job))
            .with_state(state);
        let thread = ServerThread::start("baseline-http", move |listener| {
            serve_axum(listener, app, "baseline server")
        })?;
        Ok(BaselineServer {
            thread,
            commit,
            _dir: dir,
        })
    }
}

async fn create_job(
    State(s): State<Arc<BaselineState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let authorized = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|k| k == s.key);
    if !authorized {
        return (StatusCode::UNAUTHORIZED, "missing or wrong API key").into_response();
    }
    let req: CreateRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    };
    let mut job = new_job(req.input);
    job.job_type = req.job_type;
    let (key, value) = record(&job);
    let global = s.next_global.fetch_add(1, Ordering::Relaxed);
    let (ekey, evalue) = event_record(&job, "job.queued", 1, global);
    let skey = job_stream_key(&job, 1);
    let written = (&s.jobs, &s.events, &s.streams).transaction(|(jobs, events, streams)| {
        jobs.insert(key.as_slice(), value.as_slice())?;
        events.insert(ekey.as_slice(), evalue.as_slice())?;
        streams.insert(skey.as_slice(), &global.to_be_bytes())?;
        Ok::<_, ConflictableTransactionError<()>>(())
    });
    if let Err(e) = written {
        return (StatusCode::INTERNAL_SERVER_ERROR, format!("{e:?}")).into_response();
    }
    if let Err(e) = s.commit.durable().await {
        return (StatusCode::SERVICE_UNAVAILABLE, e).into_response();
    }
    (StatusCode::CREATED, axum::Json(job)).into_response()
}
