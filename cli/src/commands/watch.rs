//! `weft watch TYPE ID [--from N] [--json]`: print an instance's events as they
//! happen (the stored history first), and exit 0 when the workflow has ended.
//!
//! A stream that breaks before its `end` frame (an orchestrator restart, a
//! partition moving) is reopened after the last sequence number printed, so
//! nothing is printed twice; a not-yet-visible instance (right after `weft
//! start`) is waited for briefly.

use std::io::Write;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use reqwest::StatusCode;
use serde_json::Value;

use super::start::is_transient;
use crate::api::{ApiError, Client, SseFrame};
use crate::cli::WatchArgs;
use crate::render;

/// How long a 404 at the first connection is retried (the instance may not be applied yet).
const NOT_FOUND_GRACE: Duration = Duration::from_secs(10);
/// Consecutive broken or refused connections ridden out before giving up.
const MAX_RECONNECTS: u32 = 5;
const RECONNECT_DELAY: Duration = Duration::from_secs(1);

/// What one stream ended with.
enum Ended {
    /// The workflow ended in this state.
    Workflow(String),
    /// The stream broke; why.
    Broken(String),
}

pub async fn run(client: &Client, args: &WatchArgs, out: &mut dyn Write) -> Result<ExitCode> {
    let (ty, id) = (&args.instance.workflow_type, &args.instance.instance_id);
    let started = Instant::now();
    let mut next = args.from;
    let mut base_ms = None;
    let mut seen_any = false;
    let mut failures = 0;
    loop {
        let ended = match client.watch(ty, id, next).await {
            Ok(mut stream) => {
                let mut ended = Ended::Broken("the stream closed".into());
                loop {
                    match stream.next().await {
                        Ok(Some(frame)) => {
                            seen_any = true;
                            match handle(&frame, args.json, &mut next, &mut base_ms, out)? {
                                Some(e) => {
                                    ended = e;
                                    break;
                                }
                                None => failures = 0,
                            }
                        }
                        Ok(None) => break,
                        Err(e) => {
                            ended = Ended::Broken(e.to_string());
                            break;
                        }
                    }
                }
                ended
            }
            Err(e) if e.status() == Some(StatusCode::NOT_FOUND) && !seen_any => {
                if started.elapsed() > NOT_FOUND_GRACE {
                    return Err(e.into());
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
                continue;
            }
            Err(e) if is_transient(&e) || matches!(e, ApiError::Unreachable { .. }) && seen_any => {
                Ended::Broken(e.to_string())
            }
            Err(e) => return Err(e.into()),
        };
        match ended {
            Ended::Workflow(state) => {
                out.flush()?;
                eprintln!("workflow {id} ended: {state}");
                return Ok(ExitCode::SUCCESS);
            }
            Ended::Broken(why) => {
                failures += 1;
                if failures > MAX_RECONNECTS {
                    bail!("the event stream of {ty} {id} broke before the workflow ended: {why}");
                }
                tokio::time::sleep(RECONNECT_DELAY).await;
            }
        }
    }
}

/// Prints an `event` frame (and moves `next` past it); returns how the
/// stream ended for `end` and `error` frames.
fn handle(
    frame: &SseFrame,
    json: bool,
    next: &mut Option<u64>,
    base_ms: &mut Option<i64>,
    out: &mut dyn Write,
) -> Result<Option<Ended>> {
    let data: Value = serde_json::from_str(&frame.data).with_context(|| {
        format!(
            "unexpected {} frame from the orchestrator: {}",
            frame.event, frame.data
        )
    })?;
    match frame.event.as_str() {
        "event" => {
            if base_ms.is_none() {
                *base_ms = data.get("timestamp_ms").and_then(Value::as_i64);
            }
            if json {
                writeln!(out, "{data}")?;
            } else {
                writeln!(out, "{}", render::watch_line(&data, *base_ms))?;
            }
            out.flush()?;
            if let Some(seq) = data.get("sequence_number").and_then(Value::as_u64) {
                *next = Some(seq + 1);
            }
            Ok(None)
        }
        "end" => {
            let state = data.get("state").and_then(Value::as_str).unwrap_or("ended");
            Ok(Some(Ended::Workflow(state.to_owned())))
        }
        "error" => {
            let msg = data
                .get("error")
                .and_then(Value::as_str)
                .unwrap_or("stream error");
            Ok(Some(Ended::Broken(msg.to_owned())))
        }
        _ => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(event: &str, data: &str) -> SseFrame {
        SseFrame {
            event: event.into(),
            id: None,
            data: data.into(),
        }
    }

    #[test]
    fn frames_print_and_advance() {
        let (mut next, mut base, mut out) = (None, None, Vec::new());
        let e = frame(
            "event",
            r#"{"sequence_number": 3, "event_type": "task.started", "timestamp_ms": 500}"#,
        );
        assert!(handle(&e, false, &mut next, &mut base, &mut out)
            .unwrap()
            .is_none());
        assert_eq!((next, base), (Some(4), Some(500)));
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "   3    +0.000s  task.started\n"
        );

        let end = frame("end", r#"{"state": "failed", "sequence_number": 9}"#);
        let mut sink = Vec::new();
        assert!(matches!(
            handle(&end, false, &mut next, &mut base, &mut sink).unwrap(),
            Some(Ended::Workflow(s)) if s == "failed"
        ));
        let err = frame("error", r#"{"error": "shutting down"}"#);
        assert!(matches!(
            handle(&err, false, &mut next, &mut base, &mut sink).unwrap(),
            Some(Ended::Broken(s)) if s == "shutting down"
        ));
        assert!(handle(
            &frame("event", "not json"),
            false,
            &mut next,
            &mut base,
            &mut sink
        )
        .is_err());
    }
}
