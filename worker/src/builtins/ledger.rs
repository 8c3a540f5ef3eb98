//! The `ledger` kind, an *effect* for the fault tests: applies its effect at
//! most once per idempotency key (the dispatch's, stable across attempts and
//! duplicate dispatches). Under an exclusive `flock` on `<dir>/ledger.log` it
//! checks whether the key is recorded and, if not, appends `"<key>\n"` and
//! fsyncs. `dir` is the task parameter `dir`, else the worker's
//! `WEFT_LEDGER_DIR`. Output `{applied}`: false when the key was there.
//! Locks are per open file, so concurrent calls in one process, and in many
//! processes on one host, exclude each other; a killed process drops its lock.
//!
//! Every call is also logged, under the same lock, as one line of
//! `<dir>/calls.log`: `<key>\t<attempt>\t<applied>\t<node id>\t<execution id>\t<pid>\t<at ms>`
//! (the process id tells a restarted worker from the one before it; `at ms` is
//! the wall clock of the call, epoch milliseconds).
//! The ledger shows each effect applied once whatever happens (it refuses a
//! key it has); the calls log shows how often the handler actually ran, which
//! is what a test of at-least-once delivery counts.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use weft_shared::data::{DataMap, WorkflowData};

use crate::context::TaskContext;
use crate::error::TaskError;
use crate::handler::{Handler, HandlerFuture};

/// The environment variable naming the ledger directory when the task sets no `dir`.
pub const LEDGER_DIR_ENV: &str = "WEFT_LEDGER_DIR";
/// The ledger file in the ledger directory.
pub const LEDGER_FILE: &str = "ledger.log";
/// The log of every call, applied or not, in the ledger directory.
pub const CALLS_FILE: &str = "calls.log";

/// One call of the handler, as logged in [`CALLS_FILE`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Call {
    /// The idempotency key it was given.
    pub key: String,
    /// The attempt number of its dispatch.
    pub attempt: u32,
    /// Whether this call applied the effect (false: the key was in the ledger).
    pub applied: bool,
    /// The worker that ran it.
    pub node_id: String,
    /// The execution id of its dispatch.
    pub execution_id: String,
    /// The process that ran it.
    pub pid: u32,
    /// When it ran (epoch ms).
    pub at_ms: i64,
}

impl Call {
    fn line(&self) -> String {
        format!(
            "{}\t{}\t{}\t{}\t{}\t{}\t{}\n",
            self.key,
            self.attempt,
            self.applied,
            self.node_id,
            self.execution_id,
            self.pid,
            self.at_ms
        )
    }

    /// Parses one line of the calls log; `None` for a torn or foreign line.
    pub fn parse(line: &str) -> Option<Self> {
        let mut f = line.split('\t');
        let call = Call {
            key: f.next()?.to_owned(),
            attempt: f.next()?.parse().ok()?,
            applied: f.next()?.parse().ok()?,
            node_id: f.next()?.to_owned(),
            execution_id: f.next()?.to_owned(),
            pid: f.next()?.parse().ok()?,
            at_ms: f.next()?.parse().ok()?,
        };
        (f.next().is_none() && !call.key.is_empty()).then_some(call)
    }
}

/// Why the ledger could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("ledger {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("idempotency key {0:?} cannot be recorded (empty or has a line break or tab)")]
    BadKey(String),
}

/// Appends `key` to `<dir>/ledger.log` unless it is there; true when it appended.
pub fn apply_once(dir: &Path, key: &str) -> Result<bool, LedgerError> {
    apply_and_log(dir, key, None)
}

/// [`apply_once`], and logs the call in `<dir>/calls.log` under the same lock
/// (`attempt`, `node_id` and `execution_id` of the dispatch; `applied` is filled in).
pub fn apply_logged(dir: &Path, call: &Call) -> Result<bool, LedgerError> {
    apply_and_log(dir, &call.key, Some(call))
}

