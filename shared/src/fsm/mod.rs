//! The pure core of Weft: `decide(state, event) -> Decision`.
//!
//! `evolve` folds one history event into an [`InstanceState`]; `decide` takes one
//! *input* event (from a client, a worker, or a fired timer), checks it against
//! the state and the transition tables, applies it, and derives the decisions
//! that follow (more events, task dispatches), each applied in turn. Both are
//! total and deterministic: they read event timestamps, never the clock, and
//! every derived record carries an id and idempotency key computed from the
//! causing event and the action's index, so a replay decides exactly the same.

mod evolve;
mod instance;
mod react;
/// What a task may read by isolation level (ADR 0016).
pub use react::isolation;
#[cfg(test)]
pub(crate) mod tests;
#[cfg(test)]
mod tests_checkpoint;
#[cfg(test)]
mod tests_reliability;
pub mod timer;

pub use evolve::{evolve, EvolveError};
pub use instance::{InstanceState, TaskRuntime};
pub(crate) use react::Plan;
pub use react::{unschedulable_input, NO_CAPABLE_NODE, SOURCE_KIND_UNSCHEDULABLE};
pub use timer::{Timer, TimerKind};

use crate::definition::WorkflowDefinition;
use crate::dispatch::TaskDispatch;
use crate::event::{WorkflowEvent, WorkflowEventType};
use crate::state::WorkflowState;

/// Metadata keys the protocol uses on event envelopes.
pub mod meta {
    /// The task an event is about.
    pub const TASK: &str = "weft.task";
    /// The task attempt (1-based) an event is about.
    pub const ATTEMPT: &str = "weft.attempt";
    /// The execution id of the attempt.
    pub const EXECUTION_ID: &str = "weft.execution_id";
    /// Set by the orchestrator on an applied `task.failed`: `true` when it will be retried.
    pub const RETRY: &str = "weft.retry";
    /// Backoff before the retried attempt, in ms.
    pub const RETRY_DELAY_MS: &str = "weft.retry_delay_ms";
    /// Why an event was rejected or why a workflow failed.
    pub const REASON: &str = "weft.reason";
    /// Timers an event sets (JSON list of `Timer`).
    pub const TIMERS: &str = "weft.timers";
    /// On a timer-fire input: the id of the timer that fired.
    pub const TIMER: &str = "weft.timer";
    /// On an external `dependency.resolved` input (and the `task.completed` it
    /// causes): the signal's name.
    pub const SIGNAL: &str = "weft.signal";
    /// On a `state.transitioned` decision about a task: the task's new state.
    pub const TO: &str = "weft.to";
    pub use crate::event::{
        META_DEFINITION_VERSION as DEFINITION_VERSION, META_SOURCE_KIND as SOURCE_KIND,
    };
}

/// The node id written on decisions: constant, so a rebuild by any replica is byte-identical.
pub const DECIDER_NODE_ID: &str = "weft-orchestrator";

/// Read access to registered definitions (a pure input to `decide`).
pub trait DefinitionLookup {
    /// Version `version` of `workflow_type`.
    fn get(&self, workflow_type: &str, version: u32) -> Option<&WorkflowDefinition>;
    /// The newest version registered at or before `at_ms` (deterministic "latest").
    fn latest_at(&self, workflow_type: &str, at_ms: i64) -> Option<&WorkflowDefinition>;
}

/// Why an input event was not applied.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("no workflow instance {instance} of type {workflow_type}")]
    UnknownInstance {
        workflow_type: String,
        instance: String,
    },
    #[error("workflow instance {0} already exists")]
    AlreadyExists(String),
    #[error("{event_type} is emitted only by the orchestrator and is not accepted as input")]
    NotAnInput { event_type: WorkflowEventType },
    #[error("event {event_type} is missing metadata '{key}'")]
    MissingMetadata {
        event_type: WorkflowEventType,
        key: &'static str,
    },
    #[error("workflow has no task named '{0}'")]
    UnknownTask(String),
    #[error("illegal transition: {what}")]
    IllegalTransition { what: String },
    #[error("definition {workflow_type}@{version} is not registered")]
    UnknownDefinition { workflow_type: String, version: u32 },
    #[error("no definition of workflow type '{0}' is registered")]
    UnknownWorkflowType(String),
    #[error("result of attempt {attempt} of task '{task}' arrived after attempt {current} superseded it")]
    StaleAttempt {
        task: String,
        attempt: u32,
        current: u32,
    },
    #[error("workflow already ended ({0})")]
    Finished(WorkflowState),
}

impl Rejection {
    /// A short stable classification, used as `error_type`.
    pub fn kind(&self) -> &'static str {
        match self {
            Rejection::UnknownInstance { .. } => "unknown_instance",
            Rejection::AlreadyExists(_) => "already_exists",
            Rejection::NotAnInput { .. } => "not_an_input",
            Rejection::MissingMetadata { .. } => "missing_metadata",
            Rejection::UnknownTask(_) => "unknown_task",
            Rejection::IllegalTransition { .. } => "illegal_transition",
            Rejection::UnknownDefinition { .. } => "unknown_definition",
            Rejection::UnknownWorkflowType(_) => "unknown_workflow_type",
            Rejection::StaleAttempt { .. } => "stale_attempt",
            Rejection::Finished(_) => "workflow_finished",
        }
    }
}

/// What became of an input event.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// Applied: it is in the history with a sequence number.
    Applied,
    /// Ignored as stale (e.g. the late result of a superseded attempt); not in the history.
    Stale { reason: String },
    /// Rejected; `error.occurred` is in the history when the instance exists,
    /// otherwise the record belongs in the DLQ.
    Rejected(Rejection),
}

/// The result of deciding one input event.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    pub outcome: Outcome,
    /// The instance after the decision (`None`: still no instance).
    pub state: Option<InstanceState>,
    /// Events appended to the history, in order, with sequence numbers: the input
    /// itself when applied, then every derived event.
    pub appended: Vec<WorkflowEvent>,
    /// Task attempts to dispatch to workers.
    pub dispatches: Vec<TaskDispatch>,
    /// Control records for workers (cancel running attempts).
    pub controls: Vec<crate::control::TaskControl>,
}

impl Decision {
    /// The derived events (decisions) among `appended`, which must be published.
    pub fn derived(&self) -> impl Iterator<Item = &WorkflowEvent> {
        self.appended.iter().filter(|e| e.is_decision())
    }
}

/// Decides one input event against the current state of its instance.
pub fn decide(
    state: Option<&InstanceState>,
    definitions: &dyn DefinitionLookup,
    event: &WorkflowEvent,
) -> Decision {
    react::decide(state, definitions, event)
}

/// Whether `state` accepts no further task results (terminal).
pub fn is_finished(state: &InstanceState) -> bool {
    state.state.is_terminal() || state.state == WorkflowState::Compensating
}
