//! Chat commands, for any channel that carries text: a message starting with `/`.
//!
//! | command | what it does |
//! |---|---|
//! | `/run <skill> [json]` | invokes `skill` with the JSON input (`{}` when omitted), then replies with its status and output (pretty JSON, cut at [`MAX_OUTPUT_BYTES`]) or its error |
//! | `/status` | replies with this session's runs, queue and recent runs |
//! | `/help` | replies with the commands, the playbooks of this channel and the skills it may invoke |
//! | `/remember <text>` | invokes `memory.write` with `{text, session}` (this session's memory), then replies "Remembered." |
//! | `/recall <query>` | invokes `memory.search` with `{query, session}` (this session's memory and the global one), then replies with the hits or "Nothing found" |
//!
//! Commands are recognised case-insensitively. A command that invokes a skill does so with
//! `step_id = "/<command>"` (`/run`, `/remember`, `/recall`), which is how a re-plan after the
//! observation (or after a crash) knows the run is a command's. A usage mistake (bad JSON, no
//! skill, an empty note, a skill this channel cannot invoke) is answered with a reply saying
//! what is wrong and the usage; the run finishes without an error, since the message was
//! answered. A skill invoked by a command that does not succeed finishes the run with an error.
//!
//! `req.skills` is used to refuse unknown skills up front with a helpful reply; when it is
//! empty the planner takes it that it was not told, and leaves the decision to the session's
//! policy.
//!
//! Layout: [`Command`] and [`parse`], `plan` (start or finish a command run), `help` (also the
//! reply to a message nothing matched), `unknown`.

use std::fmt::Write as _;

use serde_json::{Value, json};

use super::playbook::PlaybookSet;
use super::walk::describe;
use super::{Decision, Observation, PlanRequest, StepStatus};

/// Output longer than this (pretty JSON, in bytes) is cut in `/run`'s reply.
pub const MAX_OUTPUT_BYTES: usize = 2048;

/// The recalled texts longer than this (bytes) are cut in `/recall`'s reply.
const MAX_RECALL_TEXT_BYTES: usize = 300;

/// `/run`'s usage line.
const RUN_USAGE: &str =
    "Usage: /run <skill> [json input], for example: /run echo {\"text\": \"hello\"}";

/// The commands there are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Run,
    Status,
    Help,
    Remember,
    Recall,
}

impl Command {
    /// Every command, in the order `/help` lists them.
    pub const ALL: [Command; 5] = [
        Command::Run,
        Command::Status,
        Command::Remember,
        Command::Recall,
        Command::Help,
    ];

    /// The command's name without its slash.
    pub fn name(self) -> &'static str {
        match self {
            Command::Run => "run",
            Command::Status => "status",
            Command::Help => "help",
            Command::Remember => "remember",
            Command::Recall => "recall",
        }
    }

    /// How `/help` shows it: synopsis and what it does.
    fn synopsis(self) -> (&'static str, &'static str) {
        match self {
            Command::Run => (
                "/run <skill> [json]",
                "invoke a skill with a JSON input ({} when omitted)",
            ),
            Command::Status => ("/status", "this session's runs and queue"),
            Command::Help => ("/help", "this list"),
            Command::Remember => ("/remember <text>", "keep a note in this session's memory"),
            Command::Recall => (
                "/recall <query>",
                "search this session's memory (and the global one)",
            ),
        }
    }

    /// The step id the command invokes its skill with.
    pub fn step_id(self) -> String {
        format!("/{}", self.name())
    }

    fn from_name(name: &str) -> Option<Command> {
        Command::ALL
            .into_iter()
            .find(|c| c.name().eq_ignore_ascii_case(name))
    }
}

/// A message that looks like a command: `(name, rest)` for `/name rest`, whether or not `name`
/// is a known command. `None` when the text does not start with `/`.
pub fn parse(text: &str) -> Option<(&str, &str)> {
    let text = text.trim().strip_prefix('/')?;
    let end = text.find(char::is_whitespace).unwrap_or(text.len());
    let (name, rest) = text.split_at(end);
    (!name.is_empty()).then_some((name, rest.trim()))
}

