//! The inputs clients and workers send: start (`workflow.created`), task
//! results (`task.started` / `completed` / `failed`), cancel, pause, resume
//! and signals (`dependency.resolved` with `weft.signal`).

use crate::definition::WorkflowDefinition;
use crate::event::{WorkflowEvent, WorkflowEventType as T};
use crate::fsm::evolve::{error_from, task_ref};
use crate::fsm::timer::{encode_timers, Timer, TimerKind};
use crate::fsm::{meta, Decision, DefinitionLookup, InstanceState, Rejection};
use crate::ids::EventId;
use crate::model::{ErrorInfo, TaskConfiguration, TaskType};
use crate::state::{TaskState, WorkflowState};

use super::plan::wait_signal;
use super::{error_data, reject, stale, unknown_instance, Run};

pub(super) fn created(
    state: Option<&InstanceState>,
    defs: &dyn DefinitionLookup,
    input: &WorkflowEvent,
) -> Decision {
    if let Some(s) = state {
        return reject(
            Some(s),
            input,
            Rejection::AlreadyExists(s.instance_id.to_string()),
        );
    }
    let ty = &input.workflow_type;
    let (def, missing) = match input
        .metadata
        .get(meta::DEFINITION_VERSION)
        .map(|v| v.parse::<u32>())
    {
        Some(Ok(v)) => (
            defs.get(ty, v),
            Rejection::UnknownDefinition {
                workflow_type: ty.clone(),
                version: v,
            },
        ),
        _ => (
            defs.latest_at(ty, input.timestamp_ms),
            Rejection::UnknownWorkflowType(ty.clone()),
        ),
    };
    let mut run = match Run::start(None, def, input) {
        Ok(r) => r,
        Err(rejected) => return rejected,
    };
    let Some(def) = def else {
        let data = error_data(missing.kind(), &missing.to_string(), input);
        run.emit(T::ErrorOccurred, None, data, &[]);
        run.fail(missing.kind(), &missing.to_string(), None);
        return run.finish();
    };
    let mut effective = def.default_input.clone();
    effective.extend(input.data.clone());
    let mut extra = vec![(meta::DEFINITION_VERSION, def.version.to_string())];
    let limit = def.timeout_config.execution_timeout_ms;
    if limit > 0 {
        let t = Timer::workflow(TimerKind::Workflow, input.timestamp_ms + limit as i64);
        extra.push((meta::TIMERS, encode_timers(&[t])));
    }
    run.emit(T::WorkflowStarted, None, effective, &extra);
    run.schedule_ready();
    run.finish()
}

/// The instance, its definition and the task an input names, or the decision rejecting it.
fn task_context<'d>(
    state: Option<&InstanceState>,
    defs: &'d dyn DefinitionLookup,
    input: &WorkflowEvent,
) -> Result<(&'d WorkflowDefinition, &'d TaskConfiguration, u32), Decision> {
    let Some(s) = state else {
        return Err(reject(None, input, unknown_instance(input)));
    };
    let Ok((name, attempt)) = task_ref(input) else {
        let why = Rejection::MissingMetadata {
            event_type: input.event_type,
            key: meta::TASK,
        };
        return Err(reject(Some(s), input, why));
    };
    let Some(def) = defs.get(&s.workflow_type, s.definition_version) else {
        let why = Rejection::UnknownDefinition {
            workflow_type: s.workflow_type.clone(),
            version: s.definition_version,
        };
        return Err(reject(Some(s), input, why));
    };
    let Some(task) = def.task(&name) else {
        return Err(reject(Some(s), input, Rejection::UnknownTask(name)));
    };
    Ok((def, task, attempt))
}

/// What a worker's report (a result or a checkpoint) is about, or the
/// decision for it: [`task_context`], then stale once the workflow ended, and
/// rejected for a task the orchestrator runs itself (no worker reports on it).
fn worker_report_context<'s, 'd>(
    state: Option<&'s InstanceState>,
    defs: &'d dyn DefinitionLookup,
    input: &WorkflowEvent,
) -> Result<
    (
        &'s InstanceState,
        &'d WorkflowDefinition,
        &'d TaskConfiguration,
        u32,
    ),
    Decision,
