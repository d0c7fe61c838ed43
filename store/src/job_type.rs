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

/// Where a job type came from, which decides who may replace or remove it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default, utoipa::ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum JobTypeSource {
    /// Seeded from a built-in handler of the same name.
    Builtin,
    /// Created through `POST /v1/job-types`.
    #[default]
    Api,
    /// Defined by a skill manifest file; a reload replaces or removes it.
    Manifest {
        /// The manifest file, as the skills directory was given (`skills/build.toml`).
        path: String,
        /// SHA-256 (hex) of the manifest's definition as last applied: a reload rewrites the
        /// type only when this changes, so operator changes survive an unchanged manifest.
        digest: String,
    },
}

impl JobTypeSource {
    /// Seeded from a built-in handler.
    pub fn is_builtin(&self) -> bool {
        matches!(self, JobTypeSource::Builtin)
    }

    /// The manifest file that defines the type, if a manifest does.
    pub fn manifest_path(&self) -> Option<&str> {
        match self {
            JobTypeSource::Manifest { path, .. } => Some(path),
            _ => None,
        }
    }
}

/// A named skill: a handler, its fixed config, defaults and policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(from = "StoredJobType")]
pub struct JobType {
    /// 1–64 characters of `a-z 0-9 . _ -`, starting with a letter; unique.
    pub name: String,
    /// What the skill does, for operators and planners.
    pub description: String,
    /// The handler that runs jobs of this type (`echo`, `http.request`, …).
    pub handler: String,
    /// A disabled type accepts no new jobs.
    pub enabled: bool,
    /// Fixed configuration handed to the handler with every job's input.
    pub config: Value,
    /// Attempts, timeout and concurrency for jobs that do not say.
    pub defaults: JobDefaults,
    /// A JSON Schema for the input, if the type declares one.
    pub input_schema: Option<Value>,
    /// Which channels may invoke it from a session, and when an approval is needed.
    pub policy: Policy,
    /// Built in, created through the API, or defined by a manifest file.
    pub source: JobTypeSource,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// A job type as stored, including records written before `source` existed (which said
/// `builtin: true|false` instead).
#[derive(Deserialize)]
struct StoredJobType {
    name: String,
    description: String,
    handler: String,
    enabled: bool,
    #[serde(default)]
    config: Value,
    defaults: JobDefaults,
    #[serde(default)]
    input_schema: Option<Value>,
    #[serde(default)]
    policy: Policy,
    #[serde(default)]
    source: Option<JobTypeSource>,
    /// The field `source` replaced; read only when `source` is missing.
    #[serde(default)]
    builtin: bool,
    created_at: Timestamp,
    updated_at: Timestamp,
}

impl From<StoredJobType> for JobType {
    fn from(s: StoredJobType) -> JobType {
        let source = s.source.unwrap_or(if s.builtin {
            JobTypeSource::Builtin
        } else {
            JobTypeSource::Api
        });
        JobType {
            name: s.name,
            description: s.description,
            handler: s.handler,
            enabled: s.enabled,
            config: s.config,
            defaults: s.defaults,
            input_schema: s.input_schema,
            policy: s.policy,
            source,
            created_at: s.created_at,
            updated_at: s.updated_at,
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

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
            json!({"decision": "require_approval"})
        );
        assert_eq!(
            serde_json::to_value(PolicyDecision::Forbid { reason: "x".into() }).unwrap(),
            json!({"decision": "forbid", "reason": "x"})
        );
    }

    fn record(extra: Value) -> Value {
        let mut v = json!({
            "name": "x",
            "description": "d",
            "handler": "echo",
            "enabled": true,
            "defaults": {"max_attempts": 3, "timeout_ms": 1000, "concurrency": null},
            "created_at": "2026-01-01T00:00:00.000Z",
            "updated_at": "2026-01-01T00:00:00.000Z",
        });
        v.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        v
    }

    #[test]
    fn records_from_before_source_still_decode() {
        let decode = |v: Value| serde_json::from_value::<JobType>(v).unwrap().source;
        assert_eq!(
            decode(record(json!({"builtin": true}))),
            JobTypeSource::Builtin
        );
        assert_eq!(
            decode(record(json!({"builtin": false}))),
            JobTypeSource::Api
        );
        assert_eq!(decode(record(json!({}))), JobTypeSource::Api);
        // `source` wins over a stale `builtin`.
        let manifest = json!({"kind": "manifest", "path": "skills/a.toml", "digest": "ab"});
        assert_eq!(
            decode(record(json!({"builtin": true, "source": manifest}))),
            JobTypeSource::Manifest {
                path: "skills/a.toml".into(),
                digest: "ab".into()
            }
        );
    }

    #[test]
    fn source_round_trips() {
        for source in [
            JobTypeSource::Builtin,
            JobTypeSource::Api,
            JobTypeSource::Manifest {
                path: "a.toml".into(),
                digest: "00".into(),
            },
        ] {
            let mut jt: JobType = serde_json::from_value(record(json!({}))).unwrap();
            jt.source = source;
            let v = serde_json::to_value(&jt).unwrap();
            assert!(v.get("builtin").is_none(), "{v}");
            assert_eq!(serde_json::from_value::<JobType>(v).unwrap(), jt);
        }
        assert_eq!(
            serde_json::to_value(JobTypeSource::Builtin).unwrap(),
            json!({"kind": "builtin"})
        );
    }
}
