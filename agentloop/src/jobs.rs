//! `JobService`: the one way in to the job runtime, for the HTTP API and (next) sessions.
//!
//! Creation validates against the registry and the callback policy, writes the job (with its
//! idempotency record) in one store write, and tells the supervisor. It does not wait for
//! durability: a caller that acknowledges to a client awaits [`Store::durable`] first.

use std::time::Duration;

use ractor::{ActorRef, RpcReplyPort};
use serde_json::Value;
use skills::net::NetPolicy;
use skills::{Registry, RegistryError};
use store::{
    CreateOutcome, IdempotencyScope, Job, JobFilter, JobId, JobState, NewJob, Store, StoreError,
    Timestamp,
};

use crate::job_supervisor::{JobSupervisorMessage, SupervisorSnapshot};

pub use store::job::{MAX_ATTEMPTS, MAX_TIMEOUT_MS};

/// A request to create a job, before validation.
#[derive(Debug, Clone, Default)]
pub struct CreateJob {
    pub job_type: String,
    pub input: Value,
    pub max_attempts: Option<u32>,
    pub timeout_ms: Option<u64>,
    pub run_at: Option<Timestamp>,
    pub callback_url: Option<String>,
    pub session_id: Option<String>,
    pub run_id: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error("job {0} not found")]
    NotFound(JobId),
    #[error("cannot {action} job {id}: it is {state}; {hint}")]
    InvalidState {
        id: JobId,
        state: JobState,
        action: &'static str,
        hint: &'static str,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the job runtime is not running")]
    Unavailable,
}

impl JobError {
    fn invalid(field: &str, message: impl Into<String>) -> Self {
        JobError::Invalid {
            field: field.to_string(),
            message: message.into(),
        }
    }
}

/// Handle to the job runtime. Cheap to clone.
#[derive(Clone)]
pub struct JobService {
    store: Store,
    registry: Registry,
    supervisor: ActorRef<JobSupervisorMessage>,
    /// `None` when no callback host is allowed: a job asking for a callback is refused.
    callbacks: Option<NetPolicy>,
}

impl JobService {
    pub(crate) fn new(
        store: Store,
        registry: Registry,
        supervisor: ActorRef<JobSupervisorMessage>,
        callbacks: Option<NetPolicy>,
    ) -> Self {
        JobService {
            store,
            registry,
            supervisor,
            callbacks,
        }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Validates and writes a job, then schedules it.
    pub fn create(
        &self,
        req: CreateJob,
        idem: Option<IdempotencyScope>,
    ) -> Result<CreateOutcome, JobError> {
        let job = self.prepare(req, idem.as_ref().map(|i| i.key.clone()))?;
        let outcome = self.store.create_job(job, idem)?;
        if let CreateOutcome::Created(job) = &outcome {
            self.enqueue(job)?;
        }
        Ok(outcome)
    }

    /// Validates a request and builds the job it asks for, without writing it: for callers that
    /// write the job together with other changes ([`store::WriteTx::insert_job`]) and then call
    /// [`JobService::enqueue`].
    pub fn prepare(
        &self,
        req: CreateJob,
        idempotency_key: Option<String>,
    ) -> Result<Job, JobError> {
        let (job_type, _) = self.registry.validate_input(&req.job_type, &req.input)?;
        let max_attempts = req.max_attempts.unwrap_or(job_type.defaults.max_attempts);
        if !(1..=MAX_ATTEMPTS).contains(&max_attempts) {
            return Err(JobError::invalid(
                "max_attempts",
                format!("must be between 1 and {MAX_ATTEMPTS}"),
            ));
        }
        let timeout_ms = req.timeout_ms.unwrap_or(job_type.defaults.timeout_ms);
        if !(1..=MAX_TIMEOUT_MS).contains(&timeout_ms) {
            return Err(JobError::invalid(
                "timeout_ms",
                format!("must be between 1 and {MAX_TIMEOUT_MS} (24 h)"),
            ));
        }
        if let Some(url) = &req.callback_url {
            let Some(policy) = &self.callbacks else {
                return Err(JobError::invalid(
                    "callback_url",
                    "callbacks are disabled: no callback host is allowed; set RAUSKU_CALLBACK_ALLOWLIST",
                ));
            };
            policy
                .check_url(url)
                .map_err(|e| JobError::invalid("callback_url", e.to_string()))?;
        }
        Ok(Job::from_new(
            NewJob {
                job_type: job_type.name,
                input: req.input,
                max_attempts,
                timeout_ms,
                run_at: req.run_at,
                session_id: req.session_id,
                run_id: req.run_id,
                idempotency_key,
                callback_url: req.callback_url,
            },
            Timestamp::now(),
        ))
    }

    /// Tells the supervisor about a job written by the caller.
    pub fn enqueue(&self, job: &Job) -> Result<(), JobError> {
        self.supervisor
            .send_message(JobSupervisorMessage::Enqueued {
                id: job.id,
                job_type: job.job_type.clone(),
                run_at: job.run_at,
            })
            .map_err(|_| JobError::Unavailable)
    }

    pub fn get(&self, id: JobId) -> Result<Job, JobError> {
        self.store.job(id)?.ok_or(JobError::NotFound(id))
    }

    pub fn list(&self, filter: &JobFilter) -> Result<Vec<Job>, JobError> {
        Ok(self.store.list_jobs(filter)?)
    }

    /// Cancels a job; a running attempt is stopped.
    pub async fn cancel(&self, id: JobId) -> Result<Job, JobError> {
        self.call(|reply| JobSupervisorMessage::Cancel { id, reply })
            .await?
    }

    /// Re-queues a failed or cancelled job with fresh attempts.
    pub async fn retry(&self, id: JobId) -> Result<Job, JobError> {
        self.call(|reply| JobSupervisorMessage::Retry { id, reply })
            .await?
    }

    pub async fn snapshot(&self) -> Result<SupervisorSnapshot, JobError> {
        self.call(|reply| JobSupervisorMessage::Snapshot { reply })
            .await
    }

    async fn call<T: Send + 'static>(
        &self,
        msg: impl FnOnce(RpcReplyPort<T>) -> JobSupervisorMessage,
    ) -> Result<T, JobError> {
        match self
            .supervisor
            .call(msg, Some(Duration::from_secs(30)))
            .await
        {
            Ok(ractor::rpc::CallResult::Success(v)) => Ok(v),
            _ => Err(JobError::Unavailable),
        }
    }
}
