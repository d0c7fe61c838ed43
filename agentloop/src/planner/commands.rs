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
//! Layout: [`Command`] and [`parse`], [`plan`] (start or finish a command run), [`help`] (also
//! the reply to a message nothing matched), [`unknown`].

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
