//! Durable timers: deadlines an instance is waiting for (a retry backoff, a
//! `wait` task, an attempt's execution, response or heartbeat timeout, the
//! workflow's execution timeout, the compensation cleanup bound).
//!
//! Timers are part of the folded state: the decider writes the timers it sets
//! into an event's `weft.timers` metadata, and `evolve` adds them — and clears
//! the ones an event makes moot (a task that finished needs no timeout). So the
//! set of pending timers is a pure function of the history, and the
//! orchestrator's timer index, derived from it, is rebuilt with the projection.
//!
//! A due timer fires as an input event published to the instance's events topic
//! by the partition's owner: `state.transitioned` with `weft.source_kind=timer`
//! and `weft.timer=<id>`, stamped with the due time (not the clock), so its
//! consequences are the same whenever and however often it is delivered.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::event::{WorkflowEvent, WorkflowEventType, META_SOURCE_KIND};
use crate::fsm::meta;
use crate::ids::EventId;

/// What a timer is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimerKind {
    /// Backoff before the next attempt of a failed task.
    Retry,
    /// A `wait` task's duration (or its signal's deadline).
    Wait,
    /// An attempt's execution timeout (from `task.started`).
    Execution,
    /// No `task.started` within the response timeout of `task.scheduled`.
    Response,
    /// Heartbeats of a running attempt stopped.
    Heartbeat,
    /// The workflow's own execution timeout.
    Workflow,
    /// Compensation must finish within the cleanup timeout.
    Cleanup,
}

impl TimerKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TimerKind::Retry => "retry",
            TimerKind::Wait => "wait",
            TimerKind::Execution => "execution",
            TimerKind::Response => "response",
            TimerKind::Heartbeat => "heartbeat",
            TimerKind::Workflow => "workflow",
            TimerKind::Cleanup => "cleanup",
        }
    }
}

/// One pending timer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timer {
    pub kind: TimerKind,
    /// The task it belongs to (none for workflow-level timers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<String>,
    /// The attempt it belongs to (0 when not attempt-scoped).
    #[serde(default)]
    pub attempt: u32,
    /// Epoch ms it is due.
    pub fire_at_ms: i64,
}

impl Timer {
    pub fn workflow(kind: TimerKind, fire_at_ms: i64) -> Self {
        Self {
            kind,
            task: None,
            attempt: 0,
            fire_at_ms,
        }
    }

    pub fn task(kind: TimerKind, task: &str, attempt: u32, fire_at_ms: i64) -> Self {
        Self {
            kind,
            task: Some(task.to_owned()),
            attempt,
            fire_at_ms,
        }
    }

    /// Stable id within the instance: `<kind>` or `<kind>:<attempt>:<task>`.
    pub fn id(&self) -> String {
        match &self.task {
            Some(t) => format!("{}:{}:{t}", self.kind.as_str(), self.attempt),
            None => self.kind.as_str().to_owned(),
        }
    }

    /// The input event that fires this timer for `instance` of `workflow_type`.
    /// Its id, key and timestamp depend only on the timer, so firing twice is
    /// a duplicate, and a replay decides the same.
    pub fn fire_event(
        &self,
        workflow_type: &str,
        instance_id: crate::ids::InstanceId,
    ) -> WorkflowEvent {
        let id = self.id();
        let key = format!("timer:{id}@{}", self.fire_at_ms);
        let mut metadata = BTreeMap::new();
        metadata.insert(META_SOURCE_KIND.to_owned(), SOURCE_KIND_TIMER.to_owned());
        metadata.insert(meta::TIMER.to_owned(), id);
        if let Some(t) = &self.task {
            metadata.insert(meta::TASK.to_owned(), t.clone());
            metadata.insert(meta::ATTEMPT.to_owned(), self.attempt.to_string());
        }
        WorkflowEvent {
            event_id: EventId::named(instance_id, &key),
            event_type: WorkflowEventType::StateTransitioned,
            workflow_type: workflow_type.to_owned(),
            instance_id,
            sequence_number: 0,
            causation_id: None,
            correlation_chain: Vec::new(),
            timestamp_ms: self.fire_at_ms,
            data: Default::default(),
            metadata,
            idempotency_key: key,
            source_node_id: crate::fsm::DECIDER_NODE_ID.to_owned(),
        }
    }
}

/// `weft.source_kind` of timer-fire input events.
pub const SOURCE_KIND_TIMER: &str = "timer";

/// Encodes timers for the `weft.timers` metadata entry.
pub fn encode_timers(timers: &[Timer]) -> String {
    serde_json::to_string(timers).expect("timers serialise")
}

/// Timers listed in an event's `weft.timers` metadata (none if absent or malformed).
pub fn timers_of(event: &WorkflowEvent) -> Vec<Timer> {
    event
        .metadata
        .get(meta::TIMERS)
        .and_then(|v| serde_json::from_str(v).ok())
        .unwrap_or_default()
}
