//! `JobSupervisor`: owns the durable queue and the running attempts.
//!
//! It picks due jobs in `run_at` order, enforces the global and per-type concurrency limits,
//! leases each job to a linked [`JobRunner`] (incrementing its attempt and recording a lease
//! in the same store write), and turns attempt outcomes into state changes: success, a retry
//! scheduled with backoff (a delayed message, never a sleep), or `failed` (dead-lettered).
//! A report from any attempt but the job's current one is stale and ignored, so a job can
//! never complete twice. On start-up it re-queues jobs whose lease belongs to an earlier
//! process (a crash), so every accepted job reaches a terminal state.
//!
//! Store writes of leases and of completions are batched: a burst of finished attempts is
//! recorded in one transaction.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use serde::Serialize;
use skills::{AttemptOutcome, JobContext, Registry};
use store::{Job, JobId, JobState, Lease, LogLevel, NewEvent, Store, StoreError, Timestamp};
use tracing::{debug, info, warn};

use crate::backoff::Backoff;
use crate::callbacks::CallbackMessage;
use crate::job_log::StoreJobLog;
use crate::job_runner::{AttemptResult, JobRunner, JobRunnerArgs};
use crate::jobs::JobError;

/// The job runtime's limits and timing.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Attempts running at once, over all types.
    pub max_concurrency: u32,
    /// Spacing of automatic retries.
    pub backoff: Backoff,
    /// Identifies this process in leases.
    pub boot_id: String,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            max_concurrency: 64,
            backoff: Backoff::default(),
            boot_id: store::EventId::new().to_string(),
        }
    }
}

pub struct JobSupervisor;

pub struct JobSupervisorArgs {
    pub store: Store,
    pub registry: Registry,
    pub config: RuntimeConfig,
    pub callbacks: Option<ActorRef<CallbackMessage>>,
}

pub enum JobSupervisorMessage {
    /// A job was written as `queued`: schedule it.
    Enqueued {
        id: JobId,
        job_type: String,
        run_at: Timestamp,
    },
    /// Cancel a job; a running attempt is stopped.
    Cancel {
        id: JobId,
        reply: RpcReplyPort<Result<Job, JobError>>,
    },
    /// Re-queue a `failed` or `cancelled` job with fresh attempts.
    Retry {
        id: JobId,
        reply: RpcReplyPort<Result<Job, JobError>>,
    },
    /// A runner's attempt ended.
    AttemptFinished {
        id: JobId,
        attempt: u32,
        /// The lease the attempt ran under: leases are numbered from 1 in the order this
        /// supervisor hands them out. Attempt numbers repeat (a retry by hand starts again at
        /// 1); lease numbers do not, so a late report of a stopped attempt is told apart from
        /// the report of the attempt that holds the lease now.
        lease: u64,
        result: AttemptResult,
        duration: Duration,
    },
    /// Record the attempt outcomes buffered so far in one write.
    FlushCompletions,
    /// Lease what is due (scheduled once for a burst of `Enqueued`).
    Dispatch,
    /// A due time was reached.
    Tick,
    /// Stop leasing; reply once running attempts finished or `grace` passed (then they are
    /// stopped and re-queued for the next start).
    Drain {
        grace: Duration,
        reply: RpcReplyPort<()>,
    },
    /// The grace period of a drain ran out.
    DrainDeadline,
    Snapshot {
        reply: RpcReplyPort<SupervisorSnapshot>,
    },
}

/// A serialisable view of the supervisor, for `/v1/runtime` and tests.
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
pub struct SupervisorSnapshot {
    pub queued: usize,
    pub running: usize,
    pub running_by_type: HashMap<String, u32>,
    pub max_concurrency: u32,
    pub draining: bool,
    pub stats: SupervisorStats,
}

/// What happened since start-up.
#[derive(Debug, Clone, Copy, Default, Serialize, utoipa::ToSchema)]
pub struct SupervisorStats {
    pub leased: u64,
    pub succeeded: u64,
    pub retried: u64,
    pub failed: u64,
    pub cancelled: u64,
    pub timeouts: u64,
    pub panics: u64,
    /// Runner actors that died instead of reporting (counted as failed attempts).
    pub runner_failures: u64,
    /// Reports from attempts that no longer held the lease.
    pub stale_reports: u64,
    /// Jobs found `running` at start-up and re-queued.
    pub recovered: u64,
}

