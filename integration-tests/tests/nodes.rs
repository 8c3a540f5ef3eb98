//! The node registry as the API and the CLI show it, on a real cluster: an
//! orchestrator and two workers, worker-0 declaring `gpu`, `region=eu` and
//! resources. `GET /v1/nodes` and `weft nodes` (table and `--output json`)
//! list the three live with what each declared; a SIGKILLed worker turns
//! `unhealthy` (silent) once not heard from for the registry's 15 s, and a
//! worker stopped gracefully is listed `draining` at once.

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use serde_json::Value;
use weft_integration_tests::cli::weft;
use weft_integration_tests::{wait_for, ApiClient, ClusterOptions, TestCluster};

const DEADLINE: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(250);
/// The registry's default silence before a node is unhealthy.
const UNHEALTHY_AFTER_MS: i64 = 15_000;

/// The node `id` of `GET /v1/nodes` once `check` holds for it.
async fn node_when(
    api: &ApiClient,
    id: &str,
    what: &str,
    check: impl Fn(&Value) -> bool,
) -> Result<Value> {
    wait_for(&format!("{id}: {what}"), DEADLINE, POLL, || async {
        let r = api.send(reqwest::Method::GET, "/v1/nodes", None).await?;
        ensure!(r.status == 200, "GET /v1/nodes: {} {}", r.status, r.body);
        let nodes = r.body["nodes"].as_array().cloned().unwrap_or_default();
        anyhow::Ok(nodes.into_iter().find(|n| n["node_id"] == id && check(n)))
    })
    .await
}

fn live(n: &Value) -> bool {
    n["status"] == "healthy" && n["silent"] == false
}

/// The line of a `weft nodes` table that starts with `id`.
fn row<'a>(table: &'a str, id: &str) -> Result<&'a str> {
    table
        .lines()
        .find(|l| l.split_whitespace().next() == Some(id))
        .with_context(|| format!("no row for {id} in\n{table}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_are_listed_with_capabilities_capacity_and_liveness() -> Result<()> {
    let opts = ClusterOptions::new(1, 2).worker_args_for(
        0,
        [
            "--set",
            "worker.capabilities=gpu,region=eu",
            "--set",
            "worker.resources=cpu=4,memory_mb=2048",
        ],
    );
    let mut cluster = TestCluster::start(opts).await?;
    let api = cluster.api();
    let orch = cluster.orchestrator(0).node_id().to_owned();
    let (gpu, plain) = (
        cluster.worker(0).node_id().to_owned(),
        cluster.worker(1).node_id().to_owned(),
    );

    let o = node_when(&api, &orch, "live", live).await?;
    ensure!(o["role"] == "orchestrator", "{o}");
    let g = node_when(&api, &gpu, "live", live).await?;
    let p = node_when(&api, &plain, "live", live).await?;
    let caps = |n: &Value| -> Vec<String> {
        n["capabilities"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c.as_str().map(str::to_owned))
            .collect()
    };
    ensure!(
        g["role"] == "worker" && caps(&g).contains(&"gpu".to_owned()),
        "{g}"
    );
    ensure!(
        caps(&g).contains(&"region=eu".to_owned()) || g["labels"]["region"] == "eu",
        "worker-0 offers region=eu: {g}"
    );
    ensure!(
        g["capacity_limits"]["cpu"] == 4 && g["capacity_limits"]["memory_mb"] == 2048,
        "{g}"
    );
    ensure!(
        !caps(&p).contains(&"gpu".to_owned()) && p["capacity_limits"]["cpu"].is_null(),
        "{p}"
    );
    for n in [&g, &p] {
        ensure!(
            n["current_load"]["in_flight"].is_i64() && n["load"].is_f64(),
            "{n}"
        );
        let age = n["heartbeat_age_ms"].as_i64().context("heartbeat_age_ms")?;
        ensure!((0..UNHEALTHY_AFTER_MS).contains(&age), "{n}");
    }
    let listed = api
        .send(reqwest::Method::GET, "/v1/nodes", None)
        .await?
        .body;
    ensure!(
        listed["unhealthy_after_ms"] == UNHEALTHY_AFTER_MS && listed["gone_after_ms"] == 60_000,
        "{listed}"
    );

    // The CLI: a table, the API's JSON, and a clear error for a bad format.
    let table = weft(&api, &["nodes"], DEADLINE).await?;
    let table = table.ok()?;
    ensure!(
        table
            .lines()
            .next()
            .is_some_and(|h| h.starts_with("NODE") && h.contains("CAPABILITIES")),
        "{table}"
    );
    let r = row(table, &gpu)?;
    for want in ["worker", "healthy", "gpu", "cpu=4", "memory_mb=2048", "ago"] {
        ensure!(r.contains(want), "{want} in {r:?}");
    }
    ensure!(row(table, &orch)?.contains("orchestrator"), "{table}");
    ensure!(!row(table, &plain)?.contains("gpu"), "{table}");
    let json = weft(&api, &["nodes", "--output", "json"], DEADLINE).await?;
    let json: Value =
        serde_json::from_str(json.ok()?).context("weft nodes --output json prints JSON")?;
    let ids: Vec<&str> = json["nodes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|n| n["node_id"].as_str())
        .collect();
    for id in [&orch, &gpu, &plain] {
        ensure!(ids.contains(&id.as_str()), "{id} in {ids:?}");
    }
    let bad = weft(&api, &["nodes", "--output", "xml"], DEADLINE).await?;
    ensure!(bad.code == Some(2) && bad.stderr.contains("xml"), "{bad:?}");

    // Killed: silent, so unhealthy, once not heard from for 15 s.
    cluster.worker_mut(1).process_mut().kill9();
    let silent = node_when(&api, &plain, "silent", |n| n["silent"] == true).await?;
    ensure!(
        silent["status"] == "unhealthy" && silent["health"] == "healthy",
        "{silent}"
    );
    ensure!(
        silent["heartbeat_age_ms"].as_i64() > Some(UNHEALTHY_AFTER_MS),
        "{silent}"
    );
    let table = weft(&api, &["nodes"], DEADLINE).await?;
    ensure!(
        row(table.ok()?, &plain)?.contains("unhealthy (silent)"),
        "{table:?}"
    );
    // Stopped gracefully: its last record says draining.
    let stopped = cluster
        .worker_mut(0)
        .process_mut()
        .terminate_and_wait(DEADLINE)
        .await?;
    ensure!(stopped.success(), "worker-0 stopped: {stopped}");
    node_when(&api, &gpu, "draining", |n| {
        n["status"] == "draining" && n["silent"] == false
    })
    .await?;
    node_when(&api, &orch, "still live", live).await?;
    Ok(())
}
