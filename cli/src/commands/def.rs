//! `weft def apply FILE`, `weft def get TYPE [--version N]`, and the
//! lifecycle: `weft def diff TYPE A [B]`, `weft def deprecate|reinstate TYPE N`,
//! `weft def delete TYPE`.

use std::io::{Read, Write};
use std::path::Path;

use anyhow::{Context, Result};
use clap::Args;
use reqwest::Method;
use serde_json::{json, Value};

use crate::api::Client;

#[derive(Debug, Args)]
pub struct DiffArgs {
    /// The workflow type.
    #[arg(value_name = "TYPE")]
    pub workflow_type: String,
    /// The older version.
    #[arg(value_name = "FROM")]
    pub from: u32,
    /// The newer version (default: the latest).
    #[arg(value_name = "TO")]
    pub to: Option<u32>,
    /// Print the API's JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct VersionArgs {
    /// The workflow type.
    #[arg(value_name = "TYPE")]
    pub workflow_type: String,
    /// The version.
    #[arg(value_name = "N")]
    pub version: u32,
}

#[derive(Debug, Args)]
pub struct DeprecateArgs {
    #[command(flatten)]
    pub at: VersionArgs,
    /// Why (shown to whoever tries to start it).
    #[arg(long, value_name = "TEXT")]
    pub reason: Option<String>,
}

#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// The workflow type.
    #[arg(value_name = "TYPE")]
    pub workflow_type: String,
}

/// Print the differences between two versions, one line each.
pub async fn diff(client: &Client, a: &DiffArgs, out: &mut dyn Write) -> Result<()> {
    let (from, to) = (a.from.to_string(), a.to.map(|t| t.to_string()));
    let mut query = vec![("from", from.as_str())];
    if let Some(t) = &to {
        query.push(("to", t));
    }
    let url = client.url(&["v1", "definitions", &a.workflow_type, "diff"], &query);
    let v = client.send(url.clone(), client.http.get(url)).await?;
    if a.json {
        return super::write_json(out, &v);
    }
    let changes = v["changes"].as_array().cloned().unwrap_or_default();
    writeln!(
        out,
        "{}@{} -> {}@{}: {} change(s)",
        a.workflow_type,
        v["from"],
        a.workflow_type,
        v["to"],
        changes.len()
    )?;
    for c in &changes {
        let path = c["path"].as_str().unwrap_or("?");
        match c["change"].as_str() {
            Some("added") => writeln!(out, "+ {path}: {}", c["to"])?,
            Some("removed") => writeln!(out, "- {path}: {}", c["from"])?,
            _ => writeln!(out, "~ {path}: {} -> {}", c["from"], c["to"])?,
        }
    }
    Ok(())
}

async fn lifecycle(
    client: &Client,
    ty: &str,
    version: u32,
    action: &str,
    body: Value,
) -> Result<Value> {
    let v = version.to_string();
    let url = client.url(&["v1", "definitions", ty, &v, action], &[]);
    Ok(client
        .send(
            url.clone(),
            client.http.request(Method::POST, url).json(&body),
        )
        .await?)
}

pub async fn deprecate(client: &Client, a: &DeprecateArgs, out: &mut dyn Write) -> Result<()> {
    let body = a
        .reason
        .as_ref()
        .map_or(json!({}), |r| json!({ "reason": r }));
    lifecycle(client, &a.at.workflow_type, a.at.version, "deprecate", body).await?;
    writeln!(
        out,
        "deprecated {}@{}: it takes no new starts",
        a.at.workflow_type, a.at.version
    )?;
    Ok(())
}

pub async fn reinstate(client: &Client, a: &VersionArgs, out: &mut dyn Write) -> Result<()> {
    lifecycle(client, &a.workflow_type, a.version, "reinstate", json!({})).await?;
    writeln!(out, "reinstated {}@{}", a.workflow_type, a.version)?;
    Ok(())
}

pub async fn delete(client: &Client, a: &DeleteArgs, out: &mut dyn Write) -> Result<()> {
    let url = client.url(&["v1", "definitions", &a.workflow_type], &[]);
    let v = client
        .send(url.clone(), client.http.request(Method::DELETE, url))
        .await?;
    writeln!(
        out,
        "deleted {} (versions up to {})",
        a.workflow_type, v["deleted_through_version"]
    )?;
    Ok(())
}

/// Register the definition in `file` (`-` reads stdin) and print
/// `registered <type> version <n>`.
pub async fn apply(client: &Client, file: &Path, out: &mut dyn Write) -> Result<()> {
    let body = if file == Path::new("-") {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .context("cannot read the definition from stdin")?;
        s
    } else {
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?
    };
    let content_type = content_type_for(file, &body);
    let resp = client.register_definition(body, content_type).await?;
    let workflow_type = resp.get("workflow_type").and_then(Value::as_str);
    let version = resp.get("version").and_then(Value::as_u64);
    match (workflow_type, version) {
        (Some(t), Some(v)) => writeln!(out, "registered {t} version {v}")?,
        _ => writeln!(out, "registered: {resp}")?,
    }
    Ok(())
}

/// Print a registered definition (the latest unless `version` is given) as pretty JSON.
pub async fn get(
    client: &Client,
    workflow_type: &str,
    version: Option<u32>,
    out: &mut dyn Write,
) -> Result<()> {
    let def = client.get_definition(workflow_type, version).await?;
    super::write_json(out, &def)
}

/// The Content-Type for a definition file: by extension, else by sniffing the
/// text (JSON documents start with `{`).
pub fn content_type_for(file: &Path, text: &str) -> &'static str {
    let ext = file
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    match ext.as_deref() {
        Some("json") => "application/json",
        Some("yaml" | "yml") => "application/yaml",
        _ if text.trim_start().starts_with('{') => "application/json",
        _ => "application/yaml",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_type_by_extension_then_content() {
        assert_eq!(
            content_type_for(Path::new("a/demo.yaml"), "{}"),
            "application/yaml"
        );
        assert_eq!(
            content_type_for(Path::new("demo.YML"), ""),
            "application/yaml"
        );
        assert_eq!(
            content_type_for(Path::new("demo.json"), "name: x"),
            "application/json"
        );
        assert_eq!(
            content_type_for(Path::new("-"), "  {\"name\": 1}"),
            "application/json"
        );
        assert_eq!(
            content_type_for(Path::new("demo.def"), "name: x"),
            "application/yaml"
        );
    }
}
