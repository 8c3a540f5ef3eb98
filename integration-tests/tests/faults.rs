//! The failure model under load, on the real broker with the real binaries:
//! 1,000 workflows whose tasks fail at random (retried with durable backoff
//! timers, some for good) run while the orchestrator is SIGKILLed and
//! restarted three times and a worker three times. Afterwards every workflow
//! has ended; every `effect` task applied its side effect exactly once (the
//! `ledger` handler's file, keyed by the idempotency key it was given); no
//! decision appears twice in any history; and a projection rebuilt from an
//! empty data directory equals the live one.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use futures::stream::{self, StreamExt};
use serde_json::{json, Value};
use weft_integration_tests::{wait_for, wait_until, ApiClient, ClusterOptions, TestCluster};

const WORKFLOWS: usize = 1_000;

const DEFINITION: &str = r#"
type: faulty
description: a flaky compute step (retried, sometimes for good), then an effect recorded in a ledger
retry: {max_attempts: 6, backoff: fixed, base_delay: 100ms}
tasks:
  - name: prepare
    handler: flaky
    parameters: {fail_rate: 0.3, terminal_rate: 0.02}
  - name: charge
    type: effect
    handler: ledger
    depends_on: [prepare]
    parameters: {dir: "LEDGER_DIR"}
"#;

async fn start_all(api: &ApiClient) -> Result<Vec<String>> {
    let ids: Vec<Result<String>> = stream::iter(0..WORKFLOWS)
        .map(|i| async move {
            let key = format!("fault-{i}");
            let v = api.start("faulty", json!({ "n": i }), Some(&key)).await?;
            Ok(v["instance_id"].as_str().context("instance_id")?.to_owned())
        })
        .buffer_unordered(16)
        .collect()
        .await;
    ids.into_iter().collect()
}

fn ledger_lines(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("ledger.log"))
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

async fn digest(api: &ApiClient) -> Result<String> {
    let v = api
        .send(reqwest::Method::GET, "/v1/admin/projection-digest", None)
        .await?;
    ensure!(v.status.is_success(), "digest: {} {}", v.status, v.body);
    Ok(format!("{}:{}", v.body["records"], v.body["digest"]))
}

