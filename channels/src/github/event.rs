//! What a GitHub delivery means: its kind, the session it belongs to, the fields templates use,
//! and the command it carries, if any.
//!
//! [`map_event`] is pure and total: any JSON (GitHub's, or whatever a misconfigured sender
//! posts) maps to a [`GithubEvent`] with a non-empty session key; missing fields are left out of
//! the context, never a panic.
//!
//! # Session keys
//!
//! One conversation, one key. `<repo>` is the repository's full name (`owner/name`).
//!
//! | events | key |
//! |---|---|
//! | `issues`, `issue_comment`, `pull_request`, `pull_request_review`, `pull_request_review_comment`, `pull_request_review_thread` (anything with a `pull_request` or `issue` number) | `github:<repo>#<number>` (issues and pull requests share one number space) |
//! | `discussion`, `discussion_comment` | `github:<repo>/discussion/<number>` (replies to these cannot go through the issue comments API, so they are kept apart) |
//! | `push` | `github:<repo>@<branch>` (`refs/heads/` removed); other refs whole, e.g. `github:<repo>@refs/tags/v1` |
//! | `create`, `delete`, `workflow_dispatch` | as `push`: a branch `github:<repo>@<branch>`, a tag `github:<repo>@refs/tags/<tag>` |
//! | `release` | `github:<repo>/release/<tag_name>` |
//! | `workflow_run`, `workflow_job`, `check_run`, `check_suite` | `github:<repo>/<event>/<head branch>`, or `github:<repo>/<event>/<id>` when there is no head branch |
//! | `deployment`, `deployment_status`, `deployment_review`, `deployment_protection_rule` | `github:<repo>/deployment/<environment>` |
//! | `commit_comment`, `status` | `github:<repo>/commit/<sha>` |
//! | `code_scanning_alert`, `dependabot_alert`, `secret_scanning_alert`, `repository_vulnerability_alert` | `github:<repo>/<event>/<alert number or id>` |
//! | any other event with a repository (`star`, `label`, `ping` of a repository hook, …) | `github:<repo>` |
//! | events without a repository (`organization`, `membership`, `installation`, …) | `github:<account>/<event>`, the account being the organization, else the installation's account, else the sender, else `github` |
//!
//! # Commands
//!
//! A comment addresses the bot when one of its lines starts with a command prefix (by default
//! `/rausku` or `@rauskuclaw`, compared ignoring case) followed by whitespace and text: the rest
//! of that first such line is the command (`/rausku deploy staging` → `deploy staging`). Lines in
//! fenced code blocks and quoted lines (`> /rausku …`) are not commands. Only new comments
//! count: `issue_comment`, `pull_request_review_comment`, `commit_comment`,
//! `discussion_comment` with action `created`, and `pull_request_review` with `submitted`.
//!
//! Loop guard: a comment written by the bot itself (its author or the sender is the configured
//! bot login, with or without GitHub's `[bot]` suffix) or carrying the reply marker
//! `<!-- rausku:reply:` is never a command.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The start of the marker every reply the bot posts carries (see the `github.comment` skill).
pub const REPLY_MARKER_PREFIX: &str = "<!-- rausku:reply:";

/// The command prefixes used when none are configured.
pub const DEFAULT_COMMAND_PREFIXES: &[&str] = &["/rausku", "@rauskuclaw"];

/// How comments address the bot, and who the bot is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandRules {
    /// Line prefixes that make a comment a command, e.g. `/rausku`, `@rauskuclaw` (compared
    /// ignoring ASCII case; surrounding whitespace is ignored).
    pub prefixes: Vec<String>,
    /// The login the bot posts as (`RAUSKU_GITHUB_BOT_LOGIN`): its own comments are never
    /// commands. `None`: only the reply marker guards against loops.
    pub bot_login: Option<String>,
}

impl Default for CommandRules {
    fn default() -> Self {
        CommandRules {
            prefixes: DEFAULT_COMMAND_PREFIXES
                .iter()
                .map(|p| p.to_string())
                .collect(),
            bot_login: None,
        }
    }
}

