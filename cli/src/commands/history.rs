//! `weft history TYPE ID [--from N] [--to N] [--limit N] [--json]`: an
//! instance's events, one aligned line each.

use std::io::Write;

use anyhow::{Context, Result};
use serde_json::Value;

use crate::api::{Client, EventRange};
use crate::cli::HistoryArgs;
use crate::render;

pub async fn run(client: &Client, args: &HistoryArgs, out: &mut dyn Write) -> Result<()> {
    let range = EventRange {
        from: args.from,
        to: args.to,
        limit: args.limit,
    };
    let resp = client
        .events(&args.workflow_type, &args.instance_id, range)
        .await?;
    if args.json {
        return super::write_json(out, &resp);
    }
    let events = resp
        .get("events")
        .and_then(Value::as_array)
        .context("unexpected events JSON from the orchestrator (no \"events\" array)")?;
    if events.is_empty() {
        eprintln!("no events");
    }
    for line in render::history_lines(events) {
        writeln!(out, "{line}")?;
    }
    Ok(())
}
