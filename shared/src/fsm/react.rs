//! The decider: checks an input event, applies it, and derives what follows
//! (start, dependency resolution and scheduling, retries, completion, failure
//! and cancellation). Every derived event goes through `evolve` as it is
//! emitted, so the state returned always equals the fold of `appended`.

use std::collections::BTreeMap;

use crate::data::{DataMap, WorkflowData};
use crate::definition::WorkflowDefinition;
use crate::dispatch::TaskDispatch;
use crate::event::{WorkflowEvent, WorkflowEventType as T, SOURCE_KIND_DECISION};
use crate::fsm::evolve::{error_from, evolve, task_ref, EvolveError};
use crate::fsm::{
    meta, Decision, DefinitionLookup, InstanceState, Outcome, Rejection, DECIDER_NODE_ID,
};
use crate::ids::{EventId, ExecutionId, TaskId};
use crate::model::{DependencyCondition, TaskConfiguration};
use crate::state::{TaskState, WorkflowState};

pub(super) fn decide(
    state: Option<&InstanceState>,
    defs: &dyn DefinitionLookup,
    input: &WorkflowEvent,
) -> Decision {
    if input.is_decision() {
        return reject(
            state,
            input,
            Rejection::NotAnInput {
                event_type: input.event_type,
            },
        );
    }
    match input.event_type {
        T::WorkflowCreated => created(state, defs, input),
        T::TaskStarted | T::TaskCompleted | T::TaskFailed => task_result(state, defs, input),
        T::WorkflowCancelled => cancel(state, defs, input),
        other => reject(state, input, Rejection::NotAnInput { event_type: other }),
    }
}

/// One decision in progress: the state so far and what was appended.
struct Run<'a> {
    state: InstanceState,
    def: Option<&'a WorkflowDefinition>,
    cause: WorkflowEvent,
    appended: Vec<WorkflowEvent>,
    dispatches: Vec<TaskDispatch>,
}

impl<'a> Run<'a> {
    /// Applies the input event itself (assigning its sequence number).
    fn start(
        state: Option<&InstanceState>,
        def: Option<&'a WorkflowDefinition>,
        input: &WorkflowEvent,
    ) -> Result<Self, EvolveError> {
        let mut cause = input.clone();
        cause.sequence_number = state.map(|s| s.last_seq).unwrap_or(0) + 1;
        let state = evolve(state.cloned(), &cause)?;
        Ok(Self {
            state,
            def,
            appended: vec![cause.clone()],
            cause,
            dispatches: Vec::new(),
        })
    }

    fn finish(self) -> Decision {
        Decision {
            outcome: Outcome::Applied,
            state: Some(self.state),
            appended: self.appended,
            dispatches: self.dispatches,
        }
    }

    /// Emits one derived event and folds it into the state.
    fn emit(
        &mut self,
        event_type: T,
        task: Option<(&str, u32)>,
        data: DataMap,
        extra: &[(&str, String)],
    ) -> EventId {
        let index = (self.appended.len() - 1) as u32;
        let mut chain = self.cause.correlation_chain.clone();
        chain.push(self.cause.event_id);
        let mut metadata = BTreeMap::new();
        metadata.insert(
            meta::SOURCE_KIND.to_owned(),
            SOURCE_KIND_DECISION.to_owned(),
        );
        if let Some((name, attempt)) = task {
            metadata.insert(meta::TASK.to_owned(), name.to_owned());
            metadata.insert(meta::ATTEMPT.to_owned(), attempt.to_string());
        }
        for (k, v) in extra {
            metadata.insert((*k).to_owned(), v.clone());
        }
        let event = WorkflowEvent {
            event_id: EventId::derived_from(self.cause.event_id, index),
            event_type,
            workflow_type: self.state.workflow_type.clone(),
            instance_id: self.state.instance_id,
            sequence_number: self.state.last_seq + 1,
            causation_id: Some(self.cause.event_id),
            correlation_chain: chain,
            timestamp_ms: self.cause.timestamp_ms,
            data,
            metadata,
            idempotency_key: format!("{}:{index}", self.cause.event_id),
            source_node_id: DECIDER_NODE_ID.to_owned(),
        };
        // Derived events are legal by construction; a failure here is a bug in this file.
        self.state = evolve(Some(self.state.clone()), &event)
            .unwrap_or_else(|e| panic!("decider emitted an illegal {event_type}: {e}"));
        let id = event.event_id;
        self.appended.push(event);
        id
    }