/// A delivery, understood.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GithubEvent {
    /// `<event>.<action>` (`pull_request.opened`), or the event name alone when the payload
    /// has no action (`push`, `ping`). Unknown events follow the same rule.
    pub kind: String,
    /// The session this delivery belongs to (see the module docs). Never empty.
    pub session_key: String,
    /// The payload's useful fields, flattened for templates (absent fields are left out).
    pub context: Value,
    /// The text after a command prefix, if this is a new comment addressed to the bot.
    pub command: Option<String>,
}

/// Maps one delivery (`X-GitHub-Event` and the parsed body) to its kind, session, context and
/// command.
pub fn map_event(event_name: &str, payload: &Value, rules: &CommandRules) -> GithubEvent {
    let event_name = if event_name.trim().is_empty() {
        "unknown"
    } else {
        event_name.trim()
    };
    let action = str_at(payload, &["action"]).filter(|a| !a.is_empty());
    let kind = match action {
        Some(a) => format!("{event_name}.{a}"),
        None => event_name.to_string(),
    };
    let command = command_of(event_name, action, payload, rules);
    let mut context = context_of(event_name, &kind, payload);
    if let (Some(cmd), Some(obj)) = (&command, context.as_object_mut()) {
        obj.insert("command".into(), Value::String(cmd.clone()));
    }
    GithubEvent {
        session_key: session_key(event_name, payload),
        kind,
        context,
        command,
    }
}

/// The session key of a delivery (see the module docs).
pub fn session_key(event_name: &str, payload: &Value) -> String {
    let Some(repo) = repo_name(payload) else {
        let account = str_at(payload, &["organization", "login"])
            .or_else(|| str_at(payload, &["installation", "account", "login"]))
            .or_else(|| str_at(payload, &["sender", "login"]))
            .filter(|a| !a.is_empty())
            .unwrap_or("github");
        return format!("github:{account}/{event_name}");
    };
    let scoped = |rest: String| format!("github:{repo}{rest}");
    match event_name {
        "discussion" | "discussion_comment" => {
            if let Some(n) = u64_at(payload, &["discussion", "number"]) {
                return scoped(format!("/discussion/{n}"));
            }
        }
        "push" => {
            if let Some(r) = str_at(payload, &["ref"]).filter(|r| !r.is_empty()) {
                return scoped(format!("@{}", short_ref(r)));
            }
        }
        "create" | "delete" => {
            if let Some(r) = str_at(payload, &["ref"]).filter(|r| !r.is_empty()) {
                let full = match str_at(payload, &["ref_type"]) {
                    Some("tag") if !r.starts_with("refs/") => format!("refs/tags/{r}"),
                    _ => r.to_string(),
                };
                return scoped(format!("@{}", short_ref(&full)));
            }
        }
        "workflow_dispatch" => {
            if let Some(r) = str_at(payload, &["ref"]).filter(|r| !r.is_empty()) {
                return scoped(format!("@{}", short_ref(r)));
            }
        }
        "release" => {
            if let Some(tag) = str_at(payload, &["release", "tag_name"]).filter(|t| !t.is_empty()) {
                return scoped(format!("/release/{tag}"));
            }
        }
        "workflow_run" | "workflow_job" | "check_run" | "check_suite" => {
            let head_branch = match event_name {
                "check_run" => str_at(payload, &["check_run", "check_suite", "head_branch"]),
                _ => str_at(payload, &[event_name, "head_branch"]),
            }
            .filter(|b| !b.is_empty());
            if let Some(branch) = head_branch {
                return scoped(format!("/{event_name}/{branch}"));
            }
            if let Some(id) = scalar_at(payload, &[event_name, "id"]) {
                return scoped(format!("/{event_name}/{id}"));
            }
        }
        "deployment" | "deployment_status" | "deployment_review" | "deployment_protection_rule" => {
            let env = str_at(payload, &["deployment", "environment"])
                .or_else(|| str_at(payload, &["environment"]))
                .filter(|e| !e.is_empty());
            if let Some(env) = env {
                return scoped(format!("/deployment/{env}"));
            }
        }
        "commit_comment" | "status" => {
            let sha = match event_name {
                "status" => str_at(payload, &["sha"]),
                _ => str_at(payload, &["comment", "commit_id"]),
            }
            .filter(|s| !s.is_empty());
            if let Some(sha) = sha {
                return scoped(format!("/commit/{sha}"));
            }
        }
        "code_scanning_alert"
        | "dependabot_alert"
        | "secret_scanning_alert"
        | "repository_vulnerability_alert" => {
            if let Some(n) = scalar_at(payload, &["alert", "number"])
                .or_else(|| scalar_at(payload, &["alert", "id"]))
            {
                return scoped(format!("/{event_name}/{n}"));
            }
        }
        _ => {}
    }
    // Issues, pull requests and everything said about them.
    let number = u64_at(payload, &["pull_request", "number"])
        .or_else(|| u64_at(payload, &["issue", "number"]));
    match number {
        Some(n) => scoped(format!("#{n}")),
        None => scoped(String::new()),
    }
}

