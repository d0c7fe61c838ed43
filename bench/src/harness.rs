//! The real job runtime, in process, on a fresh store in a temporary directory: what
//! scenarios (b) and (c) measure.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use agentloop::{
    CallbackConfig, CreateJob, DefaultPlanner, JobService, PlaybookPlanner, PlaybookSet, Runtime,
    RuntimeConfig, SessionConfig, SessionService, SessionSetup,
};
use anyhow::Context;
use serde_json::Value;
use skills::Registry;
use skills::builtin::{BuiltinConfig, builtin_handlers};
use skills::net::NetPolicy;
use store::{CreateOutcome, JobId, Store, StoreConfig};
use tempfile::TempDir;

/// Attempts running at once in the benchmarks.
pub const MAX_CONCURRENCY: u32 = 256;

pub struct Harness {
    pub store: Store,
    runtime: Runtime,
    // Dropped last: the store lives in it.
    _dir: TempDir,
}

impl Harness {
    /// Opens a store in a new temporary directory under `base` and starts the runtime with the
    /// built-in handlers.
    pub async fn start(base: &Path) -> anyhow::Result<Harness> {
        let dir = tempfile::Builder::new()
            .prefix("bench-rausku-")
            .tempdir_in(base)?;
        let store = Store::open(StoreConfig::new(dir.path())).context("opening the store")?;
        let registry = Registry::open(store.clone(), builtin_handlers(&BuiltinConfig::default()))
            .context("opening the registry")?;
        let config = RuntimeConfig {
            max_concurrency: MAX_CONCURRENCY,
            ..RuntimeConfig::default()
        };
        let callbacks =
            CallbackConfig::new(NetPolicy::default(), b"bench-callback-secret".to_vec());
        let planner = Arc::new(DefaultPlanner::new(PlaybookPlanner::new(
            PlaybookSet::default(),
        )));
        let runtime = Runtime::start(
            store.clone(),
            registry,
            config,
            callbacks,
            SessionSetup {
                planner,
                config: SessionConfig::default(),
                replies: None,
            },
        )
        .await
        .map_err(|e| anyhow::anyhow!("cannot start the job runtime: {e}"))?;
        Ok(Harness {
            store,
            runtime,
            _dir: dir,
        })
    }

    pub fn jobs(&self) -> &JobService {
        &self.runtime.jobs
    }

    pub fn sessions(&self) -> &SessionService {
        &self.runtime.sessions
    }

    /// Stops the runtime and closes the store (the directory is removed on drop).
    pub async fn stop(self) {
        self.runtime.shutdown(Duration::from_secs(5)).await;
        let store = self.store.clone();
        let _ = tokio::task::spawn_blocking(move || store.close()).await;
    }
}

/// Creates one `echo` job through the service, as the HTTP API does.
pub fn create_echo(jobs: &JobService, input: Value) -> anyhow::Result<JobId> {
    let req = CreateJob {
        job_type: "echo".into(),
        input,
        ..CreateJob::default()
    };
    match jobs.create(req, None)? {
        CreateOutcome::Created(job) => Ok(job.id),
        other => anyhow::bail!("unexpected outcome of a job creation: {other:?}"),
    }
}
