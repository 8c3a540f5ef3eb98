//! The orchestrator↔worker control plane beside the event log: task
//! heartbeats (worker → orchestrator, on `weft.<type>.heartbeats`) and control
//! records (orchestrator → worker, on the tasks topic with the
//! [`headers::CONTROL`](crate::topics::headers::CONTROL) header). Neither is
//! part of any workflow's history: a heartbeat only keeps an attempt's
//! heartbeat timeout from firing, and a cancel only tells a running handler to
//! stop — the history already says the task was cancelled.
//!
//! Both travel as JSON (they are internal, short-lived and never replayed).

use serde::{Deserialize, Serialize};

use crate::ids::{ExecutionId, InstanceId};

/// "Attempt `attempt` of `task` is still running on `node_id`."
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskHeartbeat {
    pub workflow_type: String,
    pub instance_id: InstanceId,
    pub task_name: String,
    pub attempt: u32,
    pub execution_id: ExecutionId,
    pub node_id: String,
    /// Worker clock, epoch ms.
    pub at_ms: i64,
}

/// What a control record asks of the worker running an attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ControlAction {
    /// Stop the attempt: cancel its token, wait up to `grace_period_ms`, then abort it.
    Cancel,
}

/// A control record on the tasks topic, keyed by instance id (so it lands on
/// the partition, hence the worker, that received the attempt's dispatch).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskControl {
    pub action: ControlAction,
    pub workflow_type: String,
    pub instance_id: InstanceId,
    pub task_name: String,
    pub attempt: u32,
    pub execution_id: ExecutionId,
    /// How long the handler may take to stop after the cancellation signal.
    pub grace_period_ms: u64,
    pub reason: String,
}

impl TaskHeartbeat {
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("heartbeat serialises")
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}

impl TaskControl {
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("control record serialises")
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::TaskId;

    #[test]
    fn control_round_trips() {
        let id = InstanceId::random();
        let c = TaskControl {
            action: ControlAction::Cancel,
            workflow_type: "orders".into(),
            instance_id: id,
            task_name: "charge".into(),
            attempt: 2,
            execution_id: ExecutionId::of(TaskId::of(id, "charge"), 2),
            grace_period_ms: 500,
            reason: "workflow cancelled".into(),
        };
        assert_eq!(TaskControl::decode(&c.encode()).unwrap(), c);
        assert!(String::from_utf8(c.encode())
            .unwrap()
            .contains("\"cancel\""));
    }
}
