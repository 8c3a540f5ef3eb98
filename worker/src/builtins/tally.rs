//! The `tally` kind, for tests that count how often handlers actually run
//! (across worker processes on one host): each call appends one line to
//! `<dir>/tally.log` — `<execution id>\t<attempt>\t<node id>\n`, written in
//! one append so lines of concurrent callers never mix — then sleeps `ms`
//! (default 0) and succeeds with `{slept_ms}`; it stops early with retryable
//! `cancelled` when the attempt is cancelled. Parameters: `dir` (required),
//! `ms`.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;
use std::time::Duration;

use weft_shared::data::{DataMap, WorkflowData};

use crate::context::TaskContext;
use crate::error::TaskError;
use crate::handler::{Handler, HandlerFuture};

/// The log file in the `dir` parameter.
pub const TALLY_FILE: &str = "tally.log";

/// One logged call: `(execution id, attempt, node id)`.
pub type TallyCall = (String, u32, String);

/// Logs each call, then sleeps for `ms`.
pub struct Tally;

impl Handler for Tally {
    fn call(&self, ctx: TaskContext) -> HandlerFuture {
        Box::pin(async move {
            let dir = ctx.param_str("dir")?.ok_or_else(|| {
                TaskError::terminal("invalid_parameters", "tally needs parameter 'dir'")
            })?;
            let ms = ctx.param_i64("ms")?.unwrap_or(0).max(0);
            let line = format!("{}\t{}\t{}\n", ctx.execution_id, ctx.attempt, ctx.node_id);
            append(Path::new(dir), &line).map_err(|e| {
                TaskError::retryable(
                    "tally_io",
                    format!("cannot append to {dir}/{TALLY_FILE}: {e}"),
                )
            })?;
            tokio::select! {
                () = tokio::time::sleep(Duration::from_millis(ms.unsigned_abs())) => {}
                () = ctx.cancel.cancelled() => {
                    return Err(TaskError::retryable("cancelled", "tally cancelled"));
                }
            }
            Ok(DataMap::from([(
                "slept_ms".to_owned(),
                WorkflowData::Int(ms),
            )]))
        })
    }
}

fn append(dir: &Path, line: &str) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut file = OpenOptions::new()
        .append(true)
        .create(true)
        .open(dir.join(TALLY_FILE))?;
    file.write_all(line.as_bytes())
}

/// Every call logged in `<dir>/tally.log` (lines that do not parse are skipped).
pub fn calls(dir: &Path) -> std::io::Result<Vec<TallyCall>> {
    let content = match std::fs::read_to_string(dir.join(TALLY_FILE)) {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    Ok(content
        .lines()
        .filter_map(|l| {
            let mut f = l.split('\t');
            let call = (
                f.next()?.to_owned(),
                f.next()?.parse().ok()?,
                f.next()?.to_owned(),
            );
            f.next().is_none().then_some(call)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(dir: &Path, ms: i64) -> TaskContext {
        let params = DataMap::from([
            (
                "dir".to_owned(),
                WorkflowData::Str(dir.display().to_string()),
            ),
            ("ms".to_owned(), WorkflowData::Int(ms)),
        ]);
        TaskContext::for_test("tally", DataMap::new(), params)
    }

    #[tokio::test]
    async fn logs_every_call_then_sleeps() {
        let dir = tempfile::tempdir().unwrap();
        let a = ctx(dir.path(), 5);
        let b = ctx(dir.path(), 0);
        let (ea, eb) = (a.execution_id.to_string(), b.execution_id.to_string());
        Tally.call(a).await.unwrap();
        let out = Tally.call(b).await.unwrap();
        assert_eq!(out["slept_ms"], WorkflowData::Int(0));
        let calls = calls(dir.path()).unwrap();
        let ids: Vec<&str> = calls.iter().map(|c| c.0.as_str()).collect();
        assert_eq!(ids, [ea.as_str(), eb.as_str()]);
    }

    #[tokio::test]
    async fn without_dir_it_is_terminal_and_a_cancel_stops_the_sleep() {
        let no_dir = TaskContext::for_test("tally", DataMap::new(), DataMap::new());
        let err = Tally.call(no_dir).await.unwrap_err();
        assert_eq!(err.error_type, "invalid_parameters");
        let dir = tempfile::tempdir().unwrap();
        let c = ctx(dir.path(), 600_000);
        let token = c.cancel.clone();
        let task = tokio::spawn(Tally.call(c));
        token.cancel();
        let err = tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .unwrap()
            .unwrap()
            .unwrap_err();
        assert_eq!(err.error_type, "cancelled");
        assert_eq!(calls(dir.path()).unwrap().len(), 1);
    }
}
