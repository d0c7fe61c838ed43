//! Planners: what a session's agent loop asks "what next?".
//!
//! A run is started by a [`Trigger`] (a message or a structured event). The session asks its
//! [`Planner`] for a [`Decision`] with everything the run has seen so far (a [`PlanRequest`]):
//! invoke a skill, reply, or finish. After each skill invocation the session records an
//! [`Observation`] and asks again: that is re-planning, and the next decision may depend on
//! what the last step returned.
//!
//! A planner is a pure function of its request: it keeps no per-run state of its own. That is
//! what lets a run continue after a crash: the session rebuilds the request from its events and
//! asks again, and a planner answers as it would have. A planner does no IO except through the
//! provider it was built with (an LLM planner gets an HTTP client to its provider; the playbook
//! planner needs none).
//!
//! The embedded planner is [`DefaultPlanner`] (named `playbook`): chat commands first
//! ([`commands`]), then playbooks ([`playbook`], walked by [`walk`]), and for a message nothing
//! matched, a reply saying what it can do.
//!
//! Layout:
//! - this module: the contract ([`Planner`], [`PlanRequest`], [`Decision`], [`Observation`]),
//!   and [`DefaultPlanner`].
//! - [`commands`]: `/run`, `/status`, `/help`, `/remember`, `/recall`.
//! - [`playbook`]: the playbook file format, loading and reloading ([`PlaybookSet`],
//!   [`PlaybookPlanner`]).
//! - [`walk`]: how a run goes through a playbook, from its history; step ids; the template
//!   context.
//! - [`template`]: minijinja, values versus strings, undefined values.
//! - [`testing`]: drives a planner through a scripted run (for tests).

pub mod commands;
pub mod playbook;
pub mod template;
pub mod testing;
pub mod walk;

pub use playbook::{
    Playbook, PlaybookFileError, PlaybookInfo, PlaybookPlanner, PlaybookReloadReport, PlaybookSet,
    StepInfo, TriggerInfo,
};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use store::{JobId, Risk, RunId, SessionId};

/// A boxed, sendable future (planners are called from spawned tasks).
pub type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

/// Decides the next step of a run.
pub trait Planner: Send + Sync + 'static {
    /// A short name, shown in `plan.decided` events and `/v1/runtime`.
    fn name(&self) -> &str;

    /// The next decision for the run described by `req`. An `Err` fails the run with the
    /// error's message (it is not retried).
    fn plan(&self, req: PlanRequest) -> BoxFuture<'static, Result<Decision, PlanError>>;

    /// Whether a structured event (a [`Trigger`] with `event` set, before any run) would start
    /// a run that does anything. `false` means its run would finish at once, quietly: the
    /// session then only records the message (`message.received` with `ignored: true`) and
    /// starts no run, so a GitHub delivery nothing handles costs one event, not a run. Called
    /// on the router's path for every event, before it is stored (so `session_id` and
    /// `message_seq` are not known yet): it must be cheap and do no IO. The default (`true`)
    /// runs every event.
    fn wants_event(&self, trigger: &Trigger) -> bool {
        let _ = trigger;
        true
    }
}

/// Why a planner could not decide. The message is shown to the user as the run's failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PlanError(pub String);

/// What started a run: one message (text, maybe with data) or one structured event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Trigger {
    /// The channel the session belongs to: `rest`, `local`, `github`, `console`, …
    pub channel: String,
    pub session_id: SessionId,
    /// The session key, e.g. `rest:ops` or `github:acme/api#42`.
    pub session_key: String,
    /// The message text; empty for a structured event without text.
    #[serde(default)]
    pub text: String,
    /// The structured event kind, e.g. `pull_request.opened`; `None` for a plain message.
    #[serde(default)]
    pub event: Option<String>,
    /// Structured data sent with the message, or the event's template context.
    #[serde(default)]
    pub data: Value,
    /// Who sent it, when the channel knows (a GitHub login, a local user name).
    #[serde(default)]
    pub sender: Option<String>,
    /// The seq of the `message.received` event in the session's stream.
    pub message_seq: u64,
}

/// How an invoked step ended, as the planner sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    /// The job succeeded; `output` is its output.
    Succeeded,
    /// The job failed (attempts exhausted or not retryable); `error` says why.
    Failed,
    /// The job was cancelled (by hand, or by an interrupt of another run).
    Cancelled,
    /// An operator denied the approval, or it expired.
    Denied,
    /// The skill's policy does not allow it on this channel; no job was created.
    Forbidden,
    /// The skill is unknown or disabled, or the input was invalid; no job was created.
    Invalid,
}

impl StepStatus {
    pub fn is_success(self) -> bool {
        self == StepStatus::Succeeded
    }
}

/// One observed step of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Observation {
    /// 1-based position of the step in its run.
    pub step: u32,
    /// The planner's own name for the step (a playbook's step name, an LLM's tool-call id).
    pub step_id: String,
    pub skill: String,
    pub input: Value,
    pub status: StepStatus,
    /// The job's output (`null` unless it succeeded).
    #[serde(default)]
    pub output: Value,
    #[serde(default)]
    pub error: Option<String>,
    /// The job that ran the step, if one was created.
    #[serde(default)]
    pub job_id: Option<JobId>,
}

