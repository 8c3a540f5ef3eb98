//! `evolve`: folds one event of an instance's history into its state. History
//! events were checked when they were decided, so `evolve` only re-checks what
//! keeps the fold honest (sequence order, legal edges) and is used both while
//! deciding and to reconstruct a state from a stored history.

use crate::event::{WorkflowEvent, WorkflowEventType as T};
use crate::fsm::instance::{InstanceState, TaskRuntime};
use crate::fsm::meta;
use crate::model::ErrorInfo;
use crate::state::{TaskState, WorkflowState};

/// A history event that cannot be folded into the state.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EvolveError {
    #[error("event {seq} of a history that has no workflow.created first")]
    NoInstance { seq: u64 },
    #[error("sequence gap: expected {expected}, got {got}")]
    SequenceGap { expected: u64, got: u64 },
    #[error("illegal {what} transition {from} -> {to}")]
    Illegal {
        what: String,
        from: String,
        to: String,
    },
    #[error("event {event_type} lacks metadata '{key}'")]
    Missing { event_type: T, key: &'static str },
}

/// Folds `event` (which carries its sequence number) into `state`.
pub fn evolve(
    state: Option<InstanceState>,
    event: &WorkflowEvent,
) -> Result<InstanceState, EvolveError> {
    let mut s = match (state, event.event_type) {
        (None, T::WorkflowCreated) => {
            if event.sequence_number != 1 {
                return Err(EvolveError::SequenceGap {
                    expected: 1,
                    got: event.sequence_number,
                });
            }
            return Ok(InstanceState {
                workflow_type: event.workflow_type.clone(),
                instance_id: event.instance_id,
                definition_version: 0,
                state: WorkflowState::Pending,
                last_seq: 1,
                created_event_id: event.event_id,
                created_at_ms: event.timestamp_ms,
                updated_at_ms: event.timestamp_ms,
                input: event.data.clone(),
                tasks: Default::default(),
                error: None,
                error_history: Vec::new(),
            });
        }
        (None, _) => {
            return Err(EvolveError::NoInstance {
                seq: event.sequence_number,
            })
        }
        (Some(s), _) => s,
    };
    let expected = s.last_seq + 1;
    if event.sequence_number != expected {
        return Err(EvolveError::SequenceGap {
            expected,
            got: event.sequence_number,
        });
    }
    s.last_seq = expected;
    s.updated_at_ms = s.updated_at_ms.max(event.timestamp_ms);
    let ts = event.timestamp_ms;
    match event.event_type {
        T::WorkflowCreated => {
            return Err(illegal("workflow", s.state.as_str(), "pending"));
        }
        T::WorkflowStarted => {
            s.definition_version = event
                .metadata
                .get(meta::DEFINITION_VERSION)
                .and_then(|v| v.parse().ok())
                .ok_or(EvolveError::Missing {
                    event_type: event.event_type,
                    key: meta::DEFINITION_VERSION,
                })?;
            // workflow.started carries the effective input (defaults merged in).
            s.input = event.data.clone();
            workflow_to(&mut s, WorkflowState::Running)?;
        }
        T::WorkflowCompleted => workflow_to(&mut s, WorkflowState::Completed)?,
        T::WorkflowFailed => {
            s.error = Some(error_from(event));
            workflow_to(&mut s, WorkflowState::Failed)?;
        }
        T::WorkflowCancelled => workflow_to(&mut s, WorkflowState::Cancelled)?,
        T::WorkflowPaused => workflow_to(&mut s, WorkflowState::Paused)?,
        T::WorkflowResumed => workflow_to(&mut s, WorkflowState::Running)?,
        T::WorkflowRetrying => workflow_to(&mut s, WorkflowState::Retrying)?,
        T::WorkflowTimeout => workflow_to(&mut s, WorkflowState::Timeout)?,
        T::CompensationStarted => workflow_to(&mut s, WorkflowState::Compensating)?,
        T::CompensationCompleted => workflow_to(&mut s, WorkflowState::Compensated)?,
        T::CompensationFailed => workflow_to(&mut s, WorkflowState::Failed)?,
        T::TaskScheduled => {
            let (name, attempt) = task_ref(event)?;
            let t = task_to(&mut s, &name, TaskState::Scheduled)?;
            t.attempt = attempt;
            t.scheduled_event_id = Some(event.event_id);
            t.scheduled_at_ms = Some(ts);
            t.started_at_ms = None;
            t.finished_at_ms = None;
            t.node_id = None;
        }
        T::TaskStarted => {
            let (name, _) = task_ref(event)?;
            let t = task_to(&mut s, &name, TaskState::Running)?;
            t.started_at_ms = Some(ts);
            t.node_id = Some(event.source_node_id.clone());
            if s.state == WorkflowState::Retrying {
                workflow_to(&mut s, WorkflowState::Running)?;
            }
        }
        T::TaskCompleted => {
            let (name, _) = task_ref(event)?;
            let t = task_to(&mut s, &name, TaskState::Completed)?;
            t.output = Some(event.data.clone());
            t.error = None;
            t.finished_at_ms = Some(ts);
        }
        T::TaskFailed => {
            let (name, _) = task_ref(event)?;
            let retry = event.metadata.get(meta::RETRY).map(String::as_str) == Some("true");
            let to = if retry {
                TaskState::Retrying
            } else {
                TaskState::Failed
            };
            let err = error_from(event);
            let t = task_to(&mut s, &name, to)?;
            t.error = Some(err.clone());
            t.finished_at_ms = Some(ts);
            s.error_history.push(err);
        }
        T::TaskCancelled => {
            let (name, _) = task_ref(event)?;
            task_to(&mut s, &name, TaskState::Cancelled)?.finished_at_ms = Some(ts);
        }
        T::TaskSkipped => {
            let (name, _) = task_ref(event)?;
            task_to(&mut s, &name, TaskState::Skipped)?.finished_at_ms = Some(ts);
        }
        T::ErrorOccurred => s.error_history.push(error_from(event)),
        // Informational: recorded in the history, no state change.
        T::DependencyResolved
        | T::DependencyFailed
        | T::StateTransitioned
        | T::ResourceAllocated
        | T::ResourceReleased => {}
    }
    Ok(s)
}