fn apply_and_log(dir: &Path, key: &str, call: Option<&Call>) -> Result<bool, LedgerError> {
    if key.is_empty() || key.contains(['\n', '\r', '\t']) {
        return Err(LedgerError::BadKey(key.to_owned()));
    }
    let path = dir.join(LEDGER_FILE);
    let io = |source| LedgerError::Io {
        path: path.clone(),
        source,
    };
    fs::create_dir_all(dir).map_err(io)?;
    let file = OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .open(&path)
        .map_err(io)?;
    let mut lock = fd_lock::RwLock::new(file);
    let mut guard = lock.write().map_err(io)?;
    let file: &mut File = &mut guard;
    file.seek(SeekFrom::Start(0)).map_err(io)?;
    let mut content = String::new();
    file.read_to_string(&mut content).map_err(io)?;
    let applied = !content.lines().any(|line| line == key);
    if applied {
        append_line(file, &content, &format!("{key}\n")).map_err(io)?;
    }
    if let Some(call) = call {
        // Still under the ledger's lock: the calls log is written by one call at a time.
        let calls_path = dir.join(CALLS_FILE);
        let io = |source| LedgerError::Io {
            path: calls_path.clone(),
            source,
        };
        let mut calls = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&calls_path)
            .map_err(io)?;
        let mut logged = String::new();
        calls.read_to_string(&mut logged).map_err(io)?;
        let call = Call {
            applied,
            ..call.clone()
        };
        append_line(&mut calls, &logged, &call.line()).map_err(io)?;
    }
    Ok(applied)
}

/// Appends `line` (ending in a line break) to `file`, whose content so far is
/// `content`, and fsyncs. A line cut short by a crash mid-write must not glue
/// onto the new one, so a missing line break is added first.
fn append_line(file: &mut File, content: &str, line: &str) -> std::io::Result<()> {
    let sep = if content.is_empty() || content.ends_with('\n') {
        ""
    } else {
        "\n"
    };
    file.write_all(format!("{sep}{line}").as_bytes())?;
    file.sync_all()
}

