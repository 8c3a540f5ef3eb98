//! Issue 15's priority scenario, on a real cluster: a backlog of `normal` and
//! `low` single-task workflows is queued while no worker runs, one worker
//! joins, and once it is draining the backlog `critical` workflows arrive one
//! after another. From the histories (read raw from the events topics):
//! each critical task's queue time (`task.started` − `task.scheduled`) beside
//! how long the backlog it arrived behind still waited, how many queued tasks
//! it overtook, the normal tasks' throughput while the critical ones ran, and
//! the share of `low` tasks among those run before the normal backlog was done
//! (no starvation).
//!
//! The integration test (`capabilities_priority.rs`) runs it small and checks
//! the figures; `weft-bench` runs it with 10,000 queued normal tasks and
//! reports them (docs/benchmarks.md).

use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use futures::stream::{self, StreamExt, TryStreamExt};
use serde_json::{json, Value};

use super::engine::finished;
use super::lanes::{topic_runs, TaskRun};
use super::stats::{round, Percentiles};
use crate::{wait_for, ApiClient, TestCluster};

/// The workflow types, one per priority.
pub const NORMAL: &str = "prio-normal";
pub const LOW: &str = "prio-low";
pub const CRITICAL: &str = "prio-critical";

/// What to run.
#[derive(Clone, Debug)]
pub struct PriorityPlan {
    pub normal: usize,
    pub low: usize,
    pub critical: usize,
    /// Each task sleeps this long.
    pub task_ms: u64,
    /// The one worker's `--concurrency`.
    pub worker_concurrency: usize,
    /// Start requests open at once.
    pub start_concurrency: usize,
    /// Between two critical starts.
    pub critical_gap: Duration,
    /// For each stage (queueing, draining).
    pub deadline: Duration,
}

/// A definition of one `sleep` task, `work`, at `priority`.
pub fn definition(ty: &str, priority: &str, task_ms: u64) -> String {
    format!(
        "type: {ty}\ntasks:\n  - name: work\n    handler: sleep\n    priority: {priority}\n    \
         parameters: {{ms: {task_ms}}}\n"
    )
}

/// What one critical task met.
#[derive(Clone, Debug, PartialEq)]
pub struct CriticalRun {
    pub queue_ms: i64,
    /// Normal and low tasks scheduled before it and not started when it was scheduled.
    pub backlog: usize,
    /// Of those, the ones that started after it.
    pub overtaken: usize,
    /// The median time from its scheduling to the start of the normal tasks
    /// of that backlog: about what it would have waited behind them in order.
    pub backlog_wait_p50_ms: f64,
}

/// The scenario's figures.
#[derive(Clone, Debug, PartialEq)]
pub struct PriorityFigures {
    pub critical: Vec<CriticalRun>,
    pub critical_queue: Percentiles,
    pub normal_queue: Percentiles,
    /// Normal tasks started per second from the first critical's scheduling
    /// to the last critical's start.
    pub normal_rate_during_critical: f64,
    /// Normal and low tasks started per second in that window: the backlog
    /// kept flowing while critical work ran (a worker takes a lane's records
    /// in batches, so the window may have served either).
    pub backlog_rate_during_critical: f64,
    /// Normal tasks started per second over the whole drain.
    pub normal_rate: f64,
    /// Low tasks ÷ all tasks started from the first start to the last normal start.
    pub low_share: f64,
    /// Low tasks started before the last normal one started.
    pub low_before_last_normal: usize,
    pub low_total: usize,
}

impl PriorityFigures {
    pub fn to_json(&self) -> Value {
        json!({
            "critical_queue_ms": self.critical_queue.to_json(),
            "normal_queue_ms": self.normal_queue.to_json(),
            "critical_backlog_min": self.critical.iter().map(|c| c.backlog).min(),
            "critical_overtaken_min": self.critical.iter().map(|c| c.overtaken).min(),
            "backlog_wait_p50_ms_min": self.critical.iter().map(|c| c.backlog_wait_p50_ms).reduce(f64::min).map(|v| round(v, 1)),
            "normal_rate_during_critical_per_s": round(self.normal_rate_during_critical, 1),
            "backlog_rate_during_critical_per_s": round(self.backlog_rate_during_critical, 1),
            "normal_rate_per_s": round(self.normal_rate, 1),
            "low_share": round(self.low_share, 4),
            "low_before_last_normal": self.low_before_last_normal,
            "low_total": self.low_total,
        })
    }
}

