//! The task dispatch record: what the orchestrator writes to
//! `weft.<type>.tasks` (keyed by instance id) for a worker to run one attempt
//! of one task. Workers in the topic's consumer group receive it, append
//! `task.started`, run the handler and append the result.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::data::DataMap;
use crate::ids::{EventId, ExecutionId, InstanceId, TaskId};
use crate::model::{ExecutionSemantics, TaskPriority, TaskType, TimeoutConfiguration};

/// One attempt of one task, as sent to workers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskDispatch {
    pub workflow_type: String,
    pub instance_id: InstanceId,
    pub definition_version: u32,
    pub task_id: TaskId,
    pub task_name: String,
    pub task_type: TaskType,
    /// Handler to run: a built-in kind (`noop`, `sleep`, `http`, `shell`) or an SDK handler.
    pub handler: String,
    /// 1 for the first attempt.
    pub attempt: u32,
    pub execution_id: ExecutionId,
    /// The workflow's input data.
    pub input: DataMap,
    /// The task's parameters from the definition.
    pub parameters: DataMap,
    /// Outputs of the tasks this one depends on, by task name.
    pub upstream: BTreeMap<String, DataMap>,
    pub execution_semantics: ExecutionSemantics,
    pub priority: TaskPriority,
    pub timeout_config: TimeoutConfiguration,
    /// Stable across attempts; effect handlers use it to apply an effect once.
    pub idempotency_key: String,
    /// The `task.scheduled` event this dispatch belongs to (the causation of `task.started`).
    pub scheduled_event_id: EventId,
    /// Correlation chain of the scheduled event, for the results' chains.
    pub correlation_chain: Vec<EventId>,
    /// Epoch ms the orchestrator scheduled it.
    pub scheduled_at_ms: i64,
    /// Epoch ms before which the worker must not start it (retry backoff); 0 = now.
    pub not_before_ms: i64,
    /// Epoch ms by which the attempt must finish; 0 = no deadline.
    pub deadline_ms: i64,
    /// W3C traceparent of the workflow span.
    pub traceparent: String,
}

impl TaskDispatch {
    /// The key identifying this attempt for duplicate detection.
    pub fn attempt_key(&self) -> String {
        format!("{}:{}:{}", self.instance_id, self.task_name, self.attempt)
    }
}
