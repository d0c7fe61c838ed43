//! Built-in handlers, one per file, and the helpers they share for reading inputs.
//!
//! - [`echo`]: returns its input.
//! - [`sleep`]: waits `ms` milliseconds.
//! - [`flaky`]: fails its first `fail_times` attempts, for smoke tests and demos.
//! - [`http`]: `http.request`, an outbound HTTP call to an allowlisted host.
//! - [`shell`]: `shell.exec`, an allowlisted program run from an argv (never a shell string).
//! - [`github_comment`]: `github.comment`, a comment on an issue or pull request, posted at most
//!   once per `reply_id` (`RAUSKU_GITHUB_TOKEN`).
//! - [`memory`]: `memory.write`, `memory.search` (built by [`memory_handlers`] over the store).

pub mod echo;
pub mod flaky;
pub mod github_comment;
pub mod http;
pub mod memory;
pub mod shell;
pub mod sleep;

use std::sync::Arc;

use serde_json::{Map, Value};

use crate::handler::{DynHandler, InputError};
use crate::net::NetPolicy;

pub use echo::Echo;
pub use flaky::Flaky;
pub use github_comment::{GithubApi, GithubComment};
pub use http::HttpRequest;
pub use memory::{MemorySearch, MemoryWrite, memory_handlers};
pub use shell::{ShellExec, ShellPolicy};
pub use sleep::Sleep;

/// The settings of the built-in handlers (the gateway builds it from its config).
#[derive(Debug, Clone)]
pub struct BuiltinConfig {
    /// Which hosts `http.request` may call (`RAUSKU_HTTP_ALLOWLIST`).
    pub http: NetPolicy,
    /// The largest response body an `http.request` input may ask for with
    /// `max_response_bytes`; clamped to [`http::MAX_RESPONSE_BYTES_LIMIT`] (10 MiB). Inputs
    /// that do not ask get at most 1 MiB.
    pub http_max_response_bytes: usize,
    /// What `shell.exec` may run (`RAUSKU_SHELL_ALLOW`), where and with which environment.
    /// The default allows nothing, and the `shell.exec` type is then seeded disabled.
    pub shell: ShellPolicy,
    /// The GitHub API `github.comment` posts to (`RAUSKU_GITHUB_API_URL`, `RAUSKU_GITHUB_TOKEN`).
    /// `None` (no token): the `github.comment` type is seeded disabled and its attempts fail.
    pub github: Option<GithubApi>,
}

impl Default for BuiltinConfig {
    fn default() -> Self {
        BuiltinConfig {
            http: NetPolicy::default(),
            http_max_response_bytes: http::MAX_RESPONSE_BYTES_LIMIT,
            shell: ShellPolicy::default(),
            github: None,
        }
    }
}

/// Every built-in handler, configured.
pub fn builtin_handlers(cfg: &BuiltinConfig) -> Vec<DynHandler> {
    vec![
        Arc::new(Echo),
        Arc::new(Sleep),
        Arc::new(Flaky),
        Arc::new(HttpRequest::new(
            cfg.http.clone(),
            cfg.http_max_response_bytes,
        )),
        Arc::new(ShellExec::new(cfg.shell.clone())),
        Arc::new(GithubComment::new(cfg.github.clone())),
    ]
}

/// The input as a JSON object, refusing keys outside `known` so a typo is an error, not a
/// silently ignored field.
pub(crate) fn object<'a>(
    input: &'a Value,
    known: &[&str],
) -> Result<&'a Map<String, Value>, InputError> {
    let obj = input.as_object().ok_or_else(|| {
        InputError::new(
            "input",
            format!("expected a JSON object, got {}", kind(input)),
        )
    })?;
    if let Some(unknown) = obj.keys().find(|k| !known.contains(&k.as_str())) {
        return Err(InputError::new(
            format!("input.{unknown}"),
            format!("unknown field; expected one of: {}", known.join(", ")),
        ));
    }
    Ok(obj)
}

/// An optional unsigned integer field `input.<key>` no larger than `max`.
pub(crate) fn opt_u64(
    obj: &Map<String, Value>,
    key: &str,
    max: u64,
) -> Result<Option<u64>, InputError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => match v.as_u64() {
            Some(n) if n <= max => Ok(Some(n)),
            Some(n) => Err(InputError::new(
                format!("input.{key}"),
                format!("{n} is too large; the maximum is {max}"),
            )),
            None => Err(InputError::new(
                format!("input.{key}"),
                format!("expected a non-negative integer, got {}", kind(v)),
            )),
        },
    }
}

