//! `weft history TYPE ID [--from N] [--to N] [--limit N] [--json]`: an
//! instance's events, one aligned line each. Without `--limit` every event of
//! the range is listed, page by page (`next_from`); with it, one page, and a
//! hint on stderr when more follow.

use std::io::Write;

use anyhow::{Context, Result};
use serde_json::{json, Value};

use crate::api::{Client, EventRange};
use crate::cli::HistoryArgs;
use crate::render;

pub async fn run(client: &Client, args: &HistoryArgs, out: &mut dyn Write) -> Result<()> {
    let mut range = EventRange {
        from: args.from,
        to: args.to,
        limit: args.limit,
    };
    let mut events: Vec<Value> = Vec::new();
    let mut pages = Vec::new();
    let next = loop {
        let resp = client
            .events(&args.workflow_type, &args.instance_id, range)
            .await?;
        let page = resp
            .get("events")
            .and_then(Value::as_array)
            .context("unexpected events JSON from the orchestrator (no \"events\" array)")?;
        events.extend(page.iter().cloned());
        let next = resp.get("next_from").and_then(Value::as_u64);
        pages.push(resp);
        match next {
            Some(from) if args.limit.is_none() => range.from = Some(from),
            next => break next,
        }
    };
    if args.json {
        let value = match pages.len() {
            1 => pages.remove(0),
            _ => json!({ "events": events, "next_from": Value::Null }),
        };
        return super::write_json(out, &value);
    }
    if events.is_empty() {
        eprintln!("no events");
    }
    for line in render::history_lines(&events) {
        writeln!(out, "{line}")?;
    }
    if let Some(from) = next {
        eprintln!("more events follow: --from {from}");
    }
    Ok(())
}