/// One running attempt.
struct Running {
    attempt: u32,
    /// Which lease this is (see `AttemptFinished::lease`).
    lease: u64,
    job_type: String,
    /// `None` if the runner could not be started (the attempt is then failed at once).
    runner: Option<ActorRef<crate::job_runner::JobRunnerMessage>>,
}

pub struct JobSupervisorState {
    /// Where jobs live.
    store: Store,
    /// Job types and their handlers.
    registry: Registry,
    /// Limits and backoff.
    config: RuntimeConfig,
    /// Told about every job that ends with a `callback_url`.
    callbacks: Option<ActorRef<CallbackMessage>>,
    /// Jobs waiting to run, per type, ordered by (run_at, id).
    queues: HashMap<String, BTreeSet<(i64, JobId)>>,
    /// The queue entry of each waiting job, to find it on cancel.
    queued: HashMap<JobId, (String, i64)>,
    /// Attempts in flight.
    running: HashMap<JobId, Running>,
    /// The job of each runner actor, to match supervision events.
    runners: HashMap<ActorId, JobId>,
    /// Running attempts per type, for per-type concurrency.
    running_by_type: HashMap<String, u32>,
    /// Finished attempts not yet recorded.
    completions: Vec<(JobId, u32, AttemptResult, Duration)>,
    /// Whether a `FlushCompletions` is already in the mailbox.
    flush_scheduled: bool,
    /// Whether a `Dispatch` is already in the mailbox.
    dispatch_scheduled: bool,
    /// The number of the last lease handed out.
    last_lease: u64,
    /// The earliest `Tick` already scheduled.
    next_tick: Option<i64>,
    /// Set by `Drain`: no new leases, and who to tell when idle.
    draining: Option<RpcReplyPort<()>>,
    is_draining: bool,
    stats: SupervisorStats,
}

/// Wait before trying again to record outcomes after a failed store write.
const RECORD_RETRY: Duration = Duration::from_secs(1);

/// Most jobs leased in one store write.
const LEASE_BATCH: usize = 256;

