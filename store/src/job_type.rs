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
    #[serde(default)]
    pub risk: Risk,
    #[serde(default)]
    pub approval: Approval,
    /// Channels that may invoke it from a session; empty means all.
    #[serde(default)]
    pub channels: Vec<String>,
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

/// What a skill's policy says about invoking it from a channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicyDecision {
    Allow,
    RequireApproval,
    Forbid { reason: String },
}

impl Policy {
    /// Whether a session on `channel` may invoke the skill, and with an approval or not.
    pub fn decide(&self, channel: &str) -> PolicyDecision {
        if !self.channels.is_empty() && !self.channels.iter().any(|c| c == channel) {
            return PolicyDecision::Forbid {
                reason: format!(
                    "the skill's policy does not allow the `{channel}` channel (allowed: {})",
                    self.channels.join(", ")
                ),
            };
        }
        match &self.approval {
            Approval::Always => PolicyDecision::RequireApproval,
            Approval::Channels(list) if list.iter().any(|c| c == channel) => {
                PolicyDecision::RequireApproval
            }
            _ => PolicyDecision::Allow,
        }
    }
}