fn illegal(what: &str, from: &str, to: &str) -> EvolveError {
    EvolveError::Illegal {
        what: what.into(),
        from: from.into(),
        to: to.into(),
    }
}

fn workflow_to(s: &mut InstanceState, to: WorkflowState) -> Result<(), EvolveError> {
    if !s.state.can_transition_to(to) {
        return Err(illegal("workflow", s.state.as_str(), to.as_str()));
    }
    s.state = to;
    Ok(())
}

fn task_to<'a>(
    s: &'a mut InstanceState,
    name: &str,
    to: TaskState,
) -> Result<&'a mut TaskRuntime, EvolveError> {
    let t = s.tasks.entry(name.to_owned()).or_default();
    if !t.state.can_transition_to(to) {
        return Err(illegal(
            &format!("task '{name}'"),
            t.state.as_str(),
            to.as_str(),
        ));
    }
    t.state = to;
    Ok(t)
}

/// The task name and attempt named in an event's metadata.
pub(crate) fn task_ref(event: &WorkflowEvent) -> Result<(String, u32), EvolveError> {
    let name = event.metadata.get(meta::TASK).ok_or(EvolveError::Missing {
        event_type: event.event_type,
        key: meta::TASK,
    })?;
    let attempt = event
        .metadata
        .get(meta::ATTEMPT)
        .and_then(|a| a.parse().ok())
        .unwrap_or(0);
    Ok((name.clone(), attempt))
}

/// The error described by an event's data (`error_type`, `message`, `retryable`).
pub(crate) fn error_from(event: &WorkflowEvent) -> ErrorInfo {
    let mut e = ErrorInfo::new(
        event.data_str("error_type").unwrap_or("unknown"),
        event.data_str("message").unwrap_or(""),
        matches!(
            event.data.get("retryable"),
            Some(crate::data::WorkflowData::Bool(true))
        ),
    );
    e.task_name = event.metadata.get(meta::TASK).cloned();
    e.attempt = event
        .metadata
        .get(meta::ATTEMPT)
        .and_then(|a| a.parse().ok());
    e.timestamp_ms = event.timestamp_ms;
    e
}
