//! `evolve`: folds one event of an instance's history into its state. History
//! events were checked when they were decided, so `evolve` only re-checks what
//! keeps the fold honest (sequence order, legal edges) and is used both while
//! deciding and to reconstruct a state from a stored history.

use crate::event::{WorkflowEvent, WorkflowEventType as T};
use crate::fsm::instance::{InstanceState, TaskRuntime};
use crate::fsm::meta;
use crate::fsm::timer::{timers_of, TimerKind};
use crate::model::{CompensationAction, ErrorInfo};
use crate::observe::trace::{parse_traceparent, META_PARENT_TRACEPARENT};
use crate::state::{TaskState, WorkflowState};
use crate::usage::Usage;

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
                timers: Default::default(),
                signals: Default::default(),
                compensations: Vec::new(),
                trace_id: parent_trace_id(event),
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
    fold_state(&mut s, event, ts)?;
    fold_timers(&mut s, event);
    if let Some(name) = event.metadata.get(meta::TASK) {
        track_compensation(&mut s, name, ts);
    }
    Ok(s)
}

/// A child workflow's trace id: the parent's, when its `workflow.created`
/// carries a well-formed `weft.parent_traceparent`.
fn parent_trace_id(created: &WorkflowEvent) -> Option<String> {
    let tp = created.metadata.get(META_PARENT_TRACEPARENT)?;
    parse_traceparent(tp).map(|(trace_id, _)| trace_id)
}

/// The state change `event` makes (everything but timers).
fn fold_state(s: &mut InstanceState, event: &WorkflowEvent, ts: i64) -> Result<(), EvolveError> {
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
            workflow_to(s, WorkflowState::Running)?;
        }
        T::WorkflowCompleted => workflow_to(s, WorkflowState::Completed)?,
        T::WorkflowFailed => {
            s.error = Some(error_from(event));
            workflow_to(s, WorkflowState::Failed)?;
        }
        T::WorkflowCancelled => workflow_to(s, WorkflowState::Cancelled)?,
        T::WorkflowPaused => workflow_to(s, WorkflowState::Paused)?,
        T::WorkflowResumed => workflow_to(s, WorkflowState::Running)?,
        T::WorkflowRetrying => workflow_to(s, WorkflowState::Retrying)?,
        T::WorkflowTimeout => {
            s.error = Some(error_from(event));
            workflow_to(s, WorkflowState::Timeout)?;
        }
        T::CompensationStarted => {
            s.error = Some(error_from(event));
            s.compensations = compensation_plan(event);
            workflow_to(s, WorkflowState::Compensating)?;
        }
        T::CompensationCompleted => workflow_to(s, WorkflowState::Compensated)?,
        T::CompensationFailed => workflow_to(s, WorkflowState::Failed)?,
        T::TaskScheduled => {
            let (name, attempt) = task_ref(event)?;
            let t = task_to(s, &name, TaskState::Scheduled)?;
            t.attempt = attempt;
            t.scheduled_event_id = Some(event.event_id);
            t.scheduled_at_ms = Some(ts);
            t.started_at_ms = None;
            t.finished_at_ms = None;
            t.node_id = None;
            t.resource_usage.clear();
            t.metrics.clear();
            t.usage_scope.clear();
        }
        T::TaskStarted => {
            let (name, _) = task_ref(event)?;
            let t = task_to(s, &name, TaskState::Running)?;
            t.started_at_ms = Some(ts);
            t.node_id = Some(event.source_node_id.clone());
            if s.state == WorkflowState::Retrying {
                workflow_to(s, WorkflowState::Running)?;
            }
        }
        T::TaskCompleted => {
            let (name, _) = task_ref(event)?;
            let t = task_to(s, &name, TaskState::Completed)?;
            t.output = Some(event.data.clone());
            t.error = None;
            t.finished_at_ms = Some(ts);
            t.completed_seq = event.sequence_number;
            record_usage(t, event);
            if let Some(signal) = event.metadata.get(meta::SIGNAL) {
                s.signals.remove(signal);
            }
            // A retried attempt that reports its result without a start
            // (allowed: scheduled -> completed) ends the retry all the same.
            if s.state == WorkflowState::Retrying {
                workflow_to(s, WorkflowState::Running)?;
            }
        }
        T::TaskFailed => {
            let (name, _) = task_ref(event)?;
            let retry = event.metadata.get(meta::RETRY).map(String::as_str) == Some("true");
            let err = error_from(event);
            let to = if retry {
                TaskState::Retrying
            } else if is_timeout_error(&err.error_type) {
                TaskState::Timeout
            } else {
                TaskState::Failed
            };
            let t = task_to(s, &name, to)?;
            t.error = Some(err.clone());
            t.finished_at_ms = Some(ts);
            record_usage(t, event);
            s.error_history.push(err);
        }
        T::TaskCheckpointed => {
            // Checked when decided: the current attempt of a task that runs.
            let (name, _) = task_ref(event)?;
            let t = s.tasks.entry(name).or_default();
            t.checkpoint = Some(event.data.clone());
            t.checkpoints += 1;
        }
        T::TaskCancelled => {
            let (name, _) = task_ref(event)?;
            task_to(s, &name, TaskState::Cancelled)?.finished_at_ms = Some(ts);
        }
        T::TaskSkipped => {
            let (name, _) = task_ref(event)?;
            task_to(s, &name, TaskState::Skipped)?.finished_at_ms = Some(ts);
        }
        T::ErrorOccurred => s.error_history.push(error_from(event)),
        T::StateTransitioned => {
            // A decision moving a task (a `wait` task starts waiting, a group starts).
            if let (Some(name), Some(to)) =
                (event.metadata.get(meta::TASK), event.metadata.get(meta::TO))
            {
                let to: TaskState = to.parse().map_err(|_| EvolveError::Missing {
                    event_type: event.event_type,
                    key: meta::TO,
                })?;
                task_to(s, name, to)?;
            }
        }
        T::DependencyResolved => {
            // An external signal: kept until a `wait` task consumes it.
            if let Some(name) = event.metadata.get(meta::SIGNAL) {
                if !event.metadata.contains_key(meta::TASK) {
                    s.signals.insert(name.clone(), event.data.clone());
                }
            }
        }
        // Informational: recorded in the history, no state change.
        T::DependencyFailed | T::ResourceAllocated | T::ResourceReleased => {}
    }
    Ok(())
}