    fn tasks(&self) -> &'a [TaskConfiguration] {
        self.def.map(|d| d.tasks.as_slice()).unwrap_or(&[])
    }

    /// Schedules every pending task whose dependencies are met and skips those
    /// whose dependencies can no longer be met, until nothing changes.
    fn schedule_ready(&mut self) {
        if self.state.state.is_terminal() {
            return;
        }
        loop {
            let mut changed = false;
            for task in self.tasks() {
                if self.state.task_state(&task.name) != TaskState::Pending {
                    continue;
                }
                match deps_status(&self.state, task) {
                    Deps::Waiting => {}
                    Deps::Met => {
                        if !task.dependencies.is_empty() {
                            self.emit(
                                T::DependencyResolved,
                                Some((&task.name, 0)),
                                DataMap::new(),
                                &[],
                            );
                        }
                        self.schedule(task, 1, 0);
                        changed = true;
                    }
                    Deps::Broken(dep) => {
                        let mut data = DataMap::new();
                        data.insert("dependency".into(), dep.clone().into());
                        self.emit(T::DependencyFailed, Some((&task.name, 0)), data, &[]);
                        self.emit(T::TaskSkipped, Some((&task.name, 0)), DataMap::new(), &[]);
                        changed = true;
                    }
                }
            }
            if !changed {
                break;
            }
        }
        self.complete_if_done();
    }

    /// Emits `task.scheduled` for `attempt` and the matching dispatch.
    fn schedule(&mut self, task: &TaskConfiguration, attempt: u32, delay_ms: u64) {
        let def = self.def.expect("scheduling needs a definition");
        let task_id = TaskId::of(self.state.instance_id, &task.name);
        let execution_id = ExecutionId::of(task_id, attempt);
        let extra = [(meta::EXECUTION_ID, execution_id.to_string())];
        let scheduled_id = self.emit(
            T::TaskScheduled,
            Some((&task.name, attempt)),
            DataMap::new(),
            &extra,
        );
        let scheduled = self.appended.last().expect("just emitted");
        let ts = self.cause.timestamp_ms;
        let not_before = if delay_ms > 0 {
            ts + delay_ms as i64
        } else {
            0
        };
        let timeout = task.timeout_config.execution_timeout_ms;
        let upstream = task
            .dependencies
            .iter()
            .filter_map(|d| {
                Some((
                    d.task_name.clone(),
                    self.state.tasks.get(&d.task_name)?.output.clone()?,
                ))
            })
            .collect();
        self.dispatches.push(TaskDispatch {
            workflow_type: self.state.workflow_type.clone(),
            instance_id: self.state.instance_id,
            definition_version: def.version,
            task_id,
            task_name: task.name.clone(),
            task_type: task.task_type,
            handler: task.handler.clone(),
            attempt,
            execution_id,
            input: self.state.input.clone(),
            parameters: task.parameters.clone(),
            upstream,
            execution_semantics: task.execution_semantics,
            priority: task.priority,
            timeout_config: task.timeout_config.clone(),
            idempotency_key: format!("{}/{}", self.state.instance_id, task.name),
            scheduled_event_id: scheduled_id,
            correlation_chain: scheduled.correlation_chain.clone(),
            scheduled_at_ms: ts,
            not_before_ms: not_before,
            deadline_ms: if timeout > 0 {
                ts.max(not_before) + timeout as i64
            } else {
                0
            },
            traceparent: traceparent(&self.state, scheduled_id),
        });
    }

    /// Completes the workflow once every task is completed or skipped.
    fn complete_if_done(&mut self) {
        if self.state.state != WorkflowState::Running || self.tasks().is_empty() {
            return;
        }
        let done = self.tasks().iter().all(|t| {
            matches!(
                self.state.task_state(&t.name),
                TaskState::Completed | TaskState::Skipped
            )
        });
        if done {
            self.emit(T::WorkflowCompleted, None, DataMap::new(), &[]);
        }
    }

    /// Ends the workflow as failed: open tasks are cancelled or skipped first.
    fn fail(&mut self, error_type: &str, message: &str, task: Option<&str>) {
        self.close_open_tasks();
        let mut data = DataMap::new();
        data.insert("error_type".into(), error_type.into());
        data.insert("message".into(), message.into());
        data.insert("retryable".into(), WorkflowData::Bool(false));
        let extra: Vec<(&str, String)> = task
            .map(|t| (meta::TASK, t.to_owned()))
            .into_iter()
            .collect();
        self.emit(T::WorkflowFailed, None, data, &extra);
    }

    /// Cancels running attempts and skips tasks that never ran.
    fn close_open_tasks(&mut self) {
        for task in self.tasks() {
            let rt = self.state.task(&task.name);
            match rt.state {
                TaskState::Pending => {
                    self.emit(
                        T::TaskSkipped,
                        Some((&task.name, rt.attempt)),
                        DataMap::new(),
                        &[],
                    );
                }
                s if !s.is_terminal() => {
                    self.emit(
                        T::TaskCancelled,
                        Some((&task.name, rt.attempt)),
                        DataMap::new(),
                        &[],
                    );
                }
                _ => {}
            }
        }
    }
}

