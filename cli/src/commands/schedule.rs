//! `weft schedule create|list|get|pause|resume|delete`: schedules that start
//! workflows on a cron expression (in a time zone) or at a fixed interval.

use std::io::Write;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use reqwest::Method;
use serde_json::{json, Value};

use crate::api::Client;

#[derive(Debug, Subcommand)]
pub enum ScheduleCommand {
    /// Create a schedule, or replace the one of that name.
    Create(CreateArgs),
    /// List the schedules with their next run times.
    List(ListArgs),
    /// Show one schedule: its spec, progress and next run times.
    Get(NameArgs),
    /// Pause a schedule (no ticks fire until it is resumed).
    Pause(NameArgs),
    /// Resume a paused schedule (ticks from now on; none of the paused time).
    Resume(NameArgs),
    /// Delete a schedule.
    Delete(NameArgs),
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// The schedule's name ([a-z0-9_-]).
    #[arg(value_name = "NAME")]
    pub name: String,
    /// The workflow type it starts.
    #[arg(long = "type", value_name = "TYPE")]
    pub workflow_type: String,
    /// A cron expression: 5 fields, or 6-7 with seconds first ("0 */5 * * * *").
    #[arg(
        long,
        value_name = "EXPR",
        required_unless_present = "every",
        conflicts_with = "every"
    )]
    pub cron: Option<String>,
    /// The cron expression's time zone (IANA, e.g. Europe/Paris; default UTC).
    #[arg(long = "tz", value_name = "ZONE", requires = "cron")]
    pub timezone: Option<String>,
    /// A fixed interval (e.g. 30s, 5m, 1h).
    #[arg(long, value_name = "DURATION")]
    pub every: Option<String>,
    /// The input of every instance, a JSON object.
    #[arg(long, value_name = "JSON")]
    pub input: Option<String>,
    /// Start this version (default: the latest not deprecated, at each tick).
    #[arg(long, value_name = "N")]
    pub version: Option<u32>,
    /// Ticks missed while no replica could fire: skip, one (the latest), all (up to --catchup-limit).
    #[arg(long, value_name = "POLICY", value_parser = ["skip", "one", "all"])]
    pub catchup: Option<String>,
    /// The most missed ticks `--catchup all` fires.
    #[arg(long, value_name = "N")]
    pub catchup_limit: Option<u32>,
    /// A tick while the previous run still runs: allow, skip, cancel_previous.
    #[arg(long, value_name = "POLICY", value_parser = ["allow", "skip", "cancel_previous"])]
    pub overlap: Option<String>,
    /// Create it paused.
    #[arg(long)]
    pub paused: bool,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Print the API's JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct NameArgs {
    /// The schedule's name.
    #[arg(value_name = "NAME")]
    pub name: String,
}

fn time(ms: &Value) -> String {
    ms.as_i64()
        .and_then(|ms| {
            let t =
                std::time::UNIX_EPOCH + std::time::Duration::from_millis(u64::try_from(ms).ok()?);
            Some(humantime::format_rfc3339_seconds(t).to_string())
        })
        .unwrap_or_else(|| "-".into())
}

fn line(v: &Value) -> String {
    let when = match (v["cron"].as_str(), v["every_ms"].as_i64()) {
        (Some(c), _) => format!("cron '{c}' {}", v["timezone"].as_str().unwrap_or("UTC")),
        (_, Some(ms)) => format!(
            "every {}",
            humantime::format_duration(std::time::Duration::from_millis(ms as u64))
        ),
        _ => "?".into(),
    };
    let next = v["next_runs_ms"]
        .get(0)
        .map(time)
        .unwrap_or_else(|| "-".into());
    let state = if v["paused"] == true {
        "paused"
    } else {
        "active"
    };
    format!(
        "{:<20} {:<8} {:<16} {:<32} next {next}  started {}",
        v["name"].as_str().unwrap_or("?"),
        state,
        v["workflow_type"].as_str().unwrap_or("?"),
        when,
        v["progress"]["started"]
    )
}

pub async fn run(client: &Client, cmd: &ScheduleCommand, out: &mut dyn Write) -> Result<()> {
    match cmd {
        ScheduleCommand::Create(a) => {
            let input: Value = match &a.input {
                Some(raw) => serde_json::from_str(raw).context("--input is not JSON")?,
                None => json!({}),
            };
            let mut body = json!({ "name": a.name, "workflow_type": a.workflow_type, "input": input, "paused": a.paused });
            for (k, v) in [
                ("cron", &a.cron),
                ("timezone", &a.timezone),
                ("every", &a.every),
                ("catchup", &a.catchup),
                ("overlap", &a.overlap),
            ] {
                if let Some(v) = v {
                    body[k] = json!(v);
                }
            }
            if let Some(v) = a.version {
                body["version"] = json!(v);
            }
            if let Some(n) = a.catchup_limit {
                body["catchup_limit"] = json!(n);
            }
            let url = client.url(&["v1", "schedules"], &[]);
            let v = client
                .send(
                    url.clone(),
                    client.http.request(Method::POST, url).json(&body),
                )
                .await?;
            writeln!(out, "{}", line(&v))?;
            for t in v["next_runs_ms"].as_array().cloned().unwrap_or_default() {
                writeln!(out, "  next run {}", time(&t))?;
            }
        }
        ScheduleCommand::List(a) => {
            let url = client.url(&["v1", "schedules"], &[]);
            let v = client.send(url.clone(), client.http.get(url)).await?;
            if a.json {
                return super::write_json(out, &v);
            }
            let items = v["items"].as_array().cloned().unwrap_or_default();
            if items.is_empty() {
                writeln!(out, "no schedules")?;
            }
            for i in &items {
                writeln!(out, "{}", line(i))?;
            }
        }
        ScheduleCommand::Get(a) => {
            let url = client.url(&["v1", "schedules", &a.name], &[]);
            let v = client.send(url.clone(), client.http.get(url)).await?;
            super::write_json(out, &v)?;
        }
        ScheduleCommand::Pause(a) | ScheduleCommand::Resume(a) => {
            let action = if matches!(cmd, ScheduleCommand::Pause(_)) {
                "pause"
            } else {
                "resume"
            };
            let url = client.url(&["v1", "schedules", &a.name, action], &[]);
            let v = client
                .send(url.clone(), client.http.request(Method::POST, url))
                .await?;
            writeln!(out, "{}", line(&v))?;
        }
        ScheduleCommand::Delete(a) => {
            let url = client.url(&["v1", "schedules", &a.name], &[]);
            client
                .send(url.clone(), client.http.request(Method::DELETE, url))
                .await?;
            writeln!(out, "deleted schedule {}", a.name)?;
        }
    }
    Ok(())
}
