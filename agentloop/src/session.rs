//! The `Session` actor: one per session, owning its agent loop.
//!
//! A run starts from a queued message (a [`Trigger`]) and loops: ask the planner (a spawned
//! task that reports back as [`SessionMessage::Planned`]), check the skill's policy, park for an
//! approval if the policy wants one, invoke the skill as a job linked to the session and run,
//! wait for the job to finish ([`SessionMessage::JobFinished`], forwarded by the router), record
//! the observation, and ask again. Every step is an event on the session's stream, written
//! before the next step starts; the job of a step is written in the same store write as its
//! `skill.invoked` event.
//!
//! That stream is the session's truth: [`rehydrate`] rebuilds the queue and the run in progress
//! from it (after an idle stop, a failure, or a crash) and the session continues where it was:
//! an observed step is never run again; a step whose job was in flight waits for that job (which
//! the job runtime recovers); a decided approval is acted on; a pending one keeps waiting.
//!
//! Limits per run: `max_steps` skill invocations, a run timeout, and the repeat guard (a step
//! identical to the previous one, same skill and input, fails the run instead of looping).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use serde::Serialize;
use serde_json::{Value, json};
use skills::Registry;
use store::{
    ApprovalId, ApprovalRequest, ApprovalState, DecideError, Event, Job, JobId, JobState, NewEvent,
    PolicyDecision, RunId, Session as SessionRecord, SessionState, Store, StoreError, StreamFilter,
    Timestamp, WriteTx,
};
use tracing::{debug, info, warn};

use crate::jobs::{CreateJob, JobService};
use crate::planner::{
    Decision, Observation, PlanError, PlanRequest, Planner, RunSummary, SessionStatus, SkillInfo,
    StepStatus, Trigger,
};

/// Limits and timeouts of the agent loop.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// Skill invocations per run before it fails.
    pub max_steps: u32,
    /// A run still going after this long fails (its running job is cancelled).
    pub run_timeout: Duration,
    /// An idle session with nothing queued stops after this long (it is rehydrated on the next
    /// message).
    pub idle_timeout: Duration,
    /// An unanswered approval expires after this long and counts as denied.
    pub approval_timeout: Duration,
    /// Restarts of a failed session the router allows within `restart_window`.
    pub max_restarts: u32,
    pub restart_window: Duration,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            max_steps: 16,
            run_timeout: Duration::from_secs(30 * 60),
            idle_timeout: Duration::from_secs(5 * 60),
            approval_timeout: Duration::from_secs(30 * 60),
            max_restarts: 3,
            restart_window: Duration::from_secs(60),
        }
    }
}

/// What every session shares.
pub struct SessionDeps {
    pub store: Store,
    pub jobs: JobService,
    pub registry: Registry,
    pub planner: Arc<dyn Planner>,
    pub config: SessionConfig,
    /// Turns replies into jobs for channels whose replies leave the process (GitHub comments).
    pub replies: Option<Arc<dyn ReplyRoute>>,
}

/// How a channel delivers a session's replies as durable jobs. A reply of a session whose
/// channel has a route is written together with the job that delivers it.
pub trait ReplyRoute: Send + Sync + 'static {
    /// The job that delivers `text` for the session `session_key`, if this route handles it.
    /// `reply_id` is stable across crashes and retries (`<run id>-<n>`): a job that checks it
    /// posts each reply once.
    fn job_for(&self, session_key: &str, reply_id: &str, text: &str) -> Option<CreateJob>;
}

/// The actor. See the module docs.
pub struct Session;

pub struct SessionArgs {
    pub deps: Arc<SessionDeps>,
    /// The session's record as the router last read it.
    pub record: SessionRecord,
    /// The message that made the router spawn the session, when it is the only pending work
    /// (otherwise the stream is replayed and includes it).
    pub arrived: Option<Trigger>,
}

pub enum SessionMessage {
    /// A message was appended to the session's stream.
    MessageArrived(Trigger),
    /// A job finished (forwarded by the router from the event bus).
    JobFinished(Box<Job>),
    /// An approval of this session was decided (through the API or the console).
    ApprovalDecided(ApprovalId),
    /// Aborts the current run; replies whether there was one.
    Interrupt {
        by: String,
        reply: RpcReplyPort<bool>,
    },
    /// The planner answered (sent by the planning task).
    Planned {
        run_id: RunId,
        result: Result<Decision, PlanError>,
    },
    ApprovalTimeout(ApprovalId),
    RunTimeout(RunId),
    IdleTimeout {
        generation: u64,
    },
    Snapshot {
        reply: RpcReplyPort<Option<SessionSnapshot>>,
    },
}

