//! `weft replay TYPE ID [--from N] [--to N] [--json]`: the events of a range
//! and the state they fold to (starting from the state before `--from`).
//! Read-only: the orchestrator changes nothing.

use std::io::Write;

use anyhow::{Context, Result};
use serde_json::Value;

use crate::api::{Client, EventRange};
use crate::cli::ReplayArgs;
use crate::model::InstanceView;
use crate::render;

pub async fn run(client: &Client, args: &ReplayArgs, out: &mut dyn Write) -> Result<()> {
    let i = &args.instance;
    let range = EventRange {
        from: args.from,
        to: args.to,
        limit: None,
    };
    let resp = client
        .replay(&i.workflow_type, &i.instance_id, range)
        .await?;
    if args.json {
        return super::write_json(out, &resp);
    }
    let events = resp
        .get("events")
        .and_then(Value::as_array)
        .context("unexpected replay JSON from the orchestrator (no \"events\" array)")?;
    writeln!(out, "events:")?;
    for line in render::history_lines(events) {
        writeln!(out, "  {line}")?;
    }
    if let Some(next) = resp.get("next_from").and_then(Value::as_u64) {
        writeln!(out, "  (more events follow: --from {next})")?;
    }
    match resp.get("state").filter(|s| !s.is_null()) {
        Some(state) => {
            let view = InstanceView::from_json(state)
                .context("unexpected state JSON from the orchestrator")?;
            writeln!(out, "state after event {}:", view.sequence_number)?;
            write!(out, "{}", render::instance_summary(&view))?;
        }
        None => writeln!(out, "state: none")?,
    }
    Ok(())
}
