//! The `fail` kind, for exercising failure paths: fails with `error_type`
//! (default `injected`), `message` and `retryable` (default true). With
//! `fail_attempts = n` only attempts 1..=n fail and later ones succeed with
//! `{attempt}`; without it every attempt fails.

use weft_shared::data::{DataMap, WorkflowData};

use crate::context::TaskContext;
use crate::error::TaskError;
use crate::handler::{Handler, HandlerFuture};

/// Fails on purpose.
pub struct Fail;

impl Handler for Fail {
    fn call(&self, ctx: TaskContext) -> HandlerFuture {
        Box::pin(async move {
            let fail_attempts = ctx.param_i64("fail_attempts")?;
            if let Some(n) = fail_attempts {
                if i64::from(ctx.attempt) > n {
                    return Ok(DataMap::from([(
                        "attempt".to_owned(),
                        WorkflowData::Int(i64::from(ctx.attempt)),
                    )]));
                }
            }
            let error_type = ctx
                .param_str("error_type")?
                .unwrap_or("injected")
                .to_owned();
            let message = match ctx.param_str("message")? {
                Some(m) => m.to_owned(),
                None => format!("injected failure of attempt {}", ctx.attempt),
            };
            let retryable = ctx.param_bool("retryable")?.unwrap_or(true);
            Err(TaskError {
                error_type,
                message,
                retryable,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(attempt: u32, params: &[(&str, WorkflowData)]) -> TaskContext {
        let params = params
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect();
        let mut c = TaskContext::for_test("fail", DataMap::new(), params);
        c.attempt = attempt;
        c
    }

    #[tokio::test]
    async fn fails_by_default_with_injected_retryable() {
        let err = Fail.call(ctx(7, &[])).await.unwrap_err();
        assert_eq!(err.error_type, "injected");
        assert!(err.retryable);
        assert!(err.message.contains("attempt 7"), "{}", err.message);
    }

    #[tokio::test]
    async fn fail_attempts_fails_the_first_n_then_succeeds() {
        let params = [
            ("fail_attempts", WorkflowData::Int(2)),
            ("error_type", "boom".into()),
            ("message", "kaput".into()),
            ("retryable", WorkflowData::Bool(false)),
        ];
        for attempt in [1, 2] {
            let err = Fail.call(ctx(attempt, &params)).await.unwrap_err();
            assert_eq!(err, TaskError::terminal("boom", "kaput"));
        }
        let out = Fail.call(ctx(3, &params)).await.unwrap();
        assert_eq!(out["attempt"], WorkflowData::Int(3));
    }
}
