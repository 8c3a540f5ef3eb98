//! Node registry heartbeats: every 5 s, and when its assignment changed, the
//! worker publishes its `NodeRecord` (capabilities, capacity, load, active
//! tasks, health, the partitions it holds) to the compacted nodes topic keyed
//! by node id, and a final `draining` record on shutdown.
//! A failed heartbeat is logged, never fatal.

use std::collections::BTreeMap;
use std::time::Duration;

use weft_shared::avro::AvroRecord;
use weft_shared::event::now_ms;
use weft_shared::node::{HealthStatus, NodeRecord};

use crate::consumer::lock;
use crate::execute::Shared;

/// Time between heartbeats.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(5);

/// The node's record as of now.
pub(crate) fn node_record(
    shared: &Shared,
    concurrency: usize,
    health: HealthStatus,
    started_at_ms: i64,
) -> NodeRecord {
    let active_tasks: Vec<String> = lock(&shared.active).iter().cloned().collect();
    let offer = shared.served.offer();
    // Handler names and declared capabilities, plain and `key=value`.
    let mut capabilities = shared.registry.names();
    capabilities.extend(offer.capabilities.iter().cloned());
    capabilities.sort();
    capabilities.dedup();
    let mut capacity_limits = offer.capacity.clone();
    capacity_limits.insert(
        "concurrency".to_owned(),
        i64::try_from(concurrency).unwrap_or(i64::MAX),
    );
    let mut current_load = shared.capacity.in_use();
    for (resource, used) in &current_load {
        shared
            .metrics
            .resources_in_use
            .with_label_values(&[resource])
            .set(*used);
    }
    current_load.insert("in_flight".to_owned(), active_tasks.len() as i64);
    NodeRecord {
        node_id: shared.node_id.clone(),
        role: "worker".to_owned(),
        capabilities,
        capacity_limits,
        current_load,
        active_tasks,
        health,
        labels: BTreeMap::from([("version".to_owned(), env!("CARGO_PKG_VERSION").to_owned())])
            .into_iter()
            .chain(offer.labels.clone())
            .chain(crate::claims::labels(&lock(&shared.assignment)))
            .collect(),
        started_at_ms,
        heartbeat_at_ms: now_ms(),
    }
}

/// Publishes the node's record with `health`; logs a failure.
pub(crate) async fn publish(
    shared: &Shared,
    concurrency: usize,
    health: HealthStatus,
    started_at_ms: i64,
) {
    let record = node_record(shared, concurrency, health, started_at_ms);
    let topic = shared.publisher.topics().nodes();
    let headers = weft_shared::kafka::headers(&[]);
    let sent = shared
        .publisher
        .send(&topic, record.node_id.as_bytes(), &record.encode(), headers)
        .await;
    match sent {
        Ok(()) => {
            tracing::debug!(health = %health, in_flight = record.active_tasks.len(), "heartbeat published")
        }
        Err(e) => tracing::warn!(error = %e, %topic, "could not publish heartbeat"),
    }
}

/// Publishes a heartbeat every [`HEARTBEAT_INTERVAL`], and at once when the
/// assignment changed (other workers learn within moments which partitions
/// it holds), until `shared.stop` fires.
pub(crate) async fn run(shared: std::sync::Arc<Shared>, concurrency: usize, started_at_ms: i64) {
    let mut tick = tokio::time::interval(HEARTBEAT_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = shared.heartbeat_now.notified() => tick.reset(),
            () = shared.stop.cancelled() => return,
        }
        publish(&shared, concurrency, HealthStatus::Healthy, started_at_ms).await;
    }
}