/// The decision for a command run: `None` when `req` is not one (its history is not a
/// command's and its text is not a known command).
pub(crate) fn plan(req: &PlanRequest, playbooks: &PlaybookSet) -> Option<Decision> {
    if let Some(first) = req.history.first() {
        let command = first
            .step_id
            .strip_prefix('/')
            .and_then(Command::from_name)?;
        return Some(observed(command, req, first));
    }
    let (name, rest) = parse(&req.trigger.text)?;
    let command = Command::from_name(name)?;
    Some(start(command, rest, req, playbooks))
}

/// The first decision of a command.
fn start(command: Command, rest: &str, req: &PlanRequest, playbooks: &PlaybookSet) -> Decision {
    let session = req.trigger.session_id.to_string();
    match command {
        Command::Help => answer(help(req, playbooks)),
        Command::Status => answer(status(req)),
        Command::Run => {
            let (skill, input) = match rest.find(char::is_whitespace) {
                Some(i) => (&rest[..i], rest[i..].trim()),
                None => (rest, ""),
            };
            if skill.is_empty() {
                return answer(format!(
                    "/run needs a skill name.\n{RUN_USAGE}\n{}",
                    skill_list(req)
                ));
            }
            if let Some(refusal) = unavailable(req, skill) {
                return answer(refusal);
            }
            let input = match input {
                "" => json!({}),
                text => match serde_json::from_str::<Value>(text) {
                    Ok(input) => input,
                    Err(e) => {
                        return answer(format!(
                            "Cannot run `{skill}`: the input is not valid JSON ({e}).\n{RUN_USAGE}"
                        ));
                    }
                },
            };
            invoke(command, skill, input)
        }
        Command::Remember => {
            if rest.is_empty() {
                return answer(
                    "/remember needs something to remember, for example: /remember the staging \
                     database is db-2"
                        .to_owned(),
                );
            }
            if let Some(refusal) = unavailable(req, "memory.write") {
                return answer(refusal);
            }
            invoke(
                command,
                "memory.write",
                json!({"text": rest, "session": session}),
            )
        }
        Command::Recall => {
            if rest.is_empty() {
                return answer(
                    "/recall needs words to look for, for example: /recall staging database"
                        .to_owned(),
                );
            }
            if let Some(refusal) = unavailable(req, "memory.search") {
                return answer(refusal);
            }
            invoke(
                command,
                "memory.search",
                json!({"query": rest, "session": session}),
            )
        }
    }
}

/// The last decision of a command, once its skill has been observed.
fn observed(command: Command, req: &PlanRequest, obs: &Observation) -> Decision {
    if obs.status != StepStatus::Succeeded {
        let what = describe(obs);
        let reply = match command {
            Command::Remember => format!("Could not remember that: {what}."),
            Command::Recall => format!("Could not search the memory: {what}."),
            _ => format!("{what}.{}", job_note(obs)),
        };
        return Decision::Finish {
            reply: Some(reply),
            error: Some(what),
        };
    }
    let reply = match command {
        Command::Remember => "Remembered.".to_owned(),
        Command::Recall => recall_reply(req, &obs.output),
        _ => {
            let pretty =
                serde_json::to_string_pretty(&obs.output).unwrap_or_else(|_| "null".to_owned());
            format!(
                "`{}` succeeded.{}\n```json\n{}\n```",
                obs.skill,
                job_note(obs),
                truncate(&pretty, MAX_OUTPUT_BYTES)
            )
        }
    };
    answer(reply)
}

fn job_note(obs: &Observation) -> String {
    obs.job_id
        .map_or(String::new(), |id| format!(" (job {id})"))
}

fn recall_reply(req: &PlanRequest, output: &Value) -> String {
    let query = parse(&req.trigger.text).map_or("", |(_, rest)| rest);
    let results = output
        .get("results")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    if results.is_empty() {
        return format!("Nothing found for \"{query}\".");
    }
    let mut reply = format!("Found {} for \"{query}\":", results.len());
    for hit in results {
        let text = hit.get("text").and_then(Value::as_str).unwrap_or("");
        let _ = write!(reply, "\n- {}", truncate(text, MAX_RECALL_TEXT_BYTES));
        if hit.get("scope").and_then(Value::as_str) == Some("global") {
            reply.push_str(" (global)");
        }
    }
    reply
}