/// Keeps the resource usage a result event reports on its task.
fn record_usage(t: &mut TaskRuntime, event: &WorkflowEvent) {
    let u = Usage::read(&event.metadata);
    t.resource_usage = u.resources;
    t.metrics = u.metrics;
    t.usage_scope = u.scope;
}

/// Clears the timers `event` makes moot, then adds the ones it sets.
fn fold_timers(s: &mut InstanceState, event: &WorkflowEvent) {
    if s.state.is_terminal() || event.event_type == T::CompensationStarted {
        s.timers.clear();
    } else if let Some(name) = event.metadata.get(meta::TASK) {
        let clear: Option<fn(TimerKind) -> bool> = match event.event_type {
            T::TaskScheduled
            | T::TaskCompleted
            | T::TaskFailed
            | T::TaskCancelled
            | T::TaskSkipped => Some(|_| true),
            T::TaskStarted => Some(|k| k == TimerKind::Response),
            _ => None,
        };
        if let Some(clear) = clear {
            s.timers
                .retain(|_, t| t.task.as_deref() != Some(name.as_str()) || !clear(t.kind));
        }
    }
    if let Some(id) = event.metadata.get(meta::TIMER) {
        s.timers.remove(id);
    }
    if !s.state.is_terminal() {
        for t in timers_of(event) {
            s.timers.insert(t.id(), t);
        }
    }
}

/// Error types of attempts that ran out of time: a final one leaves the task `timeout`.
pub(crate) fn is_timeout_error(error_type: &str) -> bool {
    matches!(
        error_type,
        "execution_timeout" | "response_timeout" | "heartbeat_timeout" | "wait_timeout"
    )
}

/// The compensation log `compensation.started` announces: its `plan` lists
/// `task>compensation` in the order they run.
fn compensation_plan(event: &WorkflowEvent) -> Vec<CompensationAction> {
    let Some(crate::data::WorkflowData::List(plan)) = event.data.get("plan") else {
        return Vec::new();
    };
    plan.iter()
        .filter_map(|entry| entry.split_once('>'))
        .map(|(task, comp)| CompensationAction {
            task_name: task.to_owned(),
            compensation_task: comp.to_owned(),
            state: TaskState::Pending,
            attempt: 0,
            error: None,
            timestamp_ms: event.timestamp_ms,
        })
        .collect()
}

/// Mirrors a compensation task's progress into the compensation log.
fn track_compensation(s: &mut InstanceState, name: &str, ts: i64) {
    if s.compensations.is_empty() {
        return;
    }
    let Some(rt) = s.tasks.get(name).cloned() else {
        return;
    };
    for c in s.compensations.iter_mut() {
        if c.compensation_task == name {
            c.state = rt.state;
            c.attempt = rt.attempt;
            c.error = rt.error.clone();
            c.timestamp_ms = ts;
        }
    }
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
