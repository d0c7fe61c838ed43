//! Playbooks: TOML files that say which message or event starts which sequence of skills.
//!
//! A playbook directory (`RAUSKU_PLAYBOOKS_DIR`, read by the gateway) holds one playbook per
//! `*.toml` file. Only the directory itself is read (no subdirectories); files whose name starts
//! with `.` are ignored (editor swap files); files are taken in file-name order, which is also
//! the order in which playbooks are tried against a trigger (the first match wins, so name
//! files `10-deploy.toml`, `20-test.toml`, … to control it).
//!
//! # The file format
//!
//! ```toml
//! name = "deploy"                      # optional: the file name without `.toml`
//! description = "Deploy a ref to an environment"
//!
//! [trigger]
//! channels = ["rest", "local", "console"]   # optional: all channels when left out
//! pattern = '^deploy (?P<env>staging|production)(?: (?P<ref>\S+))?$'
//! # and/or, for structured events (GitHub webhooks):
//! # event = "pull_request.opened"         # or: events = ["pull_request.opened", "push", "issues.*"]
//!
//! [[steps]]
//! name = "build"                       # unique in the playbook
//! skill = "build"
//! input = { ref = "{{ match.ref | default('main') }}" }   # any TOML value; strings are templates
//! when = "match.env != 'dev'"          # optional expression (bare or in {{ }}); falsy → skipped
//! reply = "Built {{ step.output.artifact }}"              # optional reply once it succeeded
//!
//! [[steps]]
//! name = "deploy"
//! skill = "deploy"
//! input = { env = "{{ match.env }}", artifact = "{{ steps.build.output.artifact }}" }
//! on_failure = "rollback"              # or a list; default: the run ends as failed
//! # continue_on_failure = true         # or: a failure is noted and the next step runs
//!
//! [[steps]]
//! name = "rollback"
//! skill = "rollback"
//! only_on_failure = true               # reached only through an `on_failure`
//!
//! [reply]                              # all optional
//! start = "Deploying {{ match.env }}…"                      # sent before the first step
//! success = "Deployed {{ match.env }}: {{ steps.deploy.output.url }}"
//! failure = "Failed at {{ failed.name }}: {{ failed.error }}; rollback {{ steps.rollback.status }}"
//! ```
//!
//! Unknown keys are errors. Names (of playbooks and steps) use letters, digits, `_`, `-` and
//! `.`. A trigger needs a `pattern`, an `event`/`events`, or both:
//! - a playbook with `event`/`events` matches only structured events of those kinds (exact,
//!   `issues.*` for every `issues.<action>`, or `*`); with a `pattern` too, the event's text
//!   must also match it;
//! - a playbook with only a `pattern` matches only plain messages (no event) whose text,
//!   trimmed, the regex matches (unanchored unless it says `^…$`; `(?i)` for any case). Its
//!   named groups become `match.<name>` (a group that did not take part is left undefined, so
//!   `| default(...)` works);
//! - `channels` restricts either kind to those channels.
//!
//! A `[reply]` text that is left out gets a short default summary; one that renders to an
//! empty string sends no reply (for example `success = ""` for an event playbook that should
//! stay quiet). How a run goes through the steps is described in [`super::walk`]; the template
//! context in [`super::walk`] and [`super::template`].
//!
//! # Loading and reloading
//!
//! [`PlaybookSet::load_dir`] returns the playbooks that loaded and a [`PlaybookFileError`] for
//! each problem: TOML syntax, unknown keys, a regex or template syntax error, an `on_failure`
//! naming an unknown step, a duplicate name, … each with the file and, where the problem is
//! inside it, the line and column of the offending value. [`PlaybookPlanner::reload`] does the
//! same over the set in force and keeps the previous good version of every file that is now
//! broken, so a typo saved by an operator never unloads a working playbook.
//!
//! Layout: the file format (`Raw*`, private), [`Playbook`] and its parts, [`PlaybookSet`] (load,
//! match), [`PlaybookFileError`], [`PlaybookPlanner`] (the set in force, reload, list) with
//! [`PlaybookReloadReport`] and [`PlaybookInfo`].

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use regex::Regex;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use toml::Spanned;

use super::template::templates;
use super::{Decision, PlanError, PlanRequest, Trigger};