/// The text of the first line of `body` addressed to the bot: a line starting with one of
/// `prefixes` (ignoring ASCII case) followed by whitespace and some text. Lines inside fenced
/// code blocks and quoted lines do not count.
pub fn parse_command(body: &str, prefixes: &[String]) -> Option<String> {
    let mut in_fence = false;
    for line in body.lines() {
        let line = line.trim();
        if line.starts_with("```") || line.starts_with("~~~") {
            in_fence = !in_fence;
            continue;
        }
        if in_fence {
            continue;
        }
        for prefix in prefixes {
            let prefix = prefix.trim();
            if prefix.is_empty() || line.len() <= prefix.len() {
                continue;
            }
            let Some(head) = line.get(..prefix.len()) else {
                continue;
            };
            if !head.eq_ignore_ascii_case(prefix) {
                continue;
            }
            let rest = &line[prefix.len()..];
            if !rest.starts_with(char::is_whitespace) {
                continue;
            }
            let rest = rest.trim();
            if !rest.is_empty() {
                return Some(rest.to_string());
            }
        }
    }
    None
}

/// The command of a new comment addressed to the bot, unless the bot wrote it.
fn command_of(
    event_name: &str,
    action: Option<&str>,
    payload: &Value,
    rules: &CommandRules,
) -> Option<String> {
    let (body, author) = match (event_name, action) {
        (
            "issue_comment"
            | "pull_request_review_comment"
            | "commit_comment"
            | "discussion_comment",
            Some("created"),
        ) => (
            str_at(payload, &["comment", "body"]),
            str_at(payload, &["comment", "user", "login"]),
        ),
        ("pull_request_review", Some("submitted")) => (
            str_at(payload, &["review", "body"]),
            str_at(payload, &["review", "user", "login"]),
        ),
        _ => return None,
    };
    let body = body?;
    if body.contains(REPLY_MARKER_PREFIX) {
        return None;
    }
    if let Some(bot) = &rules.bot_login {
        let sender = str_at(payload, &["sender", "login"]);
        if [author, sender]
            .into_iter()
            .flatten()
            .any(|login| same_login(login, bot))
        {
            return None;
        }
    }
    parse_command(body, &rules.prefixes)
}

/// Logins compared ignoring case and GitHub's `[bot]` suffix on app accounts.
fn same_login(a: &str, b: &str) -> bool {
    let norm = |s: &str| {
        let s = s.trim();
        s.strip_suffix("[bot]").unwrap_or(s).to_ascii_lowercase()
    };
    let (a, b) = (norm(a), norm(b));
    !a.is_empty() && a == b
}