/// Computes the figures from the task runs of the three types.
pub fn figures(
    normal: &[TaskRun],
    low: &[TaskRun],
    critical: &[TaskRun],
) -> Result<PriorityFigures> {
    let queued: Vec<(i64, i64, bool)> = normal
        .iter()
        .map(|r| (r, true))
        .chain(low.iter().map(|r| (r, false)))
        .map(|(r, is_normal)| {
            Ok((
                r.scheduled_ms.context("no task.scheduled")?,
                r.started_ms().context("never started")?,
                is_normal,
            ))
        })
        .collect::<Result<_>>()?;
    let mut crit = Vec::new();
    for c in critical {
        let (cs, cst) = (
            c.scheduled_ms
                .context("a critical task without task.scheduled")?,
            c.started_ms().context("a critical task never started")?,
        );
        let waiting: Vec<_> = queued
            .iter()
            .filter(|(s, st, _)| *s <= cs && *st > cs)
            .collect();
        crit.push(CriticalRun {
            queue_ms: cst - cs,
            backlog: waiting.len(),
            overtaken: waiting.iter().filter(|(_, st, _)| *st > cst).count(),
            backlog_wait_p50_ms: Percentiles::of_ms(
                waiting.iter().filter(|w| w.2).map(|(_, st, _)| st - cs),
            )
            .p50,
        });
    }
    let starts =
        |runs: &[TaskRun]| -> Vec<i64> { runs.iter().filter_map(TaskRun::started_ms).collect() };
    let (normal_starts, low_starts) = (starts(normal), starts(low));
    let first = normal_starts
        .iter()
        .chain(&low_starts)
        .min()
        .copied()
        .unwrap_or(0);
    let last_normal = normal_starts.iter().max().copied().unwrap_or(0);
    let in_window = |t: &&i64| **t <= last_normal;
    let low_before = low_starts.iter().filter(in_window).count();
    let all_before = low_before + normal_starts.len();
    let rate = |n: usize, from: i64, to: i64| n as f64 * 1000.0 / ((to - from).max(1) as f64);
    let crit_from = critical
        .iter()
        .filter_map(|c| c.scheduled_ms)
        .min()
        .unwrap_or(0);
    let crit_to = critical
        .iter()
        .filter_map(TaskRun::started_ms)
        .max()
        .unwrap_or(0);
    let during = normal_starts
        .iter()
        .filter(|t| (crit_from..=crit_to).contains(*t))
        .count();
    let low_during = low_starts
        .iter()
        .filter(|t| (crit_from..=crit_to).contains(*t))
        .count();
    Ok(PriorityFigures {
        critical_queue: Percentiles::of_ms(crit.iter().map(|c| c.queue_ms)),
        critical: crit,
        normal_queue: Percentiles::of_ms(normal.iter().filter_map(TaskRun::queue_ms)),
        normal_rate_during_critical: rate(during, crit_from, crit_to),
        backlog_rate_during_critical: rate(during + low_during, crit_from, crit_to),
        normal_rate: rate(normal_starts.len(), first, last_normal),
        low_share: low_before as f64 / all_before.max(1) as f64,
        low_before_last_normal: low_before,
        low_total: low.len(),
    })
}

/// Starts per `bucket_ms` of normal, low and critical tasks, from a second
/// before the first critical task was scheduled to a second after the last
/// one started: what the worker was doing while critical work arrived.
pub fn timeline(
    normal: &[TaskRun],
    low: &[TaskRun],
    critical: &[TaskRun],
    bucket_ms: i64,
) -> String {
    let from = critical
        .iter()
        .filter_map(|c| c.scheduled_ms)
        .min()
        .unwrap_or(0)
        - 1_000;
    let to = critical
        .iter()
        .filter_map(TaskRun::started_ms)
        .max()
        .unwrap_or(0)
        + 1_000;
    let count = |runs: &[TaskRun], t: i64| {
        runs.iter()
            .filter_map(TaskRun::started_ms)
            .filter(|s| (t..t + bucket_ms).contains(s))
            .count()
    };
    let mut out = String::from("  ms from first critical   normal  low  critical\n");
    let mut t = from;
    while t < to {
        out.push_str(&format!(
            "  {:>22} {:>8} {:>4} {:>9}\n",
            t - from - 1_000,
            count(normal, t),
            count(low, t),
            count(critical, t)
        ));
        t += bucket_ms;
    }
    out
}

/// Starts one workflow of each type in `types`, `concurrency` at a time.
pub async fn start_all(api: &ApiClient, types: &[&str], concurrency: usize) -> Result<Vec<String>> {
    stream::iter(types.iter().enumerate())
        .map(|(i, ty)| async move {
            let v = api.start(ty, json!({ "n": i }), None).await?;
            Ok::<_, anyhow::Error>(v["instance_id"].as_str().context("instance_id")?.to_owned())
        })
        .buffer_unordered(concurrency.max(1))
        .try_collect()
        .await
}

