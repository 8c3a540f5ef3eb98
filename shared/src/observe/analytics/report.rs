//! The analytics report of one workflow type: counts, success rate, duration
//! summaries, per-task figures, the bottleneck task and insights — each
//! insight names what it is about, the measured value, the threshold it
//! crossed and what to do about it.

use serde::{Deserialize, Serialize};

use super::{Summary, TaskStats, TypeStats};
use crate::state::WorkflowState;

/// When an insight is raised. The defaults follow the tracing reference:
/// below 80 % success, or slower than 30 s on average.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Thresholds {
    /// Fewer ended instances (or task attempts) than this: no rate insight.
    pub min_samples: u64,
    pub min_success_rate: f64,
    pub slow_workflow_ms: f64,
    /// Share of attempts that failed (retried or not) above which a task is flaky.
    pub max_task_failure_rate: f64,
    /// A task whose share of all task time (queue + run) is at least this is the bottleneck.
    pub bottleneck_share: f64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Self {
            min_samples: 10,
            min_success_rate: 0.8,
            slow_workflow_ms: 30_000.0,
            max_task_failure_rate: 0.2,
            bottleneck_share: 0.4,
        }
    }
}

/// One finding.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Insight {
    /// `low_success_rate`, `slow_workflow`, `bottleneck`, `flaky_task`, `queueing`.
    pub kind: String,
    /// The workflow type, or `type/task`.
    pub subject: String,
    pub value: f64,
    pub threshold: f64,
    pub recommendation: String,
}

/// Figures of one task.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskReport {
    pub name: String,
    pub task_type: Option<String>,
    pub attempts: u64,
    pub outcomes: std::collections::BTreeMap<String, u64>,
    /// Failed attempts (retried or not, and timeouts) ÷ attempts that ended.
    pub failure_rate: f64,
    pub queue: Summary,
    pub run: Summary,
    /// This task's share of the time all tasks of the type that workers run
    /// spent queued and running (0 for groups and waits, which no worker runs).
    pub time_share: f64,
    /// Attempts started, by the node that ran them.
    #[serde(default)]
    pub nodes: std::collections::BTreeMap<String, u64>,
    /// CPU time of ended attempts, as their workers measured it (ms; count 0: none reported).
    #[serde(default)]
    pub cpu: Summary,
    /// Wall time of the handlers of ended attempts, as their workers measured it (ms).
    #[serde(default)]
    pub wall: Summary,
    /// The largest peak memory any attempt reported (KiB; 0: none reported).
    #[serde(default)]
    pub peak_rss_kb: u64,
}

/// The analytics of one workflow type.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub workflow_type: String,
    pub started: u64,
    /// Started and not ended yet.
    pub in_flight: u64,
    pub finished: std::collections::BTreeMap<String, u64>,
    /// Completed ÷ ended; `None` before any instance ended.
    pub success_rate: Option<f64>,
    pub duration: Summary,
    pub completed_duration: Summary,
    pub transitions: std::collections::BTreeMap<String, u64>,
    pub tasks: Vec<TaskReport>,
    /// The task with the largest share of task time, if any ran.
    pub bottleneck: Option<String>,
    pub insights: Vec<Insight>,
}

fn round(v: f64) -> f64 {
    (v * 10_000.0).round() / 10_000.0
}

fn failure_rate(t: &TaskStats) -> (u64, f64) {
    let ended: u64 = t.outcomes.values().sum();
    let failed: u64 = ["failed", "retrying", "timeout"]
        .iter()
        .filter_map(|k| t.outcomes.get(*k))
        .sum();
    let rate = if ended == 0 {
        0.0
    } else {
        failed as f64 / ended as f64
    };
    (ended, round(rate))
}

