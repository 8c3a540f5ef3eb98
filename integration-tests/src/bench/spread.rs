//! Issue 15's spread scenario: three workers of unequal capacity (their
//! `--concurrency`, which is their `slots`) in one worker group share many
//! single-task workflows; from the histories, how many tasks each ran, its
//! share beside its share of the capacity, and the rate of the whole.
//!
//! Kafka's group assignment spreads a lane's partitions, not its records, so
//! the spread follows the partitions each worker holds and how fast it
//! empties them; `weft-bench` reports it (docs/benchmarks.md).

use std::time::{Duration, Instant};

use anyhow::{ensure, Result};
use serde_json::{json, Value};

use super::lanes::{per_node, topic_runs};
use super::priority::{start_all, wait_completed};
use super::stats::round;
use crate::TestCluster;

pub const SPREAD: &str = "spread";

/// What to run.
#[derive(Clone, Debug)]
pub struct SpreadPlan {
    pub workflows: usize,
    pub task_ms: u64,
    /// One worker per entry, with this `--concurrency`.
    pub capacities: Vec<usize>,
    pub start_concurrency: usize,
    pub deadline: Duration,
}

/// One worker's part.
#[derive(Clone, Debug, PartialEq)]
pub struct WorkerShare {
    pub node_id: String,
    pub capacity: usize,
    pub tasks: usize,
    /// From the first start request to this worker's last completion.
    pub done_s: f64,
}

/// The scenario's figures.
#[derive(Clone, Debug, PartialEq)]
pub struct SpreadFigures {
    pub workers: Vec<WorkerShare>,
    /// From the first start request to the last completion seen.
    pub wall_s: f64,
}

impl SpreadFigures {
    pub fn to_json(&self) -> Value {
        let total: usize = self.workers.iter().map(|w| w.tasks).sum();
        let capacity: usize = self.workers.iter().map(|w| w.capacity).sum();
        json!({
            "workers": self.workers.iter().map(|w| json!({
                "node_id": w.node_id,
                "capacity": w.capacity,
                "tasks": w.tasks,
                "share": round(w.tasks as f64 / total.max(1) as f64, 4),
                "capacity_share": round(w.capacity as f64 / capacity.max(1) as f64, 4),
                "done_s": round(w.done_s, 2),
            })).collect::<Vec<_>>(),
            "tasks": total,
            "wall_s": round(self.wall_s, 2),
            "tasks_per_s": round(total as f64 / self.wall_s.max(1e-3), 1),
        })
    }
}

/// Runs the scenario on `cluster`, which has one orchestrator and no worker
/// yet; it adds one worker per capacity of the plan.
pub async fn run(cluster: &mut TestCluster, plan: &SpreadPlan) -> Result<SpreadFigures> {
    let api = cluster.api();
    api.register_definition(&format!(
        "type: {SPREAD}\ntasks:\n  - name: work\n    handler: sleep\n    parameters: {{ms: {}}}\n",
        plan.task_ms
    ))
    .await?;
    let mut workers = Vec::new();
    for &capacity in &plan.capacities {
        let i = cluster
            .add_worker_with(["--concurrency".to_owned(), capacity.to_string()])
            .await?;
        workers.push((cluster.worker(i).node_id().to_owned(), capacity));
    }
    let t0 = Instant::now();
    let t0_ms = super::engine::now_ms();
    let types = vec![SPREAD; plan.workflows];
    start_all(&api, &types, plan.start_concurrency).await?;
    wait_completed(&api, &[SPREAD], plan.workflows as u64, plan.deadline).await?;
    let wall_s = t0.elapsed().as_secs_f64();
    let runs = topic_runs(&cluster.bootstrap(), SPREAD, Duration::from_secs(120))?;
    ensure!(
        runs.len() == plan.workflows,
        "the events topic holds {} tasks, not {}",
        runs.len(),
        plan.workflows
    );
    let counts = per_node(&runs);
    let done_s = |node: &str| {
        let last = runs
            .iter()
            .filter(|r| r.completed_by.as_deref() == Some(node))
            .filter_map(|r| r.completed_ms)
            .max();
        last.map_or(0.0, |t| (t - t0_ms) as f64 / 1000.0)
    };
    Ok(SpreadFigures {
        workers: workers
            .into_iter()
            .map(|(node_id, capacity)| WorkerShare {
                tasks: counts.get(&node_id).copied().unwrap_or(0),
                done_s: done_s(&node_id),
                node_id,
                capacity,
            })
            .collect(),
        wall_s,
    })
}
