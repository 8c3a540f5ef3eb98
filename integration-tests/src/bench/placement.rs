//! `weft-bench`'s placement phase (issue 15): the [`priority`](super::priority)
//! scenario on a fresh cluster (Tansu on SQLite, one orchestrator, one worker
//! joining a queued backlog), then the [`spread`](super::spread) scenario on
//! another (three workers of unequal capacity); their figures as JSON and as
//! lines of the printed table.

use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::{json, Map, Value};

use super::priority::{self, PriorityPlan};
use super::report::num;
use super::spread::{self, SpreadPlan};
use crate::{ClusterOptions, TestCluster};

/// `weft-bench`'s options of the placement phase.
#[derive(clap::Args, Debug, Clone)]
pub struct PlacementArgs {
    /// Normal workflows queued in the placement phase's priority scenario
    /// (0: skip the placement phase).
    #[arg(long, default_value_t = 10_000)]
    pub placement_normal: usize,
    /// Low workflows queued with them.
    #[arg(long, default_value_t = 2_000)]
    pub placement_low: usize,
    /// Critical workflows started once the worker drains the backlog.
    #[arg(long, default_value_t = 100)]
    pub placement_critical: usize,
    /// The priority scenario's worker concurrency.
    #[arg(long, default_value_t = 8)]
    pub placement_concurrency: usize,
    /// Run the placement phase only (skips runs 1 and 2).
    #[arg(long)]
    pub placement_only: bool,
    /// Workflows of the spread scenario.
    #[arg(long, default_value_t = 1_500)]
    pub spread_workflows: usize,
    /// The spread scenario's workers, by concurrency.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4")]
    pub spread_capacities: Vec<usize>,
}

impl PlacementArgs {
    /// The options, for the report's settings.
    pub fn to_json(&self) -> Value {
        json!({
            "normal": self.placement_normal,
            "low": self.placement_low,
            "critical": self.placement_critical,
            "concurrency": self.placement_concurrency,
            "spread_workflows": self.spread_workflows,
            "spread_capacities": self.spread_capacities,
        })
    }

    /// The plan these options make, each stage within `deadline`.
    pub fn plan(&self, deadline: Duration) -> PlacementPlan {
        let mut plan = default_plan(deadline);
        plan.priority.normal = self.placement_normal;
        plan.priority.low = self.placement_low;
        plan.priority.critical = self.placement_critical;
        plan.priority.worker_concurrency = self.placement_concurrency;
        plan.spread.workflows = self.spread_workflows;
        plan.spread.capacities = self.spread_capacities.clone();
        plan
    }
}

/// The phase as `weft-bench` runs it: skipped with `--placement-normal 0`;
/// the figures, and whether it failed (said on stderr too).
pub async fn phase(args: &PlacementArgs, deadline: Duration, log_lines: usize) -> (Value, bool) {
    if args.placement_normal == 0 {
        return (json!({ "skipped": "--placement-normal 0" }), false);
    }
    println!("\n[3/3] placement: priority and spread (Tansu on SQLite)");
    let (v, err) = run(&args.plan(deadline), log_lines).await;
    if let Some(e) = &err {
        eprintln!("weft-bench: the placement phase FAILED: {e:#}");
    }
    (v, err.is_some())
}

/// Both scenarios' plans.
#[derive(Clone, Debug)]
pub struct PlacementPlan {
    pub priority: PriorityPlan,
    pub spread: SpreadPlan,
}

/// Runs both scenarios, each on a fresh cluster; the figures measured (a
/// failed scenario's entry says why) and the first error. A failed cluster's
/// last `log_lines` log lines are printed.
pub async fn run(plan: &PlacementPlan, log_lines: usize) -> (Value, Option<anyhow::Error>) {
    let mut out = Map::new();
    let mut first_err = None;
    println!(
        "  priority: {} normal and {} low workflows queued, then {} critical, one worker of concurrency {}, tasks of {} ms",
        plan.priority.normal, plan.priority.low, plan.priority.critical, plan.priority.worker_concurrency, plan.priority.task_ms
    );
    let priority = async {
        let mut cluster = fresh_cluster().await?;
        let result = priority::run(&mut cluster, &plan.priority).await;
        print_logs_if_failed(&cluster, &result, log_lines);
        result
    };
    match priority.await {
        Ok(f) => {
            out.insert("priority".into(), f.to_json());
        }
        Err(e) => {
            out.insert("priority".into(), json!({ "failed": format!("{e:#}") }));
            first_err = Some(e.context("the priority scenario"));
        }
    }
    println!(
        "  spread: {} workflows over workers of concurrency {:?}, tasks of {} ms",
        plan.spread.workflows, plan.spread.capacities, plan.spread.task_ms
    );
    let spread = async {
        let mut cluster = fresh_cluster().await?;
        let result = spread::run(&mut cluster, &plan.spread).await;
        print_logs_if_failed(&cluster, &result, log_lines);
        result
    };
    match spread.await {
        Ok(f) => {
            out.insert("spread".into(), f.to_json());
        }
        Err(e) => {
            out.insert("spread".into(), json!({ "failed": format!("{e:#}") }));
            first_err.get_or_insert(e.context("the spread scenario"));
        }
    }
    (Value::Object(out), first_err)
}

