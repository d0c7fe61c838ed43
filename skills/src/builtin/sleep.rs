//! `sleep`: waits `ms` milliseconds, then succeeds.

use std::time::Duration;

use serde_json::{Value, json};
use store::JobDefaults;

use super::{object, req_u64};
use crate::handler::{AttemptOutcome, BoxFuture, Handler, InputError, JobContext};

/// The longest sleep an input may ask for: 24 hours.
pub const MAX_SLEEP_MS: u64 = 86_400_000;

/// Waits `{ms}` milliseconds and returns `{slept_ms}`. Stopping the attempt (timeout, cancel)
/// drops the timer, so a sleeping job is cancelled at once.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sleep;

impl Sleep {
    fn parse(input: &Value) -> Result<u64, InputError> {
        req_u64(object(input, &["ms"])?, "ms", MAX_SLEEP_MS)
    }
}

impl Handler for Sleep {
    fn name(&self) -> &'static str {
        "sleep"
    }

    fn description(&self) -> &'static str {
        "Waits `ms` milliseconds (at most 24 h), then succeeds with {slept_ms}."
    }

    fn defaults(&self) -> JobDefaults {
        // Long sleeps are the point: give them an hour before the runtime times them out.
        JobDefaults {
            timeout_ms: 3_600_000,
            ..JobDefaults::default()
        }
    }

    fn validate(&self, _config: &Value, input: &Value) -> Result<(), InputError> {
        Self::parse(input).map(drop)
    }

    fn run(&self, ctx: JobContext, input: Value) -> BoxFuture<'static, AttemptOutcome> {
        Box::pin(async move {
            let ms = match Self::parse(&input) {
                Ok(ms) => ms,
                Err(e) => return AttemptOutcome::fatal(e.to_string()),
            };
            ctx.info(format!("sleeping {ms} ms"));
            tokio::time::sleep(Duration::from_millis(ms)).await;
            AttemptOutcome::Succeeded(json!({ "slept_ms": ms }))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builtin::test_support::ctx;

    #[test]
    fn validation_names_the_field() {
        let cases = [
            (json!({}), "input.ms"),
            (json!({"ms": "10"}), "input.ms"),
            (json!({"ms": -5}), "input.ms"),
            (json!({"ms": MAX_SLEEP_MS + 1}), "input.ms"),
            (json!({"ms": 1, "extra": true}), "input.extra"),
            (json!(42), "input"),
        ];
        for (input, field) in cases {
            let err = Sleep.validate(&Value::Null, &input).unwrap_err();
            assert_eq!(err.field, field, "{input}: {err}");
        }
        assert_eq!(
            Sleep.validate(&Value::Null, &json!({"ms": MAX_SLEEP_MS})),
            Ok(())
        );
    }

    #[tokio::test(start_paused = true)]
    async fn sleeps_for_ms() {
        let started = tokio::time::Instant::now();
        let out = Sleep.run(ctx(1), json!({"ms": 5_000})).await;
        assert_eq!(out, AttemptOutcome::Succeeded(json!({"slept_ms": 5_000})));
        assert!(started.elapsed() >= Duration::from_millis(5_000));
    }
}
