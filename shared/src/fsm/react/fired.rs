//! A durable timer fired (see `fsm::timer`): a retry backoff ended, a `wait`
//! is over, an attempt ran out of time (execution, response or heartbeat
//! timeout), the workflow's execution timeout passed, or compensation
//! overran its cleanup timeout.

use crate::data::DataMap;
use crate::event::{WorkflowEvent, WorkflowEventType as T};
use crate::fsm::timer::{Timer, TimerKind};
use crate::fsm::{meta, Decision, DefinitionLookup, InstanceState};
use crate::model::ErrorInfo;
use crate::state::{TaskState, WorkflowState};

use super::inputs::{annotate_failure, retry_decision};
use super::plan::wait_signal;
use super::{error_fields, stale, Run};

pub(super) fn timer(
    state: Option<&InstanceState>,
    defs: &dyn DefinitionLookup,
    input: &WorkflowEvent,
) -> Decision {
    let Some(s) = state else {
        return super::reject(None, input, super::unknown_instance(input));
    };
    let id = input.metadata.get(meta::TIMER).cloned().unwrap_or_default();
    let Some(timer) = s.timers.get(&id).cloned() else {
        return stale(s, format!("timer '{id}' is no longer pending"));
    };
    if timer.fire_at_ms != input.timestamp_ms {
        return stale(s, format!("timer '{id}' was reset"));
    }
    let def = defs.get(&s.workflow_type, s.definition_version);
    let mut run = match Run::start(Some(s), def, input) {
        Ok(r) => r,
        Err(rejected) => return rejected,
    };
    match timer.kind {
        TimerKind::Retry => retry_due(&mut run, &timer),
        TimerKind::Wait => wait_over(&mut run, &timer),
        TimerKind::Execution | TimerKind::Response | TimerKind::Heartbeat => {
            attempt_timed_out(&mut run, &timer)
        }
        TimerKind::Workflow => workflow_timed_out(&mut run),
        TimerKind::Cleanup => cleanup_overrun(&mut run),
    }
    run.finish()
}

/// The backoff ended: the next attempt is scheduled (on resume, if paused).
fn retry_due(run: &mut Run<'_>, timer: &Timer) {
    let Some(task) = timer.task.as_deref().and_then(|t| run.task_config(t)) else {
        return;
    };
    if run.state.task_state(&task.name) != TaskState::Retrying
        || run.state.state == WorkflowState::Paused
    {
        return;
    }
    run.schedule(task, timer.attempt);
}

/// A `wait` task's duration passed: it completes — or, when it was waiting for
/// a signal that never came, it times out.
fn wait_over(run: &mut Run<'_>, timer: &Timer) {
    let Some(task) = timer.task.as_deref().and_then(|t| run.task_config(t)) else {
        return;
    };
    if run.state.task_state(&task.name) != TaskState::WaitingForDependency {
        return;
    }
    match wait_signal(task) {
        None => {
            run.emit(T::TaskCompleted, Some((&task.name, 1)), DataMap::new(), &[]);
            run.schedule_ready();
        }
        Some(signal) => {
            let message = format!("no signal '{signal}' arrived in time");
            let err = ErrorInfo::new("wait_timeout", message.clone(), false);
            let extra = [(meta::RETRY, "false".to_owned())];
            run.emit(
                T::TaskFailed,
                Some((&task.name, 1)),
                error_fields("wait_timeout", &message, false),
                &extra,
            );
            run.after_failure(task, 1, &err, 0);
        }
    }
}

/// An attempt ran out of time: it fails (and is retried per the task's
/// policy); its worker, if still alive, is told to stop.
fn attempt_timed_out(run: &mut Run<'_>, timer: &Timer) {
    let Some(task) = timer.task.as_deref().and_then(|t| run.task_config(t)) else {
        return;
    };
    let rt = run.state.task(&task.name);
    let expected = if timer.kind == TimerKind::Response {
        rt.state == TaskState::Scheduled
    } else {
        matches!(rt.state, TaskState::Scheduled | TaskState::Running)
    };
    if rt.attempt != timer.attempt || !expected {
        return;
    }
    let (error_type, message) = match timer.kind {
        TimerKind::Response => ("response_timeout", "no worker started the attempt in time"),
        TimerKind::Heartbeat => ("heartbeat_timeout", "the worker stopped sending heartbeats"),
        _ => (
            "execution_timeout",
            "the attempt ran longer than its execution timeout",
        ),
    };
    run.cancel_attempt(&task.name, rt.attempt, message);
    let err = ErrorInfo::new(error_type, message, true);
    let (retry, delay) = retry_decision(task, rt.attempt, &err, run.cause.event_id);
    let mut metadata = Default::default();
    annotate_failure(&mut metadata, task, rt.attempt, retry, delay, run.now());
    let extra: Vec<(&str, String)> = metadata
        .iter()
        .map(|(k, v): (&String, &String)| (k.as_str(), v.clone()))
        .collect();
    run.emit(
        T::TaskFailed,
        Some((&task.name, rt.attempt)),
        error_fields(error_type, message, true),
        &extra,
    );
    run.after_failure(task, rt.attempt, &err, delay);
}

/// The workflow's execution timeout passed: open tasks are cancelled and the
/// workflow ends in `timeout`.
fn workflow_timed_out(run: &mut Run<'_>) {
    if run.state.state.is_terminal() || run.state.state == WorkflowState::Compensating {
        return;
    }
    run.close_open_tasks("workflow timed out");
    let data = error_fields(
        "workflow_timeout",
        "the workflow ran longer than its execution timeout",
        false,
    );
    run.emit(T::WorkflowTimeout, None, data, &[]);
}

/// Compensation did not finish within the cleanup timeout: the saga ends failed.
fn cleanup_overrun(run: &mut Run<'_>) {
    if run.state.state != WorkflowState::Compensating {
        return;
    }
    run.close_open_tasks("compensation cleanup timed out");
    let data = error_fields(
        "cleanup_timeout",
        "compensation did not finish within the cleanup timeout",
        false,
    );
    run.emit(T::CompensationFailed, None, data, &[]);
}
