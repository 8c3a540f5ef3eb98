//! The `shell` kind: runs the `command` parameter with `sh -c`, the task input
//! (workflow input overlaid with parameters) as JSON in `WEFT_INPUT`. Output
//! `{exit_code, stdout, stderr}` (trimmed, cut at 64 KiB); a non-zero exit is
//! terminal `shell_exit_<code>`. Disabled unless `worker.enable_shell` is set
//! (terminal `shell_disabled`), because it runs whatever the definition says.
//! The command comes from the definition only: workflow input reaches it as
//! data (`WEFT_INPUT`), never as shell text. The secrets the task names are
//! in `WEFT_SECRET_<NAME>` (upper case, `.` and `-` as `_`); the worker's
//! own credentials (`WEFT_SECRETS_*`, `WEFT_AUTH_*`, `WEFT_KAFKA_PROPERTY_*`)
//! are not passed on.

use std::process::Stdio;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncRead, AsyncReadExt};

use weft_shared::data::{data_map_to_json, DataMap, WorkflowData};

use crate::builtins::{truncate_utf8, MAX_OUTPUT_BYTES};
use crate::context::TaskContext;
use crate::error::TaskError;
use crate::handler::{Handler, HandlerFuture};
use crate::usage::wait_child;

/// Runs shell commands when `enabled`.
pub struct Shell {
    pub enabled: bool,
}

impl Handler for Shell {
    fn call(&self, ctx: TaskContext) -> HandlerFuture {
        let enabled = self.enabled;
        Box::pin(async move {
            if !enabled {
                return Err(TaskError::terminal(
                    "shell_disabled",
                    "the shell kind is disabled on this worker (start it with --enable-shell or worker.enable_shell=true)",
                ));
            }
            let command = ctx
                .param_str("command")?
                .filter(|c| !c.trim().is_empty())
                .ok_or_else(|| {
                    TaskError::terminal("invalid_parameters", "shell needs parameter 'command'")
                })?
                .to_owned();
            run(&ctx, &command).await
        })
    }
}

async fn run(ctx: &TaskContext, command: &str) -> Result<DataMap, TaskError> {
    let input = data_map_to_json(&ctx.merged_input()).to_string();
    // A std child reaped by `wait4` ourselves, so that its rusage (CPU time,
    // peak memory) is the attempt's measured usage.
    let mut cmd = std::process::Command::new("sh");
    // The worker's own credentials (keys, broker passwords) stay with it.
    for (name, _) in std::env::vars_os() {
        if name.to_str().is_some_and(is_worker_credential) {
            cmd.env_remove(name);
        }
    }
    for (name, value) in &ctx.secrets {
        cmd.env(secret_env(name), value.expose());
    }
    let mut child = cmd
        .arg("-c")
        .arg(command)
        .env("WEFT_INPUT", input)
        .env("WEFT_INSTANCE_ID", ctx.instance_id.to_string())
        .env("WEFT_TASK", &ctx.task_name)
        .env("WEFT_ATTEMPT", ctx.attempt.to_string())
        .env("WEFT_IDEMPOTENCY_KEY", &ctx.idempotency_key)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| TaskError::retryable("shell_error", format!("could not start sh: {e}")))?;
    // Kills the child when this future ends before it exited (a cancel, or
    // the handler aborted); the waiting thread reaps it.
    let guard = KillUnlessReaped {
        pid: rustix::process::Pid::from_raw(i32::try_from(child.id()).unwrap_or(0)),
        reaped: Arc::new(Mutex::new(false)),
    };
    let stdout = child
        .stdout
        .take()
        .and_then(|p| tokio::process::ChildStdout::from_std(p).ok());
    let stderr = child
        .stderr
        .take()
        .and_then(|p| tokio::process::ChildStderr::from_std(p).ok());
    let reaped = guard.reaped.clone();
    let waited = tokio::task::spawn_blocking(move || wait_child(child, &reaped));
    let ran = async {
        let (stdout, stderr, waited) = tokio::join!(read_all(stdout), read_all(stderr), waited);
        let waited = waited
            .map_err(std::io::Error::other)
            .and_then(|w| w)
            .map_err(|e| {
                TaskError::retryable(
                    "shell_error",
                    format!("waiting for the command failed: {e}"),
                )
            })?;
        Ok::<_, TaskError>((stdout, stderr, waited))
    };
    let (stdout, stderr, (status, usage)) = tokio::select! {
        r = ran => r?,
        () = ctx.cancel.cancelled() => {
            // pipe reads end here; the waiting thread reaps the killed child
            drop(guard);
            return Err(TaskError::retryable("cancelled", "command killed by worker shutdown"));
        }
    };
    ctx.report_child_usage(usage);
    let text = |bytes: Vec<u8>| {
        truncate_utf8(
            String::from_utf8_lossy(&bytes).trim().to_owned(),
            MAX_OUTPUT_BYTES,
        )
    };
    let stdout = text(stdout);
    let stderr = text(stderr);
    match status.code() {
        Some(0) => Ok(DataMap::from([
            ("exit_code".to_owned(), WorkflowData::Int(0)),
            ("stdout".to_owned(), WorkflowData::Str(stdout)),
            ("stderr".to_owned(), WorkflowData::Str(stderr)),
        ])),
        Some(code) => Err(TaskError::terminal(
            format!("shell_exit_{code}"),
            format!(
                "command exited with {code}: {}",
                truncate_utf8(stderr, 1024)
            ),
        )),
        None => Err(TaskError::retryable(
            "shell_killed",
            "command was killed by a signal",
        )),
    }
}

