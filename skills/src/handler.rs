//! The contract between the job runtime and the code that does the work.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use serde_json::Value;
use store::{JobDefaults, JobId, LogLevel};

/// A boxed, sendable future: what [`Handler::run`] returns.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// How one attempt ended, as the handler sees it. Timeouts, panics and cancellation are decided
/// by the runtime around the handler, not by the handler.
#[derive(Debug, Clone, PartialEq)]
pub enum AttemptOutcome {
    Succeeded(Value),
    /// `retryable: false` fails the job at once, whatever attempts are left.
    Failed {
        error: String,
        retryable: bool,
    },
}

impl AttemptOutcome {
    pub fn failed(error: impl Into<String>) -> Self {
        AttemptOutcome::Failed {
            error: error.into(),
            retryable: true,
        }
    }

    pub fn fatal(error: impl Into<String>) -> Self {
        AttemptOutcome::Failed {
            error: error.into(),
            retryable: false,
        }
    }
}

/// An input (or config) that a handler refuses before any job exists: the API answers 400 and
/// names `field`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct InputError {
    /// A JSON-pointer-like path, e.g. `input.ms` or `input.headers.accept`.
    pub field: String,
    pub message: String,
}

impl InputError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        InputError {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// Where a running attempt writes its log lines (persisted as `job.log` events).
pub trait JobLog: Send + Sync {
    fn log(&self, level: LogLevel, message: String);
}

/// What a handler knows about the attempt it runs.
#[derive(Clone)]
pub struct JobContext {
    pub job_id: JobId,
    pub job_type: String,
    /// 1-based attempt number.
    pub attempt: u32,
    pub max_attempts: u32,
    pub timeout_ms: u64,
    /// The job type's fixed configuration.
    pub config: Value,
    pub log: Arc<dyn JobLog>,
}

impl JobContext {
    pub fn info(&self, message: impl Into<String>) {
        self.log.log(LogLevel::Info, message.into());
    }

    pub fn warn(&self, message: impl Into<String>) {
        self.log.log(LogLevel::Warn, message.into());
    }
}

/// Code that runs jobs. Implementations are stateless between attempts (state lives in the
/// store), cheap to call, and never block the runtime: slow work is `.await`ed.
///
/// The runtime drops the returned future to stop an attempt (timeout, cancel, shutdown), so a
/// handler that owns outside resources (a child process) must release them on drop.
pub trait Handler: Send + Sync + 'static {
    /// The handler's name, e.g. `http.request`.
    fn name(&self) -> &'static str;

    /// One line for `GET /v1/job-types`.
    fn description(&self) -> &'static str;

    /// Defaults for the job type seeded from this handler.
    fn defaults(&self) -> JobDefaults {
        JobDefaults::default()
    }

    /// Whether the job type seeded from this handler starts enabled. Only consulted when the
    /// registry seeds a new type; a stored type keeps whatever it was set to. `shell.exec`
    /// answers `false` while no program is allowlisted.
    fn enabled_by_default(&self) -> bool {
        true
    }

    /// Rejects a bad input (or type config) before a job is created.
    fn validate(&self, config: &Value, input: &Value) -> Result<(), InputError>;

    /// Runs one attempt.
    fn run(&self, ctx: JobContext, input: Value) -> BoxFuture<'static, AttemptOutcome>;
}

impl std::fmt::Debug for dyn Handler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Handler").field(&self.name()).finish()
    }
}

/// A shared handler.
pub type DynHandler = Arc<dyn Handler>;
