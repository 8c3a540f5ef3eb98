//! More workers than partitions, as an autoscaler makes them: four workers in
//! one group on task topics of two partitions, so two of them are idle. On
//! the development broker (Tansu, detected: its workarounds are on) the idle
//! members stay in the group without rejoining it, the group does not
//! rebalance while long tasks run, and no handler runs twice: every attempt
//! of the `tally` tasks (which log each call) is logged exactly once.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use serde_json::json;
use weft_integration_tests::{wait_for, ClusterOptions, TestCluster};

const TYPE: &str = "idle";
const WORKERS: usize = 4;
const PARTITIONS: usize = 2;
const WORKFLOWS: usize = 6;
/// Tasks per workflow, one after another, each [`TASK_MS`] long: the work
/// lasts about 50 s, past the moments (15, 30 and 45 s after joining) when
/// an idle member used to leave and rejoin the group.
const TASKS: usize = 4;
const TASK_MS: u64 = 12_000;
const POLL: Duration = Duration::from_millis(250);

fn definition(tally_dir: &Path) -> String {
    let mut yaml = format!("type: {TYPE}\ntasks:\n");
    for i in 0..TASKS {
        yaml.push_str(&format!(
            "  - name: t{i}\n    handler: tally\n    parameters: {{dir: \"{}\", ms: {TASK_MS}}}\n",
            tally_dir.display()
        ));
        if i > 0 {
            yaml.push_str(&format!("    depends_on: [t{}]\n", i - 1));
        }
    }
    yaml
}

/// The `partitions=N` of each "partitions assigned" line of a worker's log,
/// and whether a revocation followed the last one (a rebalance under way).
fn assignments(log: &str) -> (Vec<usize>, bool) {
    let mut out = Vec::new();
    let mut revoked_after = false;
    for line in log.lines() {
        if line.contains("partitions revoked") {
            revoked_after = true;
        } else if line.contains("partitions assigned") {
            let n = line
                .split_whitespace()
                .find_map(|w| w.strip_prefix("partitions=")?.parse().ok());
            out.push(n.unwrap_or(0));
            revoked_after = false;
        }
    }
    (out, revoked_after)
}

/// Once every worker's last rebalance ended and the task partitions are
/// spread over them (each held once), the number of assignments each worker has seen.
fn settled(cluster: &TestCluster) -> Option<Vec<usize>> {
    let mut held = 0;
    let mut counts = Vec::new();
    for w in cluster.workers() {
        let (assigned, mid_rebalance) = assignments(&w.process().current_log());
        if mid_rebalance {
            return None;
        }
        held += assigned.last()?;
        counts.push(assigned.len());
    }
    (held == PARTITIONS).then_some(counts)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn four_workers_on_two_partitions_neither_rebalance_nor_run_anything_twice() -> Result<()> {
    let opts = ClusterOptions::new(1, WORKERS).env("WEFT_KAFKA_PARTITIONS", PARTITIONS.to_string());
    let cluster = TestCluster::start(opts).await?;
    let result = run(&cluster).await;
    if result.is_err() {
        cluster.print_logs(40);
    }
    result
}

async fn run(cluster: &TestCluster) -> Result<()> {
    let api = cluster.api();
    let tally_dir = cluster.dir().join("tally");
    api.register_definition(&definition(&tally_dir)).await?;
    let before = wait_for(
        "the four workers share the two task partitions",
        Duration::from_secs(90),
        POLL,
        || async { anyhow::Ok(settled(cluster)) },
    )
    .await?;

    let mut ids = Vec::new();
    for i in 0..WORKFLOWS {
        let v = api.start(TYPE, json!({ "n": i }), None).await?;
        ids.push(v["instance_id"].as_str().context("instance_id")?.to_owned());
    }
    let deadline = Duration::from_millis(TASK_MS * TASKS as u64) + Duration::from_secs(150);
    wait_for("every workflow completes", deadline, POLL, || async {
        for id in &ids {
            let v = api.get(TYPE, id).await?;
            match v["state"].as_str() {
                Some("completed") => {}
                Some(s @ ("failed" | "cancelled" | "timeout")) => bail!("{id} ended {s}: {v}"),
                _ => return Ok(None),
            }
        }
        Ok(Some(()))
    })
    .await?;

    // No handler ran twice: one logged call per attempt, one attempt per task.
    let calls = weft_worker_tally_calls(&tally_dir)?;
    let mut per_execution: BTreeMap<&str, usize> = BTreeMap::new();
    for (execution_id, _, _) in &calls {
        *per_execution.entry(execution_id.as_str()).or_default() += 1;
    }
    let twice: Vec<_> = per_execution.iter().filter(|(_, n)| **n > 1).collect();
    ensure!(
        twice.is_empty(),
        "handlers ran more than once: {twice:?} (all calls: {calls:?})"
    );
    ensure!(
        calls.len() == WORKFLOWS * TASKS,
        "{} handler calls for {} tasks",
        calls.len(),
        WORKFLOWS * TASKS
    );

    // No rebalance while the tasks ran, and nobody left to rejoin.
    for (w, count_before) in cluster.workers().iter().zip(&before) {
        let log = w.process().current_log();
        let (assigned, _) = assignments(&log);
        ensure!(
            assigned.len() == *count_before,
            "{} took part in {} rebalances while the tasks ran",
            w.node_id(),
            assigned.len() - count_before
        );
        ensure!(
            !log.contains("rejoining"),
            "{} left and rejoined the group",
            w.node_id()
        );
        ensure!(
            log.contains("broker_workarounds=true"),
            "{} did not detect the development broker (Tansu)",
            w.node_id()
        );
    }
    Ok(())
}

/// The `tally` calls logged in `dir` (the worker's `tally.log` format).
fn weft_worker_tally_calls(dir: &Path) -> Result<Vec<(String, u32, String)>> {
    let content = match std::fs::read_to_string(dir.join("tally.log")) {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e).context("reading tally.log"),
    };
    content
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            match f.as_slice() {
                [id, attempt, node] => Ok(((*id).to_owned(), attempt.parse()?, (*node).to_owned())),
                _ => bail!("bad tally line {l:?}"),
            }
        })
        .collect()
}
