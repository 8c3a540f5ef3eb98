//! Histories made by the real decider: a driver that decides inputs for one
//! instance of a diamond workflow (a → b, c → d, no retries) and keeps its
//! history and dispatches, and a writer that stores decided events and states
//! the way a partition does (one batch per group of inputs).

use weft_shared::data::{DataMap, WorkflowData};
use weft_shared::definition::WorkflowDefinition;
use weft_shared::event::WorkflowEventType as T;
use weft_shared::fsm::{decide, evolve, meta, DefinitionLookup, InstanceState};
use weft_shared::ids::{EventId, InstanceId};
use weft_shared::model::TaskConfiguration;
use weft_shared::{TaskDispatch, WorkflowEvent};

use crate::store::{Previous, Store};

pub const TASKS: [&str; 4] = ["a", "b", "c", "d"];

pub struct Defs(pub Vec<WorkflowDefinition>);

impl DefinitionLookup for Defs {
    fn get(&self, ty: &str, version: u32) -> Option<&WorkflowDefinition> {
        self.0
            .iter()
            .find(|d| d.workflow_type == ty && d.version == version)
    }
    fn latest_at(&self, ty: &str, at_ms: i64) -> Option<&WorkflowDefinition> {
        self.0
            .iter()
            .filter(|d| d.workflow_type == ty && d.registered_at_ms <= at_ms)
            .max_by_key(|d| d.version)
    }
}

/// The diamond definition, registered for each of `types`.
pub fn diamond(types: &[&str]) -> Defs {
    Defs(
        types
            .iter()
            .map(|ty| {
                WorkflowDefinition::new(
                    *ty,
                    vec![
                        TaskConfiguration::new("a", "noop"),
                        TaskConfiguration::new("b", "noop").after("a"),
                        TaskConfiguration::new("c", "noop").after("a"),
                        TaskConfiguration::new("d", "noop").after("b").after("c"),
                    ],
                )
            })
            .collect(),
    )
}

/// One instance driven by the decider.
pub struct Driver {
    pub ty: String,
    pub id: InstanceId,
    pub state: Option<InstanceState>,
    pub history: Vec<WorkflowEvent>,
    pub dispatches: Vec<TaskDispatch>,
    /// `history[..stored]` is in the store.
    pub stored: usize,
    /// What the store holds for the instance.
    pub previous: Option<Previous>,
    pub ts: i64,
    n: u64,
}

impl Driver {
    pub fn new(ty: &str, id: InstanceId, created_at_ms: i64) -> Self {
        Self {
            ty: ty.into(),
            id,
            state: None,
            history: Vec::new(),
            dispatches: Vec::new(),
            stored: 0,
            previous: None,
            ts: created_at_ms,
            n: 0,
        }
    }

    /// Decides one input (timestamps never go back).
    pub fn input(&mut self, defs: &Defs, ty: T, task: Option<&str>, data: DataMap) {
        self.n += 1;
        let key = format!("{}-{}", self.id, self.n);
        let mut e = WorkflowEvent::new(ty, &self.ty, self.id, key, self.ts);
        e.event_id = EventId::derived(&[self.id.as_bytes(), &self.n.to_be_bytes()]);
        e.data = data;
        if let Some(name) = task {
            let attempt = self
                .state
                .as_ref()
                .map(|s| s.task(name).attempt)
                .unwrap_or(0);
            e.metadata.insert(meta::TASK.into(), name.into());
            e.metadata
                .insert(meta::ATTEMPT.into(), attempt.max(1).to_string());
        }
        let d = decide(self.state.as_ref(), defs, &e);
        if d.state.is_some() {
            self.state = d.state;
        }
        self.history.extend(d.appended);
        self.dispatches.extend(d.dispatches);
        self.ts += 1;
    }

    pub fn create(&mut self, defs: &Defs) {
        let mut input = DataMap::new();
        input.insert("n".into(), WorkflowData::Int(7));
        self.input(defs, T::WorkflowCreated, None, input);
    }

    /// Input number `op` (mod 8) on task `task` (mod 4): what a fuzzing client
    /// or worker might send; many are rejected or stale, which is fine.
    pub fn op(&mut self, defs: &Defs, op: usize, task: usize) {
        let name = TASKS[task % TASKS.len()];
        match op % 8 {
            0 | 1 => self.input(defs, T::TaskStarted, Some(name), DataMap::new()),
            2 | 3 => {
                let mut out = DataMap::new();
                out.insert("by".into(), name.into());
                out.insert("x".into(), WorkflowData::Float(1.5));
                self.input(defs, T::TaskCompleted, Some(name), out);
            }
            4 => {
                let mut data = DataMap::new();
                data.insert("error_type".into(), "boom".into());
                data.insert("message".into(), "it broke".into());
                data.insert("retryable".into(), WorkflowData::Bool(false));
                self.input(defs, T::TaskFailed, Some(name), data);
            }
            5 => self.input(defs, T::WorkflowPaused, None, DataMap::new()),
            6 => self.input(defs, T::WorkflowResumed, None, DataMap::new()),
            _ => self.input(defs, T::TaskStarted, Some("no-such-task"), DataMap::new()),
        }
    }

    /// Task `name` starts and completes (as a worker reports it).
    pub fn run_task(&mut self, defs: &Defs, name: &str) {
        self.input(defs, T::TaskStarted, Some(name), DataMap::new());
        let mut out = DataMap::new();
        out.insert("by".into(), name.into());
        self.input(defs, T::TaskCompleted, Some(name), out);
    }

    /// Runs every task to completion (the workflow completes).
    pub fn complete_all(&mut self, defs: &Defs) {
        for task in 0..TASKS.len() {
            self.op(defs, 0, task);
            self.op(defs, 2, task);
        }
    }

    /// Writes the events decided since the last call and the state, in one batch.
    pub fn persist(&mut self, store: &Store, defs: &Defs) {
        let Some(s) = &self.state else { return };
        let mut b = store.batch();
        for e in &self.history[self.stored..] {
            b.put_event(e);
        }
        b.put_instance(
            self.previous,
            s,
            defs.get(&s.workflow_type, s.definition_version),
        )
        .expect("put instance");
        b.commit().expect("commit");
        self.stored = self.history.len();
        self.previous = Some(Previous::of(s));
    }
}

/// The fold of `events` from scratch.
pub fn fold(events: &[WorkflowEvent]) -> Option<InstanceState> {
    events
        .iter()
        .fold(None, |s, e| Some(evolve(s, e).expect("history folds")))
}