// ---------------------------------------------------------------------------------------------
// The file format, as written.

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPlaybook {
    #[serde(default)]
    name: Option<Spanned<String>>,
    #[serde(default)]
    description: String,
    trigger: Spanned<RawTrigger>,
    #[serde(default)]
    steps: Vec<RawStep>,
    #[serde(default)]
    reply: RawReplies,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTrigger {
    #[serde(default)]
    channels: Option<Spanned<Vec<String>>>,
    #[serde(default)]
    pattern: Option<Spanned<String>>,
    #[serde(default)]
    event: Option<Spanned<String>>,
    #[serde(default)]
    events: Option<Spanned<Vec<String>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStep {
    name: Spanned<String>,
    skill: Spanned<String>,
    #[serde(default)]
    input: Option<Spanned<RawInput>>,
    #[serde(default)]
    when: Option<Spanned<String>>,
    #[serde(default)]
    on_failure: Option<Spanned<StepNames>>,
    #[serde(default)]
    only_on_failure: bool,
    #[serde(default)]
    continue_on_failure: bool,
    #[serde(default)]
    reply: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawReplies {
    #[serde(default)]
    start: Option<Spanned<String>>,
    #[serde(default)]
    success: Option<Spanned<String>>,
    #[serde(default)]
    failure: Option<Spanned<String>>,
}

/// `on_failure`: one step name or a list of them.
struct StepNames(Vec<String>);

impl<'de> Deserialize<'de> for StepNames {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = StepNames;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a step name or a list of step names")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<StepNames, E> {
                Ok(StepNames(vec![v.to_owned()]))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<StepNames, A::Error> {
                let mut names = Vec::new();
                while let Some(name) = seq.next_element::<String>()? {
                    names.push(name);
                }
                Ok(StepNames(names))
            }
        }
        d.deserialize_any(V)
    }
}

/// A TOML value from a step's `input`, with the span of every value inside it (so a template
/// error deep in an input points at its own line).
enum RawInput {
    Scalar(Value),
    String(String),
    Array(Vec<Spanned<RawInput>>),
    Table(Vec<(String, Spanned<RawInput>)>),
}

/// The key toml uses to hand a datetime to `deserialize_any`.
const TOML_DATETIME_KEY: &str = "$__toml_private_datetime";

impl<'de> Deserialize<'de> for RawInput {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawInput;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a TOML value")
            }
            fn visit_bool<E>(self, v: bool) -> Result<RawInput, E> {
                Ok(RawInput::Scalar(Value::Bool(v)))
            }
            fn visit_i64<E>(self, v: i64) -> Result<RawInput, E> {
                Ok(RawInput::Scalar(v.into()))
            }
            fn visit_u64<E>(self, v: u64) -> Result<RawInput, E> {
                Ok(RawInput::Scalar(v.into()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<RawInput, E> {
                serde_json::Number::from_f64(v)
                    .map(|n| RawInput::Scalar(Value::Number(n)))
                    .ok_or_else(|| E::custom("nan and inf have no JSON form; use a string"))
            }
            fn visit_str<E>(self, v: &str) -> Result<RawInput, E> {
                Ok(RawInput::String(v.to_owned()))
            }
            fn visit_string<E>(self, v: String) -> Result<RawInput, E> {
                Ok(RawInput::String(v))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RawInput, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element()? {
                    items.push(item);
                }
                Ok(RawInput::Array(items))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawInput, A::Error> {
                let mut entries = Vec::new();
                while let Some(key) = map.next_key::<String>()? {
                    if key == TOML_DATETIME_KEY {
                        // A TOML datetime: JSON has none, so it becomes its string.
                        return Ok(RawInput::String(map.next_value()?));
                    }
                    entries.push((key, map.next_value()?));
                }
                Ok(RawInput::Table(entries))
            }
        }
        d.deserialize_any(V)
    }
}

// ---------------------------------------------------------------------------------------------
// Validated playbooks.

/// One loaded, validated playbook.
#[derive(Debug)]
pub struct Playbook {
    /// Unique in its set; the prefix of its step ids (`<name>:<step>`).
    pub name: String,
    /// One line for `/help` and `/v1/runtime`.
    pub description: String,
    /// The file it was loaded from.
    pub path: PathBuf,
    /// The file's text, to tell a changed file from an unchanged one on reload.
    source: String,
    /// What starts it.
    pub trigger: PlaybookTrigger,
    /// The steps, in file order.
    pub steps: Vec<Step>,
    /// The `[reply]` templates.
    pub replies: Replies,
}

/// When a playbook applies (see the module docs for the rules).
#[derive(Debug)]
pub struct PlaybookTrigger {
    /// The channels it applies to; `None` for all.
    pub channels: Option<Vec<String>>,
    /// The regex on the (trimmed) message text, if any.
    pub pattern: Option<Regex>,
    /// The event kinds it applies to (`x.*` and `*` are wildcards); empty: plain messages only.
    pub events: Vec<String>,
}

/// One step of a playbook.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// Unique in the playbook; `steps.<name>` in templates.
    pub name: String,
    /// The skill (job type) to invoke.
    pub skill: String,
    /// The input, as written: every string in it is a template, rendered when the step starts.
    pub input: Value,
    /// A condition evaluated when the step is next: falsy means skip it.
    pub when: Option<String>,
    /// Indices (into the playbook's steps) of the steps to run, in order, when this one does
    /// not succeed; empty means the run ends as failed.
    pub on_failure: Vec<usize>,
    /// Reached only through another step's `on_failure`.
    pub only_on_failure: bool,
    /// A failure of this step is noted and the run goes on with the next step.
    pub continue_on_failure: bool,
    /// A template sent as a reply once the step has succeeded.
    pub reply: Option<String>,
}

/// A playbook's `[reply]` templates.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Replies {
    /// Sent before the first step.
    pub start: Option<String>,
    /// The last reply of a run that succeeded; `None` gives a default summary.
    pub success: Option<String>,
    /// The last reply of a run that failed; `None` gives a default summary.
    pub failure: Option<String>,
}

impl Playbook {
    /// Parses and validates one playbook file. `path` names it in errors and gives the default
    /// name (the file stem).
    pub fn parse(path: &Path, text: &str) -> Result<Playbook, Vec<PlaybookFileError>> {
        let mut errs = Errors::new(path, text);
        let raw: RawPlaybook = match toml::from_str(text) {
            Ok(raw) => raw,
            Err(e) => {
                errs.push(e.span(), e.message().trim_end().to_owned());
                return Err(errs.list);
            }
        };
        let playbook = validate(raw, path, text, &mut errs);
        match errs.list.is_empty() {
            true => Ok(playbook),
            false => Err(errs.list),
        }
    }

    /// Whether this playbook applies to `trigger`; if so, the named captures of its pattern
    /// (`match` in templates; empty without a pattern).
    pub fn matches(&self, trigger: &Trigger) -> Option<Map<String, Value>> {
        if let Some(channels) = &self.trigger.channels
            && !channels.contains(&trigger.channel)
        {
            return None;
        }
        match &trigger.event {
            Some(event) if !self.trigger.events.iter().any(|p| event_matches(p, event)) => {
                return None;
            }
            None if !self.trigger.events.is_empty() => return None,
            _ => {}
        }
        match &self.trigger.pattern {
            Some(pattern) => captures(pattern, &trigger.text),
            None => Some(Map::new()),
        }
    }

    /// The captures of the pattern on `text`; empty when there is no pattern or it no longer
    /// matches (a run going on after its playbook was changed).
    pub(crate) fn captures(&self, text: &str) -> Map<String, Value> {
        self.trigger
            .pattern
            .as_ref()
            .and_then(|p| captures(p, text))
            .unwrap_or_default()
    }

    /// The index of the step called `name`.
    pub fn step_index(&self, name: &str) -> Option<usize> {
        self.steps.iter().position(|s| s.name == name)
    }

