//! The `sleep` kind: waits `ms` milliseconds (or a humantime `duration` such
//! as `1m 30s`), then succeeds with `{slept_ms}`; stops early with retryable
//! `cancelled` when the attempt is cancelled (a cancel control record, its
//! deadline, or the worker's shutdown).

use std::time::Duration;

use weft_shared::data::{DataMap, WorkflowData};

use crate::context::TaskContext;
use crate::error::TaskError;
use crate::handler::{Handler, HandlerFuture};

/// Sleeps for the `ms` / `duration` parameter.
pub struct Sleep;

impl Handler for Sleep {
    fn call(&self, ctx: TaskContext) -> HandlerFuture {
        Box::pin(async move {
            let duration = duration_of(&ctx)?;
            tokio::select! {
                () = tokio::time::sleep(duration) => {}
                () = ctx.cancel.cancelled() => {
                    return Err(TaskError::retryable("cancelled", "sleep cancelled"));
                }
            }
            let slept = i64::try_from(duration.as_millis()).unwrap_or(i64::MAX);
            Ok(DataMap::from([(
                "slept_ms".to_owned(),
                WorkflowData::Int(slept),
            )]))
        })
    }
}

fn duration_of(ctx: &TaskContext) -> Result<Duration, TaskError> {
    if let Some(ms) = ctx.param_i64("ms")? {
        let ms = u64::try_from(ms).map_err(|_| {
            TaskError::terminal(
                "invalid_parameters",
                format!("parameter 'ms' must not be negative, got {ms}"),
            )
        })?;
        return Ok(Duration::from_millis(ms));
    }
    if let Some(text) = ctx.param_str("duration")? {
        return humantime::parse_duration(text).map_err(|e| {
            TaskError::terminal(
                "invalid_parameters",
                format!("parameter 'duration' ('{text}') is not a duration: {e}"),
            )
        });
    }
    Err(TaskError::terminal(
        "invalid_parameters",
        "sleep needs parameter 'ms' (integer milliseconds) or 'duration' (such as \"1.5s\")",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn ctx(params: &[(&str, WorkflowData)]) -> TaskContext {
        let params = params
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect();
        TaskContext::for_test("sleep", DataMap::new(), params)
    }

    #[tokio::test]
    async fn sleeps_for_ms_or_duration() {
        let start = Instant::now();
        let out = Sleep
            .call(ctx(&[("ms", WorkflowData::Int(30))]))
            .await
            .unwrap();
        assert!(start.elapsed() >= Duration::from_millis(30));
        assert_eq!(out["slept_ms"], WorkflowData::Int(30));
        let out = Sleep
            .call(ctx(&[("duration", "20ms".into())]))
            .await
            .unwrap();
        assert_eq!(out["slept_ms"], WorkflowData::Int(20));
    }

    #[tokio::test]
    async fn bad_or_missing_parameters_are_terminal() {
        for params in [
            vec![],
            vec![("duration", "soon".into())],
            vec![("ms", WorkflowData::Int(-1))],
        ] {
            let err = Sleep.call(ctx(&params)).await.unwrap_err();
            assert_eq!(err.error_type, "invalid_parameters");
            assert!(!err.retryable);
        }
    }

    #[tokio::test]
    async fn cancellation_stops_the_sleep() {
        let c = ctx(&[("ms", WorkflowData::Int(60_000))]);
        let token = c.cancel.clone();
        let task = tokio::spawn(Sleep.call(c));
        token.cancel();
        let err = tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .unwrap()
            .unwrap()
            .unwrap_err();
        assert_eq!(err.error_type, "cancelled");
        assert!(err.retryable);
    }
}
