//! `weft list --type T [--state S]... [--created-after TIME] [--limit N]
//! [--cursor C | --all] [--json]`: the instances of a type, oldest first.

use std::io::Write;

use anyhow::{Context, Result};
use serde_json::Value;

use crate::api::{Client, ListQuery};
use crate::cli::ListArgs;
use crate::render;

pub async fn run(client: &Client, args: &ListArgs, out: &mut dyn Write) -> Result<()> {
    let mut query = ListQuery {
        workflow_type: args.workflow_type.clone(),
        states: args.state.clone(),
        created_after: args.created_after.clone(),
        limit: args.limit,
        cursor: args.cursor.clone(),
    };
    let mut items = Vec::new();
    let mut pages = Vec::new();
    let next = loop {
        let page = client.list_workflows(&query).await?;
        let page_items = page
            .get("items")
            .and_then(Value::as_array)
            .context("unexpected list JSON from the orchestrator (no \"items\" array)")?;
        items.extend(page_items.iter().cloned());
        let next = page
            .get("next_cursor")
            .and_then(Value::as_str)
            .map(str::to_owned);
        pages.push(page);
        match next {
            Some(cursor) if args.all => query.cursor = Some(cursor),
            next => break next,
        }
    };
    if args.json {
        let value = match pages.len() {
            1 => pages.remove(0),
            _ => serde_json::json!({ "items": items, "next_cursor": Value::Null }),
        };
        return super::write_json(out, &value);
    }
    if items.is_empty() {
        eprintln!("no instances");
    } else {
        for line in render::instance_table(&items) {
            writeln!(out, "{line}")?;
        }
    }
    if let Some(cursor) = next {
        eprintln!(
            "more: weft list --type {} ... --cursor {cursor}",
            args.workflow_type
        );
    }
    Ok(())
}