enum Deps {
    Met,
    Waiting,
    Broken(String),
}

fn deps_status(state: &InstanceState, task: &TaskConfiguration) -> Deps {
    let mut waiting = false;
    for dep in &task.dependencies {
        let s = state.task_state(&dep.task_name);
        let ok = match dep.condition {
            DependencyCondition::Completed => s == TaskState::Completed,
            DependencyCondition::Finished => s.is_terminal(),
            DependencyCondition::Failed => s == TaskState::Failed,
        };
        if ok {
            continue;
        }
        if s.is_terminal() {
            return Deps::Broken(dep.task_name.clone());
        }
        waiting = true;
    }
    if waiting {
        Deps::Waiting
    } else {
        Deps::Met
    }
}

/// W3C traceparent: the trace is the instance, the span the scheduled event.
fn traceparent(state: &InstanceState, span: EventId) -> String {
    let trace = state.instance_id.0.simple().to_string();
    let span = &span.0.simple().to_string()[..16];
    format!("00-{trace}-{span}-01")
}

fn created(
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
        Err(e) => {
            return reject(
                None,
                input,
                Rejection::IllegalTransition {
                    what: e.to_string(),
                },
            )
        }
    };
    let Some(def) = def else {
        let data = error_data(missing.kind(), &missing.to_string(), input);
        run.emit(T::ErrorOccurred, None, data, &[]);
        run.fail(missing.kind(), &missing.to_string(), None);
        return run.finish();
    };
    let mut effective = def.default_input.clone();
    effective.extend(input.data.clone());
    run.emit(
        T::WorkflowStarted,
        None,
        effective,
        &[(meta::DEFINITION_VERSION, def.version.to_string())],
    );
    run.schedule_ready();
    run.finish()
}

