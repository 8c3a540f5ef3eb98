//! The orchestrator's Prometheus metrics: names are constants here, with units
//! in the name; one registry is served on `/metrics`.

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
};
use weft_shared::fsm::InstanceState;

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
        Self {
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

    /// Records a workflow reaching `state` at `at_ms`.
    pub fn finished(&self, ty: &str, event_type: &str, at_ms: i64, state: Option<&InstanceState>) {
        let label = event_type.trim_start_matches("workflow.");
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
