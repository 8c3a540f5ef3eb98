//! The Python worker library (`sdk/python`) in the end-to-end tests: the
//! virtualenv `scripts/sdk-python.sh` makes (confluent-kafka and fastavro from
//! PyPI, cached outside the clone under `WEFT_CACHE_DIR`, quick when cached),
//! Python worker processes, and the Python producer of `workflow.created`.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::process::{Process, ProcessSpec};

/// The repository's root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("integration-tests lives in the repository")
        .to_path_buf()
}

/// The virtualenv's `python`, with `weft_worker` installed; runs
/// `scripts/sdk-python.sh` once per test process.
pub fn python() -> Result<PathBuf> {
    static PYTHON: OnceLock<std::result::Result<PathBuf, String>> = OnceLock::new();
    PYTHON
        .get_or_init(|| {
            let script = repo_root().join("scripts/sdk-python.sh");
            let out = std::process::Command::new("bash")
                .arg(&script)
                .output()
                .map_err(|e| format!("running {}: {e}", script.display()))?;
            let stdout = String::from_utf8_lossy(&out.stdout);
            if !out.status.success() {
                return Err(format!(
                    "{} failed ({}):\n{}{}",
                    script.display(),
                    out.status,
                    stdout,
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
            stdout
                .lines()
                .last()
                .map(PathBuf::from)
                .filter(|p| p.is_file())
                .ok_or_else(|| format!("{} printed no python path: {stdout}", script.display()))
        })
        .clone()
        .map_err(anyhow::Error::msg)
}

/// `python -m weft_worker run` (the built-in handlers) as node `node_id`
/// against `bootstrap`, with `extra` arguments (`--group`, `--types`, …).
pub fn worker_spec(python: &Path, node_id: &str, bootstrap: &str, extra: &[&str]) -> ProcessSpec {
    ProcessSpec::new(node_id, python)
        .args(["-m", "weft_worker", "run", "--bootstrap", bootstrap])
        .args(["--node-id", node_id])
        .args(extra)
        .env("PYTHONUNBUFFERED", "1")
        .env("PYTHONDONTWRITEBYTECODE", "1")
}

/// Starts a Python worker and waits until its consumer has subscribed.
pub async fn start_worker(
    python: &Path,
    node_id: &str,
    bootstrap: &str,
    extra: &[&str],
    log_dir: &Path,
) -> Result<Process> {
    let mut p = Process::spawn(worker_spec(python, node_id, bootstrap, extra), log_dir)?;
    wait_for_log(&mut p, "subscribed to", Duration::from_secs(60)).await?;
    Ok(p)
}

/// Waits until `p`'s log contains `needle`; fails if it exits first.
pub async fn wait_for_log(p: &mut Process, needle: &str, within: Duration) -> Result<String> {
    let began = Instant::now();
    loop {
        let log = p.log();
        if log.contains(needle) {
            return Ok(log);
        }
        if let Some(status) = p.try_exit_status() {
            bail!(
                "{} exited ({status}) before its log said {needle:?}\n{}",
                p.name(),
                p.log_tail(60)
            );
        }
        if began.elapsed() > within {
            bail!(
                "{}'s log did not say {needle:?} within {within:?}\n{}",
                p.name(),
                p.log_tail(60)
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The partitions a Python worker was last assigned, from its log lines
/// `partitions assigned: <topic>[<n>], ...`.
pub fn assigned_partitions(log: &str, topic: &str) -> Vec<i32> {
    let Some(line) = log
        .lines()
        .rev()
        .find(|l| l.contains("partitions assigned:"))
    else {
        return Vec::new();
    };
    let prefix = format!("{topic}[");
    line.split(|c: char| c == ',' || c.is_whitespace())
        .filter_map(|item| item.strip_prefix(&prefix)?.strip_suffix(']')?.parse().ok())
        .collect()
}

/// Starts `count` instances of `workflow_type` by publishing `workflow.created`
/// from Python (`python -m weft_worker start`, keys `<key>-<i>`); returns what
/// it printed per instance: `{instance_id, topic, partition, offset, key}`.
pub async fn start_workflows(
    python: &Path,
    bootstrap: &str,
    workflow_type: &str,
    key: &str,
    count: usize,
    input: &Value,
) -> Result<Vec<Value>> {
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new(python)
            .args(["-m", "weft_worker", "start", "--bootstrap", bootstrap])
            .args(["--type", workflow_type, "--key", key])
            .args(["--count", &count.to_string(), "--input", &input.to_string()])
            .kill_on_drop(true)
            .output(),
    )
    .await
    .context("the Python producer did not finish within 60 s")??;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "the Python producer failed ({}): {stdout}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    stdout
        .lines()
        .map(|l| serde_json::from_str(l).with_context(|| format!("not JSON: {l}")))
        .collect()
}
