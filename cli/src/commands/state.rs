//! `weft state TYPE ID [--at SEQ] [--json]`: an instance's state now, or as it
//! was right after event `SEQ`.

use std::io::Write;

use anyhow::{Context, Result};

use crate::api::Client;
use crate::cli::StateArgs;
use crate::model::InstanceView;
use crate::render;

pub async fn run(client: &Client, args: &StateArgs, out: &mut dyn Write) -> Result<()> {
    let i = &args.instance;
    let value = client
        .state_at(&i.workflow_type, &i.instance_id, args.at)
        .await?;
    if args.json {
        return super::write_json(out, &value);
    }
    let view = InstanceView::from_json(&value)
        .context("unexpected instance JSON from the orchestrator")?;
    write!(out, "{}", render::instance_summary(&view))?;
    Ok(())
}
