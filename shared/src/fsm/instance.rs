//! The folded state of one workflow instance, as the decider and the
//! projections see it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::data::DataMap;
use crate::fsm::timer::Timer;
use crate::ids::{EventId, InstanceId};
use crate::model::{CompensationAction, ErrorInfo};
use crate::state::{TaskState, WorkflowState};

/// Runtime state of one task of an instance.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskRuntime {
    pub state: TaskState,
    /// The current attempt (1-based); 0 before the first dispatch.
    pub attempt: u32,
    /// The `task.scheduled` event of the current attempt.
    pub scheduled_event_id: Option<EventId>,
    pub output: Option<DataMap>,
    pub error: Option<ErrorInfo>,
    pub node_id: Option<String>,
    pub scheduled_at_ms: Option<i64>,
    pub started_at_ms: Option<i64>,
    pub finished_at_ms: Option<i64>,
    /// Sequence number of its `task.completed` (saga compensation runs in reverse of it).
    #[serde(default)]
    pub completed_seq: u64,
    /// What the last ended attempt used, as its worker measured it (`cpu_ms`,
    /// `wall_ms`, `peak_rss_kb`; see `crate::usage`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub resource_usage: BTreeMap<String, i64>,
    /// The metrics the last ended attempt's handler reported.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metrics: BTreeMap<String, f64>,
    /// Where `resource_usage` was measured (`child` or `process`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub usage_scope: String,
    /// The last checkpoint an attempt of the task saved: the next attempt starts from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<DataMap>,
    /// Checkpoints recorded for the task, over all its attempts.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub checkpoints: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl Default for TaskRuntime {
    fn default() -> Self {
        Self {
            state: TaskState::Pending,
            attempt: 0,
            scheduled_event_id: None,
            output: None,
            error: None,
            node_id: None,
            scheduled_at_ms: None,
            started_at_ms: None,
            finished_at_ms: None,
            completed_seq: 0,
            resource_usage: BTreeMap::new(),
            metrics: BTreeMap::new(),
            usage_scope: String::new(),
            checkpoint: None,
            checkpoints: 0,
        }
    }
}

/// Everything the decider knows about one instance.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InstanceState {
    pub workflow_type: String,
    pub instance_id: InstanceId,
    /// 0 until `workflow.started` pins the definition version.
    pub definition_version: u32,
    pub state: WorkflowState,
    /// Sequence number of the last applied event.
    pub last_seq: u64,
    /// The `workflow.created` event: the root of every correlation chain.
    pub created_event_id: EventId,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    pub input: DataMap,
    /// Tasks that have left `pending`, by name.
    pub tasks: BTreeMap<String, TaskRuntime>,
    /// The error that ended the workflow, if it failed.
    pub error: Option<ErrorInfo>,
    pub error_history: Vec<ErrorInfo>,
    /// Pending durable timers by id (see `fsm::timer`).
    #[serde(default)]
    pub timers: BTreeMap<String, Timer>,
    /// Signals received that no `wait` task has consumed yet, by name.
    #[serde(default)]
    pub signals: BTreeMap<String, DataMap>,
    /// The saga's compensation log, in the order compensations run.
    #[serde(default)]
    pub compensations: Vec<CompensationAction>,
    /// The W3C trace id (32 hex digits) of the trace the instance belongs to
    /// when it is not its own: a child workflow's parent's, from the
    /// `weft.parent_traceparent` on its `workflow.created` (ADR 0019). `None`
    /// for an ordinary instance, whose trace id is its instance id; see
    /// [`InstanceState::trace_id_hex`]. Absent from projections stored before
    /// it existed (those instances keep their own trace id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
}

impl InstanceState {
    /// The W3C trace id of the instance's trace: its parent's for a child
    /// workflow, else its own instance id (32 hex digits either way). Task
    /// dispatches' `traceparent` and the trace built from the history use it.
    pub fn trace_id_hex(&self) -> String {
        match &self.trace_id {
            Some(t) => t.clone(),
            None => self.instance_id.0.simple().to_string(),
        }
    }

    /// The runtime of task `name` (pending if it never left it).
    pub fn task(&self, name: &str) -> TaskRuntime {
        self.tasks.get(name).cloned().unwrap_or_default()
    }

    /// State of task `name`.
    pub fn task_state(&self, name: &str) -> TaskState {
        self.tasks
            .get(name)
            .map(|t| t.state)
            .unwrap_or(TaskState::Pending)
    }
}