> {
    let (def, task, attempt) = task_context(state, defs, input)?;
    let s = state.expect("task_context checked the instance");
    if s.state.is_terminal() {
        return Err(stale(s, format!("workflow is already {}", s.state)));
    }
    if matches!(
        task.task_type,
        TaskType::Wait | TaskType::Parallel | TaskType::Sequential
    ) {
        let what = format!(
            "task '{}' is a {} task the orchestrator runs itself",
            task.name, task.task_type
        );
        return Err(reject(
            Some(s),
            input,
            Rejection::IllegalTransition { what },
        ));
    }
    Ok((s, def, task, attempt))
}

pub(super) fn task_result(
    state: Option<&InstanceState>,
    defs: &dyn DefinitionLookup,
    input: &WorkflowEvent,
) -> Decision {
    let (s, def, task, attempt) = match worker_report_context(state, defs, input) {
        Ok(c) => c,
        Err(d) => return d,
    };
    let name = &task.name;
    let rt = s.task(name);
    if attempt != rt.attempt {
        let why = Rejection::StaleAttempt {
            task: name.clone(),
            attempt,
            current: rt.attempt,
        };
        return reject(Some(s), input, why);
    }
    let to = match input.event_type {
        T::TaskStarted => TaskState::Running,
        T::TaskCompleted => TaskState::Completed,
        _ => TaskState::Failed,
    };
    if !rt.state.can_transition_to(to) {
        if rt.state.is_terminal() || rt.state == TaskState::Retrying || rt.state == to {
            return stale(s, format!("task '{name}' is already {}", rt.state));
        }
        let what = format!("task '{name}' {} -> {to} by {}", rt.state, input.event_type);
        return reject(Some(s), input, Rejection::IllegalTransition { what });
    }
    let mut applied = input.clone();
    let failure = (input.event_type == T::TaskFailed).then(|| {
        let err = error_from(input);
        let (retry, delay) = retry_decision(task, attempt, &err, input.event_id);
        annotate_failure(
            &mut applied.metadata,
            task,
            attempt,
            retry,
            delay,
            input.timestamp_ms,
        );
        (err, delay)
    });
    if input.event_type == T::TaskStarted {
        let timers = started_timers(task, attempt, input.timestamp_ms);
        if !timers.is_empty() {
            applied
                .metadata
                .insert(meta::TIMERS.into(), encode_timers(&timers));
        }
    }
    let mut run = match Run::start(Some(s), Some(def), &applied) {
        Ok(r) => r,
        Err(rejected) => return rejected,
    };
    match failure {
        Some((err, delay)) => run.after_failure(task, attempt, &err, delay),
        None if input.event_type == T::TaskCompleted => {
            run.schedule_ready();
            run.advance_compensation();
        }
        None => {}
    }
    run.finish()
}

/// A checkpoint a running attempt saved (`task.checkpointed`): recorded for
/// the current attempt of a task that is scheduled or running, stale for an
/// older attempt or an ended task or workflow, rejected for an unknown task,
/// a task the orchestrator runs itself, or one over the size limit.
pub(super) fn checkpoint(
    state: Option<&InstanceState>,
    defs: &dyn DefinitionLookup,
    input: &WorkflowEvent,
) -> Decision {
    let (s, def, task, attempt) = match worker_report_context(state, defs, input) {
        Ok(c) => c,
        Err(d) => return d,
    };
    let name = &task.name;
    let rt = s.task(name);
    if attempt != rt.attempt || !matches!(rt.state, TaskState::Scheduled | TaskState::Running) {
        return stale(
            s,
            format!(
                "checkpoint of attempt {attempt} of task '{name}', which is at attempt {} ({})",
                rt.attempt, rt.state
            ),
        );
    }
    if let Err(why) = crate::checkpoint::check_size(&input.data) {
        let what = format!("task '{name}': {why}");
        return reject(Some(s), input, Rejection::IllegalTransition { what });
    }
    match Run::start(Some(s), Some(def), input) {
        Ok(run) => run.finish(),
        Err(rejected) => rejected,
    }
}

/// Whether a failed attempt is retried, and after how long.
pub(super) fn retry_decision(
    task: &TaskConfiguration,
    attempt: u32,
    err: &ErrorInfo,
    seed: EventId,
) -> (bool, u64) {
    let retry = task
        .retry_config
        .should_retry(attempt, &err.error_type, err.retryable);
    let delay = if retry {
        backoff_ms(task, attempt, seed)
    } else {
        0
    };
    (retry, delay)
}