/// Waits until `want` workflows of `types` (summed) completed; fails on any
/// other end or after `deadline`.
pub async fn wait_completed(
    api: &ApiClient,
    types: &[&str],
    want: u64,
    deadline: Duration,
) -> Result<()> {
    let apis = [api.clone()];
    wait_for(
        &format!("{want} workflows of {types:?} complete"),
        deadline,
        Duration::from_millis(100),
        || async {
            let mut done = 0;
            for ty in types {
                let (completed, other) = finished(&apis, ty).await?;
                ensure!(
                    other == 0,
                    "{other} workflow(s) of {ty} ended other than completed"
                );
                done += completed;
            }
            Ok::<_, anyhow::Error>((done >= want).then_some(()))
        },
    )
    .await
}

/// Runs the scenario on `cluster`, which has one orchestrator and no worker
/// yet (the worker it adds is `worker-<n>`, with `--concurrency` of the plan).
pub async fn run(cluster: &mut TestCluster, plan: &PriorityPlan) -> Result<PriorityFigures> {
    let api = cluster.api();
    for (ty, priority) in [(NORMAL, "normal"), (LOW, "low"), (CRITICAL, "critical")] {
        api.register_definition(&definition(ty, priority, plan.task_ms))
            .await?;
    }
    // Low workflows interleaved with the normal ones.
    let total = plan.normal + plan.low;
    let types: Vec<&str> = (0..total)
        .map(|i| {
            if (i + 1) * plan.low / total != i * plan.low / total {
                LOW
            } else {
                NORMAL
            }
        })
        .collect();
    let t0 = Instant::now();
    start_all(&api, &types, plan.start_concurrency).await?;
    let bootstrap = cluster.bootstrap();
    let topics = weft_shared::Topics::default();
    wait_for(
        "every normal and low dispatch is on its task topic",
        plan.deadline,
        Duration::from_millis(200),
        || async {
            let mut queued = 0;
            for ty in [NORMAL, LOW] {
                queued += crate::broker::high_watermarks(&bootstrap, &topics.tasks(ty))
                    .await?
                    .iter()
                    .sum::<i64>();
            }
            Ok::<_, anyhow::Error>((queued >= total as i64).then_some(()))
        },
    )
    .await?;
    println!(
        "  {total} normal and low workflows queued in {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    let concurrency = plan.worker_concurrency.to_string();
    cluster
        .add_worker_with(["--concurrency", concurrency.as_str()])
        .await?;
    wait_completed(&api, &[NORMAL, LOW], total as u64 / 10, plan.deadline).await?;
    for _ in 0..plan.critical {
        start_all(&api, &[CRITICAL], 1).await?;
        tokio::time::sleep(plan.critical_gap).await;
    }
    wait_completed(
        &api,
        &[NORMAL, LOW, CRITICAL],
        (total + plan.critical) as u64,
        plan.deadline,
    )
    .await?;
    println!(
        "  all {} workflows completed {:.1} s after the first start",
        total + plan.critical,
        t0.elapsed().as_secs_f64()
    );
    let read = |ty: &str| topic_runs(&bootstrap, ty, Duration::from_secs(120));
    let (normal, low, crit) = (read(NORMAL)?, read(LOW)?, read(CRITICAL)?);
    ensure!(
        normal.len() == plan.normal && low.len() == plan.low && crit.len() == plan.critical,
        "the events topics hold {} normal, {} low and {} critical tasks, not {}, {} and {}",
        normal.len(),
        low.len(),
        crit.len(),
        plan.normal,
        plan.low,
        plan.critical
    );
    print!("{}", timeline(&normal, &low, &crit, 250));
    figures(&normal, &low, &crit)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(id: &str, scheduled: i64, started: i64) -> TaskRun {
        TaskRun {
            instance_id: id.into(),
            task: "work".into(),
            scheduled_ms: Some(scheduled),
            starts: vec![("worker-0".into(), started)],
            completed_ms: Some(started + 5),
            completed_by: Some("worker-0".into()),
        }
    }

    #[test]
    fn a_critical_task_is_measured_against_the_backlog_it_arrived_behind() {
        // Ten normal tasks queued at 0, started at 100, 200, …, 1000; a low
        // one started at 1100; a critical one scheduled at 150, started at 160.
        let normal: Vec<_> = (1..=10)
            .map(|i| run(&format!("n{i}"), 0, i * 100))
            .collect();
        let low = [run("l", 0, 1100)];
        let critical = [run("c", 150, 160)];
        let f = figures(&normal, &low, &critical).unwrap();
        let c = &f.critical[0];
        assert_eq!(c.queue_ms, 10);
        assert_eq!(
            c.backlog, 10,
            "nine normal and the low one still waited at 150"
        );
        assert_eq!(c.overtaken, 10);
        // Normal starts 200..=1000 after 150: 50..850, median 450.
        assert_eq!(c.backlog_wait_p50_ms, 450.0);
        assert_eq!(
            f.low_before_last_normal, 0,
            "the low task ran after every normal one"
        );
        assert_eq!(f.low_share, 0.0);
        assert_eq!(f.normal_queue.p50, 500.0);
    }
}