impl Actor for JobSupervisor {
    type Msg = JobSupervisorMessage;
    type State = JobSupervisorState;
    type Arguments = JobSupervisorArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: JobSupervisorArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        let mut state = JobSupervisorState {
            store: args.store,
            registry: args.registry,
            config: args.config,
            callbacks: args.callbacks,
            queues: HashMap::new(),
            queued: HashMap::new(),
            running: HashMap::new(),
            runners: HashMap::new(),
            running_by_type: HashMap::new(),
            completions: Vec::new(),
            flush_scheduled: false,
            dispatch_scheduled: false,
            last_lease: 0,
            next_tick: None,
            draining: None,
            is_draining: false,
            stats: SupervisorStats::default(),
        };
        state.recover()?;
        myself.send_message(JobSupervisorMessage::Tick)?;
        Ok(state)
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            JobSupervisorMessage::Enqueued {
                id,
                job_type,
                run_at,
            } => {
                state.push_queued(id, job_type, run_at.as_millis());
                // One dispatch for every job enqueued before it is handled: leased in one write.
                if !state.dispatch_scheduled {
                    state.dispatch_scheduled = true;
                    myself.send_message(JobSupervisorMessage::Dispatch)?;
                }
            }
            JobSupervisorMessage::Dispatch => {
                state.dispatch_scheduled = false;
                state.dispatch(&myself).await;
            }
            JobSupervisorMessage::Cancel { id, reply } => {
                let result = state.cancel(id);
                let _ = reply.send(result);
                // A cancelled attempt frees a slot.
                state.dispatch(&myself).await;
            }
            JobSupervisorMessage::Retry { id, reply } => {
                let result = state.retry_by_hand(id);
                let _ = reply.send(result);
                state.dispatch(&myself).await;
            }
            JobSupervisorMessage::AttemptFinished {
                id,
                attempt,
                lease,
                result,
                duration,
            } => {
                let holds_lease = state
                    .running
                    .get(&id)
                    .is_some_and(|r| r.attempt == attempt && r.lease == lease);
                if !holds_lease {
                    debug!(%id, attempt, lease, "ignored report of an attempt that does not hold the lease");
                    state.stats.stale_reports += 1;
                    return Ok(());
                }
                state.completions.push((id, attempt, result, duration));
                if !state.flush_scheduled {
                    state.flush_scheduled = true;
                    myself.send_message(JobSupervisorMessage::FlushCompletions)?;
                }
            }
            JobSupervisorMessage::FlushCompletions => {
                state.flush_scheduled = false;
                state.record_completions(&myself);
                state.maybe_finish_drain();
                state.dispatch(&myself).await;
            }
            JobSupervisorMessage::Tick => {
                state.next_tick = None;
                state.dispatch(&myself).await;
            }
            JobSupervisorMessage::Drain { grace, reply } => {
                state.is_draining = true;
                state.draining = Some(reply);
                myself.send_after(grace, || JobSupervisorMessage::DrainDeadline);
                state.maybe_finish_drain();
            }
            JobSupervisorMessage::DrainDeadline => state.interrupt_running(),
            JobSupervisorMessage::Snapshot { reply } => {
                let _ = reply.send(state.snapshot());
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        // Never stop because a runner stopped (ractor's default would).
        match event {
            SupervisionEvent::ActorTerminated(cell, _, _) => {
                state.runners.remove(&cell.get_id());
            }
            SupervisionEvent::ActorFailed(cell, err) => {
                if let Some(id) = state.runners.remove(&cell.get_id())
                    && let Some(run) = state.running.get(&id)
                {
                    warn!(%id, attempt = run.attempt, error = %err, "job runner failed");
                    state.stats.runner_failures += 1;
                    let attempt = run.attempt;
                    state.completions.push((
                        id,
                        attempt,
                        AttemptResult::Panicked(format!("runner failed: {err}")),
                        Duration::ZERO,
                    ));
                    if !state.flush_scheduled {
                        state.flush_scheduled = true;
                        myself.send_message(JobSupervisorMessage::FlushCompletions)?;
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }
}

impl JobSupervisorState {
    /// Loads waiting jobs and re-queues the ones a previous process left running.
    fn recover(&mut self) -> Result<(), StoreError> {
        let active = self.store.active_jobs()?;
        let boot_id = self.config.boot_id.clone();
        let mut orphans = Vec::new();
        for job in active {
            match job.state {
                JobState::Queued | JobState::Retrying => {
                    self.push_queued(job.id, job.job_type.clone(), job.run_at.as_millis());
                }
                JobState::Running if job.lease.as_ref().is_none_or(|l| l.owner != boot_id) => {
                    orphans.push(job)
                }
                _ => {}
            }
        }
        if orphans.is_empty() {
            return Ok(());
        }
        let now = Timestamp::now();
        let recovered = self.store.write(|tx| {
            let mut out = Vec::new();
            for mut job in orphans {
                let interrupted = job.attempt;
                // The interrupted attempt never finished: it does not count against the job.
                job.attempt = job.attempt.saturating_sub(1);
                job.state = JobState::Queued;
                job.lease = None;
                job.run_at = now;
                job.updated_at = now;
                let mut data = store::store::job_event_data(&job);
                data["interrupted_attempt"] = interrupted.into();
                tx.append(NewEvent::new(job.stream(), "job.recovered", data));
                tx.append(log_event(
                    &job,
                    LogLevel::Warn,
                    format!(
                        "attempt {interrupted} was interrupted by a restart; the job runs again"
                    ),
                ));
                tx.put_job(job.clone())?;
                out.push(job);
            }
            Ok::<_, StoreError>(out)
        })?;
        for job in recovered {
            info!(id = %job.id, "re-queued job left running by a previous process");
            self.stats.recovered += 1;
            self.push_queued(job.id, job.job_type, job.run_at.as_millis());
        }
        Ok(())
    }

    fn push_queued(&mut self, id: JobId, job_type: String, run_at: i64) {
        if self.running.contains_key(&id) || self.queued.contains_key(&id) {
            return;
        }
        self.queues
            .entry(job_type.clone())
            .or_default()
            .insert((run_at, id));
        self.queued.insert(id, (job_type, run_at));
    }

    fn remove_queued(&mut self, id: JobId) -> bool {
        let Some((job_type, run_at)) = self.queued.remove(&id) else {
            return false;
        };
        if let Some(q) = self.queues.get_mut(&job_type) {
            q.remove(&(run_at, id));
        }
        true
    }

    fn type_limit(&self, job_type: &str) -> u32 {
        self.registry
            .get(job_type)
            .and_then(|t| t.defaults.concurrency)
            .unwrap_or(u32::MAX)
    }

    /// Picks due jobs within the limits, leases them in one write, and starts their runners.
    async fn dispatch(&mut self, myself: &ActorRef<JobSupervisorMessage>) {
        if self.is_draining {
            return;
        }
        let now = Timestamp::now().as_millis();
        let mut free = (self.config.max_concurrency as usize).saturating_sub(self.running.len());
        let mut picked = Vec::new();
        let mut earliest_future: Option<i64> = None;
        let types: Vec<String> = self.queues.keys().cloned().collect();
        let mut room: HashMap<String, u32> = types
            .iter()
            .map(|t| {
                let used = self.running_by_type.get(t).copied().unwrap_or(0);
                (t.clone(), self.type_limit(t).saturating_sub(used))
            })
            .collect();
        while free > 0 && picked.len() < LEASE_BATCH {
            // The earliest due head among types with room.
            let mut best: Option<(i64, JobId, &String)> = None;
            for t in &types {
                if room.get(t).copied().unwrap_or(0) == 0 {
                    continue;
                }
                let Some(&(run_at, id)) = self.queues.get(t).and_then(|q| q.first()) else {
                    continue;
                };
                if run_at > now {
                    earliest_future = Some(earliest_future.map_or(run_at, |e| e.min(run_at)));
                    continue;
                }
                if best.is_none_or(|(b, bid, _)| (run_at, id) < (b, bid)) {
                    best = Some((run_at, id, t));
                }
            }
            let Some((run_at, id, t)) = best else { break };
            let t = t.clone();
            if let Some(q) = self.queues.get_mut(&t) {
                q.remove(&(run_at, id));
            }
            self.queued.remove(&id);
            if let Some(r) = room.get_mut(&t) {
                *r -= 1;
            }
            free -= 1;
            picked.push(id);
        }
        if !picked.is_empty() {
            let leased = match self.lease(&picked) {
                Ok(jobs) => jobs,
                Err(e) => {
                    warn!(error = %e, "leasing jobs failed; retrying shortly");
                    let now = Timestamp::now().as_millis();
                    for id in picked {
                        if let Ok(Some(job)) = self.store.job(id) {
                            self.push_queued(id, job.job_type, now + 200);
                        }
                    }
                    self.schedule_tick(myself, Timestamp::now().as_millis() + 200);
                    return;
                }
            };
            for job in leased {
                self.start_runner(myself, job).await;
            }
            if !self.queued.is_empty() && self.running.len() < self.config.max_concurrency as usize
            {
                // More may be due than one batch held.
                let _ = myself.send_message(JobSupervisorMessage::Tick);
            }
        }
        if let Some(at) = earliest_future {
            self.schedule_tick(myself, at);
        }
    }

    fn schedule_tick(&mut self, myself: &ActorRef<JobSupervisorMessage>, at: i64) {
        if self.next_tick.is_some_and(|t| t <= at) {
            return;
        }
        self.next_tick = Some(at);
        let delay = Duration::from_millis((at - Timestamp::now().as_millis()).max(0) as u64);
        myself.send_after(delay, || JobSupervisorMessage::Tick);
    }

    /// Marks the jobs running with a new attempt and lease, in one write.
    fn lease(&mut self, ids: &[JobId]) -> Result<Vec<Job>, StoreError> {
        let owner = self.config.boot_id.clone();
        self.store.write(|tx| {
            let now = Timestamp::now();
            let mut out = Vec::with_capacity(ids.len());
            for &id in ids {
                let Some(mut job) = tx.job(id)? else { continue };
                if !matches!(job.state, JobState::Queued | JobState::Retrying) {
                    continue;
                }
                job.state = JobState::Running;
                job.attempt += 1;
                job.lease = Some(Lease {
                    attempt: job.attempt,
                    owner: owner.clone(),
                    taken_at: now,
                });
                job.started_at.get_or_insert(now);
                job.updated_at = now;
                tx.append(job_event(&job, "job.started"));
                metrics::histogram!("rausku_job_queue_lag_seconds")
                    .record(job.run_at.until(now).as_secs_f64());
                tx.put_job(job.clone())?;
                out.push(job);
            }
            Ok(out)
        })
    }

    async fn start_runner(&mut self, myself: &ActorRef<JobSupervisorMessage>, job: Job) {
        self.last_lease += 1;
        let lease = self.last_lease;
        let result = match self.registry.handler(&job.job_type) {
            Some(handler) => {
                let config = self
                    .registry
                    .get(&job.job_type)
                    .map(|t| t.config)
                    .unwrap_or_default();
                let ctx = JobContext {
                    job_id: job.id,
                    job_type: job.job_type.clone(),
                    attempt: job.attempt,
                    max_attempts: job.max_attempts,
                    timeout_ms: job.timeout_ms,
                    config,
                    log: Arc::new(StoreJobLog::new(self.store.clone(), job.id)),
                };
                let args = JobRunnerArgs {
                    job_id: job.id,
                    attempt: job.attempt,
                    lease,
                    input: job.input.clone(),
                    handler,
                    ctx,
                    timeout: Duration::from_millis(job.timeout_ms),
                    supervisor: myself.clone(),
                };
                Actor::spawn_linked(None, JobRunner, args, myself.get_cell())
                    .await
                    .map(|(r, _)| r)
                    .map_err(|e| format!("could not start a runner: {e}"))
            }
            None => Err(format!(
                "job type `{}` has no handler any more",
                job.job_type
            )),
        };
        self.stats.leased += 1;
        *self
            .running_by_type
            .entry(job.job_type.clone())
            .or_default() += 1;
        match result {
            Ok(runner) => {
                debug!(id = %job.id, attempt = job.attempt, "attempt started");
                self.runners.insert(runner.get_id(), job.id);
                self.running.insert(
                    job.id,
                    Running {
                        attempt: job.attempt,
                        lease,
                        job_type: job.job_type,
                        runner: Some(runner),
                    },
                );
            }
            Err(error) => {
                // Record it as a failed attempt through the normal path.
                self.running.insert(
                    job.id,
                    Running {
                        attempt: job.attempt,
                        lease,
                        job_type: job.job_type,
                        runner: None,
                    },
                );
                let _ = myself.send_message(JobSupervisorMessage::AttemptFinished {
                    id: job.id,
                    attempt: job.attempt,
                    lease,
                    result: AttemptResult::Handler(AttemptOutcome::fatal(error)),
                    duration: Duration::ZERO,
                });
            }
        }
    }

    /// Stops a runner whose attempt no longer counts; its handler future is dropped.
    fn stop_runner(&mut self, run: Running, why: &str) {
        if let Some(runner) = run.runner {
            self.runners.remove(&runner.get_id());
            runner.stop(Some(why.to_string()));
        }
    }

    /// Ends a job's lease. Reports of it still buffered go with it: they no longer count.
    fn release(&mut self, id: JobId) -> Option<Running> {
        let run = self.running.remove(&id)?;
        if let Some(n) = self.running_by_type.get_mut(&run.job_type) {
            *n = n.saturating_sub(1);
        }
        let buffered = self.completions.len();
        self.completions.retain(|(job, ..)| *job != id);
        self.stats.stale_reports += (buffered - self.completions.len()) as u64;
        Some(run)
    }

    /// Records the buffered outcomes in one write.
    fn record_completions(&mut self, myself: &ActorRef<JobSupervisorMessage>) {
        let completions = std::mem::take(&mut self.completions);
        if completions.is_empty() {
            return;
        }
        let backoff = self.config.backoff;
        let written = self.store.write(|tx| {
            let now = Timestamp::now();
            let mut changed = Vec::new();
            for (id, attempt, result, duration) in &completions {
                let Some(mut job) = tx.job(*id)? else { continue };
                if job.state != JobState::Running || job.attempt != *attempt {
                    changed.push(Change::Stale(*id, *attempt));
                    continue;
                }
                metrics::histogram!("rausku_job_attempt_duration_seconds", "type" => job.job_type.clone())
                    .record(duration.as_secs_f64());
                job.lease = None;
                job.updated_at = now;
                let (error, retryable, kind) = match result {
                    AttemptResult::Handler(AttemptOutcome::Succeeded(output)) => {
                        job.state = JobState::Succeeded;
                        job.output = Some(output.clone());
                        job.error = None;
                        job.finished_at = Some(now);
                        tx.append(job_event(&job, "job.succeeded"));
                        tx.put_job(job.clone())?;
                        changed.push(Change::Done(job, Outcome::Succeeded));
                        continue;
                    }
                    AttemptResult::Handler(AttemptOutcome::Failed { error, retryable }) => {
                        (error.clone(), *retryable, Outcome::Failed)
                    }
                    AttemptResult::TimedOut => (
                        format!("attempt {attempt} timed out after {} ms and was stopped", job.timeout_ms),
                        true,
                        Outcome::TimedOut,
                    ),
                    AttemptResult::Panicked(msg) => (format!("handler panicked: {msg}"), true, Outcome::Panicked),
                };
                job.error = Some(error.clone());
                if retryable && job.attempt < job.max_attempts {
                    let delay = backoff.next_delay(job.attempt);
                    job.state = JobState::Retrying;
                    job.run_at = now.plus(delay);
                    tx.append(log_event(&job, LogLevel::Warn, format!(
                        "attempt {} of {} failed: {error}; retrying in {} ms",
                        job.attempt, job.max_attempts, delay.as_millis()
                    )));
                    tx.append(job_event(&job, "job.retrying"));
                    tx.put_job(job.clone())?;
                    changed.push(Change::Retrying(job, kind));
                } else {
                    job.state = JobState::Failed;
                    job.finished_at = Some(now);
                    let why = if retryable { "no attempts left" } else { "not retryable" };
                    tx.append(log_event(&job, LogLevel::Error, format!(
                        "attempt {} of {} failed: {error}; {why}, the job is dead-lettered",
                        job.attempt, job.max_attempts
                    )));
                    tx.append(job_event(&job, "job.failed"));
                    tx.put_job(job.clone())?;
                    changed.push(Change::Done(job, kind));
                }
            }
            let mut callbacks = Vec::new();
            for change in &changed {
                if let Change::Done(job, _) = change
                    && job.callback_url.is_some()
                {
                    crate::callbacks::stage_delivery(tx, job);
                    callbacks.push(job.id);
                }
            }
            Ok::<_, StoreError>((changed, callbacks))
        });
        let (changed, callbacks) = match written {
            Ok(w) => w,
            Err(e) => {
                // Nothing was written: keep the outcomes and try again shortly. The jobs stay
                // `running` (and hold their slots) until their outcome is on record.
                warn!(error = %e, "recording attempt outcomes failed; retrying in 1 s");
                self.completions.splice(0..0, completions);
                if !self.flush_scheduled {
                    self.flush_scheduled = true;
                    myself.send_after(RECORD_RETRY, || JobSupervisorMessage::FlushCompletions);
                }
                return;
            }
        };
        for change in changed {
            match change {
                Change::Stale(id, attempt) => {
                    debug!(%id, attempt, "ignored report of a stale attempt");
                    self.stats.stale_reports += 1;
                    if self.running.get(&id).is_some_and(|r| r.attempt == attempt) {
                        self.release(id);
                    }
                }
                Change::Retrying(job, kind) => {
                    self.release(job.id);
                    self.count(kind);
                    self.stats.retried += 1;
                    metrics::counter!("rausku_job_attempts_total", "outcome" => "retrying")
                        .increment(1);
                    self.push_queued(job.id, job.job_type, job.run_at.as_millis());
                }
                Change::Done(job, kind) => {
                    self.release(job.id);
                    self.count(kind);
                    match job.state {
                        JobState::Succeeded => self.stats.succeeded += 1,
                        _ => self.stats.failed += 1,
                    }
                    metrics::counter!("rausku_job_attempts_total", "outcome" => job.state.as_str())
                        .increment(1);
                }
            }
        }
        if let Some(cb) = &self.callbacks {
            for id in callbacks {
                let _ = cb.send_message(CallbackMessage::Deliver(id));
            }
        }
    }

    fn count(&mut self, outcome: Outcome) {
        match outcome {
            Outcome::TimedOut => self.stats.timeouts += 1,
            Outcome::Panicked => self.stats.panics += 1,
            Outcome::Succeeded | Outcome::Failed => {}
        }
    }

    fn cancel(&mut self, id: JobId) -> Result<Job, JobError> {
        let job = self.store.write(|tx| {
            let Some(mut job) = tx.job(id)? else {
                return Err(JobError::NotFound(id));
            };
            if job.state.is_terminal() {
                return Err(JobError::InvalidState {
                    id,
                    state: job.state,
                    action: "cancel",
                    hint: "only queued, running or retrying jobs can be cancelled",
                });
            }
            let now = Timestamp::now();
            let was_running = job.state == JobState::Running;
            job.state = JobState::Cancelled;
            job.lease = None;
            job.finished_at = Some(now);
            job.updated_at = now;
            if was_running {
                tx.append(log_event(
                    &job,
                    LogLevel::Warn,
                    format!("attempt {} was stopped by cancel", job.attempt),
                ));
            }
            tx.append(job_event(&job, "job.cancelled"));
            tx.put_job(job.clone())?;
            if job.callback_url.is_some() {
                crate::callbacks::stage_delivery(tx, &job);
            }
            Ok(job)
        })?;
        self.remove_queued(id);
        if let Some(run) = self.release(id) {
            self.stop_runner(run, "cancelled");
        }
        self.stats.cancelled += 1;
        if job.callback_url.is_some()
            && let Some(cb) = &self.callbacks
        {
            let _ = cb.send_message(CallbackMessage::Deliver(id));
        }
        Ok(job)
    }

    fn retry_by_hand(&mut self, id: JobId) -> Result<Job, JobError> {
        let job = self.store.write(|tx| {
            let Some(mut job) = tx.job(id)? else {
                return Err(JobError::NotFound(id));
            };
            if !matches!(job.state, JobState::Failed | JobState::Cancelled) {
                return Err(JobError::InvalidState {
                    id,
                    state: job.state,
                    action: "retry",
                    hint: "only failed or cancelled jobs can be retried",
                });
            }
            let now = Timestamp::now();
            job.state = JobState::Queued;
            job.attempt = 0;
            job.run_at = now;
            job.updated_at = now;
            job.finished_at = None;
            tx.append(log_event(
                &job,
                LogLevel::Info,
                "re-queued by hand with fresh attempts".into(),
            ));
            tx.append(job_event(&job, "job.queued"));
            tx.put_job(job.clone())?;
            Ok(job)
        })?;
        self.push_queued(job.id, job.job_type.clone(), job.run_at.as_millis());
        Ok(job)
    }

    /// At the end of a drain's grace period: stop what still runs and put it back in the queue.
    fn interrupt_running(&mut self) {
        if self.draining.is_none() || self.running.is_empty() {
            self.maybe_finish_drain();
            return;
        }
        let ids: Vec<JobId> = self.running.keys().copied().collect();
        let requeued = self.store.write(|tx| {
            let now = Timestamp::now();
            for &id in &ids {
                let Some(mut job) = tx.job(id)? else { continue };
                if job.state != JobState::Running {
                    continue;
                }
                let interrupted = job.attempt;
                job.attempt = job.attempt.saturating_sub(1);
                job.state = JobState::Queued;
                job.lease = None;
                job.updated_at = now;
                tx.append(log_event(&job, LogLevel::Warn, format!(
                    "attempt {interrupted} was stopped by shutdown; the job runs again at the next start"
                )));
                tx.append(job_event(&job, "job.interrupted"));
                tx.put_job(job)?;
            }
            Ok::<_, StoreError>(())
        });
        if let Err(e) = requeued {
            warn!(error = %e, "could not re-queue interrupted attempts; they will be recovered at start-up");
        }
        for id in ids {
            if let Some(run) = self.release(id) {
                self.stop_runner(run, "shutdown");
            }
        }
        self.maybe_finish_drain();
    }

    fn maybe_finish_drain(&mut self) {
        if self.running.is_empty()
            && self.completions.is_empty()
            && let Some(reply) = self.draining.take()
        {
            let _ = reply.send(());
        }
    }

    fn snapshot(&self) -> SupervisorSnapshot {
        SupervisorSnapshot {
            queued: self.queued.len(),
            running: self.running.len(),
            running_by_type: self
                .running_by_type
                .iter()
                .filter(|(_, n)| **n > 0)
                .map(|(k, v)| (k.clone(), *v))
                .collect(),
            max_concurrency: self.config.max_concurrency,
            draining: self.is_draining,
            stats: self.stats,
        }
    }
}

/// What a recorded outcome did to a job.
enum Change {
    Stale(JobId, u32),
    Retrying(Job, Outcome),
    Done(Job, Outcome),
}

#[derive(Clone, Copy)]
enum Outcome {
    Succeeded,
    Failed,
    TimedOut,
    Panicked,
}

/// A `job.*` state event: its data is the job as it is after the change.
fn job_event(job: &Job, kind: &str) -> NewEvent {
    NewEvent::new(job.stream(), kind, store::store::job_event_data(job))
}

/// A `job.log` event.
pub(crate) fn log_event(job: &Job, level: LogLevel, message: String) -> NewEvent {
    NewEvent::new(
        job.stream(),
        "job.log",
        serde_json::json!({ "level": level, "message": message }),
    )
}