/// The flattened fields templates use. Only fields the payload has are set.
fn context_of(event_name: &str, kind: &str, payload: &Value) -> Value {
    let mut c = Ctx(Map::new());
    c.set("event", Some(event_name.into()));
    c.set("kind", Some(kind.into()));
    c.str("action", str_at(payload, &["action"]));

    // Where.
    c.str("repo", repo_name(payload).as_deref());
    c.str(
        "owner",
        str_at(payload, &["repository", "owner", "login"]).or_else(|| {
            str_at(payload, &["repository", "full_name"]).and_then(|f| f.split('/').next())
        }),
    );
    c.str("name", str_at(payload, &["repository", "name"]));
    c.str("org", str_at(payload, &["organization", "login"]));
    c.set(
        "installation_id",
        scalar_value(payload, &["installation", "id"]),
    );
    c.str("sender", str_at(payload, &["sender", "login"]));

    // What: the issue, pull request or discussion the event is about.
    let subject = ["pull_request", "issue", "discussion"]
        .iter()
        .find_map(|k| payload.get(*k).filter(|v| v.is_object()));
    if let Some(s) = subject {
        c.set("number", scalar_value(s, &["number"]));
        c.str("title", str_at(s, &["title"]));
        c.str("state", str_at(s, &["state"]));
        c.str("body", str_at(s, &["body"]));
        c.set("labels", labels(s));
    }
    let is_pr = payload.get("pull_request").is_some_and(Value::is_object)
        || payload
            .get("issue")
            .and_then(|i| i.get("pull_request"))
            .is_some_and(Value::is_object);
    if subject.is_some() && event_name != "discussion" && event_name != "discussion_comment" {
        c.set("pull_request", Some(Value::Bool(is_pr)));
    }
    if let Some(pr) = payload.get("pull_request").filter(|v| v.is_object()) {
        c.set(
            "merged",
            pr.get("merged").filter(|m| m.is_boolean()).cloned(),
        );
        c.set("draft", pr.get("draft").filter(|m| m.is_boolean()).cloned());
        c.str("base", str_at(pr, &["base", "ref"]));
        c.str("head", str_at(pr, &["head", "ref"]));
        c.str("sha", str_at(pr, &["head", "sha"]));
    }

    // What was said.
    let comment = payload.get("comment").filter(|v| v.is_object());
    let review = payload.get("review").filter(|v| v.is_object());
    if let Some(cm) = comment {
        c.str("comment", str_at(cm, &["body"]));
        c.set("comment_id", scalar_value(cm, &["id"]));
        c.str("sha", str_at(cm, &["commit_id"]));
        c.str("path", str_at(cm, &["path"]));
    } else if let Some(rv) = review {
        c.str("comment", str_at(rv, &["body"]));
        c.set("review_id", scalar_value(rv, &["id"]));
    }
    if let Some(rv) = review {
        c.str("review_state", str_at(rv, &["state"]));
    }

    // Refs and commits.
    match event_name {
        "push" => {
            c.str("ref", str_at(payload, &["ref"]));
            c.str("sha", str_at(payload, &["after"]));
            c.str("before", str_at(payload, &["before"]));
            if let Some(r) = str_at(payload, &["ref"]) {
                branch_or_tag(&mut c, r);
            }
            c.set(
                "created",
                payload.get("created").filter(|v| v.is_boolean()).cloned(),
            );
            c.set(
                "deleted",
                payload.get("deleted").filter(|v| v.is_boolean()).cloned(),
            );
            c.set(
                "forced",
                payload.get("forced").filter(|v| v.is_boolean()).cloned(),
            );
            c.set(
                "commits",
                payload
                    .get("commits")
                    .and_then(Value::as_array)
                    .map(|a| Value::from(a.len())),
            );
            c.str("url", str_at(payload, &["compare"]));
        }
        "create" | "delete" => {
            c.str("ref", str_at(payload, &["ref"]));
            c.str("ref_type", str_at(payload, &["ref_type"]));
            if let Some(r) = str_at(payload, &["ref"]) {
                match str_at(payload, &["ref_type"]) {
                    Some("tag") => c.str("tag", Some(r)),
                    Some("branch") => c.str("branch", Some(r)),
                    _ => {}
                }
            }
        }
        "workflow_dispatch" => {
            c.str("ref", str_at(payload, &["ref"]));
            if let Some(r) = str_at(payload, &["ref"]) {
                branch_or_tag(&mut c, r);
            }
            c.str("workflow", str_at(payload, &["workflow"]));
        }
        "status" => {
            c.str("sha", str_at(payload, &["sha"]));
            c.str("state", str_at(payload, &["state"]));
            c.str("context_name", str_at(payload, &["context"]));
            c.str("description", str_at(payload, &["description"]));
            c.str("url", str_at(payload, &["target_url"]));
        }
        "release" => {
            if let Some(r) = payload.get("release").filter(|v| v.is_object()) {
                c.str("tag", str_at(r, &["tag_name"]));
                c.str(
                    "title",
                    str_at(r, &["name"])
                        .filter(|n| !n.is_empty())
                        .or_else(|| str_at(r, &["tag_name"])),
                );
                c.str("body", str_at(r, &["body"]));
                c.str("author", str_at(r, &["author", "login"]));
                c.str("url", str_at(r, &["html_url"]));
                c.set(
                    "prerelease",
                    r.get("prerelease").filter(|v| v.is_boolean()).cloned(),
                );
                c.set("draft", r.get("draft").filter(|v| v.is_boolean()).cloned());
            }
        }
        "workflow_run" | "workflow_job" | "check_run" | "check_suite" => {
            if let Some(run) = payload.get(event_name).filter(|v| v.is_object()) {
                c.set("id", scalar_value(run, &["id"]));
                c.str("status", str_at(run, &["status"]));
                c.str("conclusion", str_at(run, &["conclusion"]));
                c.str("sha", str_at(run, &["head_sha"]));
                c.str("url", str_at(run, &["html_url"]));
                let head = str_at(run, &["head_branch"])
                    .or_else(|| str_at(run, &["check_suite", "head_branch"]));
                c.str("head", head);
                c.str("branch", head);
                let title = str_at(run, &["display_title"])
                    .or_else(|| str_at(run, &["name"]))
                    .filter(|t| !t.is_empty());
                c.str("title", title);
                let workflow = match event_name {
                    "workflow_run" => str_at(run, &["name"]),
                    "workflow_job" => str_at(run, &["workflow_name"]),
                    _ => None,
                };
                c.str("workflow", workflow.filter(|w| !w.is_empty()));
                c.set("run_id", scalar_value(run, &["run_id"]));
            }
        }
        "deployment" | "deployment_status" | "deployment_review" | "deployment_protection_rule" => {
            let env = str_at(payload, &["deployment", "environment"])
                .or_else(|| str_at(payload, &["environment"]));
            c.str("environment", env);
            c.str("ref", str_at(payload, &["deployment", "ref"]));
            c.str("sha", str_at(payload, &["deployment", "sha"]));
            c.str("state", str_at(payload, &["deployment_status", "state"]));
            c.str("url", str_at(payload, &["deployment_status", "target_url"]));
            c.str(
                "author",
                str_at(payload, &["deployment", "creator", "login"]),
            );
        }
        "code_scanning_alert"
        | "dependabot_alert"
        | "secret_scanning_alert"
        | "repository_vulnerability_alert" => {
            if let Some(alert) = payload.get("alert").filter(|v| v.is_object()) {
                c.set("number", scalar_value(alert, &["number"]));
                c.str("state", str_at(alert, &["state"]));
                c.str("url", str_at(alert, &["html_url"]));
                c.str("ref", str_at(payload, &["ref"]));
            }
        }
        _ => {}
    }

    // Who and where to look, most specific first.
    let author = comment
        .and_then(|cm| str_at(cm, &["user", "login"]))
        .or_else(|| review.and_then(|rv| str_at(rv, &["user", "login"])))
        .or_else(|| subject.and_then(|s| str_at(s, &["user", "login"])))
        .or_else(|| str_at(payload, &["pusher", "name"]))
        .or_else(|| str_at(payload, &["head_commit", "author", "username"]));
    c.str("author", author);
    let url = comment
        .and_then(|cm| str_at(cm, &["html_url"]))
        .or_else(|| review.and_then(|rv| str_at(rv, &["html_url"])))
        .or_else(|| subject.and_then(|s| str_at(s, &["html_url"])))
        .or_else(|| str_at(payload, &["repository", "html_url"]));
    c.str("url", url);
    Value::Object(c.0)
}

