//! The events a worker appends for one task attempt — `task.started`, then
//! `task.completed` or `task.failed` — with deterministic ids and idempotency
//! keys derived from the execution id, so a republished result is recognised
//! and dropped by the orchestrator.

use std::collections::BTreeMap;

use rdkafka::message::OwnedHeaders;
use weft_shared::data::{DataMap, WorkflowData};
use weft_shared::event::{now_ms, META_SOURCE_KIND};
use weft_shared::ids::EventId;
use weft_shared::topics::headers;
use weft_shared::{TaskDispatch, WorkflowEvent, WorkflowEventType};

/// Metadata key: the task the event is about.
pub const META_TASK: &str = "weft.task";
/// Metadata key: the attempt number (decimal).
pub const META_ATTEMPT: &str = "weft.attempt";
/// Metadata key: the attempt's execution id.
pub const META_EXECUTION_ID: &str = "weft.execution_id";
/// `weft.source_kind` of events that come from outside the orchestrator.
pub const SOURCE_KIND_INPUT: &str = "input";

/// Which of the three attempt events.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttemptEvent {
    Started,
    Completed,
    Failed,
    /// A checkpoint the handler saved (see [`checkpoint_event`]).
    Checkpointed,
}

impl AttemptEvent {
    pub fn event_type(self) -> WorkflowEventType {
        match self {
            AttemptEvent::Started => WorkflowEventType::TaskStarted,
            AttemptEvent::Completed => WorkflowEventType::TaskCompleted,
            AttemptEvent::Failed => WorkflowEventType::TaskFailed,
            AttemptEvent::Checkpointed => WorkflowEventType::TaskCheckpointed,
        }
    }

    /// The suffix of the idempotency key and the kind in the event id.
    pub fn kind(self) -> &'static str {
        match self {
            AttemptEvent::Started => "started",
            AttemptEvent::Completed => "completed",
            AttemptEvent::Failed => "failed",
            AttemptEvent::Checkpointed => "checkpointed",
        }
    }
}

/// The `what` event of `dispatch`'s attempt, produced by node `node_id`.
pub fn attempt_event(
    dispatch: &TaskDispatch,
    what: AttemptEvent,
    data: DataMap,
    node_id: &str,
) -> WorkflowEvent {
    let exec = dispatch.execution_id;
    let mut correlation_chain = dispatch.correlation_chain.clone();
    correlation_chain.push(dispatch.scheduled_event_id);
    let metadata = BTreeMap::from([
        (META_TASK.to_owned(), dispatch.task_name.clone()),
        (META_ATTEMPT.to_owned(), dispatch.attempt.to_string()),
        (META_EXECUTION_ID.to_owned(), exec.to_string()),
        (META_SOURCE_KIND.to_owned(), SOURCE_KIND_INPUT.to_owned()),
    ]);
    WorkflowEvent {
        event_id: EventId::derived(&[b"worker", exec.as_bytes(), what.kind().as_bytes()]),
        event_type: what.event_type(),
        workflow_type: dispatch.workflow_type.clone(),
        instance_id: dispatch.instance_id,
        sequence_number: 0,
        causation_id: Some(dispatch.scheduled_event_id),
        correlation_chain,
        timestamp_ms: now_ms(),
        data,
        metadata,
        idempotency_key: format!("{exec}:{}", what.kind()),
        source_node_id: node_id.to_owned(),
    }
}

/// Checkpoint number `seq` (1, 2, …) of `dispatch`'s attempt: `task.checkpointed`
/// with the checkpoint as data, `weft.checkpoint_seq` in its metadata, and an
/// id and idempotency key (`<execution_id>:checkpoint:<seq>`) of its own.
pub fn checkpoint_event(
    dispatch: &TaskDispatch,
    seq: u32,
    data: DataMap,
    node_id: &str,
) -> WorkflowEvent {
    let exec = dispatch.execution_id;
    let mut e = attempt_event(dispatch, AttemptEvent::Checkpointed, data, node_id);
    e.event_id = EventId::derived(&[
        b"worker",
        exec.as_bytes(),
        b"checkpoint",
        &seq.to_be_bytes(),
    ]);
    e.idempotency_key = weft_shared::checkpoint::idempotency_key(exec, seq);
    e.metadata.insert(
        weft_shared::checkpoint::META_SEQ.to_owned(),
        seq.to_string(),
    );
    e
}

