//! `weft cancel|pause|resume TYPE ID` and `weft signal TYPE ID NAME [--data
//! JSON]`: append a control input to the instance's history and print what
//! was accepted (`cancel accepted: event <id>`). The orchestrator applies it
//! asynchronously; `weft get` or `weft watch` show the effect.

use std::io::Write;

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::api::{Client, ControlAction};
use crate::cli::InstanceRef;

pub async fn run(
    client: &Client,
    instance: &InstanceRef,
    action: ControlAction,
    idempotency_key: Option<&str>,
    out: &mut dyn Write,
) -> Result<()> {
    let resp = client
        .control(
            &instance.workflow_type,
            &instance.instance_id,
            &action,
            idempotency_key,
        )
        .await?;
    let event = resp.get("event_id").and_then(Value::as_str).unwrap_or("?");
    let what = match &action {
        ControlAction::Signal { name, .. } => format!("signal {name}"),
        other => other.verb().to_string(),
    };
    writeln!(out, "{what} accepted: event {event}")?;
    Ok(())
}

/// `--data` of `weft signal`: a JSON object (`{}` when absent).
pub fn signal_data(data: Option<&str>) -> Result<Value> {
    let Some(text) = data else {
        return Ok(Value::Object(Default::default()));
    };
    let value: Value = serde_json::from_str(text).context("--data is not valid JSON")?;
    if !value.is_object() {
        bail!("--data must be a JSON object like {{\"approved\": true}}");
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signal_data_must_be_an_object() {
        assert_eq!(signal_data(None).unwrap(), serde_json::json!({}));
        assert_eq!(signal_data(Some(r#"{"a":1}"#)).unwrap()["a"], 1);
        assert!(format!("{:#}", signal_data(Some("[1]")).unwrap_err()).contains("JSON object"));
        assert!(format!("{:#}", signal_data(Some("{")).unwrap_err())
            .contains("--data is not valid JSON"));
    }
}
