//! `weft nodes`: the nodes of the cluster as the node registry sees them
//! (`GET /v1/nodes`), as a table or as the API's JSON.

use std::io::Write;

use anyhow::Result;
use clap::{Args, ValueEnum};

use crate::api::Client;

/// How `weft nodes` prints.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// One row per node.
    #[default]
    Table,
    /// The API's JSON.
    Json,
}

#[derive(Debug, Args)]
pub struct NodesArgs {
    /// `table` or `json` (the API's answer).
    #[arg(long, short = 'o', value_enum, default_value_t = Output::Table, value_name = "FORMAT")]
    pub output: Output,
    /// Same as `--output json`.
    #[arg(long, conflicts_with = "output")]
    pub json: bool,
}

pub async fn run(client: &Client, args: &NodesArgs, out: &mut dyn Write) -> Result<()> {
    let url = client.url(&["v1", "nodes"], &[]);
    let v = client.send(url.clone(), client.http.get(url)).await?;
    if args.json || args.output == Output::Json {
        return super::write_json(out, &v);
    }
    let nodes = v["nodes"].as_array().cloned().unwrap_or_default();
    if nodes.is_empty() {
        let topic = v["topic"].as_str().unwrap_or("the node registry");
        writeln!(out, "no node has announced itself on {topic}")?;
        return Ok(());
    }
    for line in crate::render::node_table(&nodes) {
        writeln!(out, "{line}")?;
    }
    Ok(())
}
