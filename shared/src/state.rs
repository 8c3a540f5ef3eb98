//! Workflow and task states and their transition tables. Each table is the one
//! place that says which edges are legal; the decider asks it before every
//! change and rejects anything else with a typed reason.

use crate::model::string_enum;

string_enum!(
    /// Hierarchical FSM states of a workflow instance.
    WorkflowState {
        Pending = "pending",
        Initializing = "initializing",
        Running = "running",
        Paused = "paused",
        Completed = "completed",
        Failed = "failed",
        Cancelled = "cancelled",
        Timeout = "timeout",
        Retrying = "retrying",
        WaitingForDependency = "waiting_for_dependency",
        Compensating = "compensating",
        Compensated = "compensated",
    }
);

string_enum!(
    /// Task-level execution states within a workflow.
    TaskState {
        Pending = "pending",
        Scheduled = "scheduled",
        Running = "running",
        Completed = "completed",
        Failed = "failed",
        Cancelled = "cancelled",
        Skipped = "skipped",
        Retrying = "retrying",
        WaitingForDependency = "waiting_for_dependency",
        Timeout = "timeout",
        Paused = "paused",
    }
);

impl WorkflowState {
    /// No event moves an instance out of a terminal state.
    pub fn is_terminal(self) -> bool {
        use WorkflowState::*;
        matches!(self, Completed | Failed | Cancelled | Timeout | Compensated)
    }

    /// Whether the workflow table allows `self -> to`.
    pub fn can_transition_to(self, to: WorkflowState) -> bool {
        WORKFLOW_TRANSITIONS
            .iter()
            .any(|(f, t)| *f == self && *t == to)
    }
}

impl TaskState {
    /// A task in a terminal state never runs again in this instance.
    pub fn is_terminal(self) -> bool {
        use TaskState::*;
        matches!(self, Completed | Failed | Cancelled | Skipped | Timeout)
    }

    /// Whether the task table allows `self -> to`.
    pub fn can_transition_to(self, to: TaskState) -> bool {
        TASK_TRANSITIONS.iter().any(|(f, t)| *f == self && *t == to)
    }
}

/// Every legal workflow edge.
pub const WORKFLOW_TRANSITIONS: &[(WorkflowState, WorkflowState)] = {
    use WorkflowState::*;
    &[
        (Pending, Initializing),
        (Pending, Running),
        (Pending, Failed),
        (Pending, Cancelled),
        (Initializing, Running),
        (Initializing, Failed),
        (Initializing, Cancelled),
        (Running, Paused),
        (Running, Completed),
        (Running, Failed),
        (Running, Cancelled),
        (Running, Timeout),
        (Running, Retrying),
        (Running, WaitingForDependency),
        (Running, Compensating),
        (Retrying, Running),
        (Retrying, Failed),
        (Retrying, Cancelled),
        (Retrying, Timeout),
        (Retrying, Paused),
        (Retrying, Compensating),
        (WaitingForDependency, Running),
        (WaitingForDependency, Paused),
        (WaitingForDependency, Cancelled),
        (WaitingForDependency, Timeout),
        (WaitingForDependency, Failed),
        (WaitingForDependency, Compensating),
        (Paused, Running),
        (Paused, Failed),
        (Paused, Compensating),
        (Paused, Cancelled),
        (Paused, Timeout),
        (Compensating, Compensated),
        (Compensating, Failed),
    ]
};

/// Every legal task edge.
pub const TASK_TRANSITIONS: &[(TaskState, TaskState)] = {
    use TaskState::*;
    &[
        (Pending, Scheduled),
        (Pending, Skipped),
        (Pending, Cancelled),
        (Pending, WaitingForDependency),
        (WaitingForDependency, Scheduled),
        (WaitingForDependency, Skipped),
        (WaitingForDependency, Cancelled),
        (WaitingForDependency, Completed),
        (WaitingForDependency, Failed),
        (WaitingForDependency, Timeout),
        (Scheduled, Running),
        (Scheduled, Completed),
        (Scheduled, Failed),
        (Scheduled, Cancelled),
        (Scheduled, Timeout),
        (Scheduled, Paused),
        (Scheduled, Retrying),
        (Running, Completed),
        (Running, Failed),
        (Running, Cancelled),
        (Running, Timeout),
        (Running, Retrying),
        (Running, Paused),
        (Retrying, Scheduled),
        (Retrying, Cancelled),
        (Retrying, Failed),
        (Paused, Scheduled),
        (Paused, Running),
        (Paused, Cancelled),
    ]
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocol_counts() {
        assert_eq!(WorkflowState::ALL.len(), 12);
        assert_eq!(TaskState::ALL.len(), 11);
    }

    #[test]
    fn terminal_states_have_no_outgoing_edges() {
        for (from, _) in WORKFLOW_TRANSITIONS {
            assert!(!from.is_terminal(), "{from} is terminal but has an edge");
        }
        for (from, _) in TASK_TRANSITIONS {
            assert!(!from.is_terminal(), "{from} is terminal but has an edge");
        }
    }

    #[test]
    fn every_state_is_reachable() {
        for s in WorkflowState::ALL {
            let reachable =
                *s == WorkflowState::Pending || WORKFLOW_TRANSITIONS.iter().any(|(_, t)| t == s);
            assert!(reachable, "{s} unreachable");
        }
        for s in TaskState::ALL {
            let reachable =
                *s == TaskState::Pending || TASK_TRANSITIONS.iter().any(|(_, t)| t == s);
            assert!(reachable, "{s} unreachable");
        }
    }
}
