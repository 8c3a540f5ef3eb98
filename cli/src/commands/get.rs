//! `weft get TYPE ID [--json]`: an instance's current state.

use std::io::Write;

use anyhow::{bail, Context, Result};

use crate::api::Client;
use crate::cli::GetArgs;
use crate::model::InstanceView;
use crate::render;

pub async fn run(client: &Client, args: &GetArgs, out: &mut dyn Write) -> Result<()> {
    let (ty, id) = (&args.workflow_type, &args.instance_id);
    let Some(value) = client.get_instance(ty, id).await? else {
        bail!("{ty}: no such workflow instance {id}");
    };
    if args.json {
        return super::write_json(out, &value);
    }
    let view = InstanceView::from_json(&value)
        .context("unexpected instance JSON from the orchestrator")?;
    write!(out, "{}", render::instance_summary(&view))?;
    Ok(())
}