/// Every call logged in `<dir>/calls.log`, in order (torn lines skipped).
pub fn calls(dir: &Path) -> Result<Vec<Call>, LedgerError> {
    let path = dir.join(CALLS_FILE);
    match fs::read_to_string(&path) {
        Ok(content) => Ok(content.lines().filter_map(Call::parse).collect()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(source) => Err(LedgerError::Io { path, source }),
    }
}

/// Every key recorded in `<dir>/ledger.log`, in order (empty when there is no ledger).
pub fn entries(dir: &Path) -> Result<Vec<String>, LedgerError> {
    let path = dir.join(LEDGER_FILE);
    match fs::read_to_string(&path) {
        Ok(content) => Ok(content
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(source) => Err(LedgerError::Io { path, source }),
    }
}

/// Applies the task's effect once per idempotency key.
pub struct Ledger;

impl Handler for Ledger {
    fn call(&self, ctx: TaskContext) -> HandlerFuture {
        Box::pin(async move {
            let dir = match ctx.param_str("dir")? {
                Some(dir) => PathBuf::from(dir),
                None => std::env::var_os(LEDGER_DIR_ENV)
                    .filter(|d| !d.is_empty())
                    .map(PathBuf::from)
                    .ok_or_else(|| {
                        TaskError::terminal(
                            "invalid_parameters",
                            format!(
                                "ledger needs parameter 'dir' or {LEDGER_DIR_ENV} on the worker"
                            ),
                        )
                    })?,
            };
            let call = Call {
                key: ctx.idempotency_key.clone(),
                attempt: ctx.attempt,
                applied: false,
                node_id: ctx.node_id.clone(),
                execution_id: ctx.execution_id.to_string(),
                pid: std::process::id(),
                at_ms: weft_shared::event::now_ms(),
            };
            let applied = tokio::task::spawn_blocking(move || apply_logged(&dir, &call))
                .await
                .map_err(|e| TaskError::retryable("ledger_io", format!("ledger task failed: {e}")))?
                .map_err(|e| match e {
                    LedgerError::BadKey(_) => {
                        TaskError::terminal("invalid_idempotency_key", e.to_string())
                    }
                    LedgerError::Io { .. } => TaskError::retryable("ledger_io", e.to_string()),
                })?;
            tracing::info!(key = %ctx.idempotency_key, attempt = ctx.attempt, applied, "ledger effect");
            Ok(DataMap::from([(
                "applied".to_owned(),
                WorkflowData::Bool(applied),
            )]))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(dir: &Path, key: &str) -> TaskContext {
        let params = DataMap::from([(
            "dir".to_owned(),
            WorkflowData::Str(dir.display().to_string()),
        )]);
        let mut c = TaskContext::for_test("ledger", DataMap::new(), params);
        c.idempotency_key = key.to_owned();
        c
    }

    fn ctx_attempt(dir: &Path, key: &str, attempt: u32, node: &str) -> TaskContext {
        let mut c = ctx(dir, key);
        c.attempt = attempt;
        c.node_id = node.to_owned();
        c
    }

    /// (key, attempt, applied) of every logged call.
    fn logged(dir: &Path) -> Vec<(String, u32, bool)> {
        calls(dir)
            .unwrap()
            .into_iter()
            .map(|c| (c.key, c.attempt, c.applied))
            .collect()
    }

    #[tokio::test]
    async fn every_call_is_logged_with_its_attempt_and_whether_it_applied() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        Ledger
            .call(ctx_attempt(d, "i1/charge", 1, "w0"))
            .await
            .unwrap();
        // the same attempt redelivered to another worker, then a retry
        Ledger
            .call(ctx_attempt(d, "i1/charge", 1, "w1"))
            .await
            .unwrap();
        Ledger
            .call(ctx_attempt(d, "i1/charge", 2, "w1"))
            .await
            .unwrap();
        Ledger
            .call(ctx_attempt(d, "i2/charge", 3, "w0"))
            .await
            .unwrap();
        assert_eq!(
            logged(d),
            [
                ("i1/charge".to_owned(), 1, true),
                ("i1/charge".to_owned(), 1, false),
                ("i1/charge".to_owned(), 2, false),
                ("i2/charge".to_owned(), 3, true),
            ]
        );
        let nodes: Vec<String> = calls(d).unwrap().into_iter().map(|c| c.node_id).collect();
        assert_eq!(nodes, ["w0", "w1", "w1", "w0"]);
        assert_eq!(entries(d).unwrap(), ["i1/charge", "i2/charge"]);
        // a torn last line is skipped and does not glue onto the next call
        let mut torn = fs::read_to_string(d.join(CALLS_FILE)).unwrap();
        torn.push_str("i3/charge\t1\ttr");
        fs::write(d.join(CALLS_FILE), torn).unwrap();
        Ledger
            .call(ctx_attempt(d, "i3/charge", 1, "w0"))
            .await
            .unwrap();
        assert_eq!(logged(d).len(), 5);
        assert_eq!(logged(d)[4], ("i3/charge".to_owned(), 1, true));
    }

    #[tokio::test]
    async fn applies_once_per_key_across_calls() {
        let dir = tempfile::tempdir().unwrap();
        let first = Ledger.call(ctx(dir.path(), "i1:charge")).await.unwrap();
        assert_eq!(first["applied"], WorkflowData::Bool(true));
        let again = Ledger.call(ctx(dir.path(), "i1:charge")).await.unwrap();
        assert_eq!(again["applied"], WorkflowData::Bool(false));
        let other = Ledger.call(ctx(dir.path(), "i2:charge")).await.unwrap();
        assert_eq!(other["applied"], WorkflowData::Bool(true));
        assert_eq!(entries(dir.path()).unwrap(), ["i1:charge", "i2:charge"]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_calls_apply_each_key_once() {
        let dir = tempfile::tempdir().unwrap();
        let mut calls = tokio::task::JoinSet::new();
        for i in 0..40 {
            let c = ctx(dir.path(), &format!("key-{}", i % 4));
            calls.spawn(Ledger.call(c));
        }
        let mut applied = 0;
        while let Some(out) = calls.join_next().await {
            if out.unwrap().unwrap()["applied"] == WorkflowData::Bool(true) {
                applied += 1;
            }
        }
        assert_eq!(applied, 4, "one effect per key");
        let mut keys = entries(dir.path()).unwrap();
        keys.sort();
        assert_eq!(keys, ["key-0", "key-1", "key-2", "key-3"]);
        let logged = logged(dir.path());
        assert_eq!(logged.len(), 40, "every call logged, none torn by another");
        assert_eq!(logged.iter().filter(|c| c.2).count(), 4);
    }

    #[test]
    fn bad_keys_and_missing_ledgers() {
        let dir = tempfile::tempdir().unwrap();
        for bad in ["a\nb", "a\tb", ""] {
            assert!(matches!(
                apply_once(dir.path(), bad),
                Err(LedgerError::BadKey(_))
            ));
        }
        assert!(entries(&dir.path().join("none")).unwrap().is_empty());
        // a torn last line does not swallow the next key
        fs::write(dir.path().join(LEDGER_FILE), "k1\nk2-torn").unwrap();
        assert!(apply_once(dir.path(), "k3").unwrap());
        assert_eq!(entries(dir.path()).unwrap(), ["k1", "k2-torn", "k3"]);
    }
}