/// Sends SIGKILL to the child on drop unless it was reaped already.
struct KillUnlessReaped {
    pid: Option<rustix::process::Pid>,
    reaped: Arc<Mutex<bool>>,
}

impl Drop for KillUnlessReaped {
    fn drop(&mut self) {
        let reaped = self
            .reaped
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let (false, Some(pid)) = (*reaped, self.pid) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
        }
    }
}

/// Reads a child's pipe to its end (what could be read when it fails).
async fn read_all<R: AsyncRead + Unpin>(pipe: Option<R>) -> Vec<u8> {
    let mut buf = Vec::new();
    if let Some(mut p) = pipe {
        let _ = p.read_to_end(&mut buf).await;
    }
    buf
}

/// Whether the worker's environment variable `name` may carry its
/// credentials (secrets keys, API auth, broker properties such as
/// `sasl.password`): commands never inherit it.
fn is_worker_credential(name: &str) -> bool {
    ["WEFT_SECRETS_", "WEFT_AUTH_", "WEFT_KAFKA_PROPERTY_"]
        .iter()
        .any(|p| name.starts_with(p))
}

/// The environment variable holding secret `name`.
pub(crate) fn secret_env(name: &str) -> String {
    let upper: String = name
        .chars()
        .map(|c| match c {
            '.' | '-' => '_',
            c => c.to_ascii_uppercase(),
        })
        .collect();
    format!("WEFT_SECRET_{upper}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(command: &str) -> TaskContext {
        let input = DataMap::from([("who".to_owned(), "world".into())]);
        let params = DataMap::from([("command".to_owned(), command.into())]);
        TaskContext::for_test("shell", input, params)
    }

    #[tokio::test]
    async fn disabled_by_default() {
        let err = Shell { enabled: false }
            .call(ctx("echo hi"))
            .await
            .unwrap_err();
        assert_eq!(err.error_type, "shell_disabled");
        assert!(!err.retryable);
    }

    #[tokio::test]
    async fn runs_the_command_with_input_in_env() {
        let c = ctx(r#"printf '%s\n' "$WEFT_INPUT"; echo warn >&2"#);
        let reports = c.reports.clone();
        let out = Shell { enabled: true }.call(c).await.unwrap();
        let meter = crate::usage::Meter::start();
        let usage = meter.finish(&reports);
        assert_eq!(usage.scope, "child", "{usage:?}");
        assert!(usage.resources.contains_key("cpu_ms"), "{usage:?}");
        assert_eq!(out["exit_code"], WorkflowData::Int(0));
        let stdout = out["stdout"].as_str().unwrap();
        let json: serde_json::Value = serde_json::from_str(stdout).unwrap();
        assert_eq!(json["who"], "world");
        assert!(json["command"].as_str().unwrap().contains("WEFT_INPUT"));
        assert_eq!(out["stderr"], WorkflowData::Str("warn".into()));
    }

    #[tokio::test]
    async fn non_zero_exit_is_terminal_with_the_code() {
        let err = Shell { enabled: true }
            .call(ctx("echo nope >&2; exit 3"))
            .await
            .unwrap_err();
        assert_eq!(err.error_type, "shell_exit_3");
        assert!(!err.retryable);
        assert!(err.message.contains("nope"), "{}", err.message);
    }

    #[tokio::test]
    async fn missing_command_is_invalid_parameters() {
        let c = TaskContext::for_test("shell", DataMap::new(), DataMap::new());
        let err = Shell { enabled: true }.call(c).await.unwrap_err();
        assert_eq!(err.error_type, "invalid_parameters");
    }

    #[tokio::test]
    async fn named_secrets_are_in_the_environment() {
        let mut c = ctx(r#"printf '%s' "$WEFT_SECRET_API_TOKEN" | wc -c"#);
        c.secrets.insert(
            "api-token".into(),
            weft_shared::secrets::SecretValue::new("12345"),
        );
        let out = Shell { enabled: true }.call(c).await.unwrap();
        assert_eq!(out["stdout"], WorkflowData::Str("5".into()));
    }

    #[tokio::test]
    async fn a_cancelled_command_is_killed() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("pid");
        let c = ctx(&format!("echo $$ > {}; sleep 30", pidfile.display()));
        let cancel = c.cancel.clone();
        let run = tokio::spawn(Shell { enabled: true }.call(c));
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !pidfile.exists() && std::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        let pid = std::fs::read_to_string(&pidfile).unwrap();
        cancel.cancel();
        let err = run.await.unwrap().unwrap_err();
        assert_eq!(err.error_type, "cancelled");
        // the shell is gone (reaped by the waiting thread) within a moment
        let proc_dir = format!("/proc/{}", pid.trim());
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while std::path::Path::new(&proc_dir).exists() && std::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert!(
            !std::path::Path::new(&proc_dir).exists(),
            "sh {pid} still runs"
        );
    }

    #[test]
    fn worker_credentials_are_not_inherited() {
        assert!(is_worker_credential("WEFT_SECRETS_KEYS"));
        assert!(is_worker_credential("WEFT_KAFKA_PROPERTY_SASL_PASSWORD"));
        assert!(!is_worker_credential("WEFT_INPUT"));
        assert!(!is_worker_credential("PATH"));
    }

    #[tokio::test]
    async fn input_cannot_inject_a_command() {
        // Input that looks like a command, or holds shell syntax, is data:
        // the command is the definition's, and the input is only in WEFT_INPUT.
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("pwned");
        let evil = format!("$(touch {m}); `touch {m}`; touch {m}", m = marker.display());
        let input = DataMap::from([
            ("command".to_owned(), evil.clone().into()),
            ("who".to_owned(), evil.into()),
        ]);
        let params = DataMap::from([(
            "command".to_owned(),
            r#"printf '%s' "$WEFT_INPUT" >/dev/null; echo ok"#.into(),
        )]);
        let out = Shell { enabled: true }
            .call(TaskContext::for_test("shell", input.clone(), params))
            .await
            .unwrap();
        assert_eq!(out["stdout"], WorkflowData::Str("ok".into()));
        // Without a command in the parameters, the input's 'command' is not used.
        let err = Shell { enabled: true }
            .call(TaskContext::for_test("shell", input, DataMap::new()))
            .await
            .unwrap_err();
        assert_eq!(err.error_type, "invalid_parameters");
        assert!(!marker.exists(), "input ran as a command");
    }
}
