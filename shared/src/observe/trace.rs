//! A workflow instance's trace, derived from its history: one root span for
//! the workflow, one span per workflow state it passed through, and one span
//! per task attempt (under its group's span when the task belongs to a
//! `parallel` or `sequential` group). Every transition is also a span event.
//!
//! Ids follow the W3C trace context Weft already puts on dispatches: the trace
//! id is the instance id, a task attempt's span id is its `task.scheduled`
//! event id (the parent span a worker sees in `traceparent`), the root span's
//! the `workflow.created` event id. Other ids are stable hashes, so the same
//! history always gives the same trace.
//!
//! A child workflow (ADR 0019) nests under its parent: its `workflow.created`
//! carries the W3C traceparent of the parent's task attempt
//! ([`META_PARENT_TRACEPARENT`]), so its trace id is the parent's and its root
//! span's parent is the parent's task span — one tree in Jaeger or Tempo.
//! Without it (an ordinary workflow) the trace is the instance's own.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use super::{stable_hash, transitions, Transition};
use crate::definition::WorkflowDefinition;
use crate::event::WorkflowEvent;
use crate::fsm::{evolve, EvolveError, InstanceState, Plan};
use crate::ids::{EventId, InstanceId};
use crate::state::{TaskState, WorkflowState};

/// Metadata on a child's `workflow.created`: the parent's type, instance and
/// task, and the W3C traceparent of the parent's task attempt.
pub const META_PARENT_TYPE: &str = "weft.parent_type";
pub const META_PARENT_INSTANCE: &str = "weft.parent_instance";
pub const META_PARENT_TASK: &str = "weft.parent_task";
pub const META_PARENT_TRACEPARENT: &str = "weft.parent_traceparent";

/// Where a child workflow's trace hangs in its parent's.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TraceParent {
    /// 32 hex digits: the parent's trace id (the child's trace id too).
    pub trace_id: String,
    /// 16 hex digits: the parent's task span, the child's root span's parent.
    pub span_id: String,
    pub workflow_type: Option<String>,
    pub instance_id: Option<String>,
    pub task: Option<String>,
}

impl TraceParent {
    /// The parent named by a `workflow.created`'s metadata; `None` when it
    /// carries no well-formed traceparent.
    pub fn of_created(e: &WorkflowEvent) -> Option<Self> {
        let (trace_id, span_id) = parse_traceparent(e.metadata.get(META_PARENT_TRACEPARENT)?)?;
        let get = |k: &str| e.metadata.get(k).cloned();
        Some(Self {
            trace_id,
            span_id,
            workflow_type: get(META_PARENT_TYPE),
            instance_id: get(META_PARENT_INSTANCE),
            task: get(META_PARENT_TASK),
        })
    }
}

/// `(trace id, span id)` of a W3C traceparent `00-<32 hex>-<16 hex>-<2 hex>`
/// (lower case, neither id all zeros).
pub fn parse_traceparent(tp: &str) -> Option<(String, String)> {
    let parts: Vec<&str> = tp.trim().split('-').collect();
    let [version, trace, span, flags] = parts.as_slice() else {
        return None;
    };
    let hex = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    let zero = |s: &str| s.bytes().all(|b| b == b'0');
    if !hex(version, 2) || *version == "ff" || !hex(flags, 2) {
        return None;
    }
    if !hex(trace, 32) || !hex(span, 16) || zero(trace) || zero(span) {
        return None;
    }
    Some(((*trace).to_owned(), (*span).to_owned()))
}

/// What a span stands for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SpanKind {
    Workflow,
    State,
    Task,
}

/// How a span ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "code", content = "message", rename_all = "snake_case")]
pub enum SpanStatus {
    Unset,
    Ok,
    Error(String),
}

/// Something that happened during a span (a state transition).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SpanEvent {
    pub at_ms: i64,
    pub name: String,
    pub attributes: BTreeMap<String, String>,
}

