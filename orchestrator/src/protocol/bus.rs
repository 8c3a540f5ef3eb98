//! `WorkflowEventBus` (the protocol's `ProtocolWorkflowEventBus`) and the
//! subscription handle it returns.
//!
//! Semantics every implementation keeps (the conformance suite checks them):
//! events of a workflow type go to its events topic keyed by instance id unless
//! a target topic is given; a subscription delivers the events of its type whose
//! type is in the filter (all when the filter is empty), in topic order, to its
//! handler; a group that never consumed starts at the beginning of the topic, a
//! group that did resumes after what it handled; once `unsubscribe` returns,
//! the handler is not called again. A replay returns the instance's events that
//! carry a sequence number in the range, one per sequence number, in order
//! (records still at sequence 0 — inputs a client or worker produced that no
//! orchestrator has sequenced yet — are not part of a replay by sequence; the
//! orchestrator's [`WorkflowPersistence`](super::WorkflowPersistence) holds the
//! complete sequenced history).

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use weft_shared::event::{now_ms, META_SOURCE_KIND, SOURCE_KIND_DECISION};
use weft_shared::ids::{EventId, InstanceId, TaskId};
use weft_shared::{
    DataMap, TaskDispatch, WorkflowEvent, WorkflowEventType, WorkflowSnapshot, WorkflowState,
};

use super::{Result, WorkflowEventHandler};

/// Publishing, subscribing to and replaying workflow events.
#[async_trait]
pub trait WorkflowEventBus: Send + Sync {
    /// Publishes `event` to its type's events topic (or `target_topic`), keyed
    /// by its instance id; returns once the broker acknowledged it.
    async fn publish_workflow_event(
        &self,
        event: &WorkflowEvent,
        target_topic: Option<&str>,
    ) -> Result<()>;

    /// Publishes a `state.transitioned` event announcing that `instance` went
    /// from `previous` to `new` (`metadata` is merged into its data); returns
    /// the event. It is marked as an orchestrator decision, so an orchestrator
    /// reading it back counts it and leaves the instance's history alone.
    async fn publish_workflow_state_change(
        &self,
        instance: &WorkflowSnapshot,
        previous: WorkflowState,
        new: WorkflowState,
        metadata: Option<&DataMap>,
    ) -> Result<WorkflowEvent> {
        let event = state_change_event(instance, previous, new, metadata);
        self.publish_workflow_event(&event, None).await?;
        Ok(event)
    }

    /// Delivers the events of `workflow_type` whose type is in `event_types`
    /// (every type if empty) to `handler`, as member of consumer group
    /// `group_id`, until the returned subscription is unsubscribed or dropped.
    async fn subscribe_to_workflow_events(
        &self,
        workflow_type: &str,
        event_types: &[WorkflowEventType],
        handler: Arc<dyn WorkflowEventHandler>,
        group_id: &str,
    ) -> Result<Subscription>;

    /// Sends task dispatches to workers: each to its type's tasks topic, or to
    /// the topic `assignments` names for its task id (a node group's queue).
    async fn coordinate_task_execution(
        &self,
        dispatches: &[TaskDispatch],
        assignments: &BTreeMap<TaskId, String>,
    ) -> Result<()>;

    /// The instance's events with a sequence number in `from_seq..=to_seq`
    /// (to the end if `None`), in order, each also handed to `handler` if given.
    async fn replay_events(
        &self,
        workflow_type: &str,
        instance_id: InstanceId,
        from_seq: u64,
        to_seq: Option<u64>,
        handler: Option<Arc<dyn WorkflowEventHandler>>,
    ) -> Result<Vec<WorkflowEvent>>;
}

/// A running subscription: `unsubscribe` stops it and waits until its handler
/// can no longer be called; dropping it stops it without waiting.
pub struct Subscription {
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl Subscription {
    /// Wraps a delivery task that ends when `stop` turns true.
    pub fn new(stop: watch::Sender<bool>, task: JoinHandle<()>) -> Self {
        Self {
            stop,
            task: Some(task),
        }
    }

    /// Whether the delivery task still runs.
    pub fn is_active(&self) -> bool {
        self.task.as_ref().is_some_and(|t| !t.is_finished())
    }

    /// Stops the subscription (committing what was handled) and waits for it.
    pub async fn unsubscribe(mut self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            if let Err(e) = task.await {
                tracing::warn!(error = %e, "subscription task ended abnormally");
            }
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// The `state.transitioned` event [`WorkflowEventBus::publish_workflow_state_change`] publishes.
pub fn state_change_event(
    instance: &WorkflowSnapshot,
    previous: WorkflowState,
    new: WorkflowState,
    metadata: Option<&DataMap>,
) -> WorkflowEvent {
    let key = format!(
        "state-change:{}:{}:{previous}->{new}",
        instance.instance_id, instance.sequence_number
    );
    let mut e = WorkflowEvent::new(
        WorkflowEventType::StateTransitioned,
        instance.workflow_type.clone(),
        instance.instance_id,
        key.clone(),
        now_ms(),
    );
    e.event_id = EventId::derived(&[key.as_bytes()]);
    e.data = metadata.cloned().unwrap_or_default();
    e.data.insert("from".into(), previous.as_str().into());
    e.data.insert("to".into(), new.as_str().into());
    e.data.insert(
        "sequence_number".into(),
        (instance.sequence_number as i64).into(),
    );
    e.metadata
        .insert(META_SOURCE_KIND.into(), SOURCE_KIND_DECISION.into());
    e
}
