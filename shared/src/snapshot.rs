//! `WorkflowSnapshot`: the complete state of one instance at a sequence number,
//! for persistence, fast rebuild (the compacted snapshots topic) and queries.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::data::DataMap;
use crate::model::{CompensationAction, ErrorInfo, TaskConfiguration, TaskResult, WorkflowContext};
use crate::state::WorkflowState;

/// One instance's state (the protocol's `WorkflowSnapshot`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WorkflowSnapshot {
    pub workflow_type: String,
    pub instance_id: crate::ids::InstanceId,
    pub definition_version: u32,
    pub sequence_number: u64,
    pub state: WorkflowState,
    pub context: WorkflowContext,
    pub tasks: Vec<TaskConfiguration>,
    /// The latest result of every task that has run, in task order.
    pub results: Vec<TaskResult>,
    pub error_history: Vec<ErrorInfo>,
    pub compensation_log: Vec<CompensationAction>,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    pub checkpoint_data: DataMap,
    pub resource_usage: BTreeMap<String, i64>,
}