    /// What [`PlaybookPlanner::list`] shows of it.
    pub fn info(&self) -> PlaybookInfo {
        PlaybookInfo {
            name: self.name.clone(),
            description: self.description.clone(),
            path: self.path.display().to_string(),
            trigger: TriggerInfo {
                channels: self.trigger.channels.clone(),
                pattern: self.trigger.pattern.as_ref().map(|p| p.as_str().to_owned()),
                events: self.trigger.events.clone(),
            },
            steps: self
                .steps
                .iter()
                .map(|s| StepInfo {
                    name: s.name.clone(),
                    skill: s.skill.clone(),
                    conditional: s.when.is_some(),
                    on_failure: s
                        .on_failure
                        .iter()
                        .map(|&i| self.steps[i].name.clone())
                        .collect(),
                    only_on_failure: s.only_on_failure,
                    continue_on_failure: s.continue_on_failure,
                })
                .collect(),
        }
    }

    /// A short description of what triggers it, for `/help`.
    pub fn trigger_summary(&self) -> String {
        let mut parts = Vec::new();
        if let Some(p) = &self.trigger.pattern {
            parts.push(format!("messages matching `{}`", p.as_str()));
        }
        if !self.trigger.events.is_empty() {
            parts.push(format!("events {}", self.trigger.events.join(", ")));
        }
        parts.join(" and ")
    }
}

/// Whether the event kind `event` is one the pattern `p` names: `*`, `kind.*` or exactly.
fn event_matches(p: &str, event: &str) -> bool {
    p == "*"
        || p == event
        || p.strip_suffix(".*").is_some_and(|prefix| {
            event
                .strip_prefix(prefix)
                .is_some_and(|rest| rest.starts_with('.'))
        })
}

/// The named groups of `pattern` on `text` (trimmed) that took part in the match.
fn captures(pattern: &Regex, text: &str) -> Option<Map<String, Value>> {
    let caps = pattern.captures(text.trim())?;
    Some(
        pattern
            .capture_names()
            .flatten()
            .filter_map(|name| {
                let m = caps.name(name)?;
                Some((name.to_owned(), Value::String(m.as_str().to_owned())))
            })
            .collect(),
    )
}

/// Whether `name` is usable as a playbook or step name.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

/// Collects the errors of one file, turning byte spans into lines and columns.
struct Errors<'a> {
    path: &'a Path,
    text: &'a str,
    list: Vec<PlaybookFileError>,
}

impl<'a> Errors<'a> {
    fn new(path: &'a Path, text: &'a str) -> Self {
        Errors {
            path,
            text,
            list: Vec::new(),
        }
    }

    fn push(&mut self, span: Option<Range<usize>>, message: impl Into<String>) {
        let (line, column) = match span {
            Some(span) => {
                let (l, c) = line_col(self.text, span.start);
                (Some(l), Some(c))
            }
            None => (None, None),
        };
        self.list.push(PlaybookFileError {
            path: self.path.display().to_string(),
            line,
            column,
            message: message.into(),
        });
    }

    fn at<T>(&mut self, at: &Spanned<T>, message: impl Into<String>) {
        self.push(Some(at.span()), message);
    }

    /// The 1-based line of `at`, to mention it in another error.
    fn line_of<T>(&self, at: &Spanned<T>) -> usize {
        line_col(self.text, at.span().start).0
    }
}

/// 1-based line and column (in characters) of byte `offset` in `text`.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

fn validate(raw: RawPlaybook, path: &Path, text: &str, errs: &mut Errors<'_>) -> Playbook {
    let name = match &raw.name {
        Some(name) => {
            if !valid_name(name.get_ref()) {
                errs.at(
                    name,
                    format!(
                        "playbook name `{}` may only use letters, digits, `_`, `-` and `.`",
                        name.get_ref()
                    ),
                );
            }
            name.get_ref().clone()
        }
        None => {
            let stem = path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            if !valid_name(&stem) {
                errs.push(
                    None,
                    format!(
                        "the file name `{stem}` is not a valid playbook name (letters, digits, \
                         `_`, `-` and `.`); rename the file or set `name = \"…\"`"
                    ),
                );
            }
            stem
        }
    };

    let trigger = validate_trigger(&raw.trigger, errs);
    let steps = validate_steps(&raw.steps, errs);

    let replies = Replies {
        start: check_reply(&raw.reply.start, "reply.start", errs),
        success: check_reply(&raw.reply.success, "reply.success", errs),
        failure: check_reply(&raw.reply.failure, "reply.failure", errs),
    };

    Playbook {
        name,
        description: raw.description,
        path: path.to_owned(),
        source: text.to_owned(),
        trigger,
        steps,
        replies,
    }
}

fn validate_trigger(raw: &Spanned<RawTrigger>, errs: &mut Errors<'_>) -> PlaybookTrigger {
    let t = raw.get_ref();
    let channels = t.channels.as_ref().map(|c| {
        if c.get_ref().is_empty() {
            errs.at(
                c,
                "`channels = []` would match no channel; leave `channels` out to allow all",
            );
        }
        c.get_ref().clone()
    });
    let pattern = t
        .pattern
        .as_ref()
        .and_then(|p| match Regex::new(p.get_ref()) {
            Ok(re) => Some(re),
            Err(e) => {
                errs.at(p, format!("trigger.pattern is not a valid regex: {e}"));
                None
            }
        });
    let events = match (&t.event, &t.events) {
        (Some(_), Some(list)) => {
            errs.at(list, "give either `event` or `events`, not both");
            Vec::new()
        }
        (Some(one), None) => {
            if one.get_ref().trim().is_empty() {
                errs.at(
                    one,
                    "trigger.event is empty; name an event such as `pull_request.opened`",
                );
            }
            vec![one.get_ref().clone()]
        }
        (None, Some(list)) => {
            if list.get_ref().is_empty() || list.get_ref().iter().any(|e| e.trim().is_empty()) {
                errs.at(
                    list,
                    "trigger.events needs one or more event kinds such as `pull_request.opened`",
                );
            }
            list.get_ref().clone()
        }
        (None, None) => Vec::new(),
    };
    if t.pattern.is_none() && t.event.is_none() && t.events.is_none() {
        errs.at(
            raw,
            "the trigger needs a `pattern` (a regex on message text), an `event`/`events` \
             (structured event kinds such as `pull_request.opened`), or both",
        );
    }
    PlaybookTrigger {
        channels,
        pattern,
        events,
    }
}

