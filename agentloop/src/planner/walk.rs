//! How a run goes through a playbook, worked out again from its history at every plan.
//!
//! The planner keeps no state: each [`plan`] call replays `req.history` over the playbook to
//! find where the run is, then decides. The same request always gets the same decision, so a
//! session that crashed and rebuilt the request from its events carries on where it was.
//!
//! # Step ids
//!
//! A playbook step is invoked with `step_id = "<playbook>:<step>"` (see [`step_id`]). The
//! first observation's step id names the playbook that owns the run (so a reload that changes
//! which playbook a trigger matches does not move a run that has started); each observation's
//! step name says which step it was. A run with no observation yet is matched against the
//! trigger again.
//!
//! # Where a run is
//!
//! Replaying the observations in order:
//! - in the **main line** (steps without `only_on_failure`, in file order): a step that
//!   succeeded, or failed with `continue_on_failure`, moves the run past it; a step that did
//!   not succeed (failed, cancelled, denied, forbidden, invalid) starts its `on_failure`
//!   **branch** if it has one, and otherwise **fails** the run;
//! - in a **branch**: the branch's steps run in the order listed, whatever each one's outcome
//!   (their own `on_failure` is not followed); when the branch is done the run fails.
//!
//! The next step is the first one, after the last observed step of the main line (or of the
//! branch), that is not `only_on_failure` (main line only) and whose `when` is true now; none
//! left means the run finishes. A `when` is evaluated once, when its step is next: a skipped
//! step is never looked at again.
//!
//! # Replies
//!
//! The replies a run owes are, in order: `reply.start` (before any step), then the `reply` of
//! each observed step that has one (rendered with the history up to and including that step),
//! leaving out those that render empty. They are recomputed at every plan; when
//! `req.replies.len()` is smaller than their number, the next decision is the reply at index
//! `req.replies.len()`. So a reply is sent once, and one that was due when the session crashed
//! is sent after it. This relies on `req.replies` holding exactly the replies this planner
//! asked for (`Decision::Reply`) in this run, in order.
//!
//! The run ends with `Finish { reply, error }`: `reply` is `reply.success` or `reply.failure`
//! rendered (a default summary when the playbook has none; no reply when it renders empty),
//! `error` says which step failed and how when the run failed.
//!
//! # Template context
//!
//! | name | value |
//! |---|---|
//! | `message` | the trigger's text |
//! | `match` | the named captures of the trigger's pattern |
//! | `event` | the event kind (`pull_request.opened`), or none |
//! | `data`, `payload` | the trigger's data (the same value under both names) |
//! | `sender` | who sent it, or none |
//! | `channel`, `session`, `session_id`, `run_id` | where the run is (`session` is the key) |
//! | `playbook` | `{name, description}` |
//! | `steps.<name>` | `{name, skill, status, input, output, error, job_id, step}` for every step of the playbook: the last observation of it, or `status = "not_run"` and the rest none |
//! | `failed` | the step whose failure failed the run (or started its branch), as in `steps`; none while nothing failed |
//! | `step` | in a step's `reply` only: that step, as in `steps` |
//!
//! `status` is `succeeded`, `failed`, `cancelled`, `denied`, `forbidden`, `invalid` or
//! `not_run`.

use minijinja::Value as Context;
use serde_json::{Map, Value, json};

use super::playbook::{Playbook, PlaybookSet, Step};
use super::template::{TemplateError, templates};
use super::{Decision, Observation, PlanError, PlanRequest, StepStatus};

/// The step id a playbook step is invoked with: `<playbook>:<step>`.
pub fn step_id(playbook: &str, step: &str) -> String {
    format!("{playbook}:{step}")
}

/// The playbook and step names of a playbook step id; `None` for other step ids.
pub fn parse_step_id(step_id: &str) -> Option<(&str, &str)> {
    let (playbook, step) = step_id.split_once(':')?;
    (!playbook.is_empty() && !step.is_empty() && !playbook.starts_with('/'))
        .then_some((playbook, step))
}

