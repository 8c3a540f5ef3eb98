//! `weft trace TYPE ID [--otlp|--json]`: an instance's spans as a waterfall;
//! `weft analytics TYPE [--min-samples N] [--slow-ms MS] [--json]`: a type's
//! success rate, durations, tasks, bottleneck and insights.

use std::io::Write;

use anyhow::Result;

use crate::api::Client;
use crate::cli::{AnalyticsArgs, TraceArgs};
use crate::render::insight;

pub async fn trace(client: &Client, args: &TraceArgs, out: &mut dyn Write) -> Result<()> {
    let i = &args.instance;
    let value = client
        .trace(&i.workflow_type, &i.instance_id, args.otlp)
        .await?;
    if args.otlp || args.json {
        return super::write_json(out, &value);
    }
    for line in insight::waterfall(&value) {
        writeln!(out, "{line}")?;
    }
    Ok(())
}

pub async fn analytics(client: &Client, args: &AnalyticsArgs, out: &mut dyn Write) -> Result<()> {
    let value = client
        .analytics(&args.workflow_type, args.min_samples, args.slow_ms)
        .await?;
    if args.json {
        return super::write_json(out, &value);
    }
    for line in insight::report(&value) {
        writeln!(out, "{line}")?;
    }
    Ok(())
}
