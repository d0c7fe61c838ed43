//! Helpers shared by the store's integration tests.

use std::path::Path;

use serde_json::json;
use store::{Job, JobId, JobState, NewJob, Store, StoreConfig, StoreError, Timestamp};
use tempfile::TempDir;

/// A store in a fresh temporary directory (removed when the `TempDir` drops).
pub fn temp_store() -> (TempDir, Store) {
    let dir = TempDir::new().expect("temp dir");
    let store = open(dir.path());
    (dir, store)
}

pub fn open(path: &Path) -> Store {
    Store::open(StoreConfig::new(path)).expect("open store")
}

/// A queued job of `job_type` created at `now`, not yet written.
pub fn job_at(job_type: &str, session_id: Option<&str>, now: Timestamp) -> Job {
    Job::from_new(
        NewJob {
            job_type: job_type.to_string(),
            input: json!({"type": job_type}),
            max_attempts: 3,
            timeout_ms: 1_000,
            run_at: None,
            session_id: session_id.map(str::to_string),
            run_id: None,
            idempotency_key: None,
            callback_url: None,
        },
        now,
    )
}

/// Creates a queued job without an idempotency key and returns it.
pub fn create(store: &Store, job_type: &str, session_id: Option<&str>) -> Job {
    match store
        .create_job(job_at(job_type, session_id, Timestamp::now()), None)
        .expect("create job")
    {
        store::CreateOutcome::Created(job) => job,
        other => panic!("expected a created job, got {other:?}"),
    }
}

/// Moves a job to `state` through the single writer, as the runtime would.
pub fn set_state(store: &Store, id: JobId, state: JobState) -> Job {
    store
        .write(|tx| {
            let mut job = tx.job(id)?.expect("job exists");
            job.state = state;
            job.updated_at = Timestamp::now();
            tx.put_job(job.clone())?;
            Ok::<_, StoreError>(job)
        })
        .expect("write")
}

/// The count of `state` in `Store::job_counts`.
pub fn count(store: &Store, state: JobState) -> u64 {
    store
        .job_counts()
        .into_iter()
        .find(|(s, _)| *s == state)
        .map(|(_, n)| n)
        .expect("every state is counted")
}

pub fn ids(jobs: &[Job]) -> Vec<JobId> {
    jobs.iter().map(|j| j.id).collect()
}
