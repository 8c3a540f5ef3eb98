//! Helpers of the API-surface tests: the checked-in OpenAPI document, checking
//! a real response against the schema it documents (with `jsonschema`), the
//! definitions the tests run, and running the `weft` CLI binary.

#![allow(dead_code)]

use std::time::Duration;

use anyhow::{anyhow, ensure, Context, Result};
use reqwest::Method;
use serde_json::{json, Value};
use weft_integration_tests::{wait_for, ApiClient, ApiResponse, ClusterOptions, TestCluster};

/// The document the orchestrator serves, as checked in.
pub const OPENAPI: &str = include_str!("../../../orchestrator/openapi.json");

/// Two tasks, the first sleeping 1.5 s: long enough to watch it live.
pub const SLOW: &str = "type: slow\ntasks:\n  - {name: nap, handler: sleep, parameters: {ms: 1500}}\n  - {name: done, handler: noop, depends_on: [nap]}\n";
/// Waits for signal `go`, then a `noop`: cannot complete before the test signals it.
pub const GATED: &str = "type: gated\ntasks:\n  - {name: hold, type: wait, parameters: {signal: go}}\n  - {name: done, handler: noop, depends_on: [hold]}\n";
/// One task sleeping ten minutes: stays running while the test controls it.
pub const LONG: &str =
    "type: long\ntasks:\n  - {name: hold, handler: sleep, parameters: {ms: 600000}}\n";

pub fn openapi() -> Value {
    serde_json::from_str(OPENAPI).expect("openapi.json is JSON")
}

/// The JSON schema `doc` documents for `status` of `method template`,
/// wrapped so that its `#/components/...` references resolve.
pub fn response_schema(doc: &Value, method: &Method, template: &str, status: u16) -> Result<Value> {
    let op = &doc["paths"][template][method.as_str().to_lowercase()];
    ensure!(op.is_object(), "{method} {template} is not documented");
    let mut resp = &op["responses"][status.to_string()];
    if let Some(r) = resp["$ref"].as_str() {
        resp = doc
            .pointer(r.trim_start_matches('#'))
            .with_context(|| format!("dangling {r}"))?;
    }
    ensure!(
        resp.is_object(),
        "{method} {template}: status {status} is not documented"
    );
    let schema = resp["content"]["application/json"]["schema"].clone();
    ensure!(
        !schema.is_null(),
        "{method} {template} {status}: no application/json schema"
    );
    Ok(wrap(doc, schema))
}

/// A schema of `doc`'s components (`#/components/schemas/<name>`), resolvable.
pub fn component(doc: &Value, name: &str) -> Value {
    wrap(
        doc,
        json!({ "$ref": format!("#/components/schemas/{name}") }),
    )
}

fn wrap(doc: &Value, schema: Value) -> Value {
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "components": doc["components"],
        "allOf": [schema],
    })
}

/// Fails unless `instance` matches `schema`, listing every violation.
pub fn validate(schema: &Value, instance: &Value, what: &str) -> Result<()> {
    let validator =
        jsonschema::validator_for(schema).map_err(|e| anyhow!("{what}: bad schema: {e}"))?;
    let errors: Vec<String> = validator
        .iter_errors(instance)
        .map(|e| format!("{e} (at '{}')", e.instance_path()))
        .collect();
    ensure!(
        errors.is_empty(),
        "{what} does not match its documented schema: {errors:#?}\nbody: {instance:#}"
    );
    Ok(())
}

/// Checks that a real answer's status is documented and its body matches.
pub fn check(doc: &Value, method: &Method, template: &str, resp: &ApiResponse) -> Result<()> {
    let what = format!("{method} {template} → {}", resp.status);
    let schema = response_schema(doc, method, template, resp.status.as_u16())
        .with_context(|| format!("{what}: {}", resp.body))?;
    validate(&schema, &resp.body, &what)
}

/// Starts one instance of `ty` and returns its id.
pub async fn start(api: &ApiClient, ty: &str) -> Result<String> {
    let v = api.start(ty, json!({}), None).await?;
    Ok(v["instance_id"].as_str().context("instance_id")?.to_owned())
}

/// Waits until the instance is in `state`.
pub async fn wait_state(api: &ApiClient, ty: &str, id: &str, state: &str) -> Result<Value> {
    wait_for(
        &format!("{ty} {id} to be {state}"),
        Duration::from_secs(60),
        Duration::from_millis(100),
        || async move {
            let v = api.get(ty, id).await?;
            anyhow::Ok((v["state"] == state).then_some(v))
        },
    )
    .await
}

pub use weft_integration_tests::cli::weft;

/// Runs `body` against a fresh cluster (1 orchestrator, 1 worker), printing the logs on failure.
pub async fn with_cluster<F, Fut>(body: F) -> Result<()>
where
    F: FnOnce(ApiClient) -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    let cluster = TestCluster::start(ClusterOptions::new(1, 1)).await?;
    let result = body(cluster.api()).await;
    if result.is_err() {
        cluster.print_logs(80);
    }
    result
}