/// Marks a `task.failed` with the retry decision and, for a backoff, its timer.
pub(super) fn annotate_failure(
    metadata: &mut std::collections::BTreeMap<String, String>,
    task: &TaskConfiguration,
    attempt: u32,
    retry: bool,
    delay: u64,
    now: i64,
) {
    metadata.insert(meta::RETRY.into(), retry.to_string());
    if retry {
        metadata.insert(meta::RETRY_DELAY_MS.into(), delay.to_string());
        if delay > 0 {
            let t = Timer::task(
                TimerKind::Retry,
                &task.name,
                attempt + 1,
                now + delay as i64,
            );
            metadata.insert(meta::TIMERS.into(), encode_timers(&[t]));
        }
    }
}

/// The execution and heartbeat timeouts of an attempt that just started.
fn started_timers(task: &TaskConfiguration, attempt: u32, now: i64) -> Vec<Timer> {
    let tc = &task.timeout_config;
    let mut out = Vec::new();
    if tc.execution_timeout_ms > 0 {
        // The worker enforces the deadline itself; this is the backstop when it cannot.
        out.push(Timer::task(
            TimerKind::Execution,
            &task.name,
            attempt,
            now + tc.execution_timeout_ms as i64,
        ));
    }
    if tc.heartbeat_timeout_ms > 0 {
        out.push(Timer::task(
            TimerKind::Heartbeat,
            &task.name,
            attempt,
            now + tc.heartbeat_timeout_ms as i64,
        ));
    }
    out
}

/// Delay before the retry of `attempt`, with deterministic jitter seeded by the failure.
fn backoff_ms(task: &TaskConfiguration, attempt: u32, seed: EventId) -> u64 {
    let base = task.retry_config.delay_ms(attempt);
    if !task.retry_config.jitter || base == 0 {
        return base;
    }
    let r = u64::from_be_bytes(seed.as_bytes()[..8].try_into().expect("8 bytes"));
    base / 2 + r % (base / 2 + 1)
}

/// The instance a control input names, if it exists and has not finished.
fn live_instance<'s>(
    state: Option<&'s InstanceState>,
    input: &WorkflowEvent,
) -> Result<&'s InstanceState, Decision> {
    let Some(s) = state else {
        return Err(reject(None, input, unknown_instance(input)));
    };
    if s.state.is_terminal() {
        return Err(reject(Some(s), input, Rejection::Finished(s.state)));
    }
    Ok(s)
}

pub(super) fn cancel(
    state: Option<&InstanceState>,
    defs: &dyn DefinitionLookup,
    input: &WorkflowEvent,
) -> Decision {
    let s = match live_instance(state, input) {
        Ok(s) => s,
        Err(d) => return d,
    };
    let def = defs.get(&s.workflow_type, s.definition_version);
    match Run::start(Some(s), def, input) {
        Ok(mut run) => {
            let reason = input
                .data_str("reason")
                .unwrap_or("workflow cancelled")
                .to_owned();
            run.close_open_tasks(&reason);
            run.finish()
        }
        Err(rejected) => rejected,
    }
}

pub(super) fn pause(
    state: Option<&InstanceState>,
    defs: &dyn DefinitionLookup,
    input: &WorkflowEvent,
) -> Decision {
    let s = match live_instance(state, input) {
        Ok(s) => s,
        Err(d) => return d,
    };
    let def = defs.get(&s.workflow_type, s.definition_version);
    match Run::start(Some(s), def, input) {
        Ok(run) => run.finish(),
        Err(rejected) => rejected,
    }
}

pub(super) fn resume(
    state: Option<&InstanceState>,
    defs: &dyn DefinitionLookup,
    input: &WorkflowEvent,
) -> Decision {
    let s = match live_instance(state, input) {
        Ok(s) => s,
        Err(d) => return d,
    };
    if s.state != WorkflowState::Paused {
        let what = format!("workflow is {}, not paused", s.state);
        return reject(Some(s), input, Rejection::IllegalTransition { what });
    }
    let def = defs.get(&s.workflow_type, s.definition_version);
    match Run::start(Some(s), def, input) {
        Ok(mut run) => {
            run.resume_retries();
            run.schedule_ready();
            run.finish()
        }
        Err(rejected) => rejected,
    }
}