/// `refs/heads/x` → `branch: x`; `refs/tags/v1` → `tag: v1`.
fn branch_or_tag(c: &mut Ctx, r: &str) {
    if let Some(b) = r.strip_prefix("refs/heads/") {
        c.str("branch", Some(b));
    } else if let Some(t) = r.strip_prefix("refs/tags/") {
        c.str("tag", Some(t));
    }
}

/// Context under construction: the first value set for a field wins, `None` sets nothing.
struct Ctx(Map<String, Value>);

impl Ctx {
    fn set(&mut self, key: &str, value: Option<Value>) {
        if let Some(v) = value.filter(|v| !v.is_null()) {
            self.0.entry(key.to_string()).or_insert(v);
        }
    }

    fn str(&mut self, key: &str, value: Option<&str>) {
        self.set(key, value.map(|s| Value::String(s.to_string())));
    }
}

/// Label names of an issue or pull request.
fn labels(subject: &Value) -> Option<Value> {
    let names: Vec<Value> = subject
        .get("labels")?
        .as_array()?
        .iter()
        .filter_map(|l| l.get("name").and_then(Value::as_str))
        .map(|n| Value::String(n.to_string()))
        .collect();
    Some(Value::Array(names))
}

/// `owner/name` of the payload's repository.
fn repo_name(payload: &Value) -> Option<String> {
    if let Some(full) = str_at(payload, &["repository", "full_name"]).filter(|f| f.contains('/')) {
        return Some(full.to_string());
    }
    let owner = str_at(payload, &["repository", "owner", "login"])?;
    let name = str_at(payload, &["repository", "name"])?;
    (!owner.is_empty() && !name.is_empty()).then(|| format!("{owner}/{name}"))
}

