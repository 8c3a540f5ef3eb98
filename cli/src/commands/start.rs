//! `weft start TYPE [--input JSON | --input-file FILE] [--idempotency-key K]
//! [--secret NAME=VALUE|NAME=@FILE]... [--secrets-file FILE] [--wait] [--timeout D]`: start an instance, print its id and optionally
//! follow it to the end, printing what changes.

use std::io::{Read, Write};
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;

use crate::api::{ApiError, Client};
use crate::cli::StartArgs;
use crate::model::InstanceView;
use crate::render;

/// How often `--wait` polls the instance.
pub const POLL_INTERVAL: Duration = Duration::from_millis(200);
/// Consecutive transient failures (5xx, timeouts) `--wait` rides out before giving up.
const MAX_TRANSIENT_FAILURES: u32 = 10;

pub async fn run(client: &Client, args: &StartArgs, out: &mut dyn Write) -> Result<ExitCode> {
    let input = read_input(args.input.as_deref(), args.input_file.as_deref())?;
    let ty = &args.workflow_type;
    let secrets = crate::credentials::secrets(&args.secret, args.secrets_file.as_deref())?;
    let resp = client
        .start_workflow(
            ty,
            input,
            args.idempotency_key.as_deref(),
            secrets,
            args.version,
        )
        .await?;
    let id = resp
        .get("instance_id")
        .and_then(Value::as_str)
        .ok_or_else(|| anyhow!("unexpected answer to start (no instance_id): {resp}"))?
        .to_string();
    writeln!(out, "{id}")?;
    out.flush()?;
    if !args.wait {
        return Ok(ExitCode::SUCCESS);
    }

    let mut last = None;
    let following = follow(client, ty, &id, &mut last, &mut *out);
    let outcome = match args.timeout {
        Some(limit) => tokio::time::timeout(limit, following).await.ok(),
        None => Some(following.await),
    };
    match outcome {
        Some(result) => result,
        None => {
            let limit = humantime::format_duration(args.timeout.unwrap_or_default());
            let state = last
                .as_ref()
                .map_or("not visible yet", |l: &InstanceView| l.state.as_str());
            bail!("timed out after {limit} waiting for workflow {id} (last state: {state})")
        }
    }
}

/// Poll until the instance is terminal; `last` keeps the latest view seen.
async fn follow(
    client: &Client,
    ty: &str,
    id: &str,
    last: &mut Option<InstanceView>,
    out: &mut dyn Write,
) -> Result<ExitCode> {
    let started = Instant::now();
    let mut failures = 0;
    loop {
        let polled = match client.get_instance(ty, id).await {
            Ok(v) => {
                failures = 0;
                v
            }
            Err(e) if is_transient(&e) && failures < MAX_TRANSIENT_FAILURES => {
                failures += 1;
                None
            }
            Err(e) => return Err(e.into()),
        };
        // 404 (None) right after the start is normal: the instance is not applied yet.
        if let Some(value) = polled {
            let cur = InstanceView::from_json(&value)
                .context("unexpected instance JSON from the orchestrator")?;
            for line in render::progress_lines(last.as_ref(), &cur, started.elapsed()) {
                writeln!(out, "{line}")?;
            }
            if cur.is_terminal() {
                let took = cur
                    .server_duration_ms()
                    .map(Duration::from_millis)
                    .unwrap_or_else(|| started.elapsed());
                writeln!(out, "{}", render::final_line(id, &cur, took))?;
                out.flush()?;
                let ok = cur.state == "completed";
                *last = Some(cur);
                return Ok(if ok {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::FAILURE
                });
            }
            out.flush()?;
            *last = Some(cur);
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

pub(crate) fn is_transient(e: &ApiError) -> bool {
    match e {
        ApiError::Server { status, .. } => status.is_server_error(),
        ApiError::Timeout { .. } | ApiError::Transport { .. } => true,
        _ => false,
    }
}

/// The instance input from `--input` or `--input-file` (`-` = stdin); `{}` if neither.
pub fn read_input(inline: Option<&str>, file: Option<&Path>) -> Result<Value> {
    let (text, what) = match (inline, file) {
        (Some(text), _) => (text.to_string(), "--input".to_string()),
        (None, Some(path)) if path == Path::new("-") => {
            let mut s = String::new();
            std::io::stdin()
                .read_to_string(&mut s)
                .context("cannot read the input from stdin")?;
            (s, "stdin".to_string())
        }
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            (text, path.display().to_string())
        }
        (None, None) => return Ok(Value::Object(Default::default())),
    };
    parse_input(&text, &what)
}

/// Parse input JSON; it must be an object (the workflow's named inputs).
pub fn parse_input(text: &str, what: &str) -> Result<Value> {
    let value: Value =
        serde_json::from_str(text).with_context(|| format!("invalid JSON for {what}"))?;
    if !value.is_object() {
        bail!("{what} must be a JSON object, like {{\"order_id\": 42}}");
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_must_be_a_json_object() {
        assert_eq!(read_input(None, None).unwrap(), serde_json::json!({}));
        assert_eq!(
            read_input(Some(r#"{"n": 1}"#), None).unwrap(),
            serde_json::json!({"n": 1})
        );
        let err = read_input(Some("{x"), None).unwrap_err();
        assert_eq!(
            format!("{err:#}"),
            "invalid JSON for --input: key must be a string at line 1 column 2"
        );
        let err = parse_input("[1]", "--input").unwrap_err();
        assert_eq!(
            err.to_string(),
            "--input must be a JSON object, like {\"order_id\": 42}"
        );
    }

    #[test]
    fn input_file_errors_name_the_file() {
        let err = read_input(None, Some(Path::new("/nonexistent/in.json"))).unwrap_err();
        assert!(
            format!("{err:#}").starts_with("cannot read /nonexistent/in.json: "),
            "{err:#}"
        );
    }

    #[test]
    fn only_server_side_hiccups_are_retried() {
        let server = |code: u16| ApiError::Server {
            status: reqwest::StatusCode::from_u16(code).unwrap(),
            message: String::new(),
        };
        assert!(is_transient(&server(503)));
        assert!(!is_transient(&server(400)));
        assert!(!is_transient(&ApiError::Unreachable {
            base: String::new(),
            reason: String::new()
        }));
    }
}
