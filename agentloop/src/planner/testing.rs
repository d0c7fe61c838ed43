//! Drives a planner through a scripted run, as a session would, without a session: for tests
//! of planners here and of playbooks elsewhere.
//!
//! [`drive`] asks the planner for a decision, and for each `Invoke` asks a script (a closure)
//! how the step ends, appends the [`Observation`], and asks again; a `Reply` is appended to
//! the replies; a `Finish` or an error ends it. Every request is planned twice and the two
//! decisions must be equal: a planner is a pure function of its request.
//!
//! ```
//! # use agentloop::planner::testing::{drive, message, Outcome};
//! # use agentloop::planner::{DefaultPlanner, PlaybookPlanner, PlaybookSet};
//! # tokio_test_block_on(async {
//! let planner = DefaultPlanner::new(PlaybookPlanner::new(PlaybookSet::default()));
//! let t = drive(&planner, message("local", "/run echo {\"a\": 1}"), |_, _, input| {
//!     Outcome::succeeded(input.clone())
//! })
//! .await;
//! assert_eq!(t.invoked(), ["/run"]);
//! assert!(t.reply().unwrap().contains("\"a\": 1"));
//! # });
//! # fn tokio_test_block_on(f: impl std::future::Future<Output = ()>) {
//! #     tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
//! # }
//! ```
//!
//! Layout: [`message`], [`event`] and [`request`] build requests; [`Outcome`] is how a scripted
//! step ends; [`drive`] runs the loop; [`Transcript`] is what happened.

use serde_json::Value;
use store::{JobId, RunId, SessionId};

use super::{
    Decision, Observation, PlanError, PlanRequest, Planner, SessionStatus, StepStatus, Trigger,
};

/// Decisions after which [`drive`] gives up (a planner that never finishes).
pub const MAX_DECISIONS: usize = 64;

/// A plain message on `channel` (session key `<channel>:test`).
pub fn message(channel: &str, text: &str) -> Trigger {
    Trigger {
        channel: channel.to_owned(),
        session_id: SessionId::new(),
        session_key: format!("{channel}:test"),
        text: text.to_owned(),
        event: None,
        data: Value::Null,
        sender: Some("tester".to_owned()),
        message_seq: 1,
    }
}

/// A structured event on `channel` with `data`.
pub fn event(channel: &str, kind: &str, data: Value) -> Trigger {
    Trigger {
        event: Some(kind.to_owned()),
        data,
        ..message(channel, "")
    }
}

/// The first request of a new run started by `trigger`: no history, no replies, no skills
/// listed, a session with this one run.
pub fn request(trigger: Trigger) -> PlanRequest {
    PlanRequest {
        run_id: RunId::new(),
        trigger,
        history: Vec::new(),
        replies: Vec::new(),
        skills: Vec::new(),
        status: SessionStatus {
            runs: 1,
            queued: 0,
            recent: Vec::new(),
        },
    }
}

/// How a scripted step ends.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub status: StepStatus,
    pub output: Value,
    pub error: Option<String>,
}

impl Outcome {
    pub fn succeeded(output: Value) -> Self {
        Outcome {
            status: StepStatus::Succeeded,
            output,
            error: None,
        }
    }

    pub fn failed(error: &str) -> Self {
        Self::ended(StepStatus::Failed, error)
    }

    /// Ends with `status` and `error` (and a null output).
    pub fn ended(status: StepStatus, error: &str) -> Self {
        Outcome {
            status,
            output: Value::Null,
            error: Some(error.to_owned()),
        }
    }
}

/// What happened in a driven run.
#[derive(Debug, Clone, PartialEq)]
pub struct Transcript {
    /// Every decision, in order (the last is a `Finish` unless the planner failed).
    pub decisions: Vec<Decision>,
    /// The last request (with the whole history and all replies).
    pub last: PlanRequest,
    /// The planner's error, if it failed the run.
    pub error: Option<PlanError>,
}

impl Transcript {
    /// The step ids invoked, in order.
    pub fn invoked(&self) -> Vec<&str> {
        self.last
            .history
            .iter()
            .map(|o| o.step_id.as_str())
            .collect()
    }

    /// The `Reply` decisions' texts, in order.
    pub fn replies(&self) -> &[String] {
        &self.last.replies
    }

    /// The final `Finish`'s reply.
    pub fn reply(&self) -> Option<&str> {
        match self.decisions.last() {
            Some(Decision::Finish { reply, .. }) => reply.as_deref(),
            _ => None,
        }
    }

    /// The final `Finish`'s error (`None` also when the run did not finish).
    pub fn finish_error(&self) -> Option<&str> {
        match self.decisions.last() {
            Some(Decision::Finish { error, .. }) => error.as_deref(),
            _ => None,
        }
    }

    /// Whether the run ended with a `Finish`.
    pub fn finished(&self) -> bool {
        matches!(self.decisions.last(), Some(Decision::Finish { .. }))
    }
}

/// Runs `trigger` through `planner` (see the module docs); `script(step_id, skill, input)`
/// says how each invoked step ends.
pub async fn drive(
    planner: &dyn Planner,
    trigger: Trigger,
    script: impl FnMut(&str, &str, &Value) -> Outcome,
) -> Transcript {
    drive_request(planner, request(trigger), script).await
}

/// [`drive`] from a request of your own (skills, status, a history to resume from).
pub async fn drive_request(
    planner: &dyn Planner,
    mut req: PlanRequest,
    mut script: impl FnMut(&str, &str, &Value) -> Outcome,
) -> Transcript {
    let mut decisions = Vec::new();
    for _ in 0..MAX_DECISIONS {
        let decision = planner.plan(req.clone()).await;
        let again = planner.plan(req.clone()).await;
        assert_eq!(
            decision, again,
            "the planner decided differently for the same request: {req:#?}"
        );
        let decision = match decision {
            Ok(decision) => decision,
            Err(error) => {
                return Transcript {
                    decisions,
                    last: req,
                    error: Some(error),
                };
            }
        };
        decisions.push(decision.clone());
        match decision {
            Decision::Invoke {
                step_id,
                skill,
                input,
            } => {
                let outcome = script(&step_id, &skill, &input);
                let ran = matches!(
                    outcome.status,
                    StepStatus::Succeeded | StepStatus::Failed | StepStatus::Cancelled
                );
                req.history.push(Observation {
                    step: req.history.len() as u32 + 1,
                    step_id,
                    skill,
                    input,
                    status: outcome.status,
                    output: outcome.output,
                    error: outcome.error,
                    job_id: ran.then(JobId::new),
                });
            }
            Decision::Reply { text } => req.replies.push(text),
            Decision::Finish { .. } => {
                return Transcript {
                    decisions,
                    last: req,
                    error: None,
                };
            }
        }
    }
    panic!("the planner made {MAX_DECISIONS} decisions without finishing: {decisions:#?}");
}