impl TypeStats {
    /// The report of these aggregates for `workflow_type`.
    pub fn report(&self, workflow_type: &str, th: &Thresholds) -> Report {
        let ended = self.ended();
        let completed = self
            .finished
            .get(WorkflowState::Completed.as_str())
            .copied()
            .unwrap_or(0);
        let success_rate = (ended > 0).then(|| round(completed as f64 / ended as f64));
        // Only tasks workers run count: a group's time is its members', a wait's a signal's.
        let task_time = |t: &TaskStats| {
            if matches!(
                t.task_type.as_deref(),
                Some("parallel" | "sequential" | "wait")
            ) {
                0.0
            } else {
                (t.queue_ms.sum + t.run_ms.sum) as f64
            }
        };
        let total_time: f64 = self.tasks.values().map(task_time).sum();
        let mut tasks: Vec<TaskReport> = self
            .tasks
            .iter()
            .map(|(name, t)| TaskReport {
                name: name.clone(),
                task_type: t.task_type.clone(),
                attempts: t.attempts,
                outcomes: t.outcomes.clone(),
                failure_rate: failure_rate(t).1,
                nodes: t.nodes.clone(),
                queue: t.queue_ms.summary(),
                run: t.run_ms.summary(),
                cpu: t.cpu_ms.summary(),
                wall: t.wall_ms.summary(),
                peak_rss_kb: t.peak_rss_kb,
                time_share: if total_time > 0.0 {
                    round(task_time(t) / total_time)
                } else {
                    0.0
                },
            })
            .collect();
        tasks.sort_by(|a, b| {
            b.time_share
                .total_cmp(&a.time_share)
                .then(a.name.cmp(&b.name))
        });
        let bottleneck = tasks
            .first()
            .filter(|t| t.time_share > 0.0)
            .map(|t| t.name.clone());

        let mut insights = Vec::new();
        let ty = workflow_type;
        if let Some(rate) =
            success_rate.filter(|r| ended >= th.min_samples && *r < th.min_success_rate)
        {
            insights.push(Insight {
                kind: "low_success_rate".into(),
                subject: ty.into(),
                value: rate,
                threshold: th.min_success_rate,
                recommendation: format!("{completed} of {ended} {ty} workflows completed: review the failing tasks below for reliability issues"),
            });
        }
        let avg = self.completed_ms.avg();
        if self.completed_ms.count > 0 && avg > th.slow_workflow_ms {
            insights.push(Insight {
                kind: "slow_workflow".into(),
                subject: ty.into(),
                value: round(avg),
                threshold: th.slow_workflow_ms,
                recommendation: format!(
                    "{ty} takes {:.1} s on average: optimise its bottleneck task",
                    avg / 1000.0
                ),
            });
        }
        if let Some(top) = tasks
            .first()
            .filter(|t| t.time_share >= th.bottleneck_share && tasks.len() > 1)
        {
            insights.push(Insight {
                kind: "bottleneck".into(),
                subject: format!("{ty}/{}", top.name),
                value: top.time_share,
                threshold: th.bottleneck_share,
                recommendation: format!(
                    "'{}' accounts for {:.0} % of the time tasks of {ty} spend queued or running (p95 run {} ms, p95 queue {} ms)",
                    top.name,
                    top.time_share * 100.0,
                    top.run.p95_ms,
                    top.queue.p95_ms
                ),
            });
        }
        for t in &tasks {
            let (ended_attempts, rate) = failure_rate(&self.tasks[&t.name]);
            if ended_attempts >= th.min_samples && rate > th.max_task_failure_rate {
                insights.push(Insight {
                    kind: "flaky_task".into(),
                    subject: format!("{ty}/{}", t.name),
                    value: rate,
                    threshold: th.max_task_failure_rate,
                    recommendation: format!("{:.0} % of '{}' attempts fail: check its errors (weft history) and its retry policy", rate * 100.0, t.name),
                });
            }
            let waited = self.tasks[&t.name].unschedulable;
            if waited > 0 {
                insights.push(Insight {
                    kind: "unschedulable".into(),
                    subject: format!("{ty}/{}", t.name),
                    value: waited as f64,
                    threshold: 0.0,
                    recommendation: format!("{waited} attempt(s) of '{}' waited with no live worker able to run them: start a worker with the capabilities and resources the task asks for (weft nodes lists what the workers offer)", t.name),
                });
            }
            if t.queue.count >= th.min_samples && t.queue.p50_ms > t.run.p50_ms.max(100) {
                insights.push(Insight {
                    kind: "queueing".into(),
                    subject: format!("{ty}/{}", t.name),
                    value: t.queue.p50_ms as f64,
                    threshold: t.run.p50_ms.max(100) as f64,
                    recommendation: format!("'{}' waits longer for a worker (p50 {} ms) than it runs (p50 {} ms): add workers or partitions", t.name, t.queue.p50_ms, t.run.p50_ms),
                });
            }
        }
        Report {
            workflow_type: ty.into(),
            started: self.started,
            in_flight: self.started.saturating_sub(ended),
            finished: self.finished.clone(),
            success_rate,
            duration: self.duration_ms.summary(),
            completed_duration: self.completed_ms.summary(),
            transitions: self.transitions.clone(),
            tasks,
            bottleneck,
            insights,
        }
    }
}