/// Waits until every instance has ended; returns the final state of each.
async fn wait_all_ended(
    api: &ApiClient,
    ids: &[String],
    deadline: Duration,
) -> Result<HashMap<String, String>> {
    let mut ended = HashMap::new();
    let start = Instant::now();
    loop {
        let pending: Vec<&String> = ids.iter().filter(|id| !ended.contains_key(*id)).collect();
        if pending.is_empty() {
            return Ok(ended);
        }
        let states: Vec<(String, Option<String>)> = stream::iter(pending)
            .map(|id| async move {
                let s = api
                    .get("faulty", id)
                    .await
                    .ok()
                    .and_then(|v| v["state"].as_str().map(str::to_owned));
                (id.clone(), s)
            })
            .buffer_unordered(16)
            .collect()
            .await;
        for (id, s) in states {
            if let Some(s) = s.filter(|s| {
                matches!(
                    s.as_str(),
                    "completed" | "failed" | "cancelled" | "timeout" | "compensated"
                )
            }) {
                ended.insert(id, s);
            }
        }
        ensure!(
            start.elapsed() < deadline,
            "{} of {} workflows had not ended after {deadline:?}",
            ids.len() - ended.len(),
            ids.len()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// No decision twice: unique idempotency keys, one `task.scheduled` per
/// (task, attempt), at most one terminal workflow event, gapless sequence.
fn check_decisions_once(id: &str, events: &[Value]) -> Result<()> {
    let mut keys = BTreeSet::new();
    let mut scheduled = BTreeSet::new();
    let mut terminal = 0;
    for (i, e) in events.iter().enumerate() {
        ensure!(
            e["sequence_number"] == json!(i + 1),
            "{id}: sequence gap at {i}"
        );
        ensure!(
            keys.insert(e["idempotency_key"].as_str().unwrap_or("").to_owned()),
            "{id}: idempotency key twice: {e}"
        );
        match e["event_type"].as_str().unwrap_or("") {
            "task.scheduled" => {
                let k = (
                    e["metadata"]["weft.task"].to_string(),
                    e["metadata"]["weft.attempt"].to_string(),
                );
                ensure!(
                    scheduled.insert(k),
                    "{id}: an attempt was scheduled twice: {e}"
                );
            }
            "workflow.completed" | "workflow.failed" | "workflow.cancelled"
            | "workflow.timeout" => terminal += 1,
            _ => {}
        }
    }
    ensure!(terminal == 1, "{id}: {terminal} terminal workflow events");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_thousand_flaky_workflows_survive_orchestrator_and_worker_kills() -> Result<()> {
    let ledger = tempfile::tempdir()?;
    let opts = ClusterOptions::new(1, 2);
    let mut cluster = TestCluster::start(opts).await?;
    let started = Instant::now();
    let result = async {
        let api = cluster.api();
        let definition = DEFINITION.replace("LEDGER_DIR", &ledger.path().display().to_string());
        api.register_definition(&definition).await?;
        let ids = start_all(&api).await?;
        println!("started {} workflows in {:?}", ids.len(), started.elapsed());
        // Kill at progress points, alternating orchestrator and worker.
        let mut kills = Vec::new();
        for (i, at) in [80usize, 180, 280, 380, 480, 580].into_iter().enumerate() {
            wait_until(
                &format!("{at} effects applied"),
                Duration::from_secs(240),
                Duration::from_millis(100),
                || async { ledger_lines(ledger.path()).len() >= at },
            )
            .await?;
            if i % 2 == 0 {
                cluster.restart_orchestrator(0).await?;
                kills.push(format!("orchestrator at {at} effects ({:?})", started.elapsed()));
            } else {
                let w = (i / 2) % 2;
                cluster.restart_worker(w).await?;
                kills.push(format!("worker {w} at {at} effects ({:?})", started.elapsed()));
            }
        }
        let ended = wait_all_ended(&api, &ids, Duration::from_secs(420)).await?;
        let mut by_state: HashMap<&str, usize> = HashMap::new();
        for s in ended.values() {
            *by_state.entry(s.as_str()).or_default() += 1;
        }
        println!("kills: {kills:#?}");
        println!("all {} ended after {:?}: {by_state:?}", ids.len(), started.elapsed());

        // Effects: each idempotency key once; one per workflow whose charge completed.
        let lines = ledger_lines(ledger.path());
        let unique: BTreeSet<&String> = lines.iter().collect();
        ensure!(unique.len() == lines.len(), "{} ledger entries but {} keys: an effect applied twice", lines.len(), unique.len());
        let mut charged = 0;
        let mut retries = 0;
        let mut stale = 0;
        for id in &ids {
            let h = api.events("faulty", id).await?;
            let events = h["events"].as_array().context("events")?;
            check_decisions_once(id, events)?;
            retries += events.iter().filter(|e| e["event_type"] == "workflow.retrying").count();
            stale += events.iter().filter(|e| e["data"]["error_type"] == "stale_attempt").count();
            let charge_done = events.iter().any(|e| e["event_type"] == "task.completed" && e["metadata"]["weft.task"] == "charge");
            if charge_done {
                charged += 1;
                ensure!(unique.contains(&format!("{id}/charge")), "{id}: charge completed but its effect is not in the ledger");
            }
        }
        ensure!(charged == lines.len(), "{charged} charges completed but {} effects applied", lines.len());
        println!("effects applied once each: {charged}; retries: {retries}; stale results recorded: {stale}; histories checked after {:?}", started.elapsed());

        // Rebuild from nothing (`--rebuild` discards the projections) equals the live projection.
        let live = digest(&api).await?;
        let rebuild_started = Instant::now();
        cluster.orchestrator_mut(0).process_mut().kill9();
        cluster.orchestrator_mut(0).process_mut().start_with(&["--rebuild"])?;
        cluster.wait_ready(0).await?;
        let rebuilt = wait_for("the rebuilt projection equals the live one", Duration::from_secs(120), Duration::from_millis(500), || async {
            let d = digest(&api).await?;
            anyhow::Ok((d == live).then_some(d))
        })
        .await;
        ensure!(rebuilt.is_ok(), "rebuilt digest {} != live {live}", digest(&api).await?);
        println!("rebuilt from the topics in {:?}", rebuild_started.elapsed());
        println!("fault test took {:?}", started.elapsed());
        Ok(())
    }
    .await;
    if let Err(e) = &result {
        cluster.print_logs(60);
        // A panic keeps the cluster's directory (logs, broker data) for a post-mortem.
        panic!("{e:#}");
    }
    result
}
