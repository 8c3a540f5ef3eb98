//! The workflow-orchestration protocols of the reference specification as
//! async Rust traits, with their implementations:
//!
//! | trait | implementations |
//! |---|---|
//! | [`WorkflowEventBus`] (publish, state changes, subscriptions, task coordination, replay) | [`KafkaEventBus`] (rdkafka: one producer, one `StreamConsumer` per subscription), [`InMemoryEventBus`] |
//! | [`WorkflowEventHandler`] (what a subscription or a replay calls) | any type, or a closure through [`handler_fn`] |
//! | [`WorkflowPersistence`] (snapshots, events, reconstruction, queries) | [`RocksPersistence`] (over the orchestrator's [`Store`](crate::store::Store)), [`InMemoryPersistence`] |
//! | [`WorkflowNodeRegistry`] (registration, heartbeats, capable nodes, task assignment) | [`KafkaNodeRegistry`] (the compacted node registry topic, read by one follower), [`InMemoryNodeRegistry`] |
//!
//! One conformance suite (`conformance`, compiled for tests and with the
//! `conformance` feature) holds the behaviour every implementation must have;
//! the unit tests run it against each implementation here (Kafka on
//! librdkafka's mock cluster) and `integration-tests/tests/protocol.rs` runs the
//! bus and registry suites against a real broker.

mod bus;
mod kafka;
mod memory_bus;
mod memory_persistence;
mod persistence;
mod registry;
mod registry_kafka;
mod registry_memory;
mod registry_view;
mod rocks;

#[cfg(any(test, feature = "conformance"))]
pub mod conformance;
#[cfg(test)]
mod tests;

use std::future::Future;
use std::sync::Arc;

use async_trait::async_trait;
use weft_shared::{DataMap, WorkflowEvent};

pub use bus::{state_change_event, Subscription, WorkflowEventBus};
pub use kafka::KafkaEventBus;
pub use memory_bus::{InMemoryEventBus, Record};
pub use memory_persistence::InMemoryPersistence;
pub use persistence::WorkflowPersistence;
pub use registry::{
    capable, choose, Liveness, NodeMetadata, NodeView, WorkflowNodeRegistry, IN_FLIGHT, WORKER_ROLE,
};
pub use registry_kafka::{KafkaNodeRegistry, RecordObserver};
pub use registry_memory::InMemoryNodeRegistry;
pub use registry_view::NodeTable;
pub use rocks::RocksPersistence;

/// Protocol errors.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Store(#[from] crate::store::Error),
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error(transparent)]
    Topics(#[from] weft_shared::kafka::Error),
    #[error("cannot fold the event into its instance: {0}")]
    Fold(#[from] weft_shared::fsm::EvolveError),
    #[error("invalid event: {0}")]
    InvalidEvent(String),
    #[error("event {seq} of instance {instance} is already stored with other content")]
    Conflict { instance: String, seq: u64 },
    #[error("invalid node registration: {0}")]
    InvalidNode(String),
    #[error("{0}")]
    InvalidTask(String),
    #[error("{0}")]
    Other(String),
}

pub type Result<T> = std::result::Result<T, Error>;

/// What a handler returns; an error is logged by the caller and does not stop
/// a subscription.
pub type HandlerResult = std::result::Result<(), Box<dyn std::error::Error + Send + Sync>>;

/// Handles workflow events (the protocol's `ProtocolWorkflowEventHandler`).
/// `context` says where the event came from: `source` (`subscription` or
/// `replay`), and for Kafka records `topic`, `partition`, `offset`, `group_id`.
#[async_trait]
pub trait WorkflowEventHandler: Send + Sync {
    async fn handle(&self, event: &WorkflowEvent, context: &DataMap) -> HandlerResult;
}

/// A handler that calls `f` with a copy of each event and its context.
pub fn handler_fn<F, Fut>(f: F) -> Arc<dyn WorkflowEventHandler>
where
    F: Fn(WorkflowEvent, DataMap) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = HandlerResult> + Send + 'static,
{
    Arc::new(FnHandler(f))
}

struct FnHandler<F>(F);

#[async_trait]
impl<F, Fut> WorkflowEventHandler for FnHandler<F>
where
    F: Fn(WorkflowEvent, DataMap) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = HandlerResult> + Send + 'static,
{
    async fn handle(&self, event: &WorkflowEvent, context: &DataMap) -> HandlerResult {
        (self.0)(event.clone(), context.clone()).await
    }
}

/// Calls `handler`, logging (not propagating) its failure.
pub(crate) async fn deliver(
    handler: &dyn WorkflowEventHandler,
    event: &WorkflowEvent,
    context: &DataMap,
) {
    if let Err(e) = handler.handle(event, context).await {
        tracing::warn!(
            workflow_type = %event.workflow_type,
            instance_id = %event.instance_id,
            event_type = %event.event_type,
            seq = event.sequence_number,
            error = %e,
            "workflow event handler failed"
        );
    }
}

/// The events of `records` (decoded, undecodable ones skipped) that belong to
/// `instance` with a sequence number in `from..=to`, one per sequence number
/// (the first copy), in sequence order: what a replay from a log returns.
pub(crate) fn sequenced(
    events: impl IntoIterator<Item = WorkflowEvent>,
    instance: weft_shared::ids::InstanceId,
    from: u64,
    to: Option<u64>,
) -> Vec<WorkflowEvent> {
    let mut by_seq = std::collections::BTreeMap::new();
    for e in events {
        let in_range =
            e.sequence_number >= from.max(1) && to.is_none_or(|t| e.sequence_number <= t);
        if e.instance_id == instance && in_range {
            by_seq.entry(e.sequence_number).or_insert(e);
        }
    }
    by_seq.into_values().collect()
}