/// The next decision of a playbook run, or `None` when `req` is not one (its history does not
/// come from a playbook and no playbook matches its trigger).
pub(crate) fn plan(set: &PlaybookSet, req: &PlanRequest) -> Option<Result<Decision, PlanError>> {
    let (playbook, captures) = match req.history.first() {
        Some(first) => {
            let (name, _) = parse_step_id(&first.step_id)?;
            match set.get(name) {
                Some(p) => (p.clone(), p.captures(&req.trigger.text)),
                None => {
                    return Some(Err(PlanError(format!(
                        "this run follows playbook `{name}`, which is no longer loaded (its \
                         file was removed, renamed or broken by a reload); start the run again"
                    ))));
                }
            }
        }
        None => {
            let (p, captures) = set.find(&req.trigger)?;
            (p.clone(), captures)
        }
    };
    Some(Run::new(&playbook, captures, req).and_then(|run| run.decide()))
}

/// Where a run is, after replaying (a prefix of) its history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// In the main line; `next` is the first step index not yet passed.
    Main { next: usize },
    /// In the `on_failure` branch of the step observed at history index `failed`; `pos` is the
    /// first position of the branch list not yet passed.
    Branch { failed: usize, pos: usize },
    /// The step observed at history index `failed` failed without a branch.
    Failed { failed: usize },
}

impl Phase {
    /// The history index of the step whose failure failed the run.
    fn failed(self) -> Option<usize> {
        match self {
            Phase::Main { .. } => None,
            Phase::Branch { failed, .. } | Phase::Failed { failed } => Some(failed),
        }
    }
}

/// A run of a playbook, as far as its request tells.
struct Run<'a> {
    playbook: &'a Playbook,
    req: &'a PlanRequest,
    /// The captures of the trigger's pattern.
    captures: Map<String, Value>,
    /// For each observation of the history, the index of its step in the playbook.
    steps: Vec<usize>,
}

impl<'a> Run<'a> {
    fn new(
        playbook: &'a Playbook,
        captures: Map<String, Value>,
        req: &'a PlanRequest,
    ) -> Result<Self, PlanError> {
        let steps = req
            .history
            .iter()
            .map(|obs| {
                parse_step_id(&obs.step_id)
                    .filter(|(p, _)| *p == playbook.name)
                    .and_then(|(_, step)| playbook.step_index(step))
                    .ok_or_else(|| {
                        PlanError(format!(
                            "step {} of this run (`{}`) is not a step of playbook `{}`; was the \
                             playbook changed while the run was going? Start the run again",
                            obs.step, obs.step_id, playbook.name
                        ))
                    })
            })
            .collect::<Result<_, _>>()?;
        Ok(Run {
            playbook,
            req,
            captures,
            steps,
        })
    }