/// A serialisable view of a live session, for tests and `/v1/runtime`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct SessionSnapshot {
    pub key: String,
    pub state: SessionState,
    pub queued: usize,
    pub run: Option<RunSnapshot>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RunSnapshot {
    pub run_id: RunId,
    pub steps: u32,
    /// `planning`, `job`, or `approval`.
    pub waiting: &'static str,
    pub job_id: Option<JobId>,
    pub approval_id: Option<ApprovalId>,
}

pub struct SessionActorState {
    deps: Arc<SessionDeps>,
    /// The summary record; its counters are re-read inside every write (the router updates
    /// them too), the rest is this actor's.
    record: SessionRecord,
    /// Messages waiting for a run, oldest first.
    queue: VecDeque<Trigger>,
    /// The run in progress.
    run: Option<Run>,
    /// The last few finished runs, for `/status`.
    recent: VecDeque<RunSummary>,
    /// Bumped whenever the session stops being idle: a stale idle timer is ignored.
    idle_generation: u64,
}

/// The run in progress.
struct Run {
    id: RunId,
    trigger: Trigger,
    started_at: Timestamp,
    history: Vec<Observation>,
    replies: Vec<String>,
    /// Steps invoked (or attempted) so far.
    steps: u32,
    waiting: Waiting,
}

/// What the run is waiting for.
enum Waiting {
    /// The planner's next decision.
    Planner,
    /// A step's job.
    Job(PendingStep, JobId),
    /// A human; `decided` is set once the decision is known and not yet acted on.
    Approval(PendingStep, ApprovalId, Option<ApprovalState>),
}

/// The step a run is in the middle of.
#[derive(Clone)]
struct PendingStep {
    step: u32,
    step_id: String,
    skill: String,
    input: Value,
}

impl PendingStep {
    fn observe(
        &self,
        status: StepStatus,
        output: Value,
        error: Option<String>,
        job_id: Option<JobId>,
    ) -> Observation {
        Observation {
            step: self.step,
            step_id: self.step_id.clone(),
            skill: self.skill.clone(),
            input: self.input.clone(),
            status,
            output,
            error,
            job_id,
        }
    }
}

const RECENT_RUNS: usize = 5;

impl Actor for Session {
    type Msg = SessionMessage;
    type State = SessionActorState;
    type Arguments = SessionArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: SessionArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(SessionActorState {
            deps: args.deps,
            record: args.record,
            queue: args.arrived.into_iter().collect(),
            run: None,
            recent: VecDeque::new(),
            idle_generation: 0,
        })
    }

    async fn post_start(
        &self,
        myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        if state.queue.is_empty() && state.record.has_pending_work() {
            rehydrate(state).await?;
            state.resume(&myself).await?;
        } else {
            state.advance(&myself)?;
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: SessionMessage,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            SessionMessage::MessageArrived(trigger) => {
                state.queue.push_back(trigger);
                state.advance(&myself)?;
            }
            SessionMessage::JobFinished(job) => state.job_finished(&myself, &job)?,
            SessionMessage::ApprovalDecided(id) => {
                let approval = state.deps.store.approval(id)?;
                if let Some(a) = approval {
                    state.approval_decided(&myself, &a)?;
                }
            }
            SessionMessage::Interrupt { by, reply } => {
                let had_run = state.interrupt(&by)?;
                let _ = reply.send(had_run);
                state.advance(&myself)?;
            }
            SessionMessage::Planned { run_id, result } => {
                let current = state
                    .run
                    .as_ref()
                    .is_some_and(|r| r.id == run_id && matches!(r.waiting, Waiting::Planner));
                if current {
                    state.decided(&myself, result)?;
                }
            }
            SessionMessage::ApprovalTimeout(id) => state.approval_timeout(&myself, id)?,
            SessionMessage::RunTimeout(run_id) => {
                if state.run.as_ref().is_some_and(|r| r.id == run_id) {
                    let timeout = state.deps.config.run_timeout;
                    state.fail_run(format!("the run timed out after {}", humanize(timeout)))?;
                    state.advance(&myself)?;
                }
            }
            SessionMessage::IdleTimeout { generation } => {
                if generation == state.idle_generation
                    && state.run.is_none()
                    && state.queue.is_empty()
                {
                    debug!(session = %state.record.key, "idle session stopping");
                    myself.stop(Some("idle".into()));
                }
            }
            SessionMessage::Snapshot { reply } => {
                let _ = reply.send(Some(state.snapshot()));
            }
        }
        Ok(())
    }
}

