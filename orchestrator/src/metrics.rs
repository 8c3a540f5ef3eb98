//! The orchestrator's Prometheus metrics: names are constants here, with units
//! in the name; one registry is served on `/metrics`.

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
};
use weft_shared::fsm::InstanceState;
use weft_shared::{WorkflowEvent, WorkflowEventType};

pub const EVENTS_APPLIED_TOTAL: &str = "weft_orchestrator_events_applied_total";
pub const EVENTS_STALE_TOTAL: &str = "weft_orchestrator_events_stale_total";
pub const EVENTS_REJECTED_TOTAL: &str = "weft_orchestrator_events_rejected_total";
pub const EVENTS_DUPLICATE_TOTAL: &str = "weft_orchestrator_events_duplicate_total";
pub const EVENTS_ORPHAN_TOTAL: &str = "weft_orchestrator_orphan_decisions_total";
pub const DECISIONS_TOTAL: &str = "weft_orchestrator_decisions_total";
pub const DISPATCHES_TOTAL: &str = "weft_orchestrator_dispatches_total";
pub const TIMERS_FIRED_TOTAL: &str = "weft_orchestrator_timers_fired_total";
pub const DLQ_RECORDS_TOTAL: &str = "weft_orchestrator_dlq_records_total";
pub const BATCH_DURATION_SECONDS: &str = "weft_orchestrator_batch_duration_seconds";
pub const WORKFLOWS_FINISHED_TOTAL: &str = "weft_workflows_finished_total";
pub const WORKFLOW_DURATION_SECONDS: &str = "weft_workflow_duration_seconds";
pub const PARTITIONS_OWNED: &str = "weft_orchestrator_partitions_owned";
pub const TRACES_EXPORTED_TOTAL: &str = "weft_orchestrator_traces_exported_total";
pub const TRACE_EXPORT_FAILURES_TOTAL: &str = "weft_orchestrator_trace_export_failures_total";
pub const OFFSET_GAPS_TOTAL: &str = "weft_orchestrator_offset_gaps_total";
pub const PROCESSOR_RESTARTS_TOTAL: &str = "weft_orchestrator_processor_restarts_total";
pub const FORWARDED_TOTAL: &str = "weft_orchestrator_records_forwarded_total";
pub const UNPUBLISHABLE_TOTAL: &str = "weft_orchestrator_unpublishable_records_total";
pub const DISPATCHES_WITHHELD_TOTAL: &str = "weft_orchestrator_dispatches_withheld_total";
pub const BATCH_RECORDS: &str = "weft_orchestrator_batch_records";
pub const FLIGHTS_IN_AIR: &str = "weft_orchestrator_publish_flights";

/// The `state` label of [`WORKFLOWS_FINISHED_TOTAL`] and
/// [`WORKFLOW_DURATION_SECONDS`] for an event that ends a workflow, `None` for
/// any other event. A saga's end is its own label: `compensated`, or
/// `compensation_failed` (the workflow's state is then `failed`).
pub fn terminal_state_label(event_type: WorkflowEventType) -> Option<&'static str> {
    use WorkflowEventType as T;
    match event_type {
        T::WorkflowCompleted => Some("completed"),
        T::WorkflowFailed => Some("failed"),
        T::WorkflowCancelled => Some("cancelled"),
        T::WorkflowTimeout => Some("timeout"),
        T::CompensationCompleted => Some("compensated"),
        T::CompensationFailed => Some("compensation_failed"),
        _ => None,
    }
}

/// Every metric of the orchestrator.
pub struct Metrics {
    pub registry: Registry,
    pub applied: IntCounter,
    pub stale: IntCounter,
    pub rejected: IntCounter,
    pub duplicates: IntCounter,
    pub orphans: IntCounter,
    pub decisions: IntCounter,
    pub dispatches: IntCounter,
    pub timers_fired: IntCounter,
    pub dlq: IntCounter,
    pub batch_seconds: Histogram,
    pub finished_total: IntCounterVec,
    pub workflow_seconds: HistogramVec,
    pub partitions_owned: IntGauge,
    pub traces_exported: IntCounter,
    pub trace_export_failures: IntCounter,
    /// Records that did not follow the stored offset (the processor re-sought).
    pub offset_gaps: IntCounter,
    /// Partition processors restarted after a failure while still assigned.
    pub processor_restarts: IntCounter,
    /// Inputs forwarded from the wrong partition to the one their key hashes to.
    pub forwarded: IntCounter,
    /// Records the broker refused for good (dead-lettered instead).
    pub unpublishable: IntCounter,
    /// Dispatches not published because their attempt had reported or their instance ended.
    pub dispatches_withheld: IntCounter,
    /// Records folded per batch.
    pub batch_records: Histogram,
    /// Pipelined publishes not yet acknowledged by the broker, over all partitions.
    pub flights: IntGauge,
}

