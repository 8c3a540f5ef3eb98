//! `weft admin archive TYPE --before TIME [--dry-run]` and
//! `weft archived TYPE ID`: archival of ended instances (their histories stay
//! in the events topic; `archived` reads one back from there).

use std::io::Write;

use anyhow::Result;
use clap::{Args, Subcommand};
use reqwest::Method;
use serde_json::json;

use crate::api::Client;

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Remove the instances of a type that ended before a time from every
    /// replica's projection (their histories stay in the events topic).
    Archive(ArchiveArgs),
}

#[derive(Debug, Args)]
pub struct ArchiveArgs {
    /// The workflow type.
    #[arg(value_name = "TYPE")]
    pub workflow_type: String,
    /// Instances whose last event is older than this (RFC 3339, e.g. 2025-01-01T00:00:00Z).
    #[arg(long, value_name = "TIME")]
    pub before: String,
    /// Only count what would be archived (on the replica asked).
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Args)]
pub struct ArchivedArgs {
    /// The workflow type.
    #[arg(value_name = "TYPE")]
    pub workflow_type: String,
    /// The instance id.
    #[arg(value_name = "ID")]
    pub instance_id: String,
    /// Print the API's JSON.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(client: &Client, cmd: &AdminCommand, out: &mut dyn Write) -> Result<()> {
    match cmd {
        AdminCommand::Archive(a) => {
            let body = json!({ "workflow_type": a.workflow_type, "ended_before": a.before, "dry_run": a.dry_run });
            let url = client.url(&["v1", "admin", "archive"], &[]);
            let v = client
                .send(
                    url.clone(),
                    client.http.request(Method::POST, url).json(&body),
                )
                .await?;
            if a.dry_run {
                writeln!(
                    out,
                    "would archive {} instance(s) of {} on this replica",
                    v["covered_here"], a.workflow_type
                )?;
            } else {
                writeln!(
                    out,
                    "archive of {} instances ended before {} requested; {} archived on this replica, every replica applies it",
                    a.workflow_type, a.before, v["archived_here"]
                )?;
            }
            Ok(())
        }
    }
}

pub async fn archived(client: &Client, a: &ArchivedArgs, out: &mut dyn Write) -> Result<()> {
    let url = client.url(&["v1", "archive", &a.workflow_type, &a.instance_id], &[]);
    let v = client.send(url.clone(), client.http.get(url)).await?;
    if a.json {
        return super::write_json(out, &v);
    }
    let state = v["state"]["state"].as_str().unwrap_or("?");
    writeln!(
        out,
        "{} {} {state} (history read from {})",
        a.workflow_type,
        a.instance_id,
        v["source"].as_str().unwrap_or("?")
    )?;
    for e in v["events"].as_array().cloned().unwrap_or_default() {
        let task = e["metadata"]["weft.task"]
            .as_str()
            .map(|t| format!(" {t}"))
            .unwrap_or_default();
        writeln!(
            out,
            "{:>4} {}{task}",
            e["sequence_number"],
            e["event_type"].as_str().unwrap_or("?")
        )?;
    }
    Ok(())
}