    fn step(&self, k: usize) -> &'a Step {
        &self.playbook.steps[self.steps[k]]
    }

    /// Where the run is after its first `upto` observations.
    fn phase(&self, upto: usize) -> Phase {
        let mut phase = Phase::Main { next: 0 };
        for (k, obs) in self.req.history[..upto].iter().enumerate() {
            let i = self.steps[k];
            let step = &self.playbook.steps[i];
            phase = match phase {
                Phase::Main { .. } if obs.status.is_success() || step.continue_on_failure => {
                    Phase::Main { next: i + 1 }
                }
                Phase::Main { .. } if !step.on_failure.is_empty() => {
                    Phase::Branch { failed: k, pos: 0 }
                }
                Phase::Main { .. } => Phase::Failed { failed: k },
                Phase::Branch { failed, pos } => {
                    let list = &self.step(failed).on_failure;
                    let pos = list[pos..]
                        .iter()
                        .position(|&j| j == i)
                        .map_or(pos, |p| pos + p + 1);
                    Phase::Branch { failed, pos }
                }
                Phase::Failed { failed } => Phase::Failed { failed },
            };
        }
        phase
    }

    /// The template context after the first `upto` observations; `current` sets `step`.
    fn context(&self, upto: usize, current: Option<usize>) -> Context {
        let trigger = &self.req.trigger;
        let mut steps = Map::new();
        for step in &self.playbook.steps {
            steps.insert(
                step.name.clone(),
                json!({
                    "name": step.name, "skill": step.skill, "status": "not_run",
                    "input": null, "output": null, "error": null, "job_id": null, "step": null,
                }),
            );
        }
        for (k, obs) in self.req.history[..upto].iter().enumerate() {
            steps.insert(self.step(k).name.clone(), self.result(k, obs));
        }
        let failed = self
            .phase(upto)
            .failed()
            .map_or(Value::Null, |f| self.result(f, &self.req.history[f]));
        let mut ctx = json!({
            "message": trigger.text,
            "match": self.captures,
            "event": trigger.event,
            "data": trigger.data,
            "payload": trigger.data,
            "sender": trigger.sender,
            "channel": trigger.channel,
            "session": trigger.session_key,
            "session_id": trigger.session_id.to_string(),
            "run_id": self.req.run_id.to_string(),
            "playbook": {"name": self.playbook.name, "description": self.playbook.description},
            "steps": steps,
            "failed": failed,
        });
        if let Some(k) = current {
            ctx["step"] = self.result(k, &self.req.history[k]);
        }
        Context::from_serialize(&ctx)
    }

    /// An observation as templates see it.
    fn result(&self, k: usize, obs: &Observation) -> Value {
        json!({
            "name": self.step(k).name,
            "skill": obs.skill,
            "status": obs.status,
            "input": obs.input,
            "output": obs.output,
            "error": obs.error,
            "job_id": obs.job_id.map(|id| id.to_string()),
            "step": obs.step,
        })
    }

    fn decide(&self) -> Result<Decision, PlanError> {
        if let Some(text) = self.owed_reply()? {
            return Ok(Decision::Reply { text });
        }
        let upto = self.req.history.len();
        let phase = self.phase(upto);
        let next: Vec<usize> = match phase {
            Phase::Main { next } => (next..self.playbook.steps.len())
                .filter(|&i| !self.playbook.steps[i].only_on_failure)
                .collect(),
            Phase::Branch { failed, pos } => self.step(failed).on_failure[pos..].to_vec(),
            Phase::Failed { .. } => Vec::new(),
        };
        let ctx = self.context(upto, None);
        for i in next {
            let step = &self.playbook.steps[i];
            if let Some(when) = &step.when {
                let run = templates()
                    .condition(when, &ctx)
                    .map_err(|e| self.template_error(Some(step), "when", when, e))?;
                if !run {
                    continue;
                }
            }
            let input = self.render_input(step, &step.input, "input", &ctx)?;
            return Ok(Decision::Invoke {
                step_id: step_id(&self.playbook.name, &step.name),
                skill: step.skill.clone(),
                input,
            });
        }
        self.finish(phase, &ctx)
    }

    /// The reply due now, if the run owes one (see the module docs).
    fn owed_reply(&self) -> Result<Option<String>, PlanError> {
        let sent = self.req.replies.len();
        let mut due = 0;
        let mut check = |text: String| -> Option<String> {
            if text.trim().is_empty() {
                return None;
            }
            due += 1;
            (due == sent + 1).then_some(text)
        };
        if let Some(start) = &self.playbook.replies.start {
            let text = templates()
                .render_string(start, &self.context(0, None))
                .map_err(|e| self.template_error(None, "reply.start", start, e))?;
            if let Some(text) = check(text) {
                return Ok(Some(text));
            }
        }
        for k in 0..self.req.history.len() {
            let step = self.step(k);
            let Some(reply) = &step.reply else { continue };
            let text = templates()
                .render_string(reply, &self.context(k + 1, Some(k)))
                .map_err(|e| self.template_error(Some(step), "reply", reply, e))?;
            if let Some(text) = check(text) {
                return Ok(Some(text));
            }
        }
        Ok(None)
    }

    /// `input` with every string rendered (see [`super::template`]); `path` names it in errors.
    fn render_input(
        &self,
        step: &Step,
        input: &Value,
        path: &str,
        ctx: &Context,
    ) -> Result<Value, PlanError> {
        Ok(match input {
            Value::String(src) => templates()
                .render_value(src, ctx)
                .map_err(|e| self.template_error(Some(step), path, src, e))?,
            Value::Array(items) => Value::Array(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, v)| self.render_input(step, v, &format!("{path}[{i}]"), ctx))
                    .collect::<Result<_, _>>()?,
            ),
            Value::Object(map) => Value::Object(
                map.iter()
                    .map(|(k, v)| {
                        let v = self.render_input(step, v, &format!("{path}.{k}"), ctx)?;
                        Ok((k.clone(), v))
                    })
                    .collect::<Result<_, PlanError>>()?,
            ),
            other => other.clone(),
        })
    }

    fn template_error(
        &self,
        step: Option<&Step>,
        what: &str,
        src: &str,
        err: TemplateError,
    ) -> PlanError {
        let step = step.map_or(String::new(), |s| format!(", step `{}`", s.name));
        PlanError(format!(
            "playbook `{}`{step}: {what} `{src}` failed: {err} (in {})",
            self.playbook.name,
            self.playbook.path.display()
        ))
    }

    fn finish(&self, phase: Phase, ctx: &Context) -> Result<Decision, PlanError> {
        let Some(failed) = phase.failed() else {
            let reply = match &self.playbook.replies.success {
                Some(src) => templates()
                    .render_string(src, ctx)
                    .map_err(|e| self.template_error(None, "reply.success", src, e))?,
                None => self.summary(),
            };
            return Ok(Decision::Finish {
                reply: non_empty(reply),
                error: None,
            });
        };
        let error = format!(
            "playbook `{}` failed at step `{}`: {}",
            self.playbook.name,
            self.step(failed).name,
            describe(&self.req.history[failed])
        );
        let reply = match &self.playbook.replies.failure {
            Some(src) => templates().render_string(src, ctx).map_err(|e| {
                let PlanError(msg) = self.template_error(None, "reply.failure", src, e);
                PlanError(format!("{error}; and then {msg}"))
            })?,
            None => format!(
                "{error}.{}",
                self.summary_of(self.branch_observations(phase))
            ),
        };
        Ok(Decision::Finish {
            reply: non_empty(reply),
            error: Some(error),
        })
    }

    /// The observations made in the branch of `phase`, if it is one.
    fn branch_observations(&self, phase: Phase) -> &'a [Observation] {
        match phase {
            Phase::Branch { failed, .. } => &self.req.history[failed + 1..],
            _ => &[],
        }
    }

    /// The default success reply: `` `deploy` done: build succeeded, deploy succeeded. ``
    fn summary(&self) -> String {
        let steps = self.summary_of(&self.req.history);
        format!("`{}` done.{steps}", self.playbook.name)
    }

    fn summary_of(&self, observations: &[Observation]) -> String {
        if observations.is_empty() {
            return String::new();
        }
        let offset = self.req.history.len() - observations.len();
        let list: Vec<String> = observations
            .iter()
            .enumerate()
            .map(|(k, obs)| format!("{} {}", self.step(offset + k).name, status_word(obs.status)))
            .collect();
        format!(" Steps: {}.", list.join(", "))
    }
}

fn non_empty(text: String) -> Option<String> {
    (!text.trim().is_empty()).then_some(text)
}

/// `succeeded`, `failed`, … as in templates.
pub(crate) fn status_word(status: StepStatus) -> &'static str {
    match status {
        StepStatus::Succeeded => "succeeded",
        StepStatus::Failed => "failed",
        StepStatus::Cancelled => "cancelled",
        StepStatus::Denied => "denied",
        StepStatus::Forbidden => "forbidden",
        StepStatus::Invalid => "invalid",
    }
}

/// How an observation ended, in words: `skill `deploy` failed: connection refused`.
pub(crate) fn describe(obs: &Observation) -> String {
    let how = match obs.status {
        StepStatus::Succeeded => "succeeded",
        StepStatus::Failed => "failed",
        StepStatus::Cancelled => "was cancelled",
        StepStatus::Denied => "was denied (an operator denied its approval, or it expired)",
        StepStatus::Forbidden => "is not allowed on this channel",
        StepStatus::Invalid => "could not start",
    };
    match &obs.error {
        Some(error) if !error.is_empty() => format!("skill `{}` {how}: {error}", obs.skill),
        _ => format!("skill `{}` {how}", obs.skill),
    }
}
