//! The decider: checks an input event, applies it, and derives what follows.
//! `inputs` handles each kind of input (start, task results, cancel, pause,
//! resume, signals), `fired` the timers, `flow` what every input may lead to
//! (scheduling, groups, branches, waits, completion, failure and saga
//! compensation). Every derived event goes through `evolve` as it is emitted,
//! so the state returned always equals the fold of `appended`.

#![allow(clippy::result_large_err)] // a rejection *is* a Decision, built once per input

mod fired;
mod flow;
mod inputs;
pub mod isolation;
mod plan;

use std::collections::BTreeMap;

use crate::control::{ControlAction, TaskControl};
use crate::data::{DataMap, WorkflowData};
use crate::definition::WorkflowDefinition;
use crate::dispatch::TaskDispatch;
use crate::event::{WorkflowEvent, WorkflowEventType as T, SOURCE_KIND_DECISION};
use crate::fsm::evolve::evolve;
use crate::fsm::timer::{encode_timers, Timer, SOURCE_KIND_TIMER};
use crate::fsm::{
    meta, Decision, DefinitionLookup, InstanceState, Outcome, Rejection, DECIDER_NODE_ID,
};
use crate::ids::{EventId, ExecutionId, TaskId};
use crate::model::TaskConfiguration;

pub use inputs::{unschedulable_input, NO_CAPABLE_NODE, SOURCE_KIND_UNSCHEDULABLE};
pub(crate) use plan::Plan;

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
    let timer =
        input.metadata.get(meta::SOURCE_KIND).map(String::as_str) == Some(SOURCE_KIND_TIMER);
    match input.event_type {
        T::WorkflowCreated => inputs::created(state, defs, input),
        T::TaskStarted | T::TaskCompleted | T::TaskFailed => {
            inputs::task_result(state, defs, input)
        }
        T::TaskCheckpointed => inputs::checkpoint(state, defs, input),
        T::WorkflowCancelled => inputs::cancel(state, defs, input),
        T::WorkflowPaused => inputs::pause(state, defs, input),
        T::WorkflowResumed => inputs::resume(state, defs, input),
        T::DependencyResolved if input.metadata.contains_key(meta::SIGNAL) => {
            inputs::signal(state, defs, input)
        }
        T::StateTransitioned if timer => fired::timer(state, defs, input),
        T::ErrorOccurred
            if input.metadata.get(meta::SOURCE_KIND).map(String::as_str)
                == Some(inputs::SOURCE_KIND_UNSCHEDULABLE) =>
        {
            inputs::unschedulable(state, defs, input)
        }
        other => reject(state, input, Rejection::NotAnInput { event_type: other }),
    }
}

/// One decision in progress: the state so far and what was appended.
struct Run<'a> {
    state: InstanceState,
    def: Option<&'a WorkflowDefinition>,
    plan: Plan<'a>,
    cause: WorkflowEvent,
    appended: Vec<WorkflowEvent>,
    dispatches: Vec<TaskDispatch>,
    controls: Vec<TaskControl>,
}

impl<'a> Run<'a> {
    /// Applies the input event itself (assigning its sequence number); an
    /// input the state machine does not allow is rejected.
    fn start(
        state: Option<&InstanceState>,
        def: Option<&'a WorkflowDefinition>,
        input: &WorkflowEvent,
    ) -> Result<Self, Decision> {
        let mut cause = input.clone();
        cause.sequence_number = state.map(|s| s.last_seq).unwrap_or(0) + 1;
        let next = evolve(state.cloned(), &cause).map_err(|e| {
            reject(
                state,
                input,
                Rejection::IllegalTransition {
                    what: e.to_string(),
                },
            )
        })?;
        Ok(Self {
            state: next,
            def,
            plan: Plan::new(def),
            appended: vec![cause.clone()],
            cause,
            dispatches: Vec::new(),
            controls: Vec::new(),
        })
    }

    fn finish(self) -> Decision {
        Decision {
            outcome: Outcome::Applied,
            state: Some(self.state),
            appended: self.appended,
            dispatches: self.dispatches,
            controls: self.controls,
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
        // Derived events are legal by construction; a failure here is a bug in this module.
        self.state = evolve(Some(self.state.clone()), &event)
            .unwrap_or_else(|e| panic!("decider emitted an illegal {event_type}: {e}"));
        let id = event.event_id;
        self.appended.push(event);
        id
    }

    fn now(&self) -> i64 {
        self.cause.timestamp_ms
    }

    fn tasks(&self) -> &'a [TaskConfiguration] {
        self.def.map(|d| d.tasks.as_slice()).unwrap_or(&[])
    }