/// One span of a workflow trace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Span {
    /// 16 hex digits.
    pub span_id: String,
    pub parent_span_id: Option<String>,
    pub name: String,
    pub kind: SpanKind,
    pub start_ms: i64,
    /// `None` while the span is still open (the workflow has not got there yet).
    pub end_ms: Option<i64>,
    pub status: SpanStatus,
    pub attributes: BTreeMap<String, String>,
    pub events: Vec<SpanEvent>,
}

/// The trace of one workflow instance.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Trace {
    /// 32 hex digits: the instance id, or its parent's trace id for a child
    /// workflow.
    pub trace_id: String,
    pub workflow_type: String,
    pub instance_id: InstanceId,
    /// A child workflow's parent: its trace and task span.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent: Option<TraceParent>,
    /// The root span first, then the others in the order they opened.
    pub spans: Vec<Span>,
}

/// The first 16 hex digits of an event id: a span id.
pub fn span_id_of(id: EventId) -> String {
    id.0.simple().to_string()[..16].to_owned()
}

fn hashed_span_id(parts: &[&[u8]]) -> String {
    // A span id must not be all zeros; a hash of 0 is as unlikely as any other.
    format!("{:016x}", stable_hash(parts).max(1))
}

/// Builds the trace of `history` (an instance's events in sequence order).
/// `def`, when known, places task spans under their group's span and names
/// task types.
pub fn build(
    history: &[WorkflowEvent],
    def: Option<&WorkflowDefinition>,
) -> Result<Trace, EvolveError> {
    let mut b = Builder {
        plan: Plan::new(def),
        def,
        spans: Vec::new(),
        root: None,
        state_span: None,
        task_spans: HashMap::new(),
        parent: None,
    };
    let mut state: Option<InstanceState> = None;
    for e in history {
        let next = evolve(state.clone(), e)?;
        for t in transitions(state.as_ref(), &next) {
            b.apply(&t, e, &next);
        }
        if e.event_type == crate::event::WorkflowEventType::TaskCheckpointed {
            b.checkpoint(e);
        }
        state = Some(next);
    }
    let Some(s) = state else {
        return Err(EvolveError::NoInstance { seq: 0 });
    };
    if let Some(root) = b.root.and_then(|i| b.spans.get_mut(i)) {
        root.attributes.insert(
            "workflow.definition_version".into(),
            s.definition_version.to_string(),
        );
        root.attributes
            .insert("workflow.state".into(), s.state.to_string());
        root.attributes
            .insert("workflow.events".into(), s.last_seq.to_string());
    }
    Ok(Trace {
        // The parent's trace id for a child workflow, as on its dispatches.
        trace_id: s.trace_id_hex(),
        workflow_type: s.workflow_type,
        instance_id: s.instance_id,
        parent: b.parent,
        spans: b.spans,
    })
}

struct Builder<'d> {
    plan: Plan<'d>,
    def: Option<&'d WorkflowDefinition>,
    spans: Vec<Span>,
    root: Option<usize>,
    state_span: Option<usize>,
    /// Open span of each task's current attempt: `(attempt, span index)`.
    task_spans: HashMap<String, (u32, usize)>,
    /// The parent of a child workflow, from its `workflow.created`.
    parent: Option<TraceParent>,
}