/// A required unsigned integer field `input.<key>` no larger than `max`.
pub(crate) fn req_u64(obj: &Map<String, Value>, key: &str, max: u64) -> Result<u64, InputError> {
    opt_u64(obj, key, max)?.ok_or_else(|| {
        InputError::new(
            format!("input.{key}"),
            "required; give a non-negative integer",
        )
    })
}

/// A short name for the JSON type of `v`, for error messages.
pub(crate) fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
pub(crate) mod test_support {
    use std::sync::{Arc, Mutex};

    use serde_json::Value;
    use store::{JobId, LogLevel};

    use crate::handler::{JobContext, JobLog};

    /// A [`JobLog`] that keeps the lines it is given.
    #[derive(Default)]
    pub struct Lines(pub Mutex<Vec<(LogLevel, String)>>);

    impl JobLog for Lines {
        fn log(&self, level: LogLevel, message: String) {
            self.0.lock().unwrap().push((level, message));
        }
    }

    pub fn ctx(attempt: u32) -> JobContext {
        JobContext {
            job_id: JobId::new(),
            job_type: "test".into(),
            attempt,
            max_attempts: 5,
            timeout_ms: 10_000,
            config: Value::Null,
            log: Arc::new(Lines::default()),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn object_names_the_unknown_field() {
        let err = object(&json!({"ms": 1, "msx": 2}), &["ms"]).unwrap_err();
        assert_eq!(err.field, "input.msx");
        let err = object(&json!([1]), &["ms"]).unwrap_err();
        assert_eq!(err.field, "input");
        assert!(err.message.contains("an array"), "{err}");
    }

    #[test]
    fn integers_are_checked() {
        let obj = json!({"a": 5, "b": -1, "c": "x", "d": 1.5});
        let obj = obj.as_object().unwrap();
        assert_eq!(opt_u64(obj, "a", 10), Ok(Some(5)));
        assert_eq!(opt_u64(obj, "missing", 10), Ok(None));
        assert!(
            opt_u64(obj, "a", 4)
                .unwrap_err()
                .message
                .contains("maximum is 4")
        );
        for key in ["b", "c", "d"] {
            assert_eq!(
                opt_u64(obj, key, 10).unwrap_err().field,
                format!("input.{key}")
            );
        }
        assert_eq!(
            req_u64(obj, "missing", 10).unwrap_err().field,
            "input.missing"
        );
    }

    #[test]
    fn every_builtin_is_listed_once() {
        let handlers = builtin_handlers(&BuiltinConfig::default());
        let mut names: Vec<_> = handlers.iter().map(|h| h.name()).collect();
        names.sort_unstable();
        assert_eq!(
            names,
            [
                "echo",
                "flaky",
                "github.comment",
                "http.request",
                "shell.exec",
                "sleep"
            ]
        );
    }
}

/// Merges a job type's fixed `config` into a job's `input`; an input that sets a fixed field
/// again is refused. The object field `map_field` (`headers`, `env`) is merged name by name
/// instead, its names compared ignoring ASCII case if `ignore_case`.
pub(crate) fn merge_config(
    config: &Value,
    input: &Value,
    map_field: &str,
    ignore_case: bool,
) -> Result<Value, InputError> {
    let fixed = match config {
        Value::Null => return Ok(input.clone()),
        Value::Object(fixed) => fixed,
        other => {
            return Err(InputError::new(
                "config",
                format!(
                    "the job type's config must be an object, not {}",
                    kind(other)
                ),
            ));
        }
    };
    let mut merged: Map<String, Value> = match input {
        Value::Object(obj) => obj.clone(),
        Value::Null => Map::new(),
        other => {
            return Err(InputError::new(
                "input",
                format!("expected a JSON object, got {}", kind(other)),
            ));
        }
    };
    let pinned =
        |field: String| InputError::new(field, "fixed by the job type's config; leave it out");
    for (key, value) in fixed {
        match (merged.get_mut(key), value) {
            (None, _) => {
                merged.insert(key.clone(), value.clone());
            }
            (Some(Value::Object(given)), Value::Object(fixed_map)) if key == map_field => {
                for (name, v) in fixed_map {
                    let clash = if ignore_case {
                        given.keys().any(|g| g.eq_ignore_ascii_case(name))
                    } else {
                        given.contains_key(name)
                    };
                    if clash {
                        return Err(pinned(format!("input.{map_field}.{name}")));
                    }
                    given.insert(name.clone(), v.clone());
                }
            }
            (Some(_), _) => return Err(pinned(format!("input.{key}"))),
        }
    }
    Ok(Value::Object(merged))
}
