//! The `flaky` kind, for the fault tests: draws a random number and fails
//! with terminal `flaky_terminal` with probability `terminal_rate` (default
//! 0), else with retryable `flaky` with probability `fail_rate` (default
//! 0.3); otherwise sleeps `ms` (default 0, stopping early when cancelled) and
//! succeeds with `{attempt}`.

use std::time::Duration;

use weft_shared::data::{DataMap, WorkflowData};

use crate::context::TaskContext;
use crate::error::TaskError;
use crate::handler::{Handler, HandlerFuture};

/// `fail_rate` when the task sets none.
pub const DEFAULT_FAIL_RATE: f64 = 0.3;

/// Fails at random.
pub struct Flaky;

fn rate(ctx: &TaskContext, name: &str, default: f64) -> Result<f64, TaskError> {
    let r = ctx.param_f64(name)?.unwrap_or(default);
    if (0.0..=1.0).contains(&r) {
        Ok(r)
    } else {
        Err(TaskError::terminal(
            "invalid_parameters",
            format!("parameter '{name}' must be between 0 and 1, got {r}"),
        ))
    }
}

impl Handler for Flaky {
    fn call(&self, ctx: TaskContext) -> HandlerFuture {
        Box::pin(async move {
            let fail_rate = rate(&ctx, "fail_rate", DEFAULT_FAIL_RATE)?;
            let terminal_rate = rate(&ctx, "terminal_rate", 0.0)?;
            let ms = ctx.param_i64("ms")?.unwrap_or(0).max(0).unsigned_abs();
            let draw: f64 = rand::random();
            if draw < terminal_rate {
                return Err(TaskError::terminal(
                    "flaky_terminal",
                    format!("flaky terminal failure of attempt {}", ctx.attempt),
                ));
            }
            // `draw` is uniform on [terminal_rate, 1) here: rescale for fail_rate
            let rest = (draw - terminal_rate) / (1.0 - terminal_rate);
            if rest < fail_rate {
                return Err(TaskError::retryable(
                    "flaky",
                    format!("flaky failure of attempt {}", ctx.attempt),
                ));
            }
            if ms > 0 {
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_millis(ms)) => {}
                    () = ctx.cancel.cancelled() => {
                        return Err(TaskError::retryable("cancelled", "flaky sleep cancelled"));
                    }
                }
            }
            Ok(DataMap::from([(
                "attempt".to_owned(),
                WorkflowData::Int(i64::from(ctx.attempt)),
            )]))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(params: &[(&str, WorkflowData)]) -> TaskContext {
        let params = params
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect();
        TaskContext::for_test("flaky", DataMap::new(), params)
    }

    #[tokio::test]
    async fn rate_zero_always_succeeds_and_rate_one_always_fails() {
        for _ in 0..200 {
            let out = Flaky
                .call(ctx(&[("fail_rate", WorkflowData::Int(0))]))
                .await
                .unwrap();
            assert_eq!(out["attempt"], WorkflowData::Int(1));
            let err = Flaky
                .call(ctx(&[("fail_rate", WorkflowData::Float(1.0))]))
                .await
                .unwrap_err();
            assert_eq!(err.error_type, "flaky");
            assert!(err.retryable);
            let err = Flaky
                .call(ctx(&[
                    ("fail_rate", WorkflowData::Int(0)),
                    ("terminal_rate", "1".into()),
                ]))
                .await
                .unwrap_err();
            assert_eq!(err.error_type, "flaky_terminal");
            assert!(!err.retryable);
        }
    }

    #[tokio::test]
    async fn the_default_rate_fails_sometimes_and_bad_rates_are_terminal() {
        let mut failed = 0;
        for _ in 0..400 {
            if Flaky.call(ctx(&[])).await.is_err() {
                failed += 1;
            }
        }
        // 0.3 of 400 = 120; the bounds are > 6 standard deviations away
        assert!((60..=180).contains(&failed), "{failed} of 400 failed");
        let err = Flaky
            .call(ctx(&[("fail_rate", WorkflowData::Float(1.5))]))
            .await
            .unwrap_err();
        assert_eq!(err.error_type, "invalid_parameters");
    }
}