fn validate_steps(raw: &[RawStep], errs: &mut Errors<'_>) -> Vec<Step> {
    // Names first: on_failure may name a later step.
    let mut index: HashMap<&str, usize> = HashMap::new();
    for (i, step) in raw.iter().enumerate() {
        let name = step.name.get_ref();
        if !valid_name(name) {
            errs.at(
                &step.name,
                format!("step name `{name}` may only use letters, digits, `_`, `-` and `.`"),
            );
        }
        if let Some(&first) = index.get(name.as_str()) {
            let line = errs.line_of(&raw[first].name);
            errs.at(
                &step.name,
                format!(
                    "a step named `{name}` already exists (line {line}); step names must be unique"
                ),
            );
        } else {
            index.insert(name, i);
        }
    }
    let known = || {
        raw.iter()
            .map(|s| format!("`{}`", s.name.get_ref()))
            .collect::<Vec<_>>()
            .join(", ")
    };

    let mut steps = Vec::with_capacity(raw.len());
    for step in raw {
        let name = step.name.get_ref();
        let what = format!("step `{name}`");
        if step.skill.get_ref().trim().is_empty() {
            errs.at(
                &step.skill,
                format!("{what}: `skill` is empty; name the skill to invoke"),
            );
        }
        let input = match &step.input {
            Some(input) => check_input(input, &format!("{what}: input"), errs),
            None => Value::Object(Map::new()),
        };
        if let Some(when) = &step.when
            && let Err(e) = templates().check_condition(when.get_ref())
        {
            errs.at(
                when,
                format!("{what}: `when` is not a valid expression: {e}"),
            );
        }
        let reply = check_reply(&step.reply, &format!("{what}: reply"), errs);

        let mut on_failure = Vec::new();
        if let Some(targets) = &step.on_failure {
            if targets.get_ref().0.is_empty() {
                errs.at(
                    targets,
                    format!(
                        "{what}: `on_failure` names no step; leave it out to end the run on failure"
                    ),
                );
            }
            for target in &targets.get_ref().0 {
                match index.get(target.as_str()) {
                    Some(_) if target == name => errs.at(
                        targets,
                        format!("{what}: `on_failure` names the step itself"),
                    ),
                    Some(&i) => on_failure.push(i),
                    None => errs.at(
                        targets,
                        format!("{what}: `on_failure` names `{target}`, which is not a step of this playbook (steps: {})", known()),
                    ),
                }
            }
            if step.only_on_failure {
                errs.at(
                    targets,
                    format!("{what}: `on_failure` has no effect on an `only_on_failure` step (a failure inside an on_failure branch does not branch again); remove one of them"),
                );
            }
            if step.continue_on_failure {
                errs.at(
                    targets,
                    format!("{what}: give `on_failure` or `continue_on_failure`, not both"),
                );
            }
        }
        if step.only_on_failure
            && !raw.iter().any(|other| {
                other
                    .on_failure
                    .as_ref()
                    .is_some_and(|t| t.get_ref().0.contains(name))
            })
        {
            errs.at(
                &step.name,
                format!("{what} has `only_on_failure = true` but no step names it in `on_failure`, so it would never run"),
            );
        }

        steps.push(Step {
            name: name.clone(),
            skill: step.skill.get_ref().clone(),
            input,
            when: step.when.as_ref().map(|w| w.get_ref().clone()),
            on_failure,
            only_on_failure: step.only_on_failure,
            continue_on_failure: step.continue_on_failure,
            reply,
        });
    }
    steps
}

/// Checks a reply template, keeping it if it compiles.
fn check_reply(raw: &Option<Spanned<String>>, what: &str, errs: &mut Errors<'_>) -> Option<String> {
    let raw = raw.as_ref()?;
    if let Err(e) = templates().check_template(raw.get_ref()) {
        errs.at(raw, format!("{what} is not a valid template: {e}"));
    }
    Some(raw.get_ref().clone())
}

/// The input as JSON, checking every string in it as a template; `what` names it in errors
/// (`step `build`: input.ref`).
fn check_input(raw: &Spanned<RawInput>, what: &str, errs: &mut Errors<'_>) -> Value {
    match raw.get_ref() {
        RawInput::Scalar(v) => v.clone(),
        RawInput::String(s) => {
            if let Err(e) = templates().check_template(s) {
                errs.at(raw, format!("{what} is not a valid template: {e}"));
            }
            Value::String(s.clone())
        }
        RawInput::Array(items) => Value::Array(
            items
                .iter()
                .enumerate()
                .map(|(i, item)| check_input(item, &format!("{what}[{i}]"), errs))
                .collect(),
        ),
        RawInput::Table(entries) => Value::Object(
            entries
                .iter()
                .map(|(k, v)| (k.clone(), check_input(v, &format!("{what}.{k}"), errs)))
                .collect(),
        ),
    }
}

// ---------------------------------------------------------------------------------------------
// Sets of playbooks, and loading them.

/// A problem with one playbook file. `line` and `column` (1-based) point at the offending value
/// when the problem is inside the file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PlaybookFileError {
    /// The file (or the directory, when it could not be read).
    pub path: String,
    pub line: Option<usize>,
    pub column: Option<usize>,
    /// What is wrong, and how to fix it.
    pub message: String,
}

impl fmt::Display for PlaybookFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.path)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(column) = self.column {
                write!(f, ":{column}")?;
            }
        }
        write!(f, ": {}", self.message)
    }
}

impl PlaybookFileError {
    fn whole(path: &Path, message: impl Into<String>) -> Self {
        PlaybookFileError {
            path: path.display().to_string(),
            line: None,
            column: None,
            message: message.into(),
        }
    }
}

