//! `WorkflowPersistence` (the protocol's `ProtocolWorkflowPersistence`).
//!
//! Semantics every implementation keeps (the conformance suite checks them):
//! an instance's history is stored one event at a time in sequence order, each
//! folded into the instance's state with `evolve`; storing an event again (same
//! sequence number and content, or an idempotency key already applied) is a
//! no-op answered `false`, other content at a stored sequence number or a gap is
//! an error. A snapshot is kept every `snapshot_every` events; the latest one
//! (stored automatically or saved) is what `load` returns. Reconstruction at a
//! sequence number equals the fold of the history up to it. Queries return
//! instances ordered by (created_at, instance id).

use async_trait::async_trait;
use weft_shared::ids::InstanceId;
use weft_shared::{WorkflowEvent, WorkflowSnapshot, WorkflowState};

use super::Result;

/// Storing and reading workflow histories, snapshots and instance states.
#[async_trait]
pub trait WorkflowPersistence: Send + Sync {
    /// Stores a snapshot (it must describe a valid instance state); `true` when stored.
    async fn save_workflow_snapshot(&self, snapshot: &WorkflowSnapshot) -> Result<bool>;

    /// The latest snapshot of an instance.
    async fn load_workflow_snapshot(
        &self,
        workflow_type: &str,
        instance_id: InstanceId,
    ) -> Result<Option<WorkflowSnapshot>>;

    /// Deletes an instance's snapshots; `true` if there was one.
    async fn delete_workflow_snapshot(
        &self,
        workflow_type: &str,
        instance_id: InstanceId,
    ) -> Result<bool>;

    /// Appends the next event of an instance's history (`sequence_number` set);
    /// `false` if it is already stored.
    async fn store_workflow_event(&self, event: &WorkflowEvent) -> Result<bool>;

    /// Events `from_seq..=to_seq` of an instance (to the end if `None`), at most `limit`.
    async fn get_workflow_events(
        &self,
        workflow_type: &str,
        instance_id: InstanceId,
        from_seq: u64,
        to_seq: Option<u64>,
        limit: Option<usize>,
    ) -> Result<Vec<WorkflowEvent>>;

    /// The instance after event `up_to_seq` (after its last event if `None` or
    /// beyond it); `None` if it has no events up to there.
    async fn reconstruct_workflow_state(
        &self,
        workflow_type: &str,
        instance_id: InstanceId,
        up_to_seq: Option<u64>,
    ) -> Result<Option<WorkflowSnapshot>>;

    /// Instances of `workflow_type` (every type if `None`) in any of `states`
    /// (every state if empty) created after `created_after_ms`, at most `limit`,
    /// ordered by (created_at, instance id).
    async fn query_workflows(
        &self,
        workflow_type: Option<&str>,
        states: &[WorkflowState],
        created_after_ms: Option<i64>,
        limit: usize,
    ) -> Result<Vec<WorkflowSnapshot>>;
}
