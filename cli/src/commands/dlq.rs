//! `weft dlq list|show|redrive`: the dead-letter queue of a workflow type.
//! A record is named `PARTITION/OFFSET` (its place in `weft.<type>.dlq`);
//! copies of one source (an orchestrator that rebuilt refuses the same input
//! again) are listed once.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use reqwest::Method;
use serde_json::{json, Value};

use crate::api::Client;

#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// List the dead-lettered records of a type, one per source, with the reason.
    List(DlqListArgs),
    /// Show one record: reason, source, headers and the decoded value.
    Show(DlqRecordArgs),
    /// Send a record back to the topic it came from, once (a second redrive is a no-op).
    Redrive(DlqRedriveArgs),
}

#[derive(Debug, Args)]
pub struct DlqListArgs {
    /// The workflow type.
    #[arg(value_name = "TYPE")]
    pub workflow_type: String,
    /// Only records not redriven (`dead`), only redriven ones, or `all`.
    #[arg(long, value_name = "STATE", default_value = "all", value_parser = ["dead", "redriven", "all"])]
    pub state: String,
    /// Only records of this reason (the class shown, or the exact reason).
    #[arg(long, value_name = "REASON")]
    pub reason: Option<String>,
    /// At most this many records.
    #[arg(long, value_name = "N")]
    pub limit: Option<u64>,
    /// Print the API's JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct DlqRecordArgs {
    /// The workflow type.
    #[arg(value_name = "TYPE")]
    pub workflow_type: String,
    /// The record: PARTITION/OFFSET, as `weft dlq list` shows it.
    #[arg(value_name = "RECORD")]
    pub record: String,
}

#[derive(Debug, Args)]
pub struct DlqRedriveArgs {
    #[command(flatten)]
    pub at: DlqRecordArgs,
    /// Send this fixed event (a JSON file, `-` for stdin; the `value.event`
    /// of `weft dlq show`, edited) instead of the record as it is.
    #[arg(long, value_name = "FILE")]
    pub event: Option<PathBuf>,
}

/// `PARTITION/OFFSET` as its two numbers.
pub fn parse_record(raw: &str) -> Result<(u32, u64)> {
    let parsed = raw
        .split_once('/')
        .and_then(|(p, o)| Some((p.parse().ok()?, o.parse().ok()?)));
    match parsed {
        Some(po) => Ok(po),
        None => bail!("'{raw}' is not a DLQ record: expected PARTITION/OFFSET (e.g. 0/17)"),
    }
}

pub async fn run(client: &Client, cmd: &DlqCommand, out: &mut dyn Write) -> Result<()> {
    match cmd {
        DlqCommand::List(a) => list(client, a, out).await,
        DlqCommand::Show(a) => {
            let (p, o) = parse_record(&a.record)?;
            let (p, o) = (p.to_string(), o.to_string());
            let url = client.url(&["v1", "dlq", &a.workflow_type, &p, &o], &[]);
            let v = client.send(url.clone(), client.http.get(url)).await?;
            super::write_json(out, &v)
        }
        DlqCommand::Redrive(a) => redrive(client, a, out).await,
    }
}

async fn list(client: &Client, a: &DlqListArgs, out: &mut dyn Write) -> Result<()> {
    let limit = a.limit.map(|l| l.to_string());
    let mut query = vec![("state", a.state.as_str())];
    if let Some(r) = &a.reason {
        query.push(("reason", r));
    }
    if let Some(l) = &limit {
        query.push(("limit", l));
    }
    let url = client.url(&["v1", "dlq", &a.workflow_type], &query);
    let v = client.send(url.clone(), client.http.get(url)).await?;
    if a.json {
        return super::write_json(out, &v);
    }
    let items = v["items"].as_array().cloned().unwrap_or_default();
    if items.is_empty() {
        writeln!(out, "no dead-lettered records of {}", a.workflow_type)?;
    } else {
        writeln!(
            out,
            "{:<10} {:<10} {:<34} {:<7} REASON",
            "RECORD", "REDRIVE", "SOURCE", "COPIES"
        )?;
    }
    for i in &items {
        let redrive = i["redrive"]["state"].as_str().unwrap_or("?");
        writeln!(
            out,
            "{:<10} {:<10} {:<34} {:<7} {}",
            i["id"].as_str().unwrap_or("?"),
            if redrive == "none" { "-" } else { redrive },
            i["source"].as_str().unwrap_or("?"),
            i["copies"],
            i["reason"].as_str().unwrap_or(""),
        )?;
    }
    if let Some(by) = v["by_reason"].as_object().filter(|b| !b.is_empty()) {
        writeln!(out, "by reason:")?;
        for (class, n) in by {
            writeln!(out, "  {n:>6}  {class}")?;
        }
    }
    Ok(())
}

async fn redrive(client: &Client, a: &DlqRedriveArgs, out: &mut dyn Write) -> Result<()> {
    let (p, o) = parse_record(&a.at.record)?;
    let body = match &a.event {
        None => json!({}),
        Some(file) => {
            let text = if file.as_os_str() == "-" {
                std::io::read_to_string(std::io::stdin())
                    .context("cannot read the event from stdin")?
            } else {
                std::fs::read_to_string(file)
                    .with_context(|| format!("cannot read {}", file.display()))?
            };
            let event: Value = serde_json::from_str(&text)
                .with_context(|| format!("{} is not JSON", file.display()))?;
            json!({ "event": event })
        }
    };
    let (p, o) = (p.to_string(), o.to_string());
    let url = client.url(&["v1", "dlq", &a.at.workflow_type, &p, &o, "redrive"], &[]);
    let v = client
        .send(
            url.clone(),
            client.http.request(Method::POST, url).json(&body),
        )
        .await?;
    let to = v["to"].as_str().unwrap_or("?");
    match v["outcome"].as_str() {
        Some("redriven") => writeln!(out, "redriven to {to}")?,
        Some("already_redriven") => writeln!(out, "already redriven to {to}; nothing sent")?,
        _ => writeln!(out, "{v}")?,
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_partition_slash_offset() {
        assert_eq!(parse_record("0/17").unwrap(), (0, 17));
        assert!(parse_record("17")
            .unwrap_err()
            .to_string()
            .contains("PARTITION/OFFSET"));
        assert!(parse_record("a/b").is_err());
        assert!(parse_record("-1/3").is_err());
    }
}