/// The reply to an unknown `/command`.
pub(crate) fn unknown(name: &str, req: &PlanRequest, playbooks: &PlaybookSet) -> Decision {
    answer(format!(
        "There is no command `/{name}`.\n\n{}",
        help(req, playbooks)
    ))
}

/// What this planner can do on the request's channel: commands, playbooks, skills.
pub(crate) fn help(req: &PlanRequest, playbooks: &PlaybookSet) -> String {
    let mut text = String::from("Commands:");
    for command in Command::ALL {
        let (synopsis, what) = command.synopsis();
        let _ = write!(text, "\n  {synopsis} — {what}");
    }
    let channel = &req.trigger.channel;
    let here: Vec<_> = playbooks.for_channel(channel).collect();
    if here.is_empty() {
        let _ = write!(text, "\n\nNo playbooks on the `{channel}` channel.");
    } else {
        let _ = write!(text, "\n\nPlaybooks on the `{channel}` channel:");
        for p in here {
            let _ = write!(text, "\n  {}", p.name);
            if !p.description.is_empty() {
                let _ = write!(text, " — {}", p.description);
            }
            let _ = write!(text, " ({})", p.trigger_summary());
        }
    }
    let _ = write!(text, "\n\n{}", skill_list(req));
    text
}

/// The skills the session may invoke, one a line.
fn skill_list(req: &PlanRequest) -> String {
    if req.skills.is_empty() {
        return "No skills are listed for this channel.".to_owned();
    }
    let mut text = String::from("Skills:");
    for skill in &req.skills {
        let _ = write!(text, "\n  {}", skill.name);
        if !skill.description.is_empty() {
            let _ = write!(text, " — {}", skill.description);
        }
        if skill.needs_approval {
            text.push_str(" (needs approval)");
        }
    }
    text
}

/// A refusal when `skill` is not one this channel may invoke (see the module docs).
fn unavailable(req: &PlanRequest, skill: &str) -> Option<String> {
    if req.skills.is_empty() || req.skills.iter().any(|s| s.name == skill) {
        return None;
    }
    let names: Vec<&str> = req.skills.iter().map(|s| s.name.as_str()).collect();
    Some(format!(
        "The skill `{skill}` is unknown, disabled or not allowed on the `{}` channel. Skills \
         here: {}.",
        req.trigger.channel,
        names.join(", ")
    ))
}

