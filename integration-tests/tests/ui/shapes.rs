//! The DAG and the waterfall of richer workflows (part of `ui.rs`): a decision
//! whose branch not taken shows skipped, a `parallel` group linked to its
//! members, and a saga whose failed task was retried and whose compensation
//! tasks ran — each checked in the DOM against the API's instance.

use anyhow::{ensure, Context, Result};
use serde_json::{json, Value};
use weft_integration_tests::ApiClient;

use crate::browser::Browser;
use crate::{open_instance, start, wait_state, DAG_STATES, T};

pub const ROUTING: &str = "type: uiroute
tasks:
  - {name: route, type: decision, handler: choose, parameters: {branch: express}}
  - {name: express, handler: noop, depends_on: [route]}
  - {name: standard, handler: noop, depends_on: [route]}
  - {name: pack, type: parallel, depends_on: [express], parameters: {tasks: [box, label]}}
  - {name: box, handler: noop}
  - {name: label, handler: noop}
";
pub const SAGA: &str = "type: uisaga
tasks:
  - {name: reserve, handler: noop, compensation: release}
  - {name: charge, handler: noop, depends_on: [reserve], compensation: refund}
  - {name: ship, handler: fail, depends_on: [charge], retry: {max_attempts: 2, backoff: fixed, base_delay: 200ms}}
  - {name: release, handler: noop}
  - {name: refund, handler: noop}
";

/// Task states by name, as the API says.
fn task_states(inst: &Value) -> Value {
    let map = inst["tasks"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| {
            (
                t["name"].as_str().unwrap_or_default().to_owned(),
                t["state"].clone(),
            )
        })
        .collect::<serde_json::Map<_, _>>();
    Value::Object(map)
}

pub async fn decisions_groups_and_sagas(b: &Browser, api: &ApiClient, base: &str) -> Result<()> {
    let route = start(api, "uiroute", json!({})).await?;
    let saga = start(api, "uisaga", json!({})).await?;
    let routed = wait_state(api, "uiroute", &route, "completed").await?;
    let compensated = wait_state(api, "uisaga", &saga, "compensated").await?;

    open_instance(b, base, "uiroute", &route).await?;
    let dag = b.eval(DAG_STATES, json!([])).await?;
    ensure!(
        dag == task_states(&routed),
        "DAG {dag}, API {}",
        task_states(&routed)
    );
    ensure!(
        dag["standard"] == "skipped" && dag["box"] == "completed",
        "DAG {dag}"
    );
    let shape = b
        .eval(
            "const c = (s) => document.querySelectorAll(s).length;
             return {decision: c('#dag g.decision[data-task=route]'), group: c('#dag g.group[data-task=pack]'),
                     skipped: c('#dag g.skipped[data-task=standard]'), members: c('#dag path.edge.member')}",
            json!([]),
        )
        .await?;
    ensure!(
        shape == json!({"decision": 1, "group": 1, "skipped": 1, "members": 2}),
        "DAG shapes {shape}"
    );
    b.screenshot("decision-and-group").await?;

    open_instance(b, base, "uisaga", &saga).await?;
    let dag = b.eval(DAG_STATES, json!([])).await?;
    ensure!(
        dag == task_states(&compensated),
        "DAG {dag}, API {}",
        task_states(&compensated)
    );
    let edges = b
        .eval(
            "return document.querySelectorAll('#dag path.edge.compensation').length",
            json!([]),
        )
        .await?;
    ensure!(edges == 2, "compensation edges: {edges}");
    let rows = b
        .wait_eval(
            "the saga's waterfall",
            T,
            "const r = [...document.querySelectorAll('#waterfall .wf-row .label')].map(x => x.textContent);
             return r.some(x => x.includes('[compensation]')) ? r : null",
        )
        .await?;
    let rows: Vec<&str> = rows
        .as_array()
        .context("rows")?
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let ship_attempts = compensated["tasks"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|t| t["name"] == "ship")
        .and_then(|t| t["attempt"].as_u64())
        .context("ship's attempts")?;
    ensure!(ship_attempts == 2, "ship ran {ship_attempts} times");
    ensure!(
        rows.contains(&"task ship (attempt 1)") && rows.contains(&"task ship (attempt 2, retry)"),
        "each attempt of ship is a row: {rows:?}"
    );
    for t in ["release", "refund"] {
        ensure!(
            rows.iter()
                .any(|r| r.starts_with(&format!("task {t} ")) && r.ends_with("[compensation]")),
            "{t} is marked as a compensation: {rows:?}"
        );
    }
    let failed = b
        .eval(
            "return document.querySelectorAll('#waterfall .wf-bar.error').length",
            json!([]),
        )
        .await?;
    ensure!(
        failed.as_u64() >= Some(2),
        "failed attempts drawn in red: {failed}"
    );
    b.screenshot("saga").await?;
    Ok(())
}
