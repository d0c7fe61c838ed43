//! `flaky`: fails its first `fail_times` attempts, then succeeds. For smoke tests and demos of
//! retries.

use serde_json::{Value, json};
use store::JobDefaults;

use super::{object, req_u64};
use crate::handler::{AttemptOutcome, BoxFuture, Handler, InputError, JobContext};

/// Fails (retryably) while `attempt <= fail_times`, then succeeds with `{attempt}`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Flaky;

impl Flaky {
    fn parse(input: &Value) -> Result<u32, InputError> {
        let n = req_u64(
            object(input, &["fail_times"])?,
            "fail_times",
            u64::from(u32::MAX),
        )?;
        Ok(u32::try_from(n).unwrap_or(u32::MAX))
    }

    /// The outcome of attempt `attempt` (1-based) when the first `fail_times` must fail.
    pub fn outcome(attempt: u32, fail_times: u32) -> AttemptOutcome {
        if attempt <= fail_times {
            AttemptOutcome::failed(format!(
                "failing on purpose: attempt {attempt} of the first {fail_times} that fail"
            ))
        } else {
            AttemptOutcome::Succeeded(json!({ "attempt": attempt }))
        }
    }
}

impl Handler for Flaky {
    fn name(&self) -> &'static str {
        "flaky"
    }

    fn description(&self) -> &'static str {
        "Fails its first `fail_times` attempts (retryably), then succeeds with {attempt}."
    }

    fn defaults(&self) -> JobDefaults {
        JobDefaults {
            timeout_ms: 10_000,
            ..JobDefaults::default()
        }
    }

    fn validate(&self, _config: &Value, input: &Value) -> Result<(), InputError> {
        Self::parse(input).map(drop)
    }

    fn run(&self, ctx: JobContext, input: Value) -> BoxFuture<'static, AttemptOutcome> {
        Box::pin(async move {
            match Self::parse(&input) {
                Ok(fail_times) => Self::outcome(ctx.attempt, fail_times),
                Err(e) => AttemptOutcome::fatal(e.to_string()),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builtin::test_support::ctx;

    #[test]
    fn fails_the_first_attempts_only() {
        let cases: &[(u32, u32, bool)] = &[
            (1, 0, true),
            (1, 1, false),
            (2, 1, true),
            (1, 2, false),
            (2, 2, false),
            (3, 2, true),
            (7, 2, true),
        ];
        for &(attempt, fail_times, succeeds) in cases {
            match Flaky::outcome(attempt, fail_times) {
                AttemptOutcome::Succeeded(out) => {
                    assert!(succeeds, "attempt {attempt}, fail_times {fail_times}");
                    assert_eq!(out, json!({"attempt": attempt}));
                }
                AttemptOutcome::Failed { retryable, .. } => {
                    assert!(!succeeds, "attempt {attempt}, fail_times {fail_times}");
                    assert!(retryable);
                }
            }
        }
    }

    #[tokio::test]
    async fn runs_from_input() {
        let out = Flaky.run(ctx(2), json!({"fail_times": 1})).await;
        assert_eq!(out, AttemptOutcome::Succeeded(json!({"attempt": 2})));
        let out = Flaky.run(ctx(1), json!({"fail_times": 1})).await;
        assert!(
            matches!(
                out,
                AttemptOutcome::Failed {
                    retryable: true,
                    ..
                }
            ),
            "{out:?}"
        );
    }

    #[test]
    fn validation_names_the_field() {
        for input in [
            json!({}),
            json!({"fail_times": "2"}),
            json!({"fail_times": 1u64 << 33}),
        ] {
            let err = Flaky.validate(&Value::Null, &input).unwrap_err();
            assert_eq!(err.field, "input.fail_times", "{input}: {err}");
        }
    }
}