fn task_result(
    state: Option<&InstanceState>,
    defs: &dyn DefinitionLookup,
    input: &WorkflowEvent,
) -> Decision {
    let Some(s) = state else {
        return reject(None, input, unknown_instance(input));
    };
    let Ok((name, attempt)) = task_ref(input) else {
        return reject(
            Some(s),
            input,
            Rejection::MissingMetadata {
                event_type: input.event_type,
                key: meta::TASK,
            },
        );
    };
    let Some(def) = defs.get(&s.workflow_type, s.definition_version) else {
        let version = s.definition_version;
        return reject(
            Some(s),
            input,
            Rejection::UnknownDefinition {
                workflow_type: s.workflow_type.clone(),
                version,
            },
        );
    };
    let Some(task) = def.task(&name) else {
        return reject(Some(s), input, Rejection::UnknownTask(name));
    };
    if s.state.is_terminal() {
        return stale(s, format!("workflow is already {}", s.state));
    }
    let rt = s.task(&name);
    if attempt != rt.attempt {
        return stale(
            s,
            format!(
                "attempt {attempt} of task '{name}' is not the current attempt {}",
                rt.attempt
            ),
        );
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
    let mut retry_delay = 0;
    if input.event_type == T::TaskFailed {
        let err = error_from(input);
        let retry = task
            .retry_config
            .should_retry(attempt, &err.error_type, err.retryable);
        if retry {
            retry_delay = backoff_ms(task, attempt, input.event_id);
            applied
                .metadata
                .insert(meta::RETRY_DELAY_MS.into(), retry_delay.to_string());
        }
        applied
            .metadata
            .insert(meta::RETRY.into(), retry.to_string());
    }
    let mut run = match Run::start(Some(s), Some(def), &applied) {
        Ok(r) => r,
        Err(e) => {
            return reject(
                Some(s),
                input,
                Rejection::IllegalTransition {
                    what: e.to_string(),
                },
            )
        }
    };
    match input.event_type {
        T::TaskCompleted => run.schedule_ready(),
        T::TaskFailed if run.state.task_state(&name) == TaskState::Retrying => {
            if run.state.state == WorkflowState::Running {
                let extra = [(meta::RETRY_DELAY_MS, retry_delay.to_string())];
                run.emit(
                    T::WorkflowRetrying,
                    Some((&name, attempt + 1)),
                    DataMap::new(),
                    &extra,
                );
            }
            run.schedule(task, attempt + 1, retry_delay);
        }
        T::TaskFailed => {
            let err = error_from(input);
            let message = format!(
                "task '{name}' failed after {attempt} attempt(s): {}",
                err.message
            );
            run.fail(&err.error_type, &message, Some(&name));
        }
        _ => {}
    }
    run.finish()
}

fn cancel(
    state: Option<&InstanceState>,
    defs: &dyn DefinitionLookup,
    input: &WorkflowEvent,
) -> Decision {
    let Some(s) = state else {
        return reject(None, input, unknown_instance(input));
    };
    if s.state.is_terminal() {
        return stale(s, format!("workflow is already {}", s.state));
    }
    let def = defs.get(&s.workflow_type, s.definition_version);
    match Run::start(Some(s), def, input) {
        Ok(mut run) => {
            run.close_open_tasks();
            run.finish()
        }
        Err(e) => reject(
            Some(s),
            input,
            Rejection::IllegalTransition {
                what: e.to_string(),
            },
        ),
    }
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

fn unknown_instance(input: &WorkflowEvent) -> Rejection {
    Rejection::UnknownInstance {
        workflow_type: input.workflow_type.clone(),
        instance: input.instance_id.to_string(),
    }
}

fn error_data(kind: &str, message: &str, input: &WorkflowEvent) -> DataMap {
    let mut data = DataMap::new();
    data.insert("error_type".into(), kind.into());
    data.insert("message".into(), message.into());
    data.insert("retryable".into(), WorkflowData::Bool(false));
    data.insert(
        "original_event_id".into(),
        input.event_id.to_string().into(),
    );
    data.insert(
        "original_event_type".into(),
        input.event_type.as_str().into(),
    );
    data
}

fn stale(s: &InstanceState, reason: String) -> Decision {
    Decision {
        outcome: Outcome::Stale { reason },
        state: Some(s.clone()),
        appended: Vec::new(),
        dispatches: Vec::new(),
    }
}

/// Rejects `input`; when the instance exists, `error.occurred` records why.
fn reject(state: Option<&InstanceState>, input: &WorkflowEvent, why: Rejection) -> Decision {
    let Some(s) = state else {
        return Decision {
            outcome: Outcome::Rejected(why),
            state: None,
            appended: Vec::new(),
            dispatches: Vec::new(),
        };
    };
    let mut chain = input.correlation_chain.clone();
    chain.push(input.event_id);
    let mut metadata = BTreeMap::new();
    metadata.insert(
        meta::SOURCE_KIND.to_owned(),
        SOURCE_KIND_DECISION.to_owned(),
    );
    metadata.insert(meta::REASON.to_owned(), why.to_string());
    if let Some(t) = input.metadata.get(meta::TASK) {
        metadata.insert(meta::TASK.to_owned(), t.clone());
    }
    let event = WorkflowEvent {
        event_id: EventId::derived_from(input.event_id, 0),
        event_type: T::ErrorOccurred,
        workflow_type: s.workflow_type.clone(),
        instance_id: s.instance_id,
        sequence_number: s.last_seq + 1,
        causation_id: Some(input.event_id),
        correlation_chain: chain,
        timestamp_ms: input.timestamp_ms,
        data: error_data(why.kind(), &why.to_string(), input),
        metadata,
        idempotency_key: format!("{}:rejected", input.event_id),
        source_node_id: DECIDER_NODE_ID.to_owned(),
    };
    let state = evolve(Some(s.clone()), &event).expect("error.occurred is always legal");
    Decision {
        outcome: Outcome::Rejected(why),
        state: Some(state),
        appended: vec![event],
        dispatches: Vec::new(),
    }
}
