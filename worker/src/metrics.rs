//! Prometheus metrics of one worker, in a registry of its own (so several
//! workers in one process, as in tests, do not collide). Names carry their
//! unit and are the constants below. What each attempt used (ADR 0023) is in
//! histograms by workflow type, task, handler and scope — never by instance.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};
use weft_shared::usage::{Usage, CPU_MS, PEAK_RSS_KB, WALL_MS};

/// Task attempts finished, by handler and outcome (`completed`, `failed`, `abandoned`).
pub const TASKS_TOTAL: &str = "weft_worker_tasks_total";
/// Handler run time, by handler.
pub const TASK_DURATION_SECONDS: &str = "weft_worker_task_duration_seconds";
/// Task attempts running now.
pub const IN_FLIGHT_TASKS: &str = "weft_worker_in_flight_tasks";
/// Task records sent to a DLQ because they could not be decoded.
pub const DLQ_RECORDS_TOTAL: &str = "weft_worker_dlq_records_total";

/// Dispatches dropped because this worker already ran or is running that attempt.
pub const DUPLICATE_DISPATCHES_TOTAL: &str = "weft_worker_duplicate_dispatches_total";
/// Control records applied, by action and whether the attempt was running here.
pub const CONTROL_RECORDS_TOTAL: &str = "weft_worker_control_records_total";
/// Task heartbeats published for running attempts.
pub const TASK_HEARTBEATS_TOTAL: &str = "weft_worker_task_heartbeats_total";
/// Exactly-once results waiting for earlier records of their partition.
pub const RESULTS_WAITING: &str = "weft_worker_results_waiting";
/// Consumer group rebalances this worker took part in, by kind (`assign`, `revoke`).
pub const REBALANCES_TOTAL: &str = "weft_worker_rebalances_total";
/// Attempts stopped because their partition was revoked.
pub const REVOKED_ATTEMPTS_TOTAL: &str = "weft_worker_revoked_attempts_total";

/// Time received task records waited for capacity here, by class (`urgent`, `normal`).
pub const READY_WAIT_SECONDS: &str = "weft_worker_ready_wait_seconds";
/// Resources in use, by resource (`slots`, `cpu`, …).
pub const RESOURCES_IN_USE: &str = "weft_worker_resources_in_use";

/// CPU time an attempt used, by workflow type, task, handler and usage scope.
pub const TASK_CPU_SECONDS: &str = "weft_worker_task_cpu_seconds";
/// Wall time of an attempt's handler, by workflow type, task, handler and scope.
pub const TASK_WALL_SECONDS: &str = "weft_worker_task_wall_seconds";
/// Peak resident memory of an attempt, by workflow type, task, handler and scope.
pub const TASK_PEAK_MEMORY_BYTES: &str = "weft_worker_task_peak_memory_bytes";
/// Labels of the usage histograms.
const USAGE_LABELS: [&str; 4] = ["workflow_type", "task", "handler", "scope"];
/// Buckets of the time histograms, in seconds.
const SECONDS_BUCKETS: [f64; 11] = [
    0.001, 0.005, 0.025, 0.1, 0.25, 1.0, 2.5, 10.0, 30.0, 120.0, 600.0,
];

/// Outcome label: the result was published as `task.completed`.
pub const OUTCOME_COMPLETED: &str = "completed";
/// Outcome label: the result was published as `task.failed`.
pub const OUTCOME_FAILED: &str = "failed";
/// Outcome label: the attempt was given up without a result (shutdown), for another worker to redo.
pub const OUTCOME_ABANDONED: &str = "abandoned";
/// Outcome label: a control record cancelled the attempt (running or not yet started); nothing published.
pub const OUTCOME_CANCELLED: &str = "cancelled";

