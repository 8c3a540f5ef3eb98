//! The `ledger` kind, an *effect* for the fault tests: applies its effect at
//! most once per idempotency key (the dispatch's, stable across attempts and
//! duplicate dispatches). Under an exclusive `flock` on `<dir>/ledger.log` it
//! checks whether the key is recorded and, if not, appends `"<key>\n"` and
//! fsyncs. `dir` is the task parameter `dir`, else the worker's
//! `WEFT_LEDGER_DIR`. Output `{applied}`: false when the key was there.
//! Locks are per open file, so concurrent calls in one process, and in many
//! processes on one host, exclude each other; a killed process drops its lock.

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

/// Why the ledger could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("ledger {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("idempotency key {0:?} cannot be recorded (empty or has a line break)")]
    BadKey(String),
}

/// Appends `key` to `<dir>/ledger.log` unless it is there; true when it appended.
pub fn apply_once(dir: &Path, key: &str) -> Result<bool, LedgerError> {
    if key.is_empty() || key.contains(['\n', '\r']) {
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
    if content.lines().any(|line| line == key) {
        return Ok(false);
    }
    // a line cut short by a crash mid-write must not glue onto this key
    let sep = if content.is_empty() || content.ends_with('\n') {
        ""
    } else {
        "\n"
    };
    file.write_all(format!("{sep}{key}\n").as_bytes())
        .map_err(io)?;
    file.sync_all().map_err(io)?;
    Ok(true)
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
            let key = ctx.idempotency_key.clone();
            let applied = tokio::task::spawn_blocking(move || apply_once(&dir, &key))
                .await
                .map_err(|e| TaskError::retryable("ledger_io", format!("ledger task failed: {e}")))?
                .map_err(|e| match e {
                    LedgerError::BadKey(_) => {
                        TaskError::terminal("invalid_idempotency_key", e.to_string())
                    }
                    LedgerError::Io { .. } => TaskError::retryable("ledger_io", e.to_string()),
                })?;
            tracing::info!(key = %ctx.idempotency_key, applied, "ledger effect");
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
    }

    #[test]
    fn bad_keys_and_missing_ledgers() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            apply_once(dir.path(), "a\nb"),
            Err(LedgerError::BadKey(_))
        ));
        assert!(entries(&dir.path().join("none")).unwrap().is_empty());
        // a torn last line does not swallow the next key
        fs::write(dir.path().join(LEDGER_FILE), "k1\nk2-torn").unwrap();
        assert!(apply_once(dir.path(), "k3").unwrap());
        assert_eq!(entries(dir.path()).unwrap(), ["k1", "k2-torn", "k3"]);
    }
}