/// A skill as a planner may offer it (to a user in `/help`, to an LLM as a tool).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SkillInfo {
    pub name: String,
    pub description: String,
    #[serde(default)]
    pub input_schema: Option<Value>,
    pub risk: Risk,
    /// Whether invoking it from this session's channel needs an approval.
    pub needs_approval: bool,
}

/// What a session knows about itself, for `/status`-like answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionStatus {
    /// Runs started in this session, this one included.
    pub runs: u64,
    /// Messages waiting behind this run.
    pub queued: usize,
    /// The last finished runs, newest first (at most a few).
    #[serde(default)]
    pub recent: Vec<RunSummary>,
}

/// A finished run, in brief.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunSummary {
    pub run_id: RunId,
    /// The text or event that started it.
    pub trigger: String,
    /// `finished`, `failed` or `interrupted`.
    pub outcome: String,
    pub steps: u32,
}

/// Everything a planner is told. Owned, so a planner may move it into its future.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanRequest {
    pub run_id: RunId,
    pub trigger: Trigger,
    /// The steps observed so far in this run, in order.
    pub history: Vec<Observation>,
    /// Replies already sent in this run, in order.
    pub replies: Vec<String>,
    /// The skills this session's channel may invoke (enabled, allowed by policy), by name.
    pub skills: Vec<SkillInfo>,
    pub status: SessionStatus,
}

/// The planner's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "decision", rename_all = "snake_case")]
pub enum Decision {
    /// Run `skill` with `input` as a job, then ask again with its observation.
    Invoke {
        /// The planner's name for this step; it comes back in the [`Observation`].
        step_id: String,
        skill: String,
        input: Value,
    },
    /// Send `text` to the session's channel, then ask again.
    Reply { text: String },
    /// End the run, with an optional last reply. `error` set means the run failed.
    Finish {
        #[serde(default)]
        reply: Option<String>,
        #[serde(default)]
        error: Option<String>,
    },
}

/// The embedded planner: chat commands, then playbooks, then help. Named `playbook`.
///
/// For each request, in order:
/// 1. a run started by a known command (`/run`, `/status`, `/help`, `/remember`, `/recall`) is
///    the command's (see [`commands`]);
/// 2. a run whose first step came from a playbook, or whose trigger a playbook matches, is that
///    playbook's (see [`walk`]);
/// 3. otherwise: an unknown `/command` gets a reply listing the commands; a structured event
///    that no playbook wants finishes quietly (no reply: a GitHub event should not get a
///    comment just because nothing handles it); any other message gets a reply listing the
///    commands, the channel's playbooks and its skills. Never an error.
#[derive(Debug)]
pub struct DefaultPlanner {
    /// The playbooks in force (reloadable).
    playbooks: PlaybookPlanner,
}

impl DefaultPlanner {
    pub fn new(playbooks: PlaybookPlanner) -> Self {
        DefaultPlanner { playbooks }
    }

    /// A planner over the playbooks of `dir`, and the problems found there.
    pub fn load_dir(dir: &std::path::Path) -> (Self, Vec<PlaybookFileError>) {
        let (playbooks, errors) = PlaybookPlanner::load_dir(dir);
        (Self::new(playbooks), errors)
    }

    /// The playbooks, to reload or list them.
    pub fn playbooks(&self) -> &PlaybookPlanner {
        &self.playbooks
    }

    /// The next decision for `req` (what [`Planner::plan`] resolves to).
    pub fn decide(&self, req: &PlanRequest) -> Result<Decision, PlanError> {
        let set = self.playbooks.set();
        if let Some(decision) = commands::plan(req, &set) {
            return Ok(decision);
        }
        if let Some(decision) = walk::plan(&set, req) {
            return decision;
        }
        if let Some(first) = req.history.first() {
            return Err(PlanError(format!(
                "step {} of this run (`{}`) was not planned by a playbook or a command; the run \
                 cannot go on with the `{}` planner",
                first.step,
                first.step_id,
                self.name()
            )));
        }
        if let Some((name, _)) = commands::parse(&req.trigger.text) {
            return Ok(commands::unknown(name, req, &set));
        }
        if req.trigger.event.is_some() {
            return Ok(Decision::Finish {
                reply: None,
                error: None,
            });
        }
        let text = req.trigger.text.trim();
        let opening = match text {
            "" => "There is nothing to do for an empty message.".to_owned(),
            text => format!(
                "Nothing here handles \"{}\".",
                commands::truncate(text, 200)
            ),
        };
        Ok(Decision::Finish {
            reply: Some(format!(
                "{opening} Here is what I can do.\n\n{}",
                commands::help(req, &set)
            )),
            error: None,
        })
    }
}

impl Planner for DefaultPlanner {
    fn name(&self) -> &str {
        "playbook"
    }

    fn plan(&self, req: PlanRequest) -> BoxFuture<'static, Result<Decision, PlanError>> {
        let decision = self.decide(&req);
        Box::pin(std::future::ready(decision))
    }

    /// What [`DefaultPlanner::decide`] does with a new run: a command, or a playbook that
    /// matches; any other event finishes quietly.
    fn wants_event(&self, trigger: &Trigger) -> bool {
        commands::parse(&trigger.text).is_some() || self.playbooks.set().find(trigger).is_some()
    }
}