impl SessionActorState {
    fn stream(&self) -> String {
        self.record.stream()
    }

    /// Appends events to the session's stream and updates the record, in one write. `extra`
    /// stages more changes (a job, an approval) into the same write.
    fn write(
        &mut self,
        events: Vec<(&'static str, Value)>,
        extra: impl FnOnce(&mut WriteTx<'_>) -> Result<(), StoreError>,
    ) -> Result<Vec<u64>, StoreError> {
        self.write_consuming(events, false, extra)
    }

    /// [`Self::write`], also counting one queued message as consumed by a run when `consumed`.
    fn write_consuming(
        &mut self,
        events: Vec<(&'static str, Value)>,
        consumed: bool,
        extra: impl FnOnce(&mut WriteTx<'_>) -> Result<(), StoreError>,
    ) -> Result<Vec<u64>, StoreError> {
        let stream = self.stream();
        let state = self.current_state();
        let active_run = self.run.as_ref().map(|r| r.id);
        let run_start = self.run.as_ref().map(|r| r.trigger.message_seq);
        let queue_front = self.queue.front().map(|t| t.message_seq);
        let id = self.record.id;
        let mut record = self.record.clone();
        let seqs = self.deps.store.write(|tx| {
            if let Some(stored) = tx.session(id)? {
                record.queued = stored.queued.saturating_sub(u64::from(consumed));
                record.resume_seq = stored.resume_seq;
                record.runs = stored.runs.max(record.runs);
            }
            extra(tx)?;
            let seqs = events
                .into_iter()
                .map(|(kind, data)| tx.append(NewEvent::new(stream.clone(), kind, data)))
                .collect();
            record.state = state;
            record.active_run = active_run;
            record.last_activity_at = Timestamp::now();
            // Replaying from here finds everything still pending (see `Session::resume_seq`):
            // the active run's trigger, else the oldest queued message; when the router has
            // appended messages this actor has not heard of yet, the old value stays (it is
            // older than them).
            record.resume_seq = match run_start.or(queue_front) {
                Some(seq) => seq,
                None if record.queued > 0 => record.resume_seq,
                None => 0,
            };
            tx.put_session(&record);
            Ok::<_, StoreError>(seqs)
        })?;
        self.record = record;
        Ok(seqs)
    }

    fn current_state(&self) -> SessionState {
        match &self.run {
            None => SessionState::Idle,
            Some(Run {
                waiting: Waiting::Approval(_, _, None),
                ..
            }) => SessionState::WaitingApproval,
            Some(_) => SessionState::Running,
        }
    }

    /// Starts the next queued run if none is going; schedules the idle stop otherwise.
    fn advance(&mut self, myself: &ActorRef<SessionMessage>) -> Result<(), ActorProcessingErr> {
        if self.run.is_some() {
            return Ok(());
        }
        let Some(trigger) = self.queue.pop_front() else {
            self.idle_generation += 1;
            let generation = self.idle_generation;
            myself.send_after(self.deps.config.idle_timeout, move || {
                SessionMessage::IdleTimeout { generation }
            });
            return Ok(());
        };
        self.idle_generation += 1;
        let run = Run {
            id: RunId::new(),
            trigger,
            started_at: Timestamp::now(),
            history: Vec::new(),
            replies: Vec::new(),
            steps: 0,
            waiting: Waiting::Planner,
        };
        let data = json!({
            "run_id": run.id,
            "message_seq": run.trigger.message_seq,
            "trigger": run.trigger,
        });
        let run_id = run.id;
        self.run = Some(run);
        self.record.runs += 1;
        // The router counted the message as queued; it is a run now.
        self.write_consuming(vec![("run.started", data)], true, |_| Ok(()))?;
        metrics::counter!("rausku_session_runs_total").increment(1);
        info!(session = %self.record.key, %run_id, "run started");
        myself.send_after(self.deps.config.run_timeout, move || {
            SessionMessage::RunTimeout(run_id)
        });
        self.plan(myself);
        Ok(())
    }

    /// Asks the planner for the next decision, in a task that reports back.
    fn plan(&mut self, myself: &ActorRef<SessionMessage>) {
        let Some(run) = &mut self.run else { return };
        run.waiting = Waiting::Planner;
        let req = PlanRequest {
            run_id: run.id,
            trigger: run.trigger.clone(),
            history: run.history.clone(),
            replies: run.replies.clone(),
            skills: skills_for(&self.deps.registry, &self.record.channel),
            status: SessionStatus {
                runs: self.record.runs,
                queued: self.queue.len(),
                recent: self.recent.iter().cloned().collect(),
            },
        };
        let run_id = run.id;
        let planner = self.deps.planner.clone();
        let myself = myself.clone();
        tokio::spawn(async move {
            let result = planner.plan(req).await;
            let _ = myself.send_message(SessionMessage::Planned { run_id, result });
        });
    }

    /// Acts on the planner's decision.
    fn decided(
        &mut self,
        myself: &ActorRef<SessionMessage>,
        result: Result<Decision, PlanError>,
    ) -> Result<(), ActorProcessingErr> {
        let run_id = self.run.as_ref().map(|r| r.id);
        let planner = self.deps.planner.name().to_owned();
        let decision = match result {
            Ok(d) => d,
            Err(e) => {
                self.fail_run(format!("the planner failed: {e}"))?;
                return self.advance(myself);
            }
        };
        let decided = (
            "plan.decided",
            json!({ "run_id": run_id, "planner": planner, "decision": decision }),
        );
        match decision {
            Decision::Reply { text } => {
                let run = self.run.as_mut().expect("a run is deciding");
                if run.replies.len() as u32 >= self.deps.config.max_steps * 2 {
                    self.write(vec![decided], |_| Ok(()))?;
                    self.fail_run("the planner kept replying without finishing".into())?;
                    return self.advance(myself);
                }
                run.replies.push(text.clone());
                let index = run.replies.len();
                let delivery = self.reply_job(index, &text);
                let reply = ("reply", json!({ "run_id": run_id, "text": text }));
                self.write(vec![decided, reply], |tx| match &delivery {
                    Some(job) => tx.insert_job(job.clone()),
                    None => Ok(()),
                })?;
                self.enqueue_reply(delivery);
                self.plan(myself);
            }
            Decision::Finish { reply, error } => {
                let mut events = vec![decided];
                let mut delivery = None;
                if let Some(text) = &reply {
                    let index = self.run.as_ref().map_or(0, |r| r.replies.len()) + 1;
                    delivery = self.reply_job(index, text);
                    events.push(("reply", json!({ "run_id": run_id, "text": text })));
                }
                let summary = match &error {
                    None => (
                        "run.finished",
                        json!({ "run_id": run_id, "reply": reply }),
                        "finished",
                    ),
                    Some(e) => (
                        "run.failed",
                        json!({ "run_id": run_id, "error": e, "reply": reply }),
                        "failed",
                    ),
                };
                events.push((summary.0, summary.1));
                self.end_run(summary.2, events, delivery.clone())?;
                self.enqueue_reply(delivery);
                self.advance(myself)?;
            }
            Decision::Invoke {
                step_id,
                skill,
                input,
            } => {
                self.write(vec![decided], |_| Ok(()))?;
                self.invoke(myself, step_id, skill, input)?;
            }
        }
        Ok(())
    }

    /// Checks limits and policy, then parks for an approval or creates the step's job.
    fn invoke(
        &mut self,
        myself: &ActorRef<SessionMessage>,
        step_id: String,
        skill: String,
        input: Value,
    ) -> Result<(), ActorProcessingErr> {
        let max_steps = self.deps.config.max_steps;
        let run = self.run.as_mut().expect("a run is invoking");
        if run.steps >= max_steps {
            self.fail_run(format!(
                "the run reached its limit of {max_steps} steps; split the work into several messages"
            ))?;
            return self.advance(myself);
        }
        if let Some(last) = run.history.last()
            && last.skill == skill
            && last.input == input
        {
            self.fail_run(format!(
                "the planner asked for the same step twice in a row ({skill} with the same input); stopped to avoid a loop"
            ))?;
            return self.advance(myself);
        }
        run.steps += 1;
        let step = PendingStep {
            step: run.steps,
            step_id,
            skill,
            input,
        };
        let job_type = match self.deps.registry.validate_input(&step.skill, &step.input) {
            Ok((jt, _)) => jt,
            Err(e) => {
                let obs = step.observe(StepStatus::Invalid, Value::Null, Some(e.to_string()), None);
                return self.observed(myself, obs);
            }
        };
        match job_type.policy.decide(&self.record.channel) {
            PolicyDecision::Forbid { reason } => {
                let obs = step.observe(StepStatus::Forbidden, Value::Null, Some(reason), None);
                self.observed(myself, obs)
            }
            PolicyDecision::RequireApproval => {
                let now = Timestamp::now();
                let approval = ApprovalRequest {
                    id: ApprovalId::new(),
                    session_id: self.record.id,
                    session_key: self.record.key.clone(),
                    run_id: run.id,
                    step: step.step,
                    step_id: step.step_id.clone(),
                    skill: step.skill.clone(),
                    input: step.input.clone(),
                    channel: self.record.channel.clone(),
                    risk: job_type.policy.risk,
                    state: ApprovalState::Pending,
                    requested_at: now,
                    expires_at: now.plus(self.deps.config.approval_timeout),
                    decided_at: None,
                    decided_by: None,
                    note: None,
                };
                let data = json!({
                    "run_id": run.id,
                    "approval_id": approval.id,
                    "step": step.step,
                    "step_id": step.step_id,
                    "skill": step.skill,
                    "input": step.input,
                    "risk": approval.risk,
                    "expires_at": approval.expires_at,
                });
                run.waiting = Waiting::Approval(step, approval.id, None);
                self.write(vec![("approval.requested", data)], |tx| {
                    tx.put_approval(&approval);
                    Ok(())
                })?;
                metrics::counter!("rausku_approvals_requested_total").increment(1);
                let id = approval.id;
                myself.send_after(self.deps.config.approval_timeout, move || {
                    SessionMessage::ApprovalTimeout(id)
                });
                Ok(())
            }
            PolicyDecision::Allow => self.start_job(myself, step),
        }
    }

    /// Creates the step's job and its `skill.invoked` event in one write.
    fn start_job(
        &mut self,
        myself: &ActorRef<SessionMessage>,
        step: PendingStep,
    ) -> Result<(), ActorProcessingErr> {
        let run_id = self.run.as_ref().expect("a run is invoking").id;
        let req = CreateJob {
            job_type: step.skill.clone(),
            input: step.input.clone(),
            session_id: Some(self.record.id.to_string()),
            run_id: Some(run_id.to_string()),
            ..CreateJob::default()
        };
        let job = match self.deps.jobs.prepare(req, None) {
            Ok(job) => job,
            Err(e) => {
                let obs = step.observe(StepStatus::Invalid, Value::Null, Some(e.to_string()), None);
                return self.observed(myself, obs);
            }
        };
        let data = json!({
            "run_id": run_id,
            "step": step.step,
            "step_id": step.step_id,
            "skill": step.skill,
            "input": step.input,
            "job_id": job.id,
        });
        let job_id = job.id;
        if let Some(run) = &mut self.run {
            run.waiting = Waiting::Job(step, job_id);
        }
        let to_enqueue = job.clone();
        self.write(vec![("skill.invoked", data)], |tx| tx.insert_job(job))?;
        self.deps.jobs.enqueue(&to_enqueue)?;
        Ok(())
    }

    fn job_finished(
        &mut self,
        myself: &ActorRef<SessionMessage>,
        job: &Job,
    ) -> Result<(), ActorProcessingErr> {
        let Some(Run {
            waiting: Waiting::Job(step, job_id),
            ..
        }) = &self.run
        else {
            return Ok(());
        };
        if *job_id != job.id || !job.state.is_terminal() {
            return Ok(());
        }
        let status = match job.state {
            JobState::Succeeded => StepStatus::Succeeded,
            JobState::Cancelled => StepStatus::Cancelled,
            _ => StepStatus::Failed,
        };
        let obs = step.observe(
            status,
            job.output.clone().unwrap_or(Value::Null),
            job.error.clone(),
            Some(job.id),
        );
        self.observed(myself, obs)
    }

    /// Records an observation and re-plans.
    fn observed(
        &mut self,
        myself: &ActorRef<SessionMessage>,
        obs: Observation,
    ) -> Result<(), ActorProcessingErr> {
        let Some(run) = &mut self.run else {
            return Ok(());
        };
        let data = json!({ "run_id": run.id, "observation": obs });
        run.history.push(obs);
        run.waiting = Waiting::Planner;
        self.write(vec![("skill.observed", data)], |_| Ok(()))?;
        self.plan(myself);
        Ok(())
    }

    fn approval_decided(
        &mut self,
        myself: &ActorRef<SessionMessage>,
        approval: &ApprovalRequest,
    ) -> Result<(), ActorProcessingErr> {
        let Some(Run {
            waiting: Waiting::Approval(step, id, _),
            ..
        }) = &self.run
        else {
            return Ok(());
        };
        if *id != approval.id || approval.state == ApprovalState::Pending {
            return Ok(());
        }
        let step = step.clone();
        if approval.state == ApprovalState::Approved {
            return self.start_job(myself, step);
        }
        let by = approval.decided_by.as_deref().unwrap_or("unknown");
        let error = match approval.state {
            ApprovalState::Expired => format!(
                "the approval expired after {} without an answer",
                humanize(self.deps.config.approval_timeout)
            ),
            _ => match &approval.note {
                Some(note) => format!("denied by {by}: {note}"),
                None => format!("denied by {by}"),
            },
        };
        let obs = step.observe(StepStatus::Denied, Value::Null, Some(error), None);
        self.observed(myself, obs)
    }

    fn approval_timeout(
        &mut self,
        myself: &ActorRef<SessionMessage>,
        id: ApprovalId,
    ) -> Result<(), ActorProcessingErr> {
        let waiting = matches!(
            &self.run,
            Some(Run { waiting: Waiting::Approval(_, a, None), .. }) if *a == id
        );
        if !waiting {
            return Ok(());
        }
        let approval =
            match self
                .deps
                .store
                .decide_approval(id, ApprovalState::Expired, "expiry", None)
            {
                Ok(a) => a,
                Err(DecideError::AlreadyDecided(a)) => *a,
                Err(DecideError::NotFound(_)) => return Ok(()),
                Err(DecideError::Store(e)) => return Err(e.into()),
            };
        metrics::counter!("rausku_approvals_expired_total").increment(1);
        self.approval_decided(myself, &approval)
    }

    /// Aborts the current run. Returns whether there was one.
    fn interrupt(&mut self, by: &str) -> Result<bool, ActorProcessingErr> {
        let Some(run) = &self.run else {
            return Ok(false);
        };
        let data = json!({ "run_id": run.id, "by": by });
        self.stop_pending_work();
        self.end_run("interrupted", vec![("run.interrupted", data)], None)?;
        Ok(true)
    }

    /// Fails the current run with `error`.
    fn fail_run(&mut self, error: String) -> Result<(), ActorProcessingErr> {
        let Some(run) = &self.run else {
            return Ok(());
        };
        warn!(session = %self.record.key, run_id = %run.id, %error, "run failed");
        let data = json!({ "run_id": run.id, "error": error });
        self.stop_pending_work();
        self.end_run("failed", vec![("run.failed", data)], None)
    }

    /// Cancels the running job or the pending approval of the current run.
    fn stop_pending_work(&mut self) {
        let Some(run) = &self.run else { return };
        match &run.waiting {
            Waiting::Job(_, job_id) => {
                let jobs = self.deps.jobs.clone();
                let job_id = *job_id;
                tokio::spawn(async move {
                    if let Err(e) = jobs.cancel(job_id).await {
                        debug!(%job_id, error = %e, "cancelling the job of an ended run");
                    }
                });
            }
            Waiting::Approval(_, id, None) => {
                match self.deps.store.decide_approval(
                    *id,
                    ApprovalState::Cancelled,
                    "interrupt",
                    None,
                ) {
                    Ok(_) | Err(DecideError::AlreadyDecided(_) | DecideError::NotFound(_)) => {}
                    Err(DecideError::Store(e)) => {
                        warn!(approval_id = %id, error = %e, "could not cancel an approval");
                    }
                }
            }
            Waiting::Approval(..) | Waiting::Planner => {}
        }
    }

    /// Ends the current run with `events` (the last of which says how it ended).
    fn end_run(
        &mut self,
        outcome: &str,
        events: Vec<(&'static str, Value)>,
        delivery: Option<Job>,
    ) -> Result<(), ActorProcessingErr> {
        let Some(run) = self.run.take() else {
            return Ok(());
        };
        self.write(events, |tx| match delivery {
            Some(job) => tx.insert_job(job),
            None => Ok(()),
        })?;
        self.remember(&run, outcome);
        metrics::counter!("rausku_session_runs_ended_total", "outcome" => outcome.to_owned())
            .increment(1);
        info!(session = %self.record.key, run_id = %run.id, outcome, steps = run.steps, "run ended");
        Ok(())
    }

    /// The job delivering the run's `index`-th reply through the channel, if the channel has a
    /// reply route. A job that cannot be prepared (its skill is disabled) is logged and skipped:
    /// the reply is still an event.
    fn reply_job(&self, index: usize, text: &str) -> Option<Job> {
        let route = self.deps.replies.as_ref()?;
        let run = self.run.as_ref()?;
        let mut req = route.job_for(&self.record.key, &format!("{}-{index}", run.id), text)?;
        req.session_id = Some(self.record.id.to_string());
        req.run_id = Some(run.id.to_string());
        match self.deps.jobs.prepare(req, None) {
            Ok(job) => Some(job),
            Err(e) => {
                warn!(session = %self.record.key, error = %e, "a reply cannot be delivered");
                None
            }
        }
    }

    fn enqueue_reply(&self, job: Option<Job>) {
        if let Some(job) = job
            && let Err(e) = self.deps.jobs.enqueue(&job)
        {
            warn!(%e, "a reply job could not be scheduled; it runs after a restart");
        }
    }

    fn remember(&mut self, run: &Run, outcome: &str) {
        let trigger = match &run.trigger.event {
            Some(event) if run.trigger.text.is_empty() => event.clone(),
            _ => run.trigger.text.chars().take(80).collect(),
        };
        self.recent.push_front(RunSummary {
            run_id: run.id,
            trigger,
            outcome: outcome.to_owned(),
            steps: run.steps,
        });
        self.recent.truncate(RECENT_RUNS);
    }

    /// Continues after a rehydration: acts on whatever the run was waiting for.
    async fn resume(
        &mut self,
        myself: &ActorRef<SessionMessage>,
    ) -> Result<(), ActorProcessingErr> {
        let Some(run) = &self.run else {
            return self.advance(myself);
        };
        let run_id = run.id;
        let elapsed = run.started_at.until(Timestamp::now());
        let left = self.deps.config.run_timeout.saturating_sub(elapsed);
        myself.send_after(left, move || SessionMessage::RunTimeout(run_id));
        info!(session = %self.record.key, %run_id, steps = run.steps, "resuming a run");
        match &run.waiting {
            Waiting::Planner => self.plan(myself),
            Waiting::Job(_, job_id) => {
                // The job runtime recovers the job itself; if it already ended, observe it now
                // (its event may have been published before this actor existed).
                if let Some(job) = self.deps.store.job(*job_id)?
                    && job.state.is_terminal()
                {
                    self.job_finished(myself, &job)?;
                }
            }
            Waiting::Approval(_, id, decided) => {
                let id = *id;
                match decided {
                    Some(_) => {
                        if let Some(a) = self.deps.store.approval(id)? {
                            self.approval_decided(myself, &a)?;
                        }
                    }
                    None => {
                        let left = match self.deps.store.approval(id)? {
                            Some(a) => Timestamp::now().until(a.expires_at),
                            None => Duration::ZERO,
                        };
                        myself.send_after(left, move || SessionMessage::ApprovalTimeout(id));
                    }
                }
            }
        }
        Ok(())
    }

    fn snapshot(&self) -> SessionSnapshot {
        SessionSnapshot {
            key: self.record.key.clone(),
            state: self.current_state(),
            queued: self.queue.len(),
            run: self.run.as_ref().map(|r| {
                let (waiting, job_id, approval_id) = match &r.waiting {
                    Waiting::Planner => ("planning", None, None),
                    Waiting::Job(_, j) => ("job", Some(*j), None),
                    Waiting::Approval(_, a, _) => ("approval", None, Some(*a)),
                };
                RunSnapshot {
                    run_id: r.id,
                    steps: r.steps,
                    waiting,
                    job_id,
                    approval_id,
                }
            }),
        }
    }
}

/// Rebuilds the queue and the run in progress from the session's stream, from `resume_seq`.
async fn rehydrate(state: &mut SessionActorState) -> Result<(), ActorProcessingErr> {
    // Everything written so far must be readable by the range scan below.
    state.deps.store.durable().await?;
    let filter = StreamFilter::Stream(state.stream());
    let mut after = state.record.resume_seq.saturating_sub(1);
    loop {
        let page = state.deps.store.events_after(&filter, after, 512)?;
        let Some(last) = page.last() else { break };
        after = last.seq;
        for event in &page {
            replay(state, event);
        }
    }
    debug!(
        session = %state.record.key,
        queued = state.queue.len(),
        run = state.run.is_some(),
        "session rehydrated"
    );
    Ok(())
}

/// Applies one event of the session's stream to the rebuilt state.
fn replay(state: &mut SessionActorState, event: &Event) {
    let d = &event.data;
    let str_of = |k: &str| {
        d.get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let step_of = |d: &Value| PendingStep {
        step: d.get("step").and_then(Value::as_u64).unwrap_or(0) as u32,
        step_id: d
            .get("step_id")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
        skill: d
            .get("skill")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
        input: d.get("input").cloned().unwrap_or(Value::Null),
    };
    match event.kind.as_str() {
        // Recorded without a run (see `Planner::wants_event`).
        "message.received" if d.get("ignored").and_then(Value::as_bool) == Some(true) => {}
        "message.received" => state.queue.push_back(Trigger {
            channel: state.record.channel.clone(),
            session_id: state.record.id,
            session_key: state.record.key.clone(),
            text: str_of("text"),
            event: d.get("event").and_then(Value::as_str).map(str::to_owned),
            data: d.get("data").cloned().unwrap_or(Value::Null),
            sender: d.get("sender").and_then(Value::as_str).map(str::to_owned),
            message_seq: event.seq,
        }),
        "run.started" => {
            let message_seq = d.get("message_seq").and_then(Value::as_u64).unwrap_or(0);
            let Some(pos) = state
                .queue
                .iter()
                .position(|t| t.message_seq == message_seq)
            else {
                return;
            };
            let trigger = state.queue.remove(pos).expect("position is in range");
            let Ok(id) = serde_json::from_value(d["run_id"].clone()) else {
                return;
            };
            state.run = Some(Run {
                id,
                trigger,
                started_at: event.ts,
                history: Vec::new(),
                replies: Vec::new(),
                steps: 0,
                waiting: Waiting::Planner,
            });
        }
        kind => {
            let Some(run) = &mut state.run else { return };
            if d.get("run_id").and_then(Value::as_str) != Some(run.id.to_string().as_str()) {
                return;
            }
            match kind {
                "skill.invoked" => {
                    let step = step_of(d);
                    run.steps = run.steps.max(step.step);
                    if let Ok(job_id) = serde_json::from_value(d["job_id"].clone()) {
                        run.waiting = Waiting::Job(step, job_id);
                    }
                }
                "approval.requested" => {
                    let step = step_of(d);
                    run.steps = run.steps.max(step.step);
                    if let Ok(id) = serde_json::from_value(d["approval_id"].clone()) {
                        run.waiting = Waiting::Approval(step, id, None);
                    }
                }
                "approval.resolved" => {
                    if let Waiting::Approval(_, _, decided) = &mut run.waiting {
                        *decided = ApprovalState::parse(&str_of("decision"));
                    }
                }
                "skill.observed" => {
                    if let Ok(obs) = serde_json::from_value::<Observation>(d["observation"].clone())
                    {
                        run.steps = run.steps.max(obs.step);
                        run.history.push(obs);
                    }
                    run.waiting = Waiting::Planner;
                }
                "reply" => run.replies.push(str_of("text")),
                "run.finished" | "run.failed" | "run.interrupted" => {
                    let outcome = kind.trim_start_matches("run.");
                    if let Some(run) = state.run.take() {
                        state.remember(&run, outcome);
                    }
                }
                _ => {}
            }
        }
    }
}

/// The enabled skills a channel may invoke, for the planner.
fn skills_for(registry: &Registry, channel: &str) -> Vec<SkillInfo> {
    registry
        .list()
        .into_iter()
        .filter(|jt| jt.enabled)
        .filter_map(|jt| {
            let needs_approval = match jt.policy.decide(channel) {
                PolicyDecision::Forbid { .. } => return None,
                PolicyDecision::RequireApproval => true,
                PolicyDecision::Allow => false,
            };
            Some(SkillInfo {
                name: jt.name,
                description: jt.description,
                input_schema: jt.input_schema,
                risk: jt.policy.risk,
                needs_approval,
            })
        })
        .collect()
}

fn humanize(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 60 && s.is_multiple_of(60) {
        format!("{} min", s / 60)
    } else if s > 0 {
        format!("{s} s")
    } else {
        format!("{} ms", d.as_millis())
    }
}
