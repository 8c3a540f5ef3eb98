//! `weft children TYPE ID [--json]`: the child workflows an instance started,
//! one row each (type, id, state, the parent's task and attempt).

use std::io::Write;

use anyhow::{Context, Result};
use serde_json::Value;

use crate::api::Client;
use crate::cli::ChildrenArgs;
use crate::render::{columns, scalar};

pub async fn run(client: &Client, args: &ChildrenArgs, out: &mut dyn Write) -> Result<()> {
    let i = &args.instance;
    let value = client.children(&i.workflow_type, &i.instance_id).await?;
    if args.json {
        return super::write_json(out, &value);
    }
    let items = value["children"]
        .as_array()
        .context("unexpected children JSON from the orchestrator")?;
    if items.is_empty() {
        writeln!(out, "no child workflows")?;
        return Ok(());
    }
    for line in table(items) {
        writeln!(out, "{line}")?;
    }
    Ok(())
}

/// A header and one row per child.
fn table(items: &[Value]) -> Vec<String> {
    let text = |v: &Value, k: &str| v.get(k).map(scalar).unwrap_or_default();
    let rows: Vec<Vec<String>> = std::iter::once(
        ["TYPE", "INSTANCE", "STATE", "TASK", "ATTEMPT"]
            .map(String::from)
            .to_vec(),
    )
    .chain(items.iter().map(|c| {
        [
            "workflow_type",
            "instance_id",
            "state",
            "parent_task",
            "parent_attempt",
        ]
        .map(|k| text(c, k))
        .to_vec()
    }))
    .collect();
    columns(&rows, &[])
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_row_per_child() {
        let items = vec![
            json!({"workflow_type": "kid", "instance_id": "c1", "state": "completed",
                   "parent_task": "spawn", "parent_attempt": 1}),
            json!({"workflow_type": "kid", "instance_id": "c22", "state": "running",
                   "parent_task": "spawn", "parent_attempt": 2}),
        ];
        assert_eq!(
            table(&items),
            vec![
                "TYPE  INSTANCE  STATE      TASK   ATTEMPT",
                "kid   c1        completed  spawn  1",
                "kid   c22       running    spawn  2",
            ]
        );
    }
}
