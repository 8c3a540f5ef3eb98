//! Prometheus metrics of one worker, in a registry of its own (so several
//! workers in one process, as in tests, do not collide). Names carry their
//! unit and are the constants below.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

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
            HistogramOpts::new(TASK_DURATION_SECONDS, "Time handlers ran, in seconds.").buckets(
                vec![
                    0.001, 0.005, 0.025, 0.1, 0.25, 1.0, 2.5, 10.0, 30.0, 120.0, 600.0,
                ],
            ),
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
        ] {
            assert!(text.contains(name), "{name} missing in:\n{text}");
        }
        assert!(
            text.contains(r#"weft_worker_tasks_total{handler="noop",outcome="completed"} 1"#),
            "{text}"
        );
    }
}