/// The worker's metrics.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    pub tasks_total: IntCounterVec,
    pub task_duration_seconds: HistogramVec,
    pub in_flight_tasks: IntGauge,
    pub dlq_records_total: IntCounter,
    pub duplicate_dispatches_total: IntCounter,
    pub control_records_total: IntCounterVec,
    pub task_heartbeats_total: IntCounter,
    pub results_waiting: IntGauge,
    pub rebalances_total: IntCounterVec,
    pub revoked_attempts_total: IntCounter,
    pub ready_wait_seconds: HistogramVec,
    pub resources_in_use: IntGaugeVec,
    pub task_cpu_seconds: HistogramVec,
    pub task_wall_seconds: HistogramVec,
    pub task_peak_memory_bytes: HistogramVec,
}

/// A usage histogram by [`USAGE_LABELS`].
fn usage_histogram(name: &str, help: &str, buckets: Vec<f64>) -> HistogramVec {
    HistogramVec::new(
        HistogramOpts::new(name, help).buckets(buckets),
        &USAGE_LABELS,
    )
    .expect("valid metric")
}

impl Metrics {
    pub fn new() -> Self {
        let tasks_total = IntCounterVec::new(
            Opts::new(
                TASKS_TOTAL,
                "Task attempts finished, by handler and outcome.",
            ),
            &["handler", "outcome"],
        )
        .expect("valid metric");
        let task_duration_seconds = HistogramVec::new(
            HistogramOpts::new(TASK_DURATION_SECONDS, "Time handlers ran, in seconds.")
                .buckets(SECONDS_BUCKETS.to_vec()),
            &["handler"],
        )
        .expect("valid metric");
        let in_flight_tasks =
            IntGauge::new(IN_FLIGHT_TASKS, "Task attempts running now.").expect("valid metric");
        let dlq_records_total = IntCounter::new(
            DLQ_RECORDS_TOTAL,
            "Task records sent to a DLQ because they could not be decoded.",
        )
        .expect("valid metric");
        let duplicate_dispatches_total = IntCounter::new(
            DUPLICATE_DISPATCHES_TOTAL,
            "Dispatches dropped because this worker already ran or is running that attempt.",
        )
        .expect("valid metric");
        let control_records_total = IntCounterVec::new(
            Opts::new(
                CONTROL_RECORDS_TOTAL,
                "Control records applied, by action and whether the attempt was running here.",
            ),
            &["action", "running"],
        )
        .expect("valid metric");
        let task_heartbeats_total = IntCounter::new(
            TASK_HEARTBEATS_TOTAL,
            "Task heartbeats published for running attempts.",
        )
        .expect("valid metric");
        let results_waiting = IntGauge::new(
            RESULTS_WAITING,
            "Exactly-once results waiting for earlier records of their partition.",
        )
        .expect("valid metric");
        let rebalances_total = IntCounterVec::new(
            Opts::new(
                REBALANCES_TOTAL,
                "Consumer group rebalances this worker took part in, by kind.",
            ),
            &["kind"],
        )
        .expect("valid metric");
        let revoked_attempts_total = IntCounter::new(
            REVOKED_ATTEMPTS_TOTAL,
            "Attempts stopped because their partition was revoked.",
        )
        .expect("valid metric");
        let ready_wait_seconds = HistogramVec::new(
            HistogramOpts::new(
                READY_WAIT_SECONDS,
                "Time received task records waited for capacity on this worker, by class.",
            )
            .buckets(vec![0.001, 0.005, 0.025, 0.1, 0.25, 1.0, 2.5, 10.0, 60.0]),
            &["class"],
        )
        .expect("valid metric");
        let resources_in_use = IntGaugeVec::new(
            Opts::new(
                RESOURCES_IN_USE,
                "Resources taken by running tasks, by resource.",
            ),
            &["resource"],
        )
        .expect("valid metric");
        let task_cpu_seconds = usage_histogram(
            TASK_CPU_SECONDS,
            "CPU time (user + system) task attempts used, in seconds (scope child: the handler's child process; process: the whole worker process while it ran).",
            SECONDS_BUCKETS.to_vec(),
        );
        let task_wall_seconds = usage_histogram(
            TASK_WALL_SECONDS,
            "Wall time of task attempts' handlers, in seconds.",
            SECONDS_BUCKETS.to_vec(),
        );
        let task_peak_memory_bytes = usage_histogram(
            TASK_PEAK_MEMORY_BYTES,
            "Peak resident memory of task attempts, in bytes (scope process: the worker process's high-water mark).",
            // 1 MiB to 16 GiB, ×4.
            prometheus::exponential_buckets(1_048_576.0, 4.0, 8).expect("valid buckets"),
        );
        let registry = Registry::new();
        for collector in [
            Box::new(tasks_total.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(task_duration_seconds.clone()),
            Box::new(in_flight_tasks.clone()),
            Box::new(dlq_records_total.clone()),
            Box::new(duplicate_dispatches_total.clone()),
            Box::new(control_records_total.clone()),
            Box::new(task_heartbeats_total.clone()),
            Box::new(results_waiting.clone()),
            Box::new(rebalances_total.clone()),
            Box::new(revoked_attempts_total.clone()),
            Box::new(ready_wait_seconds.clone()),
            Box::new(resources_in_use.clone()),
            Box::new(task_cpu_seconds.clone()),
            Box::new(task_wall_seconds.clone()),
            Box::new(task_peak_memory_bytes.clone()),
        ] {
            registry
                .register(collector)
                .expect("metric names are unique");
        }
        Self {
            registry,
            tasks_total,
            task_duration_seconds,
            in_flight_tasks,
            dlq_records_total,
            duplicate_dispatches_total,
            control_records_total,
            task_heartbeats_total,
            results_waiting,
            rebalances_total,
            revoked_attempts_total,
            ready_wait_seconds,
            resources_in_use,
            task_cpu_seconds,
            task_wall_seconds,
            task_peak_memory_bytes,
        }
    }

    /// Records what one attempt of `task` of `workflow_type` used: each figure
    /// it measured (a child that ended before its memory was sampled has no
    /// peak; nothing is guessed). `handler` is the label the other task
    /// metrics use (a registered handler, else `unknown`).
    pub fn observe_usage(&self, workflow_type: &str, task: &str, handler: &str, usage: &Usage) {
        let scope = if usage.scope.is_empty() {
            "unknown"
        } else {
            usage.scope.as_str()
        };
        let labels = [workflow_type, task, handler, scope];
        for (key, histogram, per_unit) in [
            (CPU_MS, &self.task_cpu_seconds, 1e-3),
            (WALL_MS, &self.task_wall_seconds, 1e-3),
            (PEAK_RSS_KB, &self.task_peak_memory_bytes, 1024.0),
        ] {
            if let Some(v) = usage.resources.get(key) {
                histogram
                    .with_label_values(&labels)
                    .observe(*v as f64 * per_unit);
            }
        }
    }

    /// Records how long a record waited here before it started.
    pub fn observe_ready_wait(&self, urgent: bool, waited: std::time::Duration) {
        let class = if urgent { "urgent" } else { "normal" };
        self.ready_wait_seconds
            .with_label_values(&[class])
            .observe(waited.as_secs_f64());
    }

    /// Counts a finished attempt.
    pub fn finished(&self, handler: &str, outcome: &str) {
        self.tasks_total
            .with_label_values(&[handler, outcome])
            .inc();
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut buf) {
            tracing::warn!(error = %e, "could not encode metrics");
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_metric_by_name() {
        let m = Metrics::new();
        m.finished("noop", OUTCOME_COMPLETED);
        m.task_duration_seconds
            .with_label_values(&["noop"])
            .observe(0.01);
        m.in_flight_tasks.inc();
        m.dlq_records_total.inc();
        m.duplicate_dispatches_total.inc();
        m.control_records_total
            .with_label_values(&["cancel", "true"])
            .inc();
        m.task_heartbeats_total.inc();
        m.rebalances_total.with_label_values(&["assign"]).inc();
        m.revoked_attempts_total.inc();
        m.observe_ready_wait(true, std::time::Duration::from_millis(3));
        m.resources_in_use.with_label_values(&["cpu"]).set(2);
        m.observe_usage(
            "t",
            "a",
            "noop",
            &usage(&[(CPU_MS, 1), (WALL_MS, 1), (PEAK_RSS_KB, 1)], "process"),
        );
        let text = m.render();
        for name in [
            TASKS_TOTAL,
            TASK_DURATION_SECONDS,
            IN_FLIGHT_TASKS,
            DLQ_RECORDS_TOTAL,
            DUPLICATE_DISPATCHES_TOTAL,
            CONTROL_RECORDS_TOTAL,
            TASK_HEARTBEATS_TOTAL,
            RESULTS_WAITING,
            REBALANCES_TOTAL,
            REVOKED_ATTEMPTS_TOTAL,
            READY_WAIT_SECONDS,
            RESOURCES_IN_USE,
            TASK_CPU_SECONDS,
            TASK_WALL_SECONDS,
            TASK_PEAK_MEMORY_BYTES,
        ] {
            assert!(text.contains(name), "{name} missing in:\n{text}");
        }
        assert!(
            text.contains(r#"weft_worker_tasks_total{handler="noop",outcome="completed"} 1"#),
            "{text}"
        );
    }

    fn usage(resources: &[(&str, i64)], scope: &str) -> Usage {
        Usage {
            resources: resources
                .iter()
                .map(|(k, v)| ((*k).to_owned(), *v))
                .collect(),
            metrics: Default::default(),
            scope: scope.into(),
        }
    }

    #[test]
    fn usage_is_observed_in_seconds_and_bytes_by_type_task_handler_and_scope() {
        let m = Metrics::new();
        m.observe_usage(
            "ckpt",
            "burn",
            "shell",
            &usage(
                &[(CPU_MS, 300), (WALL_MS, 400), (PEAK_RSS_KB, 2048)],
                "child",
            ),
        );
        m.observe_usage(
            "ckpt",
            "burn",
            "shell",
            &usage(&[(CPU_MS, 100), (WALL_MS, 200)], "child"),
        );
        m.observe_usage("ckpt", "work", "steps", &usage(&[(WALL_MS, 5)], ""));
        let text = m.render();
        let labels = r#"handler="shell",scope="child",task="burn",workflow_type="ckpt""#;
        for (line, want) in [
            (format!("{TASK_CPU_SECONDS}_count{{{labels}}}"), 2.0),
            (format!("{TASK_CPU_SECONDS}_sum{{{labels}}}"), 0.4),
            (format!("{TASK_WALL_SECONDS}_sum{{{labels}}}"), 0.6),
            // Only the attempt that measured a peak counts.
            (format!("{TASK_PEAK_MEMORY_BYTES}_count{{{labels}}}"), 1.0),
            (
                format!("{TASK_PEAK_MEMORY_BYTES}_sum{{{labels}}}"),
                2048.0 * 1024.0,
            ),
        ] {
            let got: f64 = text
                .lines()
                .find_map(|l| l.strip_prefix(line.as_str()))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or_else(|| panic!("{line} missing in:\n{text}"));
            assert!((got - want).abs() < 1e-9, "{line}: {got}, want {want}");
        }
        // A figure not measured is not observed; an unknown scope says so.
        let work = r#"handler="steps",scope="unknown",task="work",workflow_type="ckpt""#;
        assert!(
            text.contains(&format!("{TASK_WALL_SECONDS}_count{{{work}}} 1")),
            "{text}"
        );
        assert!(
            !text.contains(&format!("{TASK_CPU_SECONDS}_count{{{work}}}")),
            "{text}"
        );
        // No instance id in any label.
        assert!(!text.contains("instance"), "{text}");
    }
}
