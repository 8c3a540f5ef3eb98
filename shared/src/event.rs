//! The workflow event: every step of every instance is one of these, appended
//! to `weft.<type>.events` keyed by instance id. The orchestrator assigns the
//! canonical per-instance `sequence_number` when it applies an event; records
//! produced by workers and clients carry 0 there.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::data::DataMap;
use crate::ids::{EventId, InstanceId};
use crate::model::string_enum;

string_enum!(
    /// The complete event taxonomy.
    WorkflowEventType {
        WorkflowCreated = "workflow.created",
        WorkflowStarted = "workflow.started",
        WorkflowCompleted = "workflow.completed",
        WorkflowFailed = "workflow.failed",
        WorkflowCancelled = "workflow.cancelled",
        WorkflowPaused = "workflow.paused",
        WorkflowResumed = "workflow.resumed",
        WorkflowRetrying = "workflow.retrying",
        WorkflowTimeout = "workflow.timeout",
        TaskScheduled = "task.scheduled",
        TaskStarted = "task.started",
        TaskCompleted = "task.completed",
        TaskFailed = "task.failed",
        TaskCancelled = "task.cancelled",
        TaskSkipped = "task.skipped",
        TaskCheckpointed = "task.checkpointed",
        DependencyResolved = "dependency.resolved",
        DependencyFailed = "dependency.failed",
        StateTransitioned = "state.transitioned",
        CompensationStarted = "compensation.started",
        CompensationCompleted = "compensation.completed",
        CompensationFailed = "compensation.failed",
        ResourceAllocated = "resource.allocated",
        ResourceReleased = "resource.released",
        ErrorOccurred = "error.occurred",
    }
);

/// Metadata key naming who produced an event: `orchestrator` for decisions,
/// anything else (a worker, a client) for inputs.
pub const META_SOURCE_KIND: &str = "weft.source_kind";
/// `META_SOURCE_KIND` value of events the orchestrator derived.
pub const SOURCE_KIND_DECISION: &str = "decision";
/// Metadata key for the definition version an instance runs.
pub const META_DEFINITION_VERSION: &str = "weft.definition_version";

/// One event of a workflow instance's history.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WorkflowEvent {
    pub event_id: EventId,
    pub event_type: WorkflowEventType,
    pub workflow_type: String,
    pub instance_id: InstanceId,
    /// Canonical position in the instance's history, from 1; 0 before it is applied.
    pub sequence_number: u64,
    /// The event that caused this one.
    pub causation_id: Option<EventId>,
    /// The causation chain from the instance's first event to the cause, oldest first.
    pub correlation_chain: Vec<EventId>,
    /// Creation time, milliseconds since the Unix epoch.
    pub timestamp_ms: i64,
    pub data: DataMap,
    pub metadata: BTreeMap<String, String>,
    /// Duplicate prevention: an event whose key was already applied is dropped.
    pub idempotency_key: String,
    pub source_node_id: String,
}

impl WorkflowEvent {
    /// A new input event (sequence 0, no causation) with a random id.
    pub fn new(
        event_type: WorkflowEventType,
        workflow_type: impl Into<String>,
        instance_id: InstanceId,
        idempotency_key: impl Into<String>,
        timestamp_ms: i64,
    ) -> Self {
        Self {
            event_id: EventId::random(),
            event_type,
            workflow_type: workflow_type.into(),
            instance_id,
            sequence_number: 0,
            causation_id: None,
            correlation_chain: Vec::new(),
            timestamp_ms,
            data: DataMap::new(),
            metadata: BTreeMap::new(),
            idempotency_key: idempotency_key.into(),
            source_node_id: String::new(),
        }
    }

    /// Whether the orchestrator derived this event (a decision, recomputed on replay).
    pub fn is_decision(&self) -> bool {
        self.metadata.get(META_SOURCE_KIND).map(String::as_str) == Some(SOURCE_KIND_DECISION)
    }

    /// A string field of `data`.
    pub fn data_str(&self, key: &str) -> Option<&str> {
        self.data.get(key).and_then(|v| v.as_str())
    }

    /// An integer field of `data`.
    pub fn data_i64(&self, key: &str) -> Option<i64> {
        self.data.get(key).and_then(|v| v.as_i64())
    }
}

/// Current wall-clock time in epoch milliseconds (for producers of input events).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_25_event_types_round_trip() {
        assert_eq!(WorkflowEventType::ALL.len(), 25);
        for t in WorkflowEventType::ALL {
            assert_eq!(t.as_str().parse::<WorkflowEventType>().unwrap(), *t);
        }
    }
}
