//! Job types: named skills over a handler, with defaults and a policy.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::time::Timestamp;

/// Defaults applied to jobs of a type when the request does not say.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JobDefaults {
    pub max_attempts: u32,
    pub timeout_ms: u64,
    /// How many jobs of this type may run at once (`null`: only the global limit applies).
    pub concurrency: Option<u32>,
}

impl Default for JobDefaults {
    fn default() -> Self {
        JobDefaults {
            max_attempts: 3,
            timeout_ms: 30_000,
            concurrency: None,
        }
    }
}

/// How risky a skill is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Risk {
    #[default]
    Read,
    Write,
    Deploy,
}

/// When invoking a skill from a session needs a human's approval.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Approval {
    #[default]
    Never,
    Always,
    /// Only when invoked from one of these channels (`rest`, `local`, `github`, `console`).
    Channels(Vec<String>),
}

/// Who may invoke a skill, and with what safeguards.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// How much harm a mistaken invocation can do; informs operators, not enforced by itself.
    #[serde(default)]
    pub risk: Risk,
    /// When an invocation from a session waits for an operator's approval.
    #[serde(default)]
    pub approval: Approval,
    /// Channels that may invoke it from a session; empty means all.
    #[serde(default)]
    pub channels: Vec<String>,
}

/// What [`Policy::decide`] says about invoking a skill from a channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(tag = "decision", rename_all = "snake_case")]
pub enum PolicyDecision {
    /// Run it now.
    Allow,
    /// Park the run until an operator approves (or denies, or the approval expires).
    RequireApproval,
    /// Do not run it; `reason` says why, for the session's observation and the operator.
    Forbid { reason: String },
}

impl Policy {
    /// Whether a session on `channel` (`rest`, `local`, `github`, `console`, or any other
    /// name) may invoke the skill, and whether it needs an approval first.
    ///
    /// `channels` is checked first: a non-empty list that does not name `channel` forbids the
    /// invocation, whatever `approval` says. Otherwise `approval` decides: `always`, or a
    /// channel list naming `channel`, requires an approval; anything else is allowed.
    pub fn decide(&self, channel: &str) -> PolicyDecision {
        if !self.channels.is_empty() && !self.channels.iter().any(|c| c == channel) {
            return PolicyDecision::Forbid {
                reason: format!(
                    "the `{channel}` channel may not invoke this skill; its policy allows only: {}",
                    self.channels.join(", ")
                ),
            };
        }
        let needs_approval = match &self.approval {
            Approval::Never => false,
            Approval::Always => true,
            Approval::Channels(channels) => channels.iter().any(|c| c == channel),
        };
        if needs_approval {
            PolicyDecision::RequireApproval
        } else {
            PolicyDecision::Allow
        }
    }
}

/// A named skill: a handler, its fixed config, defaults and policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct JobType {
    pub name: String,
    pub description: String,
    /// The handler that runs jobs of this type (`echo`, `http.request`, …).
    pub handler: String,
    pub enabled: bool,
    /// Fixed configuration handed to the handler with every job's input.
    #[serde(default)]
    pub config: Value,
    pub defaults: JobDefaults,
    /// A JSON Schema for the input, if the type declares one.
    #[serde(default)]
    pub input_schema: Option<Value>,
    #[serde(default)]
    pub policy: Policy,
    /// Seeded from a built-in handler (as opposed to created through the API).
    #[serde(default)]
    pub builtin: bool,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(approval: Approval, channels: &[&str]) -> Policy {
        Policy {
            risk: Risk::Write,
            approval,
            channels: channels.iter().map(|c| c.to_string()).collect(),
        }
    }

    #[test]
    fn decide_table() {
        use PolicyDecision::{Allow, RequireApproval};
        let github = || Approval::Channels(vec!["github".into()]);
        let cases: Vec<(Policy, &str, Option<PolicyDecision>)> = vec![
            // (policy, channel, expected; None = forbidden)
            (Policy::default(), "rest", Some(Allow)),
            (Policy::default(), "github", Some(Allow)),
            (Policy::default(), "some-future-channel", Some(Allow)),
            (
                policy(Approval::Always, &[]),
                "local",
                Some(RequireApproval),
            ),
            (
                policy(Approval::Always, &["local"]),
                "local",
                Some(RequireApproval),
            ),
            (policy(Approval::Always, &["local"]), "rest", None),
            (policy(github(), &[]), "github", Some(RequireApproval)),
            (policy(github(), &[]), "console", Some(Allow)),
            (
                policy(github(), &["rest", "github"]),
                "github",
                Some(RequireApproval),
            ),
            (policy(github(), &["rest", "github"]), "rest", Some(Allow)),
            (policy(github(), &["rest"]), "github", None),
            (
                policy(Approval::Never, &["local", "rest"]),
                "rest",
                Some(Allow),
            ),
            (policy(Approval::Never, &["local", "rest"]), "console", None),
            (
                policy(Approval::Channels(vec![]), &[]),
                "local",
                Some(Allow),
            ),
            // Channel names match exactly.
            (policy(Approval::Never, &["rest"]), "REST", None),
        ];
        for (policy, channel, expected) in cases {
            let got = policy.decide(channel);
            match expected {
                Some(expected) => assert_eq!(got, expected, "{policy:?} on {channel}"),
                None => match got {
                    PolicyDecision::Forbid { reason } => {
                        assert!(reason.contains(&format!("`{channel}`")), "{reason}");
                        assert!(
                            reason.ends_with(&policy.channels.join(", ")),
                            "the reason names the allowed channels: {reason}"
                        );
                    }
                    other => panic!("{policy:?} on {channel}: {other:?}, expected forbid"),
                },
            }
        }
    }

    #[test]
    fn decision_serialises_with_a_tag() {
        assert_eq!(
            serde_json::to_value(PolicyDecision::RequireApproval).unwrap(),
            serde_json::json!({"decision": "require_approval"})
        );
        assert_eq!(
            serde_json::to_value(PolicyDecision::Forbid { reason: "x".into() }).unwrap(),
            serde_json::json!({"decision": "forbid", "reason": "x"})
        );
    }
}
