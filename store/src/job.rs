//! Jobs: the durable unit of work, and their lifecycle.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::ids::JobId;
use crate::time::Timestamp;

/// Most attempts a job may ask for.
pub const MAX_ATTEMPTS: u32 = 100;
/// Longest timeout a job may ask for: one day.
pub const MAX_TIMEOUT_MS: u64 = 86_400_000;

/// Where a job is in its lifecycle:
/// `queued → running → (retrying → running)* → succeeded | failed | cancelled`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    Queued,
    Running,
    Retrying,
    Succeeded,
    Failed,
    Cancelled,
}

impl JobState {
    pub const ALL: [JobState; 6] = [
        JobState::Queued,
        JobState::Running,
        JobState::Retrying,
        JobState::Succeeded,
        JobState::Failed,
        JobState::Cancelled,
    ];

    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobState::Succeeded | JobState::Failed | JobState::Cancelled
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Retrying => "retrying",
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
        }
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }

    pub(crate) fn to_byte(self) -> u8 {
        self as u8
    }

    pub(crate) fn from_byte(b: u8) -> Option<Self> {
        Self::ALL.get(b as usize).copied()
    }
}

impl std::str::FromStr for JobState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        JobState::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| {
                format!("unknown state `{s}`; expected one of queued, running, retrying, succeeded, failed, cancelled")
            })
    }
}

impl std::fmt::Display for JobState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The right of one attempt to finish a job. A report from any other attempt is stale and is
/// ignored, so a job can never be completed twice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Lease {
    /// The attempt number holding the lease (1-based).
    pub attempt: u32,
    /// The process (boot id) that took it; a lease from another boot is left over from a crash.
    pub owner: String,
    pub taken_at: Timestamp,
}

/// A job as stored and as served by the API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Job {
    pub id: JobId,
    #[serde(rename = "type")]
    pub job_type: String,
    pub state: JobState,
    pub input: Value,
    pub output: Option<Value>,
    /// The last attempt's error, if it failed.
    pub error: Option<String>,
    /// The number of the current or last attempt (0 before the first).
    pub attempt: u32,
    pub max_attempts: u32,
    pub timeout_ms: u64,
    /// Not started before this time.
    pub run_at: Timestamp,
    pub session_id: Option<String>,
    /// The agent run (of `session_id`) that invoked this job, if any.
    #[serde(default)]
    pub run_id: Option<String>,
    pub idempotency_key: Option<String>,
    pub callback_url: Option<String>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub started_at: Option<Timestamp>,
    pub finished_at: Option<Timestamp>,
    /// Present while an attempt runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<Lease>,
}

/// What a caller asks for when creating a job, after validation.
#[derive(Debug, Clone, PartialEq)]
pub struct NewJob {
    pub job_type: String,
    pub input: Value,
    pub max_attempts: u32,
    pub timeout_ms: u64,
    pub run_at: Option<Timestamp>,
    pub session_id: Option<String>,
    pub run_id: Option<String>,
    pub idempotency_key: Option<String>,
    pub callback_url: Option<String>,
}

impl Job {
    /// A queued job built from a validated request.
    pub fn from_new(new: NewJob, now: Timestamp) -> Self {
        Job {
            id: JobId::new(),
            job_type: new.job_type,
            state: JobState::Queued,
            input: new.input,
            output: None,
            error: None,
            attempt: 0,
            max_attempts: new.max_attempts,
            timeout_ms: new.timeout_ms,
            run_at: new.run_at.unwrap_or(now),
            session_id: new.session_id,
            run_id: new.run_id,
            idempotency_key: new.idempotency_key,
            callback_url: new.callback_url,
            created_at: now,
            updated_at: now,
            started_at: None,
            finished_at: None,
            lease: None,
        }
    }

    /// The event stream of this job.
    pub fn stream(&self) -> String {
        job_stream(self.id)
    }
}

/// The event stream name of a job: `job:<id>`.
pub fn job_stream(id: JobId) -> String {
    format!("job:{id}")
}

/// The level of a job log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Debug,
    Info,
    Warn,
    Error,
}

/// One job log line as served by `GET /v1/jobs/{id}/logs`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LogLine {
    /// The seq of the `job.log` event on the job's stream.
    pub seq: u64,
    pub ts: Timestamp,
    pub level: LogLevel,
    pub message: String,
}
