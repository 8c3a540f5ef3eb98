//! Graceful stops of the real binaries (SIGTERM), on the real broker.
//!
//! A worker told to stop while tasks run drains: it takes nothing new, lets
//! the running handlers finish and publish, commits their offsets and exits 0;
//! the worker started after it runs none of them again (they were committed),
//! only what was dispatched meanwhile. An orchestrator told to stop mid-run
//! exits 0 and, started again, carries on without deciding anything twice;
//! every effect runs once.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use serde_json::{json, Value};
use weft_integration_tests::{wait_for, ApiClient, ClusterOptions, TestCluster};

const TYPE: &str = "drain";
const DEFINITION: &str = r#"
type: drain
tasks:
  - {name: nap, handler: sleep, parameters: {ms: 2500}}
  - {name: charge, type: effect, handler: ledger, depends_on: [nap], parameters: {dir: "LEDGER_DIR"}}
"#;
const GRACE: Duration = Duration::from_secs(30);

async fn start(api: &ApiClient, n: usize, tag: &str) -> Result<Vec<String>> {
    let mut ids = Vec::new();
    for i in 0..n {
        let key = format!("{tag}-{i}");
        let v = api.start(TYPE, json!({ "i": i }), Some(&key)).await?;
        ids.push(v["instance_id"].as_str().context("instance_id")?.to_owned());
    }
    Ok(ids)
}

/// Waits until every instance's `nap` runs (its `task.started` is applied).
async fn wait_naps_running(api: &ApiClient, ids: &[String]) -> Result<()> {
    for id in ids {
        wait_for(
            &format!("{id}: nap running"),
            Duration::from_secs(60),
            Duration::from_millis(20),
            || async {
                let v = api.get(TYPE, id).await?;
                let running = v["tasks"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|t| t["name"] == "nap" && t["state"] == "running");
                anyhow::Ok(running.then_some(()))
            },
        )
        .await?;
    }
    Ok(())
}

async fn wait_completed(api: &ApiClient, ids: &[String]) -> Result<()> {
    for id in ids {
        wait_for(
            &format!("{id} completed"),
            Duration::from_secs(90),
            Duration::from_millis(100),
            || async {
                let v = api.get(TYPE, id).await?;
                ensure!(v["state"] != "failed", "{id} failed: {v}");
                anyhow::Ok((v["state"] == "completed").then_some(()))
            },
        )
        .await?;
    }
    Ok(())
}

/// One history: no decision twice, each task scheduled, started and completed
/// once (attempt 1), and the effect's call log has its key once.
fn check_once(id: &str, events: &[Value], calls: &str) -> Result<()> {
    let mut keys = BTreeSet::new();
    for e in events {
        ensure!(
            keys.insert(e["idempotency_key"].as_str().unwrap_or_default()),
            "{id}: idempotency key twice: {e}"
        );
    }
    for task in ["nap", "charge"] {
        for ty in ["task.scheduled", "task.started", "task.completed"] {
            let n = events
                .iter()
                .filter(|e| e["event_type"] == ty && e["metadata"]["weft.task"] == task)
                .count();
            ensure!(n == 1, "{id}: {n} {ty} of {task}");
        }
    }
    let key = format!("{id}/charge\t");
    let runs = calls.lines().filter(|l| l.starts_with(&key)).count();
    ensure!(runs == 1, "{id}: the effect ran {runs} times");
    Ok(())
}

fn calls(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("calls.log")).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_drains_the_worker_and_stops_the_orchestrator_cleanly() -> Result<()> {
    let ledger = tempfile::tempdir()?;
    let mut cluster = TestCluster::start(ClusterOptions::new(1, 1)).await?;
    let result = scenario(&mut cluster, ledger.path()).await;
    if result.is_err() {
        cluster.print_logs(60);
    }
    result
}

async fn scenario(cluster: &mut TestCluster, ledger: &Path) -> Result<()> {
    let api = cluster.api();
    let definition = DEFINITION.replace("LEDGER_DIR", &ledger.display().to_string());
    api.register_definition(&definition).await?;

    // The worker, mid-run: four naps running.
    let first = start(&api, 4, "worker").await?;
    wait_naps_running(&api, &first).await?;
    let in_flight = cluster
        .worker_metric(0, "weft_worker_in_flight_tasks")
        .await?;
    ensure!(
        in_flight == 4.0,
        "{in_flight} tasks in flight, expected the 4 naps"
    );
    let worker = cluster.worker_mut(0).process_mut();
    let status = worker.terminate_and_wait(GRACE).await?;
    ensure!(status.success(), "the worker exited {status} after SIGTERM");
    let log = worker.current_log();
    ensure!(
        log.contains("worker draining") && log.contains("worker stopped"),
        "the worker did not log its drain:\n{}",
        worker.log_tail(30)
    );
    // The drain let the naps finish: completed on their first attempt, by this worker.
    for id in &first {
        let h = api.events(TYPE, id).await?;
        let events = h["events"].as_array().context("events")?;
        let completed: Vec<&Value> = events
            .iter()
            .filter(|e| e["event_type"] == "task.completed" && e["metadata"]["weft.task"] == "nap")
            .collect();
        ensure!(
            completed.len() == 1 && completed[0]["metadata"]["weft.attempt"] == "1",
            "{id}: nap not completed by the draining worker: {events:#?}"
        );
    }
    // A new worker process runs the charges, and no nap again (their offsets were committed).
    cluster.worker_mut(0).process_mut().start()?;
    cluster.wait_worker_ready(0).await?;
    wait_completed(&api, &first).await?;
    let naps_again = cluster
        .worker_metric_labelled(0, "weft_worker_tasks_total", "handler=\"sleep\"")
        .await?;
    let charges = cluster
        .worker_metric_labelled(0, "weft_worker_tasks_total", "handler=\"ledger\"")
        .await?;
    ensure!(
        naps_again == 0.0 && charges == 4.0,
        "the worker after the drain ran {naps_again} naps (want 0) and {charges} charges (want 4)"
    );

    // The orchestrator, mid-run: naps running, results arriving while it stops.
    let second = start(&api, 4, "orchestrator").await?;
    wait_naps_running(&api, &second).await?;
    let orchestrator = cluster.orchestrator_mut(0).process_mut();
    let status = orchestrator.terminate_and_wait(GRACE).await?;
    ensure!(
        status.success(),
        "the orchestrator exited {status} after SIGTERM"
    );
    ensure!(
        orchestrator.current_log().contains("orchestrator stopped"),
        "the orchestrator did not log its stop:\n{}",
        orchestrator.log_tail(30)
    );
    orchestrator.start()?;
    cluster.wait_ready(0).await?;
    wait_completed(&api, &second).await?;

    let calls = calls(ledger);
    for id in first.iter().chain(&second) {
        let h = api.events(TYPE, id).await?;
        check_once(id, h["events"].as_array().context("events")?, &calls)?;
    }
    cluster.check_processes()?;
    Ok(())
}