/// `refs/heads/main` → `main`; other refs unchanged.
fn short_ref(r: &str) -> &str {
    r.strip_prefix("refs/heads/").unwrap_or(r)
}

fn at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(v, |v, k| v.get(*k))
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    at(v, path)?.as_str()
}

fn u64_at(v: &Value, path: &[&str]) -> Option<u64> {
    at(v, path)?.as_u64()
}

/// A number or a non-empty string at `path`, as text (for keys).
fn scalar_at(v: &Value, path: &[&str]) -> Option<String> {
    match at(v, path)? {
        Value::Number(n) => Some(n.to_string()),
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        _ => None,
    }
}

/// A number or string at `path`, as it is (for the context).
fn scalar_value(v: &Value, path: &[&str]) -> Option<Value> {
    at(v, path)
        .filter(|v| v.is_number() || v.is_string())
        .cloned()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn rules() -> CommandRules {
        CommandRules {
            bot_login: Some("rauskuclaw".into()),
            ..CommandRules::default()
        }
    }

    fn comment(body: &str, author: &str) -> Value {
        json!({
            "action": "created",
            "issue": {"number": 7, "title": "Flaky CI", "state": "open",
                      "user": {"login": "alice"}, "html_url": "https://github.com/o/r/issues/7",
                      "labels": [{"name": "bug"}, {"name": "ci"}]},
            "comment": {"id": 99, "body": body, "user": {"login": author},
                        "html_url": "https://github.com/o/r/issues/7#issuecomment-99"},
            "repository": {"full_name": "o/r", "name": "r", "owner": {"login": "o"},
                           "html_url": "https://github.com/o/r"},
            "sender": {"login": author},
        })
    }

    #[test]
    fn issue_comment_maps_to_the_issue_session_with_its_command() {
        let e = map_event(
            "issue_comment",
            &comment("thanks!\n/rausku deploy staging\n/rausku other", "bob"),
            &rules(),
        );
        assert_eq!(e.kind, "issue_comment.created");
        assert_eq!(e.session_key, "github:o/r#7");
        assert_eq!(e.command.as_deref(), Some("deploy staging"));
        let c = &e.context;
        assert_eq!(c["repo"], "o/r");
        assert_eq!(c["owner"], "o");
        assert_eq!(c["name"], "r");
        assert_eq!(c["number"], 7);
        assert_eq!(c["title"], "Flaky CI");
        assert_eq!(c["author"], "bob");
        assert_eq!(c["sender"], "bob");
        assert_eq!(
            c["comment"],
            "thanks!\n/rausku deploy staging\n/rausku other"
        );
        assert_eq!(c["url"], "https://github.com/o/r/issues/7#issuecomment-99");
        assert_eq!(c["labels"], json!(["bug", "ci"]));
        assert_eq!(c["pull_request"], false);
        assert_eq!(c["command"], "deploy staging");
        assert_eq!(c["event"], "issue_comment");
        assert_eq!(c["kind"], "issue_comment.created");
    }

    #[test]
    fn command_prefixes() {
        let p = CommandRules::default().prefixes;
        let cases: &[(&str, Option<&str>)] = &[
            ("/rausku deploy staging", Some("deploy staging")),
            ("  /RAUSKU   status  ", Some("status")),
            ("@rauskuclaw run tests please", Some("run tests please")),
            ("@RauskuClaw help", Some("help")),
            ("hello\r\n/rausku restart api\r\n", Some("restart api")),
            ("/rausku", None),
            ("/rausku   ", None),
            ("/rauskudeploy", None),
            ("@rauskuclawbot deploy", None),
            ("please /rausku deploy", None),
            ("> /rausku deploy prod", None),
            ("```\n/rausku deploy prod\n```", None),
            ("```sh\n/rausku a\n```\n/rausku b", Some("b")),
            ("", None),
        ];
        for (body, want) in cases {
            assert_eq!(parse_command(body, &p).as_deref(), *want, "{body:?}");
        }
        // Configured prefixes replace the defaults.
        let custom = vec!["!bot ".to_string()];
        assert_eq!(parse_command("!bot x", &custom).as_deref(), Some("x"));
        assert_eq!(parse_command("/rausku x", &custom), None);
        // A multi-byte character where the prefix would end is not a panic.
        assert_eq!(parse_command("/rauskä deploy", &p), None);
        assert_eq!(parse_command("ääääääää deploy", &p), None);
    }

    #[test]
    fn the_bot_never_commands_itself() {
        // Its own login (also as an app, `[bot]`), as author or as sender.
        for author in ["rauskuclaw", "RauskuClaw", "rauskuclaw[bot]"] {
            let e = map_event(
                "issue_comment",
                &comment("/rausku deploy", author),
                &rules(),
            );
            assert_eq!(e.command, None, "{author}");
        }
        let mut p = comment("/rausku deploy", "bob");
        p["sender"]["login"] = json!("rauskuclaw[bot]");
        assert_eq!(map_event("issue_comment", &p, &rules()).command, None);
        // The reply marker, whoever posted it.
        let body = "/rausku deploy\n<!-- rausku:reply:abc -->";
        let e = map_event("issue_comment", &comment(body, "bob"), &rules());
        assert_eq!(e.command, None);
        // Without a configured login the marker still guards.
        let e = map_event(
            "issue_comment",
            &comment(body, "bob"),
            &CommandRules::default(),
        );
        assert_eq!(e.command, None);
        // Someone else is fine.
        let e = map_event("issue_comment", &comment("/rausku deploy", "bob"), &rules());
        assert_eq!(e.command.as_deref(), Some("deploy"));
    }

    #[test]
    fn only_new_comments_are_commands() {
        let mut p = comment("/rausku deploy", "bob");
        p["action"] = json!("edited");
        assert_eq!(map_event("issue_comment", &p, &rules()).command, None);
        p["action"] = json!("deleted");
        assert_eq!(map_event("issue_comment", &p, &rules()).command, None);
        // An issue body is not a comment.
        let issue = json!({"action": "opened", "issue": {"number": 1, "body": "/rausku deploy"},
                           "repository": {"full_name": "o/r"}});
        assert_eq!(map_event("issues", &issue, &rules()).command, None);
        // A submitted review's body is.
        let review = json!({"action": "submitted",
            "review": {"body": "/rausku rerun", "user": {"login": "bob"}, "state": "commented"},
            "pull_request": {"number": 3}, "repository": {"full_name": "o/r"}});
        let e = map_event("pull_request_review", &review, &rules());
        assert_eq!(e.command.as_deref(), Some("rerun"));
        assert_eq!(e.session_key, "github:o/r#3");
        assert_eq!(e.context["review_state"], "commented");
    }

    #[test]
    fn session_keys_by_event() {
        let repo = json!({"full_name": "o/r", "name": "r", "owner": {"login": "o"}});
        let with = |extra: Value| {
            let mut p = extra;
            p["repository"] = repo.clone();
            p
        };
        let cases: Vec<(&str, Value, &str)> = vec![
            (
                "push",
                with(json!({"ref": "refs/heads/main"})),
                "github:o/r@main",
            ),
            (
                "push",
                with(json!({"ref": "refs/heads/feat/x"})),
                "github:o/r@feat/x",
            ),
            (
                "push",
                with(json!({"ref": "refs/tags/v1"})),
                "github:o/r@refs/tags/v1",
            ),
            (
                "create",
                with(json!({"ref": "v1", "ref_type": "tag"})),
                "github:o/r@refs/tags/v1",
            ),
            (
                "delete",
                with(json!({"ref": "dev", "ref_type": "branch"})),
                "github:o/r@dev",
            ),
            (
                "release",
                with(json!({"action": "published", "release": {"tag_name": "v2.0"}})),
                "github:o/r/release/v2.0",
            ),
            (
                "workflow_run",
                with(json!({"workflow_run": {"id": 5, "head_branch": "main"}})),
                "github:o/r/workflow_run/main",
            ),
            (
                "workflow_run",
                with(json!({"workflow_run": {"id": 5, "head_branch": null}})),
                "github:o/r/workflow_run/5",
            ),
            (
                "workflow_job",
                with(json!({"workflow_job": {"id": 6, "head_branch": "dev"}})),
                "github:o/r/workflow_job/dev",
            ),
            (
                "check_run",
                with(json!({"check_run": {"id": 8, "check_suite": {"head_branch": "x"}}})),
                "github:o/r/check_run/x",
            ),
            (
                "check_suite",
                with(json!({"check_suite": {"id": 9, "head_branch": null}})),
                "github:o/r/check_suite/9",
            ),
            (
                "deployment",
                with(json!({"deployment": {"environment": "production"}})),
                "github:o/r/deployment/production",
            ),
            (
                "deployment_review",
                with(json!({"environment": "TST"})),
                "github:o/r/deployment/TST",
            ),
            (
                "status",
                with(json!({"sha": "abc"})),
                "github:o/r/commit/abc",
            ),
            (
                "commit_comment",
                with(json!({"comment": {"commit_id": "def"}})),
                "github:o/r/commit/def",
            ),
            (
                "dependabot_alert",
                with(json!({"alert": {"number": 2}})),
                "github:o/r/dependabot_alert/2",
            ),
            (
                "discussion",
                with(json!({"discussion": {"number": 90}})),
                "github:o/r/discussion/90",
            ),
            (
                "pull_request",
                with(json!({"pull_request": {"number": 4}})),
                "github:o/r#4",
            ),
            ("star", with(json!({"action": "created"})), "github:o/r"),
            ("some_future_event", with(json!({})), "github:o/r"),
            (
                "organization",
                json!({"organization": {"login": "acme"}, "sender": {"login": "x"}}),
                "github:acme/organization",
            ),
            (
                "installation",
                json!({"installation": {"account": {"login": "acct"}}, "sender": {"login": "x"}}),
                "github:acct/installation",
            ),
            (
                "sponsorship",
                json!({"sender": {"login": "x"}}),
                "github:x/sponsorship",
            ),
            (
                "security_advisory",
                json!({"action": "published"}),
                "github:github/security_advisory",
            ),
            ("", json!(null), "github:github/unknown"),
        ];
        for (event, payload, want) in cases {
            assert_eq!(
                map_event(event, &payload, &rules()).session_key,
                want,
                "{event} {payload}"
            );
        }
    }

    #[test]
    fn kinds_and_odd_payloads() {
        let e = map_event("push", &json!({"ref": "refs/heads/main"}), &rules());
        assert_eq!(e.kind, "push");
        let e = map_event("mystery", &json!({"action": "sparkled"}), &rules());
        assert_eq!(e.kind, "mystery.sparkled");
        for odd in [
            json!(null),
            json!([1, 2]),
            json!("x"),
            json!({"repository": 5}),
        ] {
            let e = map_event("issues", &odd, &rules());
            assert!(!e.session_key.is_empty());
            assert_eq!(e.kind, "issues");
        }
    }
}