/// An external signal: completes the `wait` tasks waiting for it, or is kept
/// for the one that starts waiting later.
pub(super) fn signal(
    state: Option<&InstanceState>,
    defs: &dyn DefinitionLookup,
    input: &WorkflowEvent,
) -> Decision {
    let s = match live_instance(state, input) {
        Ok(s) => s,
        Err(d) => return d,
    };
    if input.metadata.contains_key(meta::TASK) {
        let what = "a signal names no task (drop 'weft.task' from its metadata)".to_owned();
        return reject(Some(s), input, Rejection::IllegalTransition { what });
    }
    let name = input
        .metadata
        .get(meta::SIGNAL)
        .cloned()
        .unwrap_or_default();
    let def = defs.get(&s.workflow_type, s.definition_version);
    let mut run = match Run::start(Some(s), def, input) {
        Ok(r) => r,
        Err(rejected) => return rejected,
    };
    for task in run.tasks() {
        let waiting = run.state.task_state(&task.name) == TaskState::WaitingForDependency;
        if waiting && task.task_type == TaskType::Wait && wait_signal(task) == Some(name.as_str()) {
            run.emit(
                T::TaskCompleted,
                Some((&task.name, 1)),
                input.data.clone(),
                &[(meta::SIGNAL, name.clone())],
            );
        }
    }
    run.schedule_ready();
    run.finish()
}

/// The engine's report that no live node can run the current attempt of a
/// task (`error.occurred` with source kind [`SOURCE_KIND_UNSCHEDULABLE`]):
/// recorded while that attempt still waits for a worker, stale once it started
/// or ended. The attempt stays dispatched and runs when a capable node joins.
pub(super) fn unschedulable(
    state: Option<&InstanceState>,
    defs: &dyn DefinitionLookup,
    input: &WorkflowEvent,
) -> Decision {
    let (def, task, attempt) = match task_context(state, defs, input) {
        Ok(c) => c,
        Err(d) => return d,
    };
    let s = state.expect("task_context checked the instance");
    if s.state.is_terminal() {
        return stale(s, format!("workflow is already {}", s.state));
    }
    let rt = s.task(&task.name);
    if attempt != rt.attempt || rt.state != TaskState::Scheduled {
        return stale(
            s,
            format!(
                "attempt {attempt} of task '{}' no longer waits for a worker",
                task.name
            ),
        );
    }
    match Run::start(state, Some(def), input) {
        Ok(run) => run.finish(),
        Err(rejected) => rejected,
    }
}

/// `weft.source_kind` of the engine's "no capable node" reports.
pub const SOURCE_KIND_UNSCHEDULABLE: &str = "unschedulable";
/// `error_type` of those reports.
pub const NO_CAPABLE_NODE: &str = "no_capable_node";

/// The input reporting that no live node can run `attempt` of `task` of an
/// instance (see [`unschedulable`]). Its key depends only on the attempt, so
/// a second report of the same attempt is a duplicate.
pub fn unschedulable_input(
    workflow_type: &str,
    instance_id: crate::ids::InstanceId,
    task: &str,
    attempt: u32,
    message: &str,
    now_ms: i64,
) -> WorkflowEvent {
    let key = format!("unschedulable:{task}:{attempt}");
    let metadata = std::collections::BTreeMap::from([
        (
            meta::SOURCE_KIND.to_owned(),
            SOURCE_KIND_UNSCHEDULABLE.to_owned(),
        ),
        (meta::TASK.to_owned(), task.to_owned()),
        (meta::ATTEMPT.to_owned(), attempt.to_string()),
    ]);
    WorkflowEvent {
        event_id: EventId::named(instance_id, &key),
        event_type: T::ErrorOccurred,
        workflow_type: workflow_type.to_owned(),
        instance_id,
        sequence_number: 0,
        causation_id: None,
        correlation_chain: Vec::new(),
        timestamp_ms: now_ms,
        data: super::error_fields(NO_CAPABLE_NODE, message, true),
        metadata,
        idempotency_key: key,
        source_node_id: crate::fsm::DECIDER_NODE_ID.to_owned(),
    }
}
