//! The `steps` kind, for the checkpoint tests: runs steps `0..steps` (task
//! parameter, default 5), each taking `step_ms` (default 0), saving the
//! checkpoint `{next_step}` after each, and resumes from the checkpoint of an
//! earlier attempt. On attempt 1 it fails with the retryable `step_failed`
//! when it reaches step `fail_at` (none by default), before running it. Each
//! step run is logged as one line `<idempotency key>\t<attempt>\t<step>` of
//! `<dir>/steps.log` (`dir` is the parameter, else the worker's
//! `WEFT_LEDGER_DIR`; no log without either). Output
//! `{resumed_at, steps_run, next_step}`.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use weft_shared::data::{DataMap, WorkflowData};

use crate::builtins::ledger::LEDGER_DIR_ENV;
use crate::context::TaskContext;
use crate::error::TaskError;
use crate::handler::{Handler, HandlerFuture};

/// The log of the steps run, in the log directory.
pub const STEPS_FILE: &str = "steps.log";

/// Runs numbered steps with a checkpoint after each.
pub struct Steps;

impl Handler for Steps {
    fn call(&self, ctx: TaskContext) -> HandlerFuture {
        Box::pin(async move {
            let steps = ctx.param_i64("steps")?.unwrap_or(5).max(0);
            let fail_at = ctx.param_i64("fail_at")?;
            let step_ms = ctx.param_i64("step_ms")?.unwrap_or(0).max(0).unsigned_abs();
            let log = ctx
                .param_str("dir")?
                .map(PathBuf::from)
                .or_else(|| std::env::var_os(LEDGER_DIR_ENV).map(PathBuf::from))
                .map(|d| d.join(STEPS_FILE));
            let resumed_at = ctx
                .checkpoint
                .as_ref()
                .and_then(|c| c.get("next_step"))
                .and_then(WorkflowData::as_i64)
                .unwrap_or(0);
            let mut step = resumed_at;
            while step < steps {
                if ctx.attempt == 1 && fail_at == Some(step) {
                    return Err(TaskError::retryable(
                        "step_failed",
                        format!("step {step} failed on attempt 1"),
                    ));
                }
                if step_ms > 0 {
                    tokio::time::sleep(Duration::from_millis(step_ms)).await;
                }
                if let Some(path) = &log {
                    let line = format!("{}\t{}\t{step}\n", ctx.idempotency_key, ctx.attempt);
                    append(path, &line).map_err(|e| {
                        TaskError::retryable(
                            "steps_log",
                            format!("writing {}: {e}", path.display()),
                        )
                    })?;
                }
                step += 1;
                ctx.save_checkpoint(DataMap::from([(
                    "next_step".to_owned(),
                    WorkflowData::Int(step),
                )]))
                .await?;
            }
            Ok(DataMap::from([
                ("resumed_at".to_owned(), WorkflowData::Int(resumed_at)),
                ("steps_run".to_owned(), WorkflowData::Int(step - resumed_at)),
                ("next_step".to_owned(), WorkflowData::Int(step)),
            ]))
        })
    }
}

fn append(path: &std::path::Path, line: &str) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    f.write_all(line.as_bytes())?;
    f.sync_data()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(fail_at: Option<i64>, dir: &std::path::Path) -> DataMap {
        let mut p = DataMap::from([
            ("steps".to_owned(), WorkflowData::Int(4)),
            ("dir".to_owned(), dir.display().to_string().into()),
        ]);
        if let Some(k) = fail_at {
            p.insert("fail_at".into(), WorkflowData::Int(k));
        }
        p
    }

    #[tokio::test]
    async fn fails_at_k_on_attempt_1_and_the_retry_resumes_from_the_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let first = TaskContext::for_test("steps", DataMap::new(), params(Some(2), dir.path()));
        let err = Steps.call(first.clone()).await.unwrap_err();
        assert_eq!(err.error_type, "step_failed");
        assert!(err.retryable);
        let saved = first.saved_checkpoints();
        assert_eq!(saved.len(), 2, "a checkpoint after steps 0 and 1");
        let mut second =
            TaskContext::for_test("steps", DataMap::new(), params(Some(2), dir.path()));
        second.attempt = 2;
        second.idempotency_key.clone_from(&first.idempotency_key);
        second.checkpoint = saved.last().cloned();
        let out = Steps.call(second).await.unwrap();
        assert_eq!(out["resumed_at"], WorkflowData::Int(2));
        assert_eq!(out["steps_run"], WorkflowData::Int(2));
        let log = std::fs::read_to_string(dir.path().join(STEPS_FILE)).unwrap();
        let steps: Vec<&str> = log
            .lines()
            .map(|l| l.rsplit('\t').next().unwrap())
            .collect();
        assert_eq!(steps, ["0", "1", "2", "3"], "no step ran twice");
    }
}
