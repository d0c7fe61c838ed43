//! `echo`: succeeds with its input as the output.

use serde_json::Value;

use crate::handler::{AttemptOutcome, BoxFuture, Handler, InputError, JobContext};

/// Returns its input unchanged. Any JSON is a valid input.
#[derive(Debug, Clone, Copy, Default)]
pub struct Echo;

impl Handler for Echo {
    fn name(&self) -> &'static str {
        "echo"
    }

    fn description(&self) -> &'static str {
        "Returns its input as the output."
    }

    fn validate(&self, _config: &Value, _input: &Value) -> Result<(), InputError> {
        Ok(())
    }

    fn run(&self, _ctx: JobContext, input: Value) -> BoxFuture<'static, AttemptOutcome> {
        Box::pin(async move { AttemptOutcome::Succeeded(input) })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::builtin::test_support::ctx;

    #[tokio::test]
    async fn returns_its_input() {
        let input = json!({"a": [1, 2, {"b": null}]});
        assert_eq!(Echo.validate(&Value::Null, &input), Ok(()));
        assert_eq!(
            Echo.run(ctx(1), input.clone()).await,
            AttemptOutcome::Succeeded(input)
        );
    }
}