impl Builder<'_> {
    fn apply(&mut self, t: &Transition, e: &WorkflowEvent, s: &InstanceState) {
        match t {
            Transition::Workflow { from, to } => self.workflow(*from, *to, e, s),
            Transition::Task {
                task,
                attempt,
                from,
                to,
            } => self.task(task, *attempt, *from, *to, e, s),
        }
    }

    /// A checkpoint saved: an event `checkpoint` on its task's open span.
    fn checkpoint(&mut self, e: &WorkflowEvent) {
        let Some(task) = e.metadata.get(crate::fsm::meta::TASK) else {
            return;
        };
        let Some((_, i)) = self.task_spans.get(task) else {
            return;
        };
        let mut attributes = BTreeMap::new();
        for (key, name) in [
            (crate::checkpoint::META_SEQ, "checkpoint.seq"),
            (crate::fsm::meta::ATTEMPT, "attempt"),
        ] {
            if let Some(v) = e.metadata.get(key) {
                attributes.insert(name.to_owned(), v.clone());
            }
        }
        attributes.insert("sequence".into(), e.sequence_number.to_string());
        self.spans[*i].events.push(SpanEvent {
            at_ms: e.timestamp_ms,
            name: "checkpoint".into(),
            attributes,
        });
    }

    fn root_id(&self) -> Option<String> {
        self.root.map(|i| self.spans[i].span_id.clone())
    }

    fn open(&mut self, span: Span) -> usize {
        self.spans.push(span);
        self.spans.len() - 1
    }

    fn workflow(
        &mut self,
        from: Option<WorkflowState>,
        to: WorkflowState,
        e: &WorkflowEvent,
        s: &InstanceState,
    ) {
        let at = e.timestamp_ms;
        if from.is_none() {
            let mut attributes = BTreeMap::new();
            attributes.insert("workflow.type".into(), s.workflow_type.clone());
            attributes.insert("workflow.id".into(), s.instance_id.to_string());
            self.parent = TraceParent::of_created(e);
            if let Some(p) = &self.parent {
                for (k, v) in [
                    ("workflow.parent.type", &p.workflow_type),
                    ("workflow.parent.id", &p.instance_id),
                    ("workflow.parent.task", &p.task),
                ] {
                    if let Some(v) = v {
                        attributes.insert(k.into(), v.clone());
                    }
                }
            }
            let i = self.open(new_span(
                span_id_of(s.created_event_id),
                self.parent.as_ref().map(|p| p.span_id.clone()),
                format!("workflow {}", s.workflow_type),
                SpanKind::Workflow,
                at,
                attributes,
            ));
            self.root = Some(i);
        }
        if let Some(i) = self.state_span.take() {
            close(&mut self.spans[i], at, SpanStatus::Unset);
        }
        if let Some(i) = self.root {
            self.spans[i].events.push(transition_event(
                at,
                "workflow",
                from.map(|f| f.to_string()),
                to.as_str(),
                e,
            ));
        }
        if to.is_terminal() {
            if let Some(i) = self.root {
                let status = match to {
                    WorkflowState::Completed => SpanStatus::Ok,
                    _ => SpanStatus::Error(match &s.error {
                        Some(err) => format!("{to}: {}", err.message),
                        None => to.to_string(),
                    }),
                };
                close(&mut self.spans[i], at, status);
            }
            return;
        }
        let mut attributes = BTreeMap::new();
        attributes.insert("workflow.state".into(), to.to_string());
        attributes.insert("transition.cause".into(), e.event_type.to_string());
        if let Some(f) = from {
            attributes.insert("transition.from".into(), f.to_string());
        }
        let id = hashed_span_id(&[b"state", e.event_id.as_bytes(), to.as_str().as_bytes()]);
        let parent = self.root_id();
        self.state_span = Some(self.open(new_span(
            id,
            parent,
            format!("state {to}"),
            SpanKind::State,
            at,
            attributes,
        )));
    }

    fn task(
        &mut self,
        task: &str,
        attempt: u32,
        from: TaskState,
        to: TaskState,
        e: &WorkflowEvent,
        s: &InstanceState,
    ) {
        let at = e.timestamp_ms;
        let rt = s.task(task);
        let current = self.task_spans.get(task).copied();
        let i = match current {
            Some((a, i)) if a == attempt => i,
            _ => {
                if let Some((_, old)) = self.task_spans.remove(task) {
                    close(&mut self.spans[old], at, SpanStatus::Unset);
                }
                let id = match (attempt, rt.scheduled_event_id) {
                    (1.., Some(ev)) => span_id_of(ev),
                    _ => hashed_span_id(&[
                        s.instance_id.as_bytes(),
                        task.as_bytes(),
                        &attempt.to_be_bytes(),
                    ]),
                };
                let parent = self
                    .plan
                    .group_of(task)
                    .and_then(|g| self.task_spans.get(g))
                    .map(|(_, g)| self.spans[*g].span_id.clone())
                    .or_else(|| self.root_id());
                let mut attributes = BTreeMap::new();
                attributes.insert("task.name".into(), task.to_owned());
                attributes.insert("task.attempt".into(), attempt.to_string());
                if let Some(cfg) = self.def.and_then(|d| d.task(task)) {
                    attributes.insert("task.type".into(), cfg.task_type.to_string());
                }
                let i = self.open(new_span(
                    id,
                    parent,
                    format!("task {task}"),
                    SpanKind::Task,
                    at,
                    attributes,
                ));
                self.task_spans.insert(task.to_owned(), (attempt, i));
                i
            }
        };
        let span = &mut self.spans[i];
        span.events.push(transition_event(
            at,
            "task",
            Some(from.to_string()),
            to.as_str(),
            e,
        ));
        if let Some(node) = &rt.node_id {
            span.attributes.insert("task.node_id".into(), node.clone());
        }
        if !(to.is_terminal() || to == TaskState::Retrying) {
            return;
        }
        span.attributes
            .insert("task.outcome".into(), to.to_string());
        if let (Some(scheduled), Some(started)) = (rt.scheduled_at_ms, rt.started_at_ms) {
            span.attributes.insert(
                "task.queue_ms".into(),
                (started - scheduled).max(0).to_string(),
            );
        }
        if let Some(started) = rt.started_at_ms {
            span.attributes
                .insert("task.run_ms".into(), (at - started).max(0).to_string());
        }
        // What the worker measured: `task.cpu_ms`, `task.wall_ms`, `task.peak_rss_kb`, …
        for (k, v) in &rt.resource_usage {
            span.attributes.insert(format!("task.{k}"), v.to_string());
        }
        if !rt.usage_scope.is_empty() {
            span.attributes
                .insert("task.usage_scope".into(), rt.usage_scope.clone());
        }
        for (k, v) in &rt.metrics {
            span.attributes
                .insert(format!("task.metric.{k}"), v.to_string());
        }
        if rt.checkpoints > 0 {
            span.attributes
                .insert("task.checkpoints".into(), rt.checkpoints.to_string());
        }
        let status = match to {
            TaskState::Completed => SpanStatus::Ok,
            TaskState::Skipped => SpanStatus::Unset,
            _ => SpanStatus::Error(match &rt.error {
                Some(err) => format!("{}: {}", err.error_type, err.message),
                None => to.to_string(),
            }),
        };
        close(span, at, status);
        self.task_spans.remove(task);
    }
}

fn new_span(
    span_id: String,
    parent_span_id: Option<String>,
    name: String,
    kind: SpanKind,
    start_ms: i64,
    attributes: BTreeMap<String, String>,
) -> Span {
    Span {
        span_id,
        parent_span_id,
        name,
        kind,
        start_ms,
        end_ms: None,
        status: SpanStatus::Unset,
        attributes,
        events: Vec::new(),
    }
}

fn close(span: &mut Span, at_ms: i64, status: SpanStatus) {
    if span.end_ms.is_none() {
        span.end_ms = Some(at_ms.max(span.start_ms));
        span.status = status;
    }
}

fn transition_event(
    at_ms: i64,
    what: &str,
    from: Option<String>,
    to: &str,
    cause: &WorkflowEvent,
) -> SpanEvent {
    let mut attributes = BTreeMap::new();
    if let Some(f) = from {
        attributes.insert("from".into(), f);
    }
    attributes.insert("to".into(), to.to_owned());
    attributes.insert("cause".into(), cause.event_type.to_string());
    attributes.insert("sequence".into(), cause.sequence_number.to_string());
    SpanEvent {
        at_ms,
        name: format!("{what} {to}"),
        attributes,
    }
}
