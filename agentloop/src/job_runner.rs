//! `JobRunner`: one actor per running attempt.
//!
//! It runs the handler in a task under the job's timeout, catching panics, and reports the
//! outcome to its supervisor. Stopping the runner (cancel, shutdown) aborts the task, which
//! drops the handler's future: the attempt is stopped, not just forgotten.

use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use serde_json::Value;
use skills::{AttemptOutcome, DynHandler, JobContext};
use store::JobId;
use tokio::task::JoinHandle;

use crate::job_supervisor::JobSupervisorMessage;

/// How an attempt ended, as the runtime sees it.
#[derive(Debug, Clone, PartialEq)]
pub enum AttemptResult {
    /// The handler's own verdict.
    Handler(AttemptOutcome),
    /// The attempt ran past `timeout_ms` and was stopped.
    TimedOut,
    /// The handler panicked.
    Panicked(String),
}

pub struct JobRunner;

pub struct JobRunnerArgs {
    pub job_id: JobId,
    pub attempt: u32,
    /// The lease the attempt runs under, echoed in its report.
    pub lease: u64,
    pub input: Value,
    pub handler: DynHandler,
    pub ctx: JobContext,
    pub timeout: Duration,
    pub supervisor: ActorRef<JobSupervisorMessage>,
}

pub struct JobRunnerState {
    /// The job this attempt belongs to.
    job_id: JobId,
    /// The attempt number: the supervisor ignores reports of any other.
    attempt: u32,
    /// The lease it runs under: with `attempt`, what makes its report count.
    lease: u64,
    /// The task running the handler; aborted when the runner stops.
    task: JoinHandle<()>,
    /// When the attempt started, for its duration.
    started: Instant,
    /// Where the outcome goes.
    supervisor: ActorRef<JobSupervisorMessage>,
}

pub enum JobRunnerMessage {
    /// The handler task finished (sent by the task itself).
    Completed(AttemptResult),
    Snapshot {
        reply: RpcReplyPort<RunnerSnapshot>,
    },
}

/// A serialisable view of one running attempt.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct RunnerSnapshot {
    pub job_id: JobId,
    pub attempt: u32,
    pub running_ms: u64,
}

impl Actor for JobRunner {
    type Msg = JobRunnerMessage;
    type State = JobRunnerState;
    type Arguments = JobRunnerArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: JobRunnerArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        let JobRunnerArgs {
            job_id,
            attempt,
            lease,
            input,
            handler,
            ctx,
            timeout,
            supervisor,
        } = args;
        let task = tokio::spawn(async move {
            // `run` is called inside the guarded future: a handler that panics before it
            // returns its future fails the attempt like any other panic.
            let run = AssertUnwindSafe(async move { handler.run(ctx, input).await }).catch_unwind();
            let result = match tokio::time::timeout(timeout, run).await {
                Err(_) => AttemptResult::TimedOut,
                Ok(Err(panic)) => AttemptResult::Panicked(panic_message(&panic)),
                Ok(Ok(outcome)) => AttemptResult::Handler(outcome),
            };
            let _ = myself.send_message(JobRunnerMessage::Completed(result));
        });
        Ok(JobRunnerState {
            job_id,
            attempt,
            lease,
            task,
            started: Instant::now(),
            supervisor,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            JobRunnerMessage::Completed(result) => {
                let _ = state
                    .supervisor
                    .send_message(JobSupervisorMessage::AttemptFinished {
                        id: state.job_id,
                        attempt: state.attempt,
                        lease: state.lease,
                        result,
                        duration: state.started.elapsed(),
                    });
                myself.stop(None);
            }
            JobRunnerMessage::Snapshot { reply } => {
                let _ = reply.send(RunnerSnapshot {
                    job_id: state.job_id,
                    attempt: state.attempt,
                    running_ms: state.started.elapsed().as_millis() as u64,
                });
            }
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        // Whatever stopped us, the handler stops too.
        state.task.abort();
        Ok(())
    }
}

impl Drop for JobRunnerState {
    /// A killed runner (ractor kills the children of a stopping supervisor) skips `post_stop`;
    /// the handler must stop then too, not run on detached.
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "handler panicked".to_string()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use skills::builtin::{BuiltinConfig, builtin_handlers};
    use skills::{JobLog, Registry};
    use store::LogLevel;
    use tokio::sync::mpsc;

    use super::*;

    /// Stands in for the supervisor: forwards each report to the test.
    struct Inbox;

    impl Actor for Inbox {
        type Msg = JobSupervisorMessage;
        type State = mpsc::UnboundedSender<(u32, AttemptResult)>;
        type Arguments = mpsc::UnboundedSender<(u32, AttemptResult)>;

        async fn pre_start(
            &self,
            _: ActorRef<Self::Msg>,
            tx: Self::Arguments,
        ) -> Result<Self::State, ActorProcessingErr> {
            Ok(tx)
        }

        async fn handle(
            &self,
            _: ActorRef<Self::Msg>,
            msg: Self::Msg,
            tx: &mut Self::State,
        ) -> Result<(), ActorProcessingErr> {
            if let JobSupervisorMessage::AttemptFinished {
                attempt, result, ..
            } = msg
            {
                let _ = tx.send((attempt, result));
            }
            Ok(())
        }
    }

    struct NoLog;

    impl JobLog for NoLog {
        fn log(&self, _: LogLevel, _: String) {}
    }

    #[tokio::test]
    async fn a_runner_answers_its_snapshot_and_reports_its_outcome() {
        let dir = tempfile::tempdir().unwrap();
        let store = store::Store::open(store::StoreConfig::new(dir.path())).unwrap();
        let registry = Registry::open(store, builtin_handlers(&BuiltinConfig::default())).unwrap();
        let (tx, mut rx) = mpsc::unbounded_channel();
        let (inbox, _) = Actor::spawn(None, Inbox, tx).await.unwrap();
        let job_id = JobId::new();
        let args = JobRunnerArgs {
            job_id,
            attempt: 2,
            lease: 7,
            input: serde_json::json!({ "ms": 50 }),
            handler: registry.handler("sleep").unwrap(),
            ctx: JobContext {
                job_id,
                job_type: "sleep".into(),
                attempt: 2,
                max_attempts: 3,
                timeout_ms: 5_000,
                config: Value::Null,
                log: Arc::new(NoLog),
            },
            timeout: Duration::from_secs(5),
            supervisor: inbox,
        };
        let (runner, _) = Actor::spawn(None, JobRunner, args).await.unwrap();
        let snap = ractor::call!(runner, |reply| JobRunnerMessage::Snapshot { reply }).unwrap();
        assert_eq!((snap.job_id, snap.attempt), (job_id, 2));
        let (attempt, result) = rx.recv().await.unwrap();
        assert_eq!(attempt, 2);
        assert!(
            matches!(result, AttemptResult::Handler(AttemptOutcome::Succeeded(_))),
            "{result:?}"
        );
    }
}
