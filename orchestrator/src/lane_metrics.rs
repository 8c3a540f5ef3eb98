//! Per-lane metrics (see ADR 0022): for every lane the registered definitions
//! name (each type's default and urgent lanes, and every constrained one),
//! `weft_lane_lag_records{workflow_type, lane}` — records of the lane's topic
//! the workers' group has not committed yet, its queue depth — and
//! `weft_lane_capable_workers{workflow_type, lane}` — live workers the node
//! registry says meet the lane. Recomputed every [`EVERY`] by any replica; a
//! lane whose topic does not exist yet is left out.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use prometheus::{IntGaugeVec, Opts, Registry as Prometheus};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::watch;
use weft_shared::config::KafkaSettings;
use weft_shared::kafka::{client_config, Role};
use weft_shared::lanes::Requirements;
use weft_shared::Topics;

use crate::definitions::Registry;
use crate::protocol::WorkflowNodeRegistry;

/// Records of a lane not committed by the workers' group.
pub const LANE_LAG: &str = "weft_lane_lag_records";
/// Live workers able to serve a lane.
pub const LANE_CAPABLE_WORKERS: &str = "weft_lane_capable_workers";
/// How often the lanes are measured.
pub const EVERY: Duration = Duration::from_secs(10);
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// The two gauges, registered in `prometheus`.
pub struct LaneGauges {
    lag: IntGaugeVec,
    capable: IntGaugeVec,
}

impl LaneGauges {
    pub fn new(prometheus: &Prometheus) -> Self {
        let gauge = |name: &str, help: &str| {
            let g = IntGaugeVec::new(Opts::new(name, help), &["workflow_type", "lane"])
                .expect("a valid gauge");
            prometheus
                .register(Box::new(g.clone()))
                .expect("lane gauges are registered once");
            g
        };
        Self {
            lag: gauge(
                LANE_LAG,
                "records of a task lane the workers' group has not committed yet (its queue depth)",
            ),
            capable: gauge(
                LANE_CAPABLE_WORKERS,
                "live workers whose capabilities and resources meet a task lane",
            ),
        }
    }
}

/// The lane label of `req`: `default`, `urgent`, or the topic's tokens.
fn lane_label(req: &Requirements) -> String {
    match req.suffix() {
        s if s.is_empty() => "default".to_owned(),
        s => s,
    }
}

/// Keeps the gauges up to date until `stop` turns true.
pub async fn run(
    gauges: LaneGauges,
    registry: Arc<Registry>,
    nodes: Arc<dyn WorkflowNodeRegistry>,
    settings: KafkaSettings,
    worker_group: String,
    topics: Topics,
    mut stop: watch::Receiver<bool>,
) {
    let mut cfg = client_config(&settings, Role::Consumer);
    cfg.set("group.id", &worker_group);
    let consumer: BaseConsumer = match cfg.create() {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "cannot create the lane metrics consumer; no lane metrics");
            return;
        }
    };
    let consumer = Arc::new(consumer);
    loop {
        let catalog = registry.catalog();
        let mut lanes: BTreeSet<(String, Requirements)> = BTreeSet::new();
        for ty in catalog.types() {
            let urgent = Requirements {
                urgent: true,
                ..Requirements::default()
            };
            lanes.insert((ty.to_owned(), Requirements::default()));
            lanes.insert((ty.to_owned(), urgent));
            for def in catalog.versions(ty) {
                for task in &def.tasks {
                    if let Ok(req) = Requirements::of_task(task) {
                        lanes.insert((ty.to_owned(), req));
                    }
                }
            }
        }
        for (ty, req) in &lanes {
            let label = lane_label(req);
            let caps: Vec<String> = req.capabilities.iter().cloned().collect();
            if let Ok(found) = nodes.find_capable_nodes(&caps, &req.resources, &[]).await {
                let workers = found.iter().filter(|n| n.record.role == "worker").count();
                gauges
                    .capable
                    .with_label_values(&[ty, &label])
                    .set(workers as i64);
            }
            let topic = topics.lane(ty, req);
            let c = consumer.clone();
            let lag = tokio::task::spawn_blocking(move || lag_of(&c, &topic))
                .await
                .ok()
                .flatten();
            if let Some(lag) = lag {
                gauges.lag.with_label_values(&[ty, &label]).set(lag);
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(EVERY) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

/// High watermark minus the group's committed offset (or the low watermark
/// when it committed none), summed over the topic's partitions.
fn lag_of(consumer: &BaseConsumer, topic: &str) -> Option<i64> {
    let md = consumer.fetch_metadata(Some(topic), CALL_TIMEOUT).ok()?;
    let t = md.topics().first().filter(|t| t.error().is_none())?;
    let mut tpl = TopicPartitionList::new();
    for p in t.partitions() {
        tpl.add_partition(topic, p.id());
    }
    let committed = consumer.committed_offsets(tpl, CALL_TIMEOUT).ok()?;
    let mut lag = 0;
    for e in committed.elements() {
        let (low, high) = consumer
            .fetch_watermarks(topic, e.partition(), CALL_TIMEOUT)
            .ok()?;
        let done = match e.offset() {
            Offset::Offset(o) => o,
            _ => low,
        };
        lag += (high - done).max(0);
    }
    Some(lag)
}