/// `/status`'s reply.
fn status(req: &PlanRequest) -> String {
    let s = &req.status;
    let mut text = format!(
        "Session `{}`: {} run{} (this one included), {} message{} queued.",
        req.trigger.session_key,
        s.runs,
        plural(s.runs as usize),
        s.queued,
        plural(s.queued)
    );
    if s.recent.is_empty() {
        text.push_str("\nNo finished runs yet.");
    } else {
        text.push_str("\nRecent runs:");
        for run in &s.recent {
            let _ = write!(
                text,
                "\n- {}: \"{}\" ({} step{})",
                run.outcome,
                truncate(&run.trigger, 80),
                run.steps,
                plural(run.steps as usize)
            );
        }
    }
    text
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

fn answer(text: String) -> Decision {
    Decision::Finish {
        reply: Some(text),
        error: None,
    }
}

fn invoke(command: Command, skill: &str, input: Value) -> Decision {
    Decision::Invoke {
        step_id: command.step_id(),
        skill: skill.to_owned(),
        input,
    }
}

/// `text` cut to at most `max` bytes (at a character boundary), saying how much was left out.
pub(crate) fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} more bytes)", &text[..end], text.len() - end)
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use store::{Risk, RunId};

    use super::*;
    use crate::planner::playbook::tests::{DEPLOY, PING, PR};
    use crate::planner::testing::{Outcome, drive, drive_request, event, message, request};
    use crate::planner::{
        DefaultPlanner, Planner, PlaybookPlanner, RunSummary, SkillInfo, Trigger,
    };

    fn planner() -> DefaultPlanner {
        let (set, errors) = PlaybookSet::from_files([
            ("10-deploy.toml", DEPLOY),
            ("20-pull-request.toml", PR),
            ("30-ping.toml", PING),
        ]);
        assert_eq!(errors, []);
        DefaultPlanner::new(PlaybookPlanner::new(set))
    }

    fn skill(name: &str, description: &str, needs_approval: bool) -> SkillInfo {
        SkillInfo {
            name: name.into(),
            description: description.into(),
            input_schema: None,
            risk: Risk::Read,
            needs_approval,
        }
    }

    fn with_skills(text: &str) -> PlanRequest {
        let mut req = request(message("rest", text));
        req.skills = vec![
            skill("echo", "Returns its input", false),
            skill("deploy", "Deploys an artifact", true),
            skill("memory.write", "Remembers", false),
            skill("memory.search", "Finds", false),
        ];
        req
    }

    fn no_skill(_: &str, _: &str, _: &Value) -> Outcome {
        panic!("no skill should be invoked")
    }

    #[test]
    fn parse_table() {
        let table: &[(&str, Option<(&str, &str)>)] = &[
            ("/run echo {\"a\": 1}", Some(("run", "echo {\"a\": 1}"))),
            ("  /status  ", Some(("status", ""))),
            (
                "/remember\tthe db is db-2 ",
                Some(("remember", "the db is db-2")),
            ),
            ("/", None),
            ("/ run", None),
            ("run", None),
            ("deploy /tmp", None),
        ];
        for &(text, want) in table {
            assert_eq!(parse(text), want, "{text:?}");
        }
        assert_eq!(Command::from_name("HELP"), Some(Command::Help));
        assert_eq!(Command::from_name("nope"), None);
    }

    #[tokio::test]
    async fn run_invokes_the_skill_and_replies_with_its_output() {
        let t = drive_request(
            &planner(),
            with_skills("/run echo {\"text\": \"hi\", \"n\": [1, 2]}"),
            |step_id, skill, input| {
                assert_eq!((step_id, skill), ("/run", "echo"));
                Outcome::succeeded(input.clone())
            },
        )
        .await;
        assert_eq!(t.last.history[0].input, json!({"text": "hi", "n": [1, 2]}));
        let reply = t.reply().unwrap();
        let job = t.last.history[0].job_id.unwrap();
        assert!(
            reply.starts_with(&format!(
                "`echo` succeeded. (job {job})\n```json\n{{\n  \"n\": ["
            )),
            "{reply}"
        );
        assert_eq!(t.finish_error(), None);

        // No input is `{}`.
        let t = drive_request(&planner(), with_skills("/RUN echo"), |_, _, input| {
            Outcome::succeeded(input.clone())
        })
        .await;
        assert_eq!(t.last.history[0].input, json!({}));
    }

    #[tokio::test]
    async fn run_cuts_long_output_and_reports_failures() {
        let t = drive(&planner(), message("local", "/run big"), |_, _, _| {
            Outcome::succeeded(json!({"text": "é".repeat(3000)}))
        })
        .await;
        let reply = t.reply().unwrap();
        assert!(reply.len() < MAX_OUTPUT_BYTES + 200, "{}", reply.len());
        assert!(reply.contains("more bytes)\n```"), "{reply}");

        let t = drive(
            &planner(),
            message("local", "/run deploy {\"env\": \"prod\"}"),
            |_, _, _| Outcome::ended(StepStatus::Denied, "approval expired"),
        )
        .await;
        assert_eq!(
            t.finish_error(),
            Some(
                "skill `deploy` was denied (an operator denied its approval, or it expired): approval expired"
            )
        );
        assert!(t.reply().unwrap().starts_with("skill `deploy` was denied"));
    }

    #[tokio::test]
    async fn run_mistakes_get_a_reply_that_says_what_to_fix() {
        let table: &[(&str, &[&str])] = &[
            (
                "/run echo {\"text\": hi}",
                &[
                    "Cannot run `echo`: the input is not valid JSON (expected value at line 1 column 10)",
                    "Usage: /run <skill>",
                ],
            ),
            (
                "/run",
                &["/run needs a skill name", "Usage: /run", "Skills:\n  echo"],
            ),
            (
                "/run nope {}",
                &[
                    "The skill `nope` is unknown, disabled or not allowed on the `rest` channel",
                    "Skills here: echo, deploy, memory.write, memory.search.",
                ],
            ),
        ];
        for &(text, parts) in table {
            let t = drive_request(&planner(), with_skills(text), no_skill).await;
            let reply = t.reply().unwrap();
            for part in parts {
                assert!(reply.contains(part), "{text}: {reply}");
            }
            assert_eq!(t.finish_error(), None, "{text}");
        }
    }

    #[tokio::test]
    async fn status_tells_runs_queue_and_recent_runs() {
        let mut req = request(message("console", "/status"));
        req.status.runs = 3;
        req.status.queued = 1;
        req.status.recent = vec![
            RunSummary {
                run_id: RunId::new(),
                trigger: "deploy staging".into(),
                outcome: "failed".into(),
                steps: 4,
            },
            RunSummary {
                run_id: RunId::new(),
                trigger: "ping".into(),
                outcome: "finished".into(),
                steps: 1,
            },
        ];
        let t = drive_request(&planner(), req, no_skill).await;
        assert_eq!(
            t.reply(),
            Some(
                "Session `console:test`: 3 runs (this one included), 1 message queued.\n\
                 Recent runs:\n- failed: \"deploy staging\" (4 steps)\n- finished: \"ping\" (1 step)"
            )
        );
        let t = drive(&planner(), message("console", "/status"), no_skill).await;
        assert!(t.reply().unwrap().ends_with("No finished runs yet."));
    }

    #[tokio::test]
    async fn help_lists_commands_this_channels_playbooks_and_skills() {
        let t = drive_request(&planner(), with_skills("/help"), no_skill).await;
        let reply = t.reply().unwrap();
        for part in [
            "Commands:\n  /run <skill> [json] — invoke a skill",
            "/recall <query>",
            "Playbooks on the `rest` channel:\n  deploy — Deploy a ref to an environment (messages matching `^deploy (?P<env>",
            "30-ping — Answers ping (messages matching `(?i)^ping$`)",
            "Skills:\n  echo — Returns its input\n  deploy — Deploys an artifact (needs approval)",
        ] {
            assert!(reply.contains(part), "missing {part:?} in:\n{reply}");
        }
        // pr-checks is for github only
        assert!(!reply.contains("pr-checks"), "{reply}");

        let t = drive(&planner(), message("github", "/help"), no_skill).await;
        let reply = t.reply().unwrap();
        assert!(reply.contains("pr-checks — Test a pull request and comment on failure (events pull_request.opened, pull_request.synchronize)"), "{reply}");
        assert!(!reply.contains("deploy —"), "{reply}");
        assert!(
            reply.ends_with("No skills are listed for this channel."),
            "{reply}"
        );
    }

    #[tokio::test]
    async fn remember_writes_this_sessions_memory() {
        let req = with_skills("/remember the staging db is db-2");
        let session = req.trigger.session_id.to_string();
        let t = drive_request(&planner(), req, |step_id, skill, input| {
            assert_eq!((step_id, skill), ("/remember", "memory.write"));
            Outcome::succeeded(json!({"id": "x", "scope": format!("session:{}", input["session"].as_str().unwrap())}))
        })
        .await;
        assert_eq!(
            t.last.history[0].input,
            json!({"text": "the staging db is db-2", "session": session})
        );
        assert_eq!(t.reply(), Some("Remembered."));

        let t = drive(&planner(), message("rest", "/remember"), no_skill).await;
        assert!(t.reply().unwrap().starts_with("/remember needs something"));

        let t = drive(&planner(), message("rest", "/remember x"), |_, _, _| {
            Outcome::ended(StepStatus::Invalid, "input.text: too long")
        })
        .await;
        assert_eq!(
            t.reply(),
            Some(
                "Could not remember that: skill `memory.write` could not start: input.text: too long."
            )
        );
        assert!(t.finish_error().is_some());
    }

    #[tokio::test]
    async fn recall_replies_with_hits_or_nothing_found() {
        let req = with_skills("/recall staging db");
        let session = req.trigger.session_id.to_string();
        let t = drive_request(&planner(), req, |step_id, skill, input| {
            assert_eq!((step_id, skill), ("/recall", "memory.search"));
            assert_eq!(input, &json!({"query": "staging db", "session": session}));
            Outcome::succeeded(json!({"results": [
                {"text": "the staging db is db-2", "scope": format!("session:{session}"), "score": 2.0},
                {"text": "all dbs are postgres", "scope": "global", "score": 1.0},
            ]}))
        })
        .await;
        assert_eq!(
            t.reply(),
            Some(
                "Found 2 for \"staging db\":\n- the staging db is db-2\n- all dbs are postgres (global)"
            )
        );

        let t = drive(&planner(), message("rest", "/recall zebras"), |_, _, _| {
            Outcome::succeeded(json!({"results": []}))
        })
        .await;
        assert_eq!(t.reply(), Some("Nothing found for \"zebras\"."));

        let mut req = with_skills("/recall x");
        req.skills.retain(|s| s.name != "memory.search");
        let t = drive_request(&planner(), req, no_skill).await;
        assert!(
            t.reply()
                .unwrap()
                .contains("`memory.search` is unknown, disabled or not allowed")
        );
    }

    #[tokio::test]
    async fn unknown_commands_and_unmatched_text_get_help_never_an_error() {
        let t = drive(&planner(), message("rest", "/deploy staging"), no_skill).await;
        let reply = t.reply().unwrap();
        assert!(
            reply.starts_with("There is no command `/deploy`.\n\nCommands:"),
            "{reply}"
        );
        assert_eq!(t.finish_error(), None);

        let t = drive(&planner(), message("rest", "what can you do?"), no_skill).await;
        let reply = t.reply().unwrap();
        assert!(
            reply.starts_with(
                "Nothing here handles \"what can you do?\". Here is what I can do.\n\nCommands:"
            ),
            "{reply}"
        );
        assert!(reply.contains("deploy — Deploy a ref"), "{reply}");
        assert_eq!(t.finish_error(), None);

        let t = drive(&planner(), message("rest", "   "), no_skill).await;
        assert!(
            t.reply()
                .unwrap()
                .starts_with("There is nothing to do for an empty message.")
        );

        // An event nothing handles finishes quietly.
        let t = drive(
            &planner(),
            event("github", "star.created", json!({})),
            no_skill,
        )
        .await;
        assert!(t.finished());
        assert_eq!(t.reply(), None);
    }

    /// `wants_event` is the router's shortcut for "the first decision would be a quiet
    /// finish": it must agree with `decide` on every kind of event.
    #[test]
    fn wants_event_agrees_with_the_first_decision() {
        let p = planner();
        let quiet = Decision::Finish {
            reply: None,
            error: None,
        };
        let triggers = [
            event("github", "pull_request.opened", json!({"number": 1})),
            event("github", "pull_request.closed", json!({})),
            event("github", "ping", json!({})),
            event("github", "star.created", json!({})),
            event("rest", "pull_request.opened", json!({})),
            Trigger {
                text: "/status".into(),
                ..event("github", "issue_comment.created", json!({}))
            },
            Trigger {
                text: "not a command".into(),
                ..event("github", "issue_comment.created", json!({}))
            },
        ];
        let mut wanted = 0;
        for t in triggers {
            // An error is a run too (one that fails and says why).
            let decision = p.decide(&request(t.clone()));
            assert_eq!(
                p.wants_event(&t),
                decision.as_ref() != Ok(&quiet),
                "{:?} {:?}: {decision:?}",
                t.event,
                t.text
            );
            wanted += usize::from(p.wants_event(&t));
        }
        assert!((2..7).contains(&wanted), "both answers are exercised");
    }

    #[tokio::test]
    async fn a_playbook_may_use_a_slash_pattern_that_is_not_a_command() {
        let (set, errors) = PlaybookSet::from_files([(
            "ship.toml",
            "[trigger]\npattern = '^/ship (?P<what>\\S+)$'\n[[steps]]\nname = 's'\nskill = 'echo'\ninput = { what = '{{ match.what }}' }\n",
        )]);
        assert_eq!(errors, []);
        let p = DefaultPlanner::new(PlaybookPlanner::new(set));
        let t = drive(&p, message("rest", "/ship v1"), |_, _, _| {
            Outcome::succeeded(json!({}))
        })
        .await;
        assert_eq!(t.invoked(), ["ship:s"]);
        assert_eq!(t.last.history[0].input, json!({"what": "v1"}));
        // A known command still wins over a playbook.
        let t = drive(&p, message("rest", "/help"), no_skill).await;
        assert!(t.reply().unwrap().starts_with("Commands:"));
    }

    #[test]
    fn truncate_cuts_at_a_char_boundary() {
        assert_eq!(truncate("short", 10), "short");
        assert_eq!(truncate("ééé", 3), "é… (4 more bytes)");
    }
}