/// A cluster of one orchestrator and no worker.
async fn fresh_cluster() -> Result<TestCluster> {
    TestCluster::start(ClusterOptions::new(1, 0))
        .await
        .context("starting the cluster")
}

fn print_logs_if_failed<T>(cluster: &TestCluster, result: &Result<T>, log_lines: usize) {
    if result.is_err() {
        eprintln!(
            "\nweft-bench: the scenario failed; last {log_lines} log lines of every process:"
        );
        cluster.print_logs(log_lines);
    }
}

/// The placement figures of a report as table lines (`-` for what is missing).
pub fn table(placement: &Value) -> String {
    let f = |path: &str, decimals: usize| {
        num(placement, path).map_or_else(|| "-".to_owned(), |v| format!("{v:.decimals$}"))
    };
    let mut s = String::new();
    s.push_str("\nplacement (issue 15)\n");
    for (label, path) in [
        (
            "priority: critical queue time p50 (ms)",
            "/priority/critical_queue_ms/p50",
        ),
        (
            "priority: critical queue time p99 (ms)",
            "/priority/critical_queue_ms/p99",
        ),
        (
            "priority: normal queue time p50 (ms)",
            "/priority/normal_queue_ms/p50",
        ),
        (
            "priority: backlog each critical arrived behind (min)",
            "/priority/critical_backlog_min",
        ),
        (
            "priority: normal tasks/s while critical ran",
            "/priority/normal_rate_during_critical_per_s",
        ),
        (
            "priority: normal and low tasks/s while critical ran",
            "/priority/backlog_rate_during_critical_per_s",
        ),
        (
            "priority: normal tasks/s overall",
            "/priority/normal_rate_per_s",
        ),
        (
            "priority: low share before the normal backlog ended",
            "/priority/low_share",
        ),
        ("spread: tasks/s", "/spread/tasks_per_s"),
    ] {
        let decimals = if path.ends_with("low_share") { 3 } else { 1 };
        s.push_str(&format!("  {label:<56} {}\n", f(path, decimals)));
    }
    for w in placement["spread"]["workers"]
        .as_array()
        .into_iter()
        .flatten()
    {
        s.push_str(&format!(
            "  spread: {:<10} concurrency {:<3} {:>6} tasks ({:.1}% of tasks, {:.1}% of capacity), done after {:.1} s\n",
            w["node_id"].as_str().unwrap_or("?"),
            w["capacity"],
            w["tasks"],
            w["share"].as_f64().unwrap_or(0.0) * 100.0,
            w["capacity_share"].as_f64().unwrap_or(0.0) * 100.0,
            w["done_s"].as_f64().unwrap_or(0.0),
        ));
    }
    for key in ["priority", "spread"] {
        if let Some(e) = placement[key]["failed"].as_str() {
            s.push_str(&format!("  {key}: FAILED: {e}\n"));
        }
    }
    s
}

/// `weft-bench`'s defaults: 10,000 normal tasks queued (the size).
pub fn default_plan(deadline: Duration) -> PlacementPlan {
    PlacementPlan {
        priority: PriorityPlan {
            normal: 10_000,
            low: 2_000,
            critical: 100,
            task_ms: 5,
            worker_concurrency: 8,
            start_concurrency: 32,
            critical_gap: Duration::from_millis(50),
            deadline,
        },
        spread: SpreadPlan {
            workflows: 1_500,
            task_ms: 20,
            capacities: vec![1, 2, 4],
            start_concurrency: 32,
            deadline,
        },
    }
}