/// The playbooks in force, in file-name order (the order they are tried in).
#[derive(Debug, Default, Clone)]
pub struct PlaybookSet {
    /// In file-name order; names are unique.
    playbooks: Vec<Arc<Playbook>>,
}

impl PlaybookSet {
    /// Loads every `*.toml` file of `dir` (see the module docs). Files with errors are left out
    /// and reported; an unreadable directory gives an empty set and one error.
    pub fn load_dir(dir: &Path) -> (PlaybookSet, Vec<PlaybookFileError>) {
        let loaded = Self::load_dir_over(dir, &PlaybookSet::default());
        (loaded.set, loaded.errors)
    }

    /// Parses `files` (path, text), in the order given, as if they were a directory's.
    pub fn from_files<P: AsRef<Path>, T: AsRef<str>>(
        files: impl IntoIterator<Item = (P, T)>,
    ) -> (PlaybookSet, Vec<PlaybookFileError>) {
        let files = files
            .into_iter()
            .map(|(p, t)| (p.as_ref().to_owned(), Ok(t.as_ref().to_owned())))
            .collect();
        let loaded = Self::build(files, &PlaybookSet::default());
        (loaded.set, loaded.errors)
    }

    /// Loads `dir`, keeping `previous`'s version of every file that is now broken (and the
    /// whole of `previous` when `dir` cannot be listed).
    fn load_dir_over(dir: &Path, previous: &PlaybookSet) -> Loaded {
        let entries = match std::fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) => {
                return Loaded {
                    set: previous.clone(),
                    errors: vec![PlaybookFileError::whole(
                        dir,
                        format!(
                            "cannot read the playbooks directory: {e}; check RAUSKU_PLAYBOOKS_DIR"
                        ),
                    )],
                    kept: previous.playbooks.iter().map(|p| p.name.clone()).collect(),
                };
            }
        };
        let mut paths: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.extension().is_some_and(|e| e == "toml")
                    && p.file_name()
                        .is_some_and(|n| !n.to_string_lossy().starts_with('.'))
                    && p.is_file()
            })
            .collect();
        paths.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
        let files = paths
            .into_iter()
            .map(|path| {
                let text = std::fs::read(&path)
                    .map_err(|e| format!("cannot read the file: {e}"))
                    .and_then(|bytes| {
                        String::from_utf8(bytes).map_err(|e| {
                            format!(
                                "the file is not UTF-8 (at byte {})",
                                e.utf8_error().valid_up_to()
                            )
                        })
                    });
                (path, text)
            })
            .collect();
        Self::build(files, previous)
    }

    /// Parses files in order; a broken file keeps its `previous` version; a duplicate name is
    /// an error on the later file.
    fn build(files: Vec<(PathBuf, Result<String, String>)>, previous: &PlaybookSet) -> Loaded {
        let mut loaded = Loaded::default();
        let mut by_name: BTreeMap<String, PathBuf> = BTreeMap::new();
        for (path, text) in files {
            let parsed = match text {
                Ok(text) => Playbook::parse(&path, &text).map(Arc::new),
                Err(message) => Err(vec![PlaybookFileError::whole(&path, message)]),
            };
            let playbook = match parsed {
                Ok(playbook) => playbook,
                Err(errors) => {
                    loaded.errors.extend(errors);
                    match previous.playbooks.iter().find(|p| p.path == path) {
                        Some(old) => {
                            loaded.kept.push(old.name.clone());
                            old.clone()
                        }
                        None => continue,
                    }
                }
            };
            if let Some(first) = by_name.get(&playbook.name) {
                loaded.errors.push(PlaybookFileError::whole(
                    &path,
                    format!(
                        "a playbook named `{}` is already loaded from {}; playbook names must be unique (set `name` in one of them)",
                        playbook.name,
                        first.display()
                    ),
                ));
                continue;
            }
            by_name.insert(playbook.name.clone(), path);
            loaded.set.playbooks.push(playbook);
        }
        loaded
    }

    /// The playbook called `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<Playbook>> {
        self.playbooks.iter().find(|p| p.name == name)
    }

    /// The playbooks, in the order they are tried.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Playbook>> {
        self.playbooks.iter()
    }

    pub fn len(&self) -> usize {
        self.playbooks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.playbooks.is_empty()
    }

    /// The first playbook that applies to `trigger`, with its captures.
    pub fn find(&self, trigger: &Trigger) -> Option<(&Arc<Playbook>, Map<String, Value>)> {
        self.playbooks
            .iter()
            .find_map(|p| p.matches(trigger).map(|caps| (p, caps)))
    }

    /// The playbooks that can start on `channel` (for `/help`).
    pub fn for_channel<'a>(&'a self, channel: &'a str) -> impl Iterator<Item = &'a Arc<Playbook>> {
        self.playbooks.iter().filter(move |p| {
            p.trigger
                .channels
                .as_ref()
                .is_none_or(|c| c.iter().any(|c| c == channel))
        })
    }
}

/// What [`PlaybookSet::load_dir_over`] produced.
#[derive(Default)]
struct Loaded {
    set: PlaybookSet,
    errors: Vec<PlaybookFileError>,
    /// Names of playbooks whose file is broken now and whose previous version was kept.
    kept: Vec<String>,
}

// ---------------------------------------------------------------------------------------------
// The planner's view: the set in force.

/// A playbook as `/v1/runtime` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PlaybookInfo {
    pub name: String,
    pub description: String,
    /// The file it was loaded from.
    pub path: String,
    pub trigger: TriggerInfo,
    pub steps: Vec<StepInfo>,
}

/// A playbook's trigger, as listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TriggerInfo {
    /// `None`: all channels.
    pub channels: Option<Vec<String>>,
    pub pattern: Option<String>,
    pub events: Vec<String>,
}

/// A playbook step, as listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StepInfo {
    pub name: String,
    pub skill: String,
    /// It has a `when`.
    pub conditional: bool,
    pub on_failure: Vec<String>,
    pub only_on_failure: bool,
    pub continue_on_failure: bool,
}