    fn task_config(&self, name: &str) -> Option<&'a TaskConfiguration> {
        self.def.and_then(|d| d.task(name))
    }

    /// Emits `task.scheduled` for `attempt` and the matching dispatch.
    fn schedule(&mut self, task: &TaskConfiguration, attempt: u32) {
        let def = self.def.expect("scheduling needs a definition");
        let task_id = TaskId::of(self.state.instance_id, &task.name);
        let execution_id = ExecutionId::of(task_id, attempt);
        let ts = self.now();
        let mut extra = vec![(meta::EXECUTION_ID, execution_id.to_string())];
        let response = task.timeout_config.response_timeout_ms;
        if response > 0 {
            let t = Timer::task(
                crate::fsm::TimerKind::Response,
                &task.name,
                attempt,
                ts + response as i64,
            );
            extra.push((meta::TIMERS, encode_timers(&[t])));
        }
        let scheduled_id = self.emit(
            T::TaskScheduled,
            Some((&task.name, attempt)),
            DataMap::new(),
            &extra,
        );
        let scheduled = self.appended.last().expect("just emitted");
        let timeout = task.timeout_config.execution_timeout_ms;
        let (input, mut upstream) =
            isolation::visible(isolation::level_of(def), &self.state, def, task);
        // A compensation sees the output of the task it undoes.
        for c in &self.state.compensations {
            if c.compensation_task == task.name {
                if let Some(out) = self
                    .state
                    .tasks
                    .get(&c.task_name)
                    .and_then(|t| t.output.clone())
                {
                    upstream.insert(c.task_name.clone(), out);
                }
            }
        }
        // A retried attempt starts from the last checkpoint of an earlier one.
        if let Some(cp) = self
            .state
            .tasks
            .get(&task.name)
            .and_then(|t| t.checkpoint.clone())
        {
            upstream.insert(crate::checkpoint::UPSTREAM_KEY.to_owned(), cp);
        }
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
            input,
            parameters: task.parameters.clone(),
            upstream,
            execution_semantics: task.execution_semantics,
            priority: task.priority,
            timeout_config: task.timeout_config.clone(),
            idempotency_key: format!("{}/{}", self.state.instance_id, task.name),
            scheduled_event_id: scheduled_id,
            correlation_chain: scheduled.correlation_chain.clone(),
            scheduled_at_ms: ts,
            not_before_ms: 0,
            deadline_ms: if timeout > 0 { ts + timeout as i64 } else { 0 },
            traceparent: traceparent(&self.state, scheduled_id),
        });
    }

    /// Tells the worker running attempt `attempt` of `task` to stop.
    fn cancel_attempt(&mut self, task: &str, attempt: u32, reason: &str) {
        let grace = self
            .task_config(task)
            .map(|t| t.timeout_config.grace_period_ms)
            .filter(|g| *g > 0)
            .or_else(|| self.def.map(|d| d.timeout_config.grace_period_ms))
            .unwrap_or(0);
        let task_id = TaskId::of(self.state.instance_id, task);
        self.controls.push(TaskControl {
            action: ControlAction::Cancel,
            workflow_type: self.state.workflow_type.clone(),
            instance_id: self.state.instance_id,
            task_name: task.to_owned(),
            attempt,
            execution_id: ExecutionId::of(task_id, attempt),
            grace_period_ms: grace,
            reason: reason.to_owned(),
        });
    }
}

/// W3C traceparent: the trace is the instance's (its parent's for a child
/// workflow), the span the scheduled event — the task attempt's span id in the
/// trace built from the history (`observe::trace::span_id_of`).
fn traceparent(state: &InstanceState, span: EventId) -> String {
    let trace = state.trace_id_hex();
    let span = crate::observe::trace::span_id_of(span);
    format!("00-{trace}-{span}-01")
}

/// `{error_type, message, retryable}`: the data of failure events.
fn error_fields(error_type: &str, message: &str, retryable: bool) -> DataMap {
    let mut data = DataMap::new();
    data.insert("error_type".into(), error_type.into());
    data.insert("message".into(), message.into());
    data.insert("retryable".into(), WorkflowData::Bool(retryable));
    data
}

fn unknown_instance(input: &WorkflowEvent) -> Rejection {
    Rejection::UnknownInstance {
        workflow_type: input.workflow_type.clone(),
        instance: input.instance_id.to_string(),
    }
}

fn error_data(kind: &str, message: &str, input: &WorkflowEvent) -> DataMap {
    let mut data = error_fields(kind, message, false);
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
        controls: Vec::new(),
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
            controls: Vec::new(),
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
        controls: Vec::new(),
    }
}