/// The data of `task.started`: which handler runs it and where.
pub fn started_data(dispatch: &TaskDispatch, node_id: &str) -> DataMap {
    DataMap::from([
        (
            "handler".to_owned(),
            WorkflowData::Str(dispatch.handler.clone()),
        ),
        ("node_id".to_owned(), WorkflowData::Str(node_id.to_owned())),
    ])
}

/// Record headers of an event: its type, idempotency key and the trace context.
pub fn event_headers(event: &WorkflowEvent, traceparent: &str) -> OwnedHeaders {
    let mut pairs = vec![
        (headers::EVENT_TYPE, event.event_type.as_str()),
        (headers::IDEMPOTENCY_KEY, event.idempotency_key.as_str()),
    ];
    if !traceparent.is_empty() {
        pairs.push((headers::TRACEPARENT, traceparent));
    }
    weft_shared::kafka::headers(&pairs)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use rdkafka::message::Headers;
    use weft_shared::ids::{ExecutionId, InstanceId, TaskId};
    use weft_shared::model::{ExecutionSemantics, TaskPriority, TaskType, TimeoutConfiguration};

    /// A dispatch of attempt 1 of task `work` running `handler`.
    pub(crate) fn dispatch(handler: &str) -> TaskDispatch {
        let instance_id = InstanceId::random();
        let task_id = TaskId::of(instance_id, "work");
        TaskDispatch {
            workflow_type: "orders".into(),
            instance_id,
            definition_version: 1,
            task_id,
            task_name: "work".into(),
            task_type: TaskType::Compute,
            handler: handler.into(),
            attempt: 1,
            execution_id: ExecutionId::of(task_id, 1),
            input: DataMap::new(),
            parameters: DataMap::new(),
            upstream: BTreeMap::new(),
            execution_semantics: ExecutionSemantics::AtLeastOnce,
            priority: TaskPriority::Normal,
            timeout_config: TimeoutConfiguration::default(),
            idempotency_key: format!("{instance_id}:work"),
            scheduled_event_id: EventId::random(),
            correlation_chain: vec![EventId::random()],
            scheduled_at_ms: now_ms(),
            not_before_ms: 0,
            deadline_ms: 0,
            traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into(),
        }
    }

    #[test]
    fn attempt_events_are_deterministic_and_chained() {
        let d = dispatch("noop");
        let a = attempt_event(&d, AttemptEvent::Completed, DataMap::new(), "w1");
        let b = attempt_event(&d, AttemptEvent::Completed, DataMap::new(), "w1");
        assert_eq!(a.event_id, b.event_id, "a republished result keeps its id");
        assert_ne!(
            a.event_id,
            attempt_event(&d, AttemptEvent::Started, DataMap::new(), "w1").event_id
        );
        assert_eq!(a.idempotency_key, format!("{}:completed", d.execution_id));
        assert_eq!(a.causation_id, Some(d.scheduled_event_id));
        assert_eq!(
            a.correlation_chain,
            [d.correlation_chain[0], d.scheduled_event_id]
        );
        assert_eq!(a.sequence_number, 0);
        assert_eq!(a.metadata[META_ATTEMPT], "1");
        assert_eq!(a.metadata[META_SOURCE_KIND], "input");
        assert!(!a.is_decision());
        let h = event_headers(&a, &d.traceparent);
        assert_eq!(h.count(), 3);
        assert_eq!(h.get(0).key, headers::EVENT_TYPE);
    }
}