/// What [`PlaybookPlanner::reload`] changed, by playbook name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PlaybookReloadReport {
    /// New names.
    pub added: Vec<String>,
    /// Names whose file (or path) changed.
    pub changed: Vec<String>,
    /// Names no longer loaded (their file is gone, or now names another playbook).
    pub removed: Vec<String>,
    /// Names loaded as before (this includes `kept`).
    pub unchanged: Vec<String>,
    /// Names whose file is broken now: the previous version stays in force (see `errors`).
    pub kept: Vec<String>,
    pub errors: Vec<PlaybookFileError>,
}

/// Holds the playbooks in force and plans runs with them (the [`super::DefaultPlanner`] adds
/// chat commands and help around it).
pub struct PlaybookPlanner {
    /// Swapped whole by `reload`; a plan takes a snapshot, so a run planned during a reload
    /// sees one set or the other, never a mix.
    set: RwLock<Arc<PlaybookSet>>,
}

impl PlaybookPlanner {
    pub fn new(set: PlaybookSet) -> Self {
        PlaybookPlanner {
            set: RwLock::new(Arc::new(set)),
        }
    }

    /// A planner over the playbooks of `dir`, and the problems found there.
    pub fn load_dir(dir: &Path) -> (Self, Vec<PlaybookFileError>) {
        let (set, errors) = PlaybookSet::load_dir(dir);
        (Self::new(set), errors)
    }

    /// The set in force.
    pub fn set(&self) -> Arc<PlaybookSet> {
        self.set.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Re-reads `dir` and puts it in force; a file that is broken now keeps its previous good
    /// version (see [`PlaybookReloadReport`]). Blocking file IO: call it off the async runtime.
    pub fn reload(&self, dir: &Path) -> PlaybookReloadReport {
        let old = self.set();
        let loaded = PlaybookSet::load_dir_over(dir, &old);
        let mut report = PlaybookReloadReport {
            errors: loaded.errors,
            kept: loaded.kept,
            ..Default::default()
        };
        for p in loaded.set.iter() {
            match old.get(&p.name) {
                None => report.added.push(p.name.clone()),
                Some(o) if Arc::ptr_eq(o, p) || (o.source == p.source && o.path == p.path) => {
                    report.unchanged.push(p.name.clone())
                }
                Some(_) => report.changed.push(p.name.clone()),
            }
        }
        for o in old.iter() {
            if loaded.set.get(&o.name).is_none() {
                report.removed.push(o.name.clone());
            }
        }
        *self.set.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(loaded.set);
        report
    }

    /// The playbooks in force, for `/v1/runtime`.
    pub fn list(&self) -> Vec<PlaybookInfo> {
        self.set().iter().map(|p| p.info()).collect()
    }

    /// The next decision of a playbook run: `None` when `req` is not a playbook run (no step of
    /// its history comes from a playbook, and no playbook matches its trigger).
    pub fn plan_sync(&self, req: &PlanRequest) -> Option<Result<Decision, PlanError>> {
        super::walk::plan(&self.set(), req)
    }
}

impl fmt::Debug for PlaybookPlanner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PlaybookPlanner")
            .field("playbooks", &self.set().len())
            .finish()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use serde_json::json;

    use super::*;
    use crate::planner::testing::{event, message};

    pub(crate) const DEPLOY: &str = include_str!("../../tests/fixtures/playbooks/10-deploy.toml");
    pub(crate) const PR: &str = include_str!("../../tests/fixtures/playbooks/20-pull-request.toml");
    pub(crate) const PING: &str = include_str!("../../tests/fixtures/playbooks/30-ping.toml");

    fn fixtures() -> PlaybookSet {
        let (set, errors) = PlaybookSet::from_files([
            ("10-deploy.toml", DEPLOY),
            ("20-pull-request.toml", PR),
            ("30-ping.toml", PING),
        ]);
        assert_eq!(errors, []);
        set
    }

    #[test]
    fn the_fixtures_parse() {
        let set = fixtures();
        let names: Vec<&str> = set.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["deploy", "pr-checks", "30-ping"]);

        let deploy = set.get("deploy").unwrap();
        assert_eq!(deploy.description, "Deploy a ref to an environment");
        assert_eq!(deploy.steps.len(), 4);
        let build = &deploy.steps[0];
        assert_eq!(
            build.input,
            json!({"ref": "{{ match.ref | default('main') }}", "labels": ["deploy", "{{ match.env }}"]})
        );
        assert_eq!(deploy.steps[1].on_failure, [2, 3]);
        assert!(deploy.steps[2].only_on_failure);
        assert!(deploy.replies.start.is_some());

