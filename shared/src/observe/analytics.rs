//! Per-type workflow analytics as mergeable aggregates: how many instances
//! started and ended in each state, how long they took, and per task how many
//! attempts ran, how they ended, how long they waited for a worker and how
//! long they ran. [`TypeStats::record`] folds one state change in (the
//! orchestrator does it for every applied event, in the same write as the
//! projection, so a rebuild gives the same numbers); [`TypeStats::merge`]
//! adds partitions and replicas together; [`TypeStats::report`] turns the sums
//! into success rates, duration percentiles, the bottleneck task and insights.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{transitions, Transition};
use crate::definition::WorkflowDefinition;
use crate::fsm::InstanceState;
use crate::state::{TaskState, WorkflowState};

mod histogram;
mod report;

pub use histogram::{Histogram, Summary};
pub use report::{Insight, Report, TaskReport, Thresholds};

/// What happened to one task of a type, summed over its instances.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TaskStats {
    /// The task's type (`compute`, `effect`, `parallel`, …) when the
    /// definition was known.
    #[serde(default)]
    pub task_type: Option<String>,
    /// Attempts scheduled (first runs and retries).
    pub attempts: u64,
    /// How attempts ended: `completed`, `failed`, `retrying` (failed, retried),
    /// `timeout`, `cancelled`, `skipped`.
    pub outcomes: BTreeMap<String, u64>,
    /// From `task.scheduled` to `task.started`: waiting for a worker.
    pub queue_ms: Histogram,
    /// From `task.started` to the attempt's end.
    pub run_ms: Histogram,
    /// Attempts reported waiting with no live node able to run them.
    #[serde(default)]
    pub unschedulable: u64,
    /// Attempts started, by the node (worker) that ran them.
    #[serde(default)]
    pub nodes: BTreeMap<String, u64>,
    /// CPU time of ended attempts whose worker measured it (`cpu_ms`).
    #[serde(default)]
    pub cpu_ms: Histogram,
    /// Wall time of the handler of ended attempts, as their worker measured it.
    #[serde(default)]
    pub wall_ms: Histogram,
    /// The largest peak memory (KiB) any attempt reported.
    #[serde(default)]
    pub peak_rss_kb: u64,
}

/// Aggregates of one workflow type (over some partitions).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TypeStats {
    /// Instances created.
    pub started: u64,
    /// Instances that reached each terminal state.
    pub finished: BTreeMap<String, u64>,
    /// Created → terminal, every ended instance.
    pub duration_ms: Histogram,
    /// Created → completed.
    pub completed_ms: Histogram,
    /// Non-terminal workflow transitions (`running->paused`, …) and their counts.
    pub transitions: BTreeMap<String, u64>,
    pub tasks: BTreeMap<String, TaskStats>,
}

impl TypeStats {
    /// Folds in what changed from `prev` to `next` at `at_ms` (the applied
    /// event's timestamp); `def` (the instance's definition) names task types.
    pub fn record(
        &mut self,
        prev: Option<&InstanceState>,
        next: &InstanceState,
        at_ms: i64,
        def: Option<&WorkflowDefinition>,
    ) {
        let known = prev.map_or(0, |p| p.error_history.len());
        for e in next.error_history.iter().skip(known) {
            if e.error_type == crate::fsm::NO_CAPABLE_NODE {
                if let Some(task) = &e.task_name {
                    self.tasks.entry(task.clone()).or_default().unschedulable += 1;
                }
            }
        }
        for t in transitions(prev, next) {
            match t {
                Transition::Workflow { from: None, .. } => self.started += 1,
                Transition::Workflow {
                    from: Some(from),
                    to,
                } => {
                    *self.transitions.entry(format!("{from}->{to}")).or_default() += 1;
                    if to.is_terminal() {
                        *self.finished.entry(to.to_string()).or_default() += 1;
                        let took = (at_ms - next.created_at_ms).max(0) as u64;
                        self.duration_ms.record(took);
                        if to == WorkflowState::Completed {
                            self.completed_ms.record(took);
                        }
                    }
                }
                Transition::Task {
                    task,
                    attempt,
                    from,
                    to,
                } => {
                    let rt = next.task(&task);
                    let ts = self.tasks.entry(task.clone()).or_default();
                    if ts.task_type.is_none() {
                        ts.task_type = def
                            .and_then(|d| d.task(&task))
                            .map(|t| t.task_type.to_string());
                    }
                    if to == TaskState::Scheduled {
                        ts.attempts += 1;
                        if attempt > 1 && !matches!(from, TaskState::Retrying | TaskState::Pending)
                        {
                            // Failed and retried without backoff within one step.
                            *ts.outcomes
                                .entry(TaskState::Retrying.to_string())
                                .or_default() += 1;
                        }
                    }
                    if to == TaskState::Running {
                        if let Some(node) = &rt.node_id {
                            *ts.nodes.entry(node.clone()).or_default() += 1;
                        }
                        if let (Some(s), Some(r)) = (rt.scheduled_at_ms, rt.started_at_ms) {
                            ts.queue_ms.record((r - s).max(0) as u64);
                        }
                    }
                    if to.is_terminal() || to == TaskState::Retrying {
                        *ts.outcomes.entry(to.to_string()).or_default() += 1;
                        if let Some(started) = rt.started_at_ms {
                            ts.run_ms.record((at_ms - started).max(0) as u64);
                        }
                        ts.record_usage(&rt.resource_usage);
                    }
                }
            }
        }
    }

    /// Adds `other` (another partition's or replica's sums) to these.
    pub fn merge(&mut self, other: &TypeStats) {
        self.started += other.started;
        add_counts(&mut self.finished, &other.finished);
        self.duration_ms.merge(&other.duration_ms);
        self.completed_ms.merge(&other.completed_ms);
        add_counts(&mut self.transitions, &other.transitions);
        for (name, t) in &other.tasks {
            let mine = self.tasks.entry(name.clone()).or_default();
            if mine.task_type.is_none() {
                mine.task_type.clone_from(&t.task_type);
            }
            mine.attempts += t.attempts;
            add_counts(&mut mine.outcomes, &t.outcomes);
            mine.queue_ms.merge(&t.queue_ms);
            mine.run_ms.merge(&t.run_ms);
            mine.unschedulable += t.unschedulable;
            add_counts(&mut mine.nodes, &t.nodes);
            mine.cpu_ms.merge(&t.cpu_ms);
            mine.wall_ms.merge(&t.wall_ms);
            mine.peak_rss_kb = mine.peak_rss_kb.max(t.peak_rss_kb);
        }
    }

    /// Instances that reached a terminal state.
    pub fn ended(&self) -> u64 {
        self.finished.values().sum()
    }
}

impl TaskStats {
    /// Folds in what an ended attempt's worker measured (nothing when it measured nothing).
    fn record_usage(&mut self, usage: &BTreeMap<String, i64>) {
        use crate::usage::{CPU_MS, PEAK_RSS_KB, WALL_MS};
        let get = |k: &str| usage.get(k).and_then(|v| u64::try_from(*v).ok());
        if let Some(v) = get(CPU_MS) {
            self.cpu_ms.record(v);
        }
        if let Some(v) = get(WALL_MS) {
            self.wall_ms.record(v);
        }
        if let Some(v) = get(PEAK_RSS_KB) {
            self.peak_rss_kb = self.peak_rss_kb.max(v);
        }
    }
}

fn add_counts(into: &mut BTreeMap<String, u64>, from: &BTreeMap<String, u64>) {
    for (k, v) in from {
        *into.entry(k.clone()).or_default() += v;
    }
}
