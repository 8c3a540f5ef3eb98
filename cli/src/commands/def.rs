//! `weft def apply FILE` and `weft def get TYPE [--version N]`.

use std::io::{Read, Write};
use std::path::Path;

use anyhow::{Context, Result};
use serde_json::Value;

use crate::api::Client;

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