        let info = deploy.info();
        assert_eq!(info.steps[1].on_failure, ["rollback", "notify"]);
        assert_eq!(
            info.trigger.channels.as_deref(),
            Some(&["rest".to_owned(), "local".to_owned(), "console".to_owned()][..])
        );
        assert!(set.get("30-ping").unwrap().steps.is_empty());
    }

    #[test]
    fn matching_table() {
        let set = fixtures();
        let pr = json!({"repo": "acme/api", "number": 7});
        let table: Vec<(Trigger, Option<&str>, Value)> = vec![
            (
                message("rest", "deploy staging"),
                Some("deploy"),
                json!({"env": "staging"}),
            ),
            (
                message("local", "  deploy production v1.2  "),
                Some("deploy"),
                json!({"env": "production", "ref": "v1.2"}),
            ),
            (message("rest", "deploy qa"), None, json!({})),
            // the deploy playbook is not on the github channel
            (message("github", "deploy staging"), None, json!({})),
            (message("github", "PING"), Some("30-ping"), json!({})),
            (
                event("github", "pull_request.opened", pr.clone()),
                Some("pr-checks"),
                json!({}),
            ),
            (
                event("github", "pull_request.closed", pr.clone()),
                None,
                json!({}),
            ),
            // an event playbook does not match a plain message, nor on another channel
            (message("github", "pull_request.opened"), None, json!({})),
            (
                event("rest", "pull_request.opened", pr.clone()),
                None,
                json!({}),
            ),
            // a message playbook does not match an event, even with matching text
            (
                Trigger {
                    text: "ping".into(),
                    ..event("github", "issue_comment.created", pr)
                },
                None,
                json!({}),
            ),
        ];
        for (trigger, want, caps) in table {
            let got = set.find(&trigger);
            assert_eq!(
                got.as_ref().map(|(p, _)| p.name.as_str()),
                want,
                "{:?} / {:?} on {}",
                trigger.text,
                trigger.event,
                trigger.channel
            );
            if let Some((_, got)) = got {
                assert_eq!(Value::Object(got), caps, "{:?}", trigger.text);
            }
        }
    }

    #[test]
    fn event_patterns() {
        let table: &[(&str, &str, bool)] = &[
            ("push", "push", true),
            ("push", "pushed", false),
            ("*", "anything.at_all", true),
            ("issues.*", "issues.opened", true),
            ("issues.*", "issues", false),
            ("issues.*", "issues_comment.created", false),
            ("pull_request.opened", "pull_request.closed", false),
        ];
        for &(p, event, want) in table {
            assert_eq!(event_matches(p, event), want, "{p} vs {event}");
        }
    }

    #[test]
    fn the_first_match_in_file_order_wins() {
        let a = "[trigger]\npattern = '^hello'\n[reply]\nsuccess = 'a'\n";
        let b = "[trigger]\npattern = 'hello'\n[reply]\nsuccess = 'b'\n";
        let (set, errors) = PlaybookSet::from_files([("a.toml", a), ("b.toml", b)]);
        assert_eq!(errors, []);
        assert_eq!(
            set.find(&message("rest", "hello there")).unwrap().0.name,
            "a"
        );
        assert_eq!(set.find(&message("rest", "say hello")).unwrap().0.name, "b");
    }

    /// A minimal valid playbook with `extra` appended (inside the last step).
    fn with_step(extra: &str) -> String {
        format!("[trigger]\npattern = 'x'\n\n[[steps]]\nname = 'a'\nskill = 'echo'\n{extra}")
    }

    #[test]
    fn errors_say_where_and_what() {
        let table: Vec<(String, usize, usize, &str)> = vec![
            // (file, line, column, part of the message)
            (
                "nmae = 'x'\n[trigger]\npattern = 'x'\n".into(),
                1,
                1,
                "unknown field `nmae`",
            ),
            (
                "[trigger]\npattern = 'x'\n[[steps]]\nname = 'a'\n".into(),
                3,
                1,
                "missing field `skill`",
            ),
            (
                "[trigger]\npattern = 'x\n".into(),
                2,
                13,
                "invalid literal string",
            ),
            (
                "[trigger]\npattern = '(unclosed'\n".into(),
                2,
                11,
                "not a valid regex",
            ),
            (
                "[trigger]\nchannels = ['rest']\n".into(),
                1,
                1,
                "the trigger needs a `pattern`",
            ),
            (
                "[trigger]\nevent = 'push'\nevents = ['push']\n".into(),
                3,
                10,
                "either `event` or `events`",
            ),
            (
                "[trigger]\nchannels = []\npattern = 'x'\n".into(),
                2,
                12,
                "would match no channel",
            ),
            (
                "name = 'has space'\n[trigger]\npattern = 'x'\n".into(),
                1,
                8,
                "may only use letters",
            ),
            (
                with_step("input = { a = 1, b = { c = '{{ x ' } }"),
                7,
                28,
                "step `a`: input.b.c is not a valid template",
            ),
            (
                with_step("input = { list = [1, '{% if %}'] }"),
                7,
                22,
                "input.list[1] is not a valid template",
            ),
            (
                with_step("when = 'a =='"),
                7,
                8,
                "`when` is not a valid expression",
            ),
            (
                with_step("reply = '{{ }}'"),
                7,
                9,
                "reply is not a valid template",
            ),
            (
                with_step("on_failure = 'nope'"),
                7,
                14,
                "names `nope`, which is not a step of this playbook (steps: `a`)",
            ),
            (
                with_step("on_failure = 'a'"),
                7,
                14,
                "names the step itself",
            ),
            (with_step("on_failure = []"), 7, 14, "names no step"),
            (
                with_step("on_failure = 3"),
                7,
                14,
                "a step name or a list of step names",
            ),
            (
                with_step("only_on_failure = true"),
                5,
                8,
                "no step names it in `on_failure`",
            ),
            (
                with_step("\n[[steps]]\nname = 'a'\nskill = 'x'"),
                9,
                8,
                "a step named `a` already exists (line 5)",
            ),
            (
                with_step("\n[[steps]]\nname = 'b'\nskill = ' '"),
                10,
                9,
                "`skill` is empty",
            ),
            (
                format!("{}\n[reply]\nfailure = '{{{{ a b }}}}'\n", with_step("")),
                9,
                11,
                "reply.failure is not a valid template",
            ),
            (
                format!("{}\n[reply]\nbye = 'x'\n", with_step("")),
                9,
                1,
                "unknown field `bye`",
            ),
        ];
        for (text, line, column, message) in table {
            let errors = Playbook::parse(Path::new("pb/x.toml"), &text).unwrap_err();
            let e = &errors[0];
            assert!(
                e.message.contains(message),
                "{text}\n=> {errors:#?}\nwanted: {message}"
            );
            assert_eq!(
                (e.path.as_str(), e.line, e.column),
                ("pb/x.toml", Some(line), Some(column)),
                "{text}\n=> {e}"
            );
        }
    }

    #[test]
    fn conflicting_failure_settings_are_errors() {
        let text = format!(
            "{}\non_failure = 'b'\ncontinue_on_failure = true\n\n[[steps]]\nname = 'b'\nskill = 'x'\nonly_on_failure = true\non_failure = 'a'\n",
            with_step("")
        );
        let errors = Playbook::parse(Path::new("x.toml"), &text).unwrap_err();
        let messages: Vec<&str> = errors.iter().map(|e| e.message.as_str()).collect();
        assert_eq!(errors.len(), 2, "{messages:#?}");
        assert!(messages[0].contains("not both"), "{messages:#?}");
        assert!(messages[1].contains("has no effect on an `only_on_failure` step"));
    }

    #[test]
    fn error_display_is_path_line_column() {
        let errors =
            Playbook::parse(Path::new("dir/deploy.toml"), "[trigger]\nwat = 1\n").unwrap_err();
        assert!(
            errors[0]
                .to_string()
                .starts_with("dir/deploy.toml:2:1: unknown field `wat`"),
            "{}",
            errors[0]
        );
    }

    #[test]
    fn input_values_keep_their_types() {
        let text = with_step(
            "input = { n = 3, f = 1.5, yes = true, when = 2024-05-01T10:00:00Z, nested = [{ a = 'x' }] }",
        );
        let p = Playbook::parse(Path::new("x.toml"), &text).unwrap();
        assert_eq!(
            p.steps[0].input,
            json!({"n": 3, "f": 1.5, "yes": true, "when": "2024-05-01T10:00:00Z", "nested": [{"a": "x"}]})
        );
    }

    #[test]
    fn duplicate_playbook_names_keep_the_first() {
        let a = "name = 'same'\n[trigger]\npattern = 'a'\n";
        let (set, errors) = PlaybookSet::from_files([("1.toml", a), ("2.toml", a)]);
        assert_eq!(set.len(), 1);
        assert_eq!(set.get("same").unwrap().path, Path::new("1.toml"));
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].path, "2.toml");
        assert!(
            errors[0].message.contains("already loaded from 1.toml"),
            "{}",
            errors[0]
        );
    }

    fn write(dir: &Path, name: &str, text: &str) {
        std::fs::write(dir.join(name), text).unwrap();
    }

    #[test]
    fn load_dir_reads_toml_files_in_name_order_only() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "b.toml", "[trigger]\npattern = 'b'\n");
        write(dir.path(), "a.toml", "[trigger]\npattern = 'a'\n");
        write(dir.path(), "notes.md", "not a playbook");
        write(dir.path(), ".a.toml.swp.toml", "garbage");
        std::fs::create_dir(dir.path().join("sub.toml")).unwrap();
        std::fs::create_dir(dir.path().join("nested")).unwrap();
        write(
            &dir.path().join("nested"),
            "c.toml",
            "[trigger]\npattern = 'c'\n",
        );
        let (set, errors) = PlaybookSet::load_dir(dir.path());
        assert_eq!(errors, []);
        let names: Vec<&str> = set.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["a", "b"]);

        let (set, errors) = PlaybookSet::load_dir(&dir.path().join("missing"));
        assert!(set.is_empty());
        assert!(
            errors[0]
                .message
                .contains("cannot read the playbooks directory")
        );
    }

    #[test]
    fn reload_reports_changes_and_keeps_broken_files_previous_version() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        write(d, "keep.toml", "[trigger]\npattern = 'keep'\n");
        write(d, "edit.toml", "[trigger]\npattern = 'edit'\n");
        write(d, "gone.toml", "[trigger]\npattern = 'gone'\n");
        write(d, "break.toml", "[trigger]\npattern = 'break'\n");
        let (planner, errors) = PlaybookPlanner::load_dir(d);
        assert_eq!(errors, []);
        assert_eq!(planner.list().len(), 4);

        write(
            d,
            "edit.toml",
            "description = 'edited'\n[trigger]\npattern = 'edit'\n",
        );
        std::fs::remove_file(d.join("gone.toml")).unwrap();
        write(
            d,
            "break.toml",
            "[trigger]\npattern = 'break'\n[[steps]]\nname = 'x'\nskil = 'y'\n",
        );
        write(d, "new.toml", "[trigger]\npattern = 'new'\n");
        write(d, "newbroken.toml", "[trigger]\npattern = '('\n");

        let report = planner.reload(d);
        assert_eq!(report.added, ["new"]);
        assert_eq!(report.changed, ["edit"]);
        assert_eq!(report.removed, ["gone"]);
        assert_eq!(report.unchanged, ["break", "keep"]);
        assert_eq!(report.kept, ["break"]);
        let where_: Vec<(String, Option<usize>)> = report
            .errors
            .iter()
            .map(|e| (e.path.rsplit('/').next().unwrap().to_owned(), e.line))
            .collect();
        assert_eq!(
            where_,
            [
                ("break.toml".to_owned(), Some(5)),
                ("newbroken.toml".to_owned(), Some(2))
            ]
        );
        assert!(report.errors[0].message.contains("unknown field `skil`"));

        // The broken file's previous version is in force; the others are the new ones.
        let set = planner.set();
        assert!(set.get("break").unwrap().steps.is_empty());
        assert_eq!(set.get("edit").unwrap().description, "edited");
        assert!(set.get("gone").is_none());
        assert!(set.get("newbroken").is_none());

        // Fixing it is a change; a second reload with nothing new changes nothing.
        write(
            d,
            "break.toml",
            "[trigger]\npattern = 'break'\n[[steps]]\nname = 'x'\nskill = 'y'\n",
        );
        std::fs::remove_file(d.join("newbroken.toml")).unwrap();
        let report = planner.reload(d);
        assert_eq!(report.changed, ["break"]);
        assert_eq!(report.errors, []);
        let report = planner.reload(d);
        assert_eq!(report.unchanged.len(), 4);
        assert!(report.added.is_empty() && report.changed.is_empty() && report.removed.is_empty());

        // An unreadable directory changes nothing.
        let report = planner.reload(&d.join("missing"));
        assert_eq!(report.errors.len(), 1);
        assert_eq!(planner.set().len(), 4);
    }

    #[test]
    fn reload_report_serialises() {
        let report = PlaybookReloadReport {
            added: vec!["a".into()],
            errors: vec![PlaybookFileError {
                path: "p.toml".into(),
                line: Some(3),
                column: Some(1),
                message: "bad".into(),
            }],
            ..Default::default()
        };
        assert_eq!(
            serde_json::to_value(&report).unwrap(),
            json!({"added": ["a"], "changed": [], "removed": [], "unchanged": [], "kept": [],
                   "errors": [{"path": "p.toml", "line": 3, "column": 1, "message": "bad"}]})
        );
    }
}