fn counter(registry: &Registry, name: &str, help: &str) -> IntCounter {
    let c = IntCounter::new(name, help).expect("valid metric");
    registry
        .register(Box::new(c.clone()))
        .expect("metric registered once");
    c
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let batch_seconds = Histogram::with_opts(
            HistogramOpts::new(
                BATCH_DURATION_SECONDS,
                "time to apply and publish one batch of records",
            )
            .buckets(prometheus::exponential_buckets(0.0005, 2.0, 16).expect("buckets")),
        )
        .expect("valid metric");
        registry
            .register(Box::new(batch_seconds.clone()))
            .expect("registered once");
        let finished_total = IntCounterVec::new(
            Opts::new(
                WORKFLOWS_FINISHED_TOTAL,
                "workflows that reached a terminal state, by type and state",
            ),
            &["workflow_type", "state"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(finished_total.clone()))
            .expect("registered once");
        let workflow_seconds = HistogramVec::new(
            HistogramOpts::new(
                WORKFLOW_DURATION_SECONDS,
                "created to terminal, by type and state",
            )
            .buckets(prometheus::exponential_buckets(0.01, 2.0, 18).expect("buckets")),
            &["workflow_type", "state"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(workflow_seconds.clone()))
            .expect("registered once");
        let partitions_owned =
            IntGauge::new(PARTITIONS_OWNED, "event partitions this orchestrator owns")
                .expect("valid metric");
        registry
            .register(Box::new(partitions_owned.clone()))
            .expect("registered once");
        let batch_records = Histogram::with_opts(
            HistogramOpts::new(BATCH_RECORDS, "records folded per batch")
                .buckets(prometheus::exponential_buckets(1.0, 2.0, 12).expect("buckets")),
        )
        .expect("valid metric");
        registry
            .register(Box::new(batch_records.clone()))
            .expect("registered once");
        let flights = IntGauge::new(
            FLIGHTS_IN_AIR,
            "pipelined publishes the broker has not acknowledged yet",
        )
        .expect("valid metric");
        registry
            .register(Box::new(flights.clone()))
            .expect("registered once");
        Self {
            batch_records,
            flights,
            applied: counter(
                &registry,
                EVENTS_APPLIED_TOTAL,
                "input events applied to a workflow",
            ),
            stale: counter(
                &registry,
                EVENTS_STALE_TOTAL,
                "input events ignored as stale",
            ),
            rejected: counter(&registry, EVENTS_REJECTED_TOTAL, "input events rejected"),
            duplicates: counter(
                &registry,
                EVENTS_DUPLICATE_TOTAL,
                "records dropped as already applied",
            ),
            orphans: counter(
                &registry,
                EVENTS_ORPHAN_TOTAL,
                "decision records this orchestrator did not derive",
            ),
            decisions: counter(&registry, DECISIONS_TOTAL, "events derived by the decider"),
            dispatches: counter(&registry, DISPATCHES_TOTAL, "task attempts dispatched"),
            timers_fired: counter(
                &registry,
                TIMERS_FIRED_TOTAL,
                "durable timer fires published",
            ),
            dlq: counter(
                &registry,
                DLQ_RECORDS_TOTAL,
                "records sent to a dead-letter topic",
            ),
            traces_exported: counter(
                &registry,
                TRACES_EXPORTED_TOTAL,
                "workflow traces pushed to the OTLP collector",
            ),
            trace_export_failures: counter(
                &registry,
                TRACE_EXPORT_FAILURES_TOTAL,
                "workflow traces not pushed (collector error or queue full)",
            ),
            offset_gaps: counter(
                &registry,
                OFFSET_GAPS_TOTAL,
                "records that did not follow the stored offset; the partition re-sought",
            ),
            processor_restarts: counter(
                &registry,
                PROCESSOR_RESTARTS_TOTAL,
                "partition processors restarted after a failure",
            ),
            forwarded: counter(
                &registry,
                FORWARDED_TOTAL,
                "inputs forwarded to the partition their key hashes to",
            ),
            unpublishable: counter(
                &registry,
                UNPUBLISHABLE_TOTAL,
                "derived records the broker refused for good, dead-lettered",
            ),
            dispatches_withheld: counter(
                &registry,
                DISPATCHES_WITHHELD_TOTAL,
                "dispatches not published: the attempt had reported or the instance ended",
            ),
            batch_seconds,
            finished_total,
            workflow_seconds,
            partitions_owned,
            registry,
        }
    }

    /// Counts `event` in [`WORKFLOWS_FINISHED_TOTAL`] and observes the
    /// workflow's duration (created to `event.timestamp_ms`) in
    /// [`WORKFLOW_DURATION_SECONDS`] when `event` ends a workflow
    /// ([`terminal_state_label`]: completed, failed, cancelled, timeout,
    /// compensated, compensation_failed); does nothing for any other event.
    /// Returns whether it counted.
    ///
    /// Call it once for every event a decision appends, with the decision's
    /// resulting state (for `created_at_ms`), and only for decisions made live:
    /// a replay (restart, rebuild, rebalance) re-derives events that were
    /// counted when they were first decided.
    pub fn workflow_ended(
        &self,
        ty: &str,
        event: &WorkflowEvent,
        state: Option<&InstanceState>,
    ) -> bool {
        let Some(label) = terminal_state_label(event.event_type) else {
            return false;
        };
        self.count_finished(ty, label, event.timestamp_ms, state);
        true
    }

    /// Records a workflow ending with the event named `event_type` at `at_ms`
    /// (the labels of [`terminal_state_label`]; an event type outside that
    /// table is counted under its name without the `workflow.` prefix).
    /// Prefer [`workflow_ended`](Self::workflow_ended).
    pub fn finished(&self, ty: &str, event_type: &str, at_ms: i64, state: Option<&InstanceState>) {
        let label = event_type
            .parse::<WorkflowEventType>()
            .ok()
            .and_then(terminal_state_label)
            .unwrap_or_else(|| event_type.trim_start_matches("workflow."));
        self.count_finished(ty, label, at_ms, state);
    }

    fn count_finished(&self, ty: &str, label: &str, at_ms: i64, state: Option<&InstanceState>) {
        self.finished_total.with_label_values(&[ty, label]).inc();
        if let Some(s) = state {
            let secs = (at_ms - s.created_at_ms).max(0) as f64 / 1000.0;
            self.workflow_seconds
                .with_label_values(&[ty, label])
                .observe(secs);
        }
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = String::new();
        let encoder = prometheus::TextEncoder::new();
        let _ = encoder.encode_utf8(&self.registry.gather(), &mut buf);
        buf
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use weft_shared::ids::InstanceId;

    use super::*;

    fn ending(event_type: WorkflowEventType, at_ms: i64) -> WorkflowEvent {
        WorkflowEvent::new(event_type, "t", InstanceId::random(), "k", at_ms)
    }

    fn finished(m: &Metrics, label: &str) -> u64 {
        m.finished_total.with_label_values(&["t", label]).get()
    }

    #[test]
    fn every_terminal_event_is_counted_under_its_own_state() {
        use WorkflowEventType as T;
        let m = Metrics::new();
        let ends = [
            (T::WorkflowCompleted, "completed"),
            (T::WorkflowFailed, "failed"),
            (T::WorkflowCancelled, "cancelled"),
            (T::WorkflowTimeout, "timeout"),
            (T::CompensationCompleted, "compensated"),
            (T::CompensationFailed, "compensation_failed"),
        ];
        for (event_type, label) in ends {
            assert!(m.workflow_ended("t", &ending(event_type, 2_500), None));
            assert_eq!(finished(&m, label), 1, "{label}");
        }
        for event_type in [
            T::WorkflowCreated,
            T::WorkflowStarted,
            T::WorkflowRetrying,
            T::CompensationStarted,
            T::TaskFailed,
            T::StateTransitioned,
        ] {
            assert!(!m.workflow_ended("t", &ending(event_type, 1), None));
        }
        let text = m.render();
        for (_, label) in ends {
            assert!(
                text.contains(&format!(
                    "{WORKFLOWS_FINISHED_TOTAL}{{state=\"{label}\",workflow_type=\"t\"}} 1"
                )),
                "{label} missing:\n{text}"
            );
        }
        // The legacy entry point labels a saga's end the same way.
        m.finished("t", "compensation.failed", 1, None);
        assert_eq!(finished(&m, "compensation_failed"), 2);
    }
}
