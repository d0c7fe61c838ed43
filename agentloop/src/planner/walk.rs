//! How a run goes through a playbook, worked out again from its history at every plan.
//!
//! The planner keeps no state: each `plan` call replays `req.history` over the playbook to
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
//! each step that has one and succeeded (rendered with the history up to and including that
//! step), leaving out those that render empty. A step's `reply` is for news of a success
//! ("Built app-1.tar"): a failure is told by the run's `failure` reply, and a tolerated one
//! (`continue_on_failure`) can be read from `steps.<name>.status` in later replies. They are recomputed at every plan; when
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
        for (k, obs) in self.req.history.iter().enumerate() {
            let step = self.step(k);
            let Some(reply) = step.reply.as_ref().filter(|_| obs.status.is_success()) else {
                continue;
            };
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

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::planner::playbook::tests::{DEPLOY, PING, PR};
    use crate::planner::testing::{Outcome, drive, drive_request, event, message, request};
    use crate::planner::{DefaultPlanner, PlaybookPlanner, Trigger};

    fn planner(files: &[(&str, &str)]) -> DefaultPlanner {
        let (set, errors) = PlaybookSet::from_files(files.iter().copied());
        assert_eq!(errors, []);
        DefaultPlanner::new(PlaybookPlanner::new(set))
    }

    fn fixtures() -> DefaultPlanner {
        planner(&[
            ("10-deploy.toml", DEPLOY),
            ("20-pull-request.toml", PR),
            ("30-ping.toml", PING),
        ])
    }

    /// The deploy fixture's skills: build gives an artifact, deploy a url, the rest succeed;
    /// `deploy` ends as `deploy_outcome` says.
    fn deploy_script(deploy_outcome: Option<Outcome>) -> impl FnMut(&str, &str, &Value) -> Outcome {
        move |_, skill, _| match skill {
            "build" => Outcome::succeeded(json!({"artifact": "app-1.tar"})),
            "deploy" => deploy_outcome
                .clone()
                .unwrap_or_else(|| Outcome::succeeded(json!({"url": "https://staging.example"}))),
            _ => Outcome::succeeded(json!({})),
        }
    }

    fn inputs(t: &crate::planner::testing::Transcript) -> Vec<Value> {
        t.last.history.iter().map(|o| o.input.clone()).collect()
    }

    #[test]
    fn step_ids_round_trip() {
        assert_eq!(step_id("deploy", "build"), "deploy:build");
        let table: &[(&str, Option<(&str, &str)>)] = &[
            ("deploy:build", Some(("deploy", "build"))),
            ("a.b-c:d_e", Some(("a.b-c", "d_e"))),
            ("/run", None),
            (":x", None),
            ("x:", None),
            ("/x:y", None),
            ("call_1", None),
        ];
        for &(id, want) in table {
            assert_eq!(parse_step_id(id), want, "{id}");
        }
    }

    #[tokio::test]
    async fn a_playbook_that_succeeds_runs_its_main_line() {
        let t = drive(
            &fixtures(),
            message("rest", "deploy staging"),
            deploy_script(None),
        )
        .await;
        assert_eq!(t.invoked(), ["deploy:build", "deploy:deploy"]);
        assert_eq!(
            inputs(&t),
            [
                json!({"ref": "main", "labels": ["deploy", "staging"]}),
                // a whole-expression template passes the value (an object) through
                json!({"env": "staging", "artifact": "app-1.tar",
                       "build": {"artifact": "app-1.tar"}}),
            ]
        );
        assert_eq!(
            t.replies(),
            ["Deploying main to staging", "Built app-1.tar"]
        );
        assert_eq!(t.reply(), Some("Deployed staging: https://staging.example"));
        assert_eq!(t.finish_error(), None);
        // Replies come right after what they announce.
        let kinds: Vec<&str> = t
            .decisions
            .iter()
            .map(|d| match d {
                Decision::Invoke { .. } => "invoke",
                Decision::Reply { .. } => "reply",
                Decision::Finish { .. } => "finish",
            })
            .collect();
        assert_eq!(kinds, ["reply", "invoke", "reply", "invoke", "finish"]);
    }

    #[tokio::test]
    async fn a_failed_step_runs_its_on_failure_branch_then_fails_the_run() {
        let t = drive(
            &fixtures(),
            message("rest", "deploy production v2"),
            deploy_script(Some(Outcome::failed("connection refused"))),
        )
        .await;
        assert_eq!(
            t.invoked(),
            [
                "deploy:build",
                "deploy:deploy",
                "deploy:rollback",
                "deploy:notify"
            ]
        );
        assert_eq!(inputs(&t)[0]["ref"], "v2");
        assert_eq!(
            inputs(&t)[3],
            json!({"text": "deploy of production failed"})
        );
        assert_eq!(
            t.reply(),
            Some("Deploy failed at deploy: connection refused; rolled back: succeeded")
        );
        assert_eq!(
            t.finish_error(),
            Some(
                "playbook `deploy` failed at step `deploy`: skill `deploy` failed: connection refused"
            )
        );
    }

    #[tokio::test]
    async fn a_denied_approval_is_a_failure_a_branch_can_test() {
        let t = drive(
            &fixtures(),
            message("rest", "deploy production"),
            deploy_script(Some(Outcome {
                status: StepStatus::Denied,
                output: Value::Null,
                error: None,
            })),
        )
        .await;
        // rollback's `when` is false for a denied deploy: only notify runs.
        assert_eq!(
            t.invoked(),
            ["deploy:build", "deploy:deploy", "deploy:notify"]
        );
        assert_eq!(
            inputs(&t)[2],
            json!({"text": "deploy of production denied"})
        );
        assert_eq!(
            t.reply(),
            Some("Deploy failed at deploy: denied; rolled back: not_run")
        );
        assert!(t.finish_error().unwrap().contains("was denied"));
    }

    #[tokio::test]
    async fn failures_inside_a_branch_do_not_stop_it() {
        let t = drive(
            &fixtures(),
            message("rest", "deploy staging"),
            |_, skill, _| match skill {
                "build" => Outcome::succeeded(json!({"artifact": "a"})),
                "deploy" => Outcome::failed("boom"),
                "rollback" => Outcome::failed("rollback broke too"),
                _ => Outcome::succeeded(json!({})),
            },
        )
        .await;
        assert_eq!(
            t.invoked(),
            [
                "deploy:build",
                "deploy:deploy",
                "deploy:rollback",
                "deploy:notify"
            ]
        );
        // `failed` stays the step that failed the run, not the last failure.
        assert_eq!(
            t.reply(),
            Some("Deploy failed at deploy: boom; rolled back: failed")
        );
    }

    #[tokio::test]
    async fn a_failure_without_on_failure_ends_the_run() {
        let t = drive(
            &fixtures(),
            message("local", "deploy staging"),
            |_, _, _| Outcome::failed("compiler error"),
        )
        .await;
        assert_eq!(t.invoked(), ["deploy:build"]);
        assert_eq!(t.replies(), ["Deploying main to staging"]);
        assert_eq!(
            t.reply(),
            Some("Deploy failed at build: compiler error; rolled back: not_run")
        );
        assert!(t.finish_error().unwrap().contains("at step `build`"));
    }

    #[tokio::test]
    async fn when_skips_steps_and_event_data_keeps_its_types() {
        let data = json!({"repo": "acme/api", "number": 42, "head_sha": "0123456789abcdef"});
        let pr = event("github", "pull_request.synchronize", data);

        // Tests pass: the comment step's `when` is false; the success reply is empty.
        let t = drive(&fixtures(), pr.clone(), |_, _, _| {
            Outcome::succeeded(json!({"failures": 0}))
        })
        .await;
        assert_eq!(t.invoked(), ["pr-checks:test"]);
        assert_eq!(
            inputs(&t)[0],
            json!({"repo": "acme/api", "number": 42, "head": "0123456789abcdef"})
        );
        assert_eq!(t.reply(), None);
        assert!(t.finished());

        let t = drive(&fixtures(), pr, |_, _, _| {
            Outcome::succeeded(json!({"failures": 3}))
        })
        .await;
        assert_eq!(t.invoked(), ["pr-checks:test", "pr-checks:comment"]);
        assert_eq!(
            inputs(&t)[1],
            json!({"repo": "acme/api", "number": 42, "body": "3 tests failed on 0123456"})
        );
    }

    #[tokio::test]
    async fn a_playbook_without_steps_just_replies() {
        let t = drive(&fixtures(), message("console", "Ping"), |_, _, _| {
            unreachable!("no steps")
        })
        .await;
        assert_eq!(t.decisions.len(), 1);
        assert_eq!(t.reply(), Some("pong from console (tester)"));
    }

    #[tokio::test]
    async fn continue_on_failure_goes_on_and_default_replies_summarise() {
        let p = planner(&[(
            "lint.toml",
            "[trigger]\npattern = '^check$'\n\
             [[steps]]\nname = 'lint'\nskill = 'lint'\ncontinue_on_failure = true\n\
             [[steps]]\nname = 'test'\nskill = 'test'\n",
        )]);
        let t = drive(&p, message("rest", "check"), |_, skill, _| match skill {
            "lint" => Outcome::failed("3 warnings"),
            _ => Outcome::succeeded(json!({})),
        })
        .await;
        assert_eq!(t.invoked(), ["lint:lint", "lint:test"]);
        assert_eq!(
            t.reply(),
            Some("`lint` done. Steps: lint failed, test succeeded.")
        );
        assert_eq!(t.finish_error(), None);

        let t = drive(&p, message("rest", "check"), |_, skill, _| match skill {
            "lint" => Outcome::succeeded(json!({})),
            _ => Outcome::ended(StepStatus::Forbidden, "not on rest"),
        })
        .await;
        assert_eq!(
            t.reply(),
            Some(
                "playbook `lint` failed at step `test`: skill `test` is not allowed on this channel: not on rest."
            )
        );
    }

    #[tokio::test]
    async fn an_undefined_input_fails_the_run_naming_playbook_step_and_template() {
        let p = planner(&[(
            "typo.toml",
            "[trigger]\npattern = '^go (?P<env>\\w+)$'\n\
             [[steps]]\nname = 'ship'\nskill = 'deploy'\n\
             input = { target = { env = 'to {{ match.evn }}' } }\n",
        )]);
        let t = drive(&p, message("rest", "go staging"), |_, _, _| unreachable!()).await;
        let err = t.error.expect("the run fails").0;
        assert!(err.starts_with("playbook `typo`, step `ship`: input.target.env `to {{ match.evn }}` failed: undefined value"), "{err}");
        assert!(
            err.contains("default(...)") && err.contains("typo.toml"),
            "{err}"
        );
        assert!(t.decisions.is_empty());
    }

    #[tokio::test]
    async fn a_reply_owed_at_a_crash_is_sent_once_after_it() {
        let p = fixtures();
        let full = drive(&p, message("rest", "deploy staging"), deploy_script(None)).await;

        // The session crashed after observing `build` but before its reply: the history is
        // rebuilt with the observation and only the start reply.
        let mut req = full.last.clone();
        req.history.truncate(1);
        req.replies.truncate(1);
        let resumed = drive_request(&p, req.clone(), deploy_script(None)).await;
        assert_eq!(
            resumed.decisions[0],
            Decision::Reply {
                text: "Built app-1.tar".into()
            }
        );
        assert_eq!(resumed.last.history, {
            let mut h = full.last.history.clone();
            h[1].job_id = resumed.last.history[1].job_id;
            h
        });
        assert_eq!(resumed.replies(), full.replies());
        assert_eq!(resumed.decisions.last(), full.decisions.last());

        // It crashed after the reply was sent: the next step, no second reply.
        req.replies = full.replies().to_vec();
        let d = p.decide(&req).unwrap();
        assert!(
            matches!(d, Decision::Invoke { ref step_id, .. } if step_id == "deploy:deploy"),
            "{d:?}"
        );
    }

    #[tokio::test]
    async fn empty_step_replies_are_not_sent_nor_counted() {
        let p = planner(&[(
            "quiet.toml",
            "[trigger]\npattern = 'q'\n\
             [[steps]]\nname = 'a'\nskill = 'x'\nreply = \"{% if step.output.loud %}loud a{% endif %}\"\n\
             [[steps]]\nname = 'b'\nskill = 'x'\nreply = 'b done'\n\
             [reply]\nsuccess = ''\n",
        )]);
        let t = drive(&p, message("rest", "q"), |_, _, _| {
            Outcome::succeeded(json!({}))
        })
        .await;
        assert_eq!(t.invoked(), ["quiet:a", "quiet:b"]);
        assert_eq!(t.replies(), ["b done"]);
        assert_eq!(t.reply(), None);
    }

    #[tokio::test]
    async fn a_run_stays_with_its_playbook_across_reloads() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("10-deploy.toml"), DEPLOY).unwrap();
        let (p, errors) = DefaultPlanner::load_dir(dir.path());
        assert_eq!(errors, []);
        let mut req = request(message("rest", "deploy staging"));
        req.replies.push("Deploying main to staging".into());
        let Decision::Invoke {
            step_id,
            skill,
            input,
        } = p.decide(&req).unwrap()
        else {
            panic!("expected the build step")
        };
        req.history.push(Observation {
            step: 1,
            step_id,
            skill,
            input,
            status: StepStatus::Succeeded,
            output: json!({"artifact": "x"}),
            error: None,
            job_id: None,
        });
        req.replies.push("Built x".into());

        // The file now has another playbook that also matches; the run keeps its own.
        std::fs::write(
            dir.path().join("00-first.toml"),
            "[trigger]\npattern = 'deploy'\n",
        )
        .unwrap();
        let report = p.playbooks().reload(dir.path());
        assert_eq!(report.added, ["00-first"]);
        assert!(
            matches!(p.decide(&req).unwrap(), Decision::Invoke { step_id, .. } if step_id == "deploy:deploy")
        );

        // Its playbook is gone: the run fails and says why.
        std::fs::remove_file(dir.path().join("10-deploy.toml")).unwrap();
        p.playbooks().reload(dir.path());
        let err = p.decide(&req).unwrap_err();
        assert!(
            err.0
                .contains("playbook `deploy`, which is no longer loaded"),
            "{err}"
        );

        // A step the playbook no longer has.
        std::fs::write(
            dir.path().join("10-deploy.toml"),
            "name = 'deploy'\n[trigger]\npattern = 'nope'\n",
        )
        .unwrap();
        p.playbooks().reload(dir.path());
        let err = p.decide(&req).unwrap_err();
        assert!(
            err.0
                .contains("(`deploy:build`) is not a step of playbook `deploy`"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn a_broken_failure_reply_still_tells_the_failure() {
        let p = planner(&[(
            "f.toml",
            "[trigger]\npattern = 'f'\n[[steps]]\nname = 'a'\nskill = 'x'\n\
             [reply]\nfailure = '{{ failed.output.nope.deeper }}'\n",
        )]);
        let t = drive(&p, message("rest", "f"), |_, _, _| {
            Outcome::failed("disk full")
        })
        .await;
        let err = t.error.unwrap().0;
        assert!(
            err.starts_with("playbook `f` failed at step `a`: skill `x` failed: disk full; and then playbook `f`: reply.failure"),
            "{err}"
        );
    }

    #[test]
    fn the_context_has_what_the_docs_say() {
        let p = planner(&[(
            "ctx.toml",
            "[trigger]\nevents = ['push']\n\
             [[steps]]\nname = 'a'\nskill = 'x'\n\
             input = { all = \"{{ [message, event, data.ref, payload.ref, sender, channel, session, playbook.name, steps.a.status, failed] }}\", ids = \"{{ session_id ~ ' ' ~ run_id }}\" }\n",
        )]);
        let trigger = Trigger {
            sender: Some("octocat".into()),
            ..event("github", "push", json!({"ref": "refs/heads/main"}))
        };
        let req = request(trigger.clone());
        let Decision::Invoke { input, .. } = p.decide(&req).unwrap() else {
            panic!()
        };
        assert_eq!(
            input["all"],
            json!([
                "",
                "push",
                "refs/heads/main",
                "refs/heads/main",
                "octocat",
                "github",
                "github:test",
                "ctx",
                "not_run",
                null
            ])
        );
        assert_eq!(
            input["ids"],
            format!("{} {}", trigger.session_id, req.run_id)
        );
    }
}
