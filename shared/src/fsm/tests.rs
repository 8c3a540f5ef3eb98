//! Tests of the decider: the diamond DAG end to end, retries, stale and
//! rejected inputs, and a property test that random input sequences never
//! panic and that the decided state always equals the fold of the history.

use std::collections::BTreeMap;

use proptest::prelude::*;

use crate::data::{DataMap, WorkflowData};
use crate::definition::WorkflowDefinition;
use crate::event::{WorkflowEvent, WorkflowEventType as T};
use crate::fsm::{decide, evolve, meta, DefinitionLookup, InstanceState, Outcome};
use crate::ids::{EventId, InstanceId};
use crate::model::{RetryConfiguration, TaskConfiguration};
use crate::state::{TaskState, WorkflowState};

pub(crate) struct Defs(pub Vec<WorkflowDefinition>);

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

pub(crate) fn diamond(max_attempts: u32) -> Defs {
    let retry = RetryConfiguration {
        max_attempts,
        base_delay_ms: 10,
        ..Default::default()
    };
    let mut tasks = vec![
        TaskConfiguration::new("a", "noop"),
        TaskConfiguration::new("b", "noop").after("a"),
        TaskConfiguration::new("c", "noop").after("a"),
        TaskConfiguration::new("d", "noop").after("b").after("c"),
    ];
    for t in &mut tasks {
        t.retry_config = retry.clone();
    }
    Defs(vec![WorkflowDefinition::new("diamond", tasks)])
}

/// The diamond with retries, timeouts, a signal wait, a group and a saga.
fn rich() -> Defs {
    let mut defs = diamond(3);
    let tasks = &mut defs.0[0].tasks;
    for t in tasks.iter_mut() {
        t.timeout_config.response_timeout_ms = 500;
        t.timeout_config.heartbeat_timeout_ms = 700;
    }
    tasks[0].compensation = Some("undo_a".into());
    let mut wait = TaskConfiguration::new("w", "noop").after("a");
    wait.task_type = crate::model::TaskType::Wait;
    wait.parameters.insert("signal".into(), "go".into());
    wait.parameters
        .insert("duration_ms".into(), WorkflowData::Int(900));
    let mut group = TaskConfiguration::new("g", "noop").after("b");
    group.task_type = crate::model::TaskType::Parallel;
    group
        .parameters
        .insert("tasks".into(), WorkflowData::List(vec!["m".into()]));
    tasks.extend([
        wait,
        group,
        TaskConfiguration::new("m", "noop"),
        TaskConfiguration::new("undo_a", "noop"),
    ]);
    defs.0[0].timeout_config.execution_timeout_ms = 5_000;
    defs
}

/// An engine-less test driver: decides inputs and keeps the history.
pub(crate) struct Driver {
    pub defs: Defs,
    pub state: Option<InstanceState>,
    pub history: Vec<WorkflowEvent>,
    pub dispatches: Vec<crate::dispatch::TaskDispatch>,
    pub controls: Vec<crate::control::TaskControl>,
    pub id: InstanceId,
    pub ts: i64,
}

impl Driver {
    pub fn new(defs: Defs) -> Self {
        Self {
            defs,
            state: None,
            history: Vec::new(),
            dispatches: Vec::new(),
            controls: Vec::new(),
            id: InstanceId::derived(&[b"t"]),
            ts: 1_000,
        }
    }

    pub fn input(&mut self, ty: T, task: Option<(&str, u32)>, data: DataMap) -> Outcome {
        self.input_with(ty, task, data, &[])
    }

    pub fn input_with(
        &mut self,
        ty: T,
        task: Option<(&str, u32)>,
        data: DataMap,
        extra: &[(&str, &str)],
    ) -> Outcome {
        self.ts += 1;
        let ty_name = self
            .defs
            .0
            .first()
            .map(|d| d.workflow_type.clone())
            .unwrap_or_else(|| "diamond".into());
        let mut e = WorkflowEvent::new(ty, &ty_name, self.id, format!("k{}", self.ts), self.ts);
        for (k, v) in extra {
            e.metadata.insert((*k).into(), (*v).into());
        }
        e.event_id = EventId::derived(&[b"input", &self.ts.to_be_bytes()]);
        e.data = data;
        if let Some((name, attempt)) = task {
            e.metadata.insert(meta::TASK.into(), name.into());
            e.metadata.insert(meta::ATTEMPT.into(), attempt.to_string());
        }
        self.apply(&e)
    }

    fn apply(&mut self, e: &WorkflowEvent) -> Outcome {
        let d = decide(self.state.as_ref(), &self.defs, e);
        if let Some(s) = &d.state {
            self.state = Some(s.clone());
        }
        self.history.extend(d.appended.iter().cloned());
        self.dispatches.extend(d.dispatches.iter().cloned());
        self.controls.extend(d.controls.iter().cloned());
        d.outcome
    }

    /// Fires every timer due by the latest timestamp (advancing the clock to
    /// the earliest first); returns how many fired.
    pub fn fire_due(&mut self) -> usize {
        self.fire_until(i64::MAX / 4)
    }

    /// Fires timers due at or before `until`, earliest first.
    pub fn fire_until(&mut self, until: i64) -> usize {
        let mut fired = 0;
        loop {
            let Some(t) = self.state.as_ref().and_then(|s| {
                s.timers
                    .values()
                    .filter(|t| t.fire_at_ms <= until)
                    .min_by_key(|t| t.fire_at_ms)
                    .cloned()
            }) else {
                return fired;
            };
            let e = t.fire_event(&self.wf().workflow_type, self.id);
            self.ts = self.ts.max(t.fire_at_ms);
            assert_eq!(self.apply(&e), Outcome::Applied, "timer {} fires", t.id());
            fired += 1;
        }
    }

    pub fn run_task(&mut self, name: &str, attempt: u32) {
        assert_eq!(
            self.input(T::TaskStarted, Some((name, attempt)), DataMap::new()),
            Outcome::Applied
        );
        let mut out = DataMap::new();
        out.insert("by".into(), name.into());
        assert_eq!(
            self.input(T::TaskCompleted, Some((name, attempt)), out),
            Outcome::Applied
        );
    }

    pub fn fail_task(&mut self, name: &str, attempt: u32) -> Outcome {
        let mut data = DataMap::new();
        data.insert("error_type".into(), "boom".into());
        data.insert("message".into(), "it broke".into());
        data.insert("retryable".into(), WorkflowData::Bool(true));
        self.input(T::TaskFailed, Some((name, attempt)), data)
    }

    pub fn types(&self) -> Vec<&str> {
        self.history.iter().map(|e| e.event_type.as_str()).collect()
    }

    pub fn wf(&self) -> &InstanceState {
        self.state.as_ref().unwrap()
    }
}

pub(crate) fn fold(history: &[WorkflowEvent]) -> InstanceState {
    history
        .iter()
        .fold(None, |s, e| Some(evolve(s, e).unwrap()))
        .unwrap()
}

#[test]
fn diamond_runs_to_completion_with_gapless_causal_history() {
    let mut d = Driver::new(diamond(1));
    assert_eq!(
        d.input(T::WorkflowCreated, None, DataMap::new()),
        Outcome::Applied
    );
    assert_eq!(
        d.types(),
        ["workflow.created", "workflow.started", "task.scheduled"]
    );
    d.run_task("a", 1);
    assert_eq!(d.wf().task_state("b"), TaskState::Scheduled);
    assert_eq!(d.wf().task_state("c"), TaskState::Scheduled);
    d.run_task("b", 1);
    assert_eq!(d.wf().task_state("d"), TaskState::Pending);
    d.run_task("c", 1);
    assert_eq!(d.wf().task_state("d"), TaskState::Scheduled);
    d.run_task("d", 1);
    assert_eq!(d.wf().state, WorkflowState::Completed);
    assert_eq!(d.history.last().unwrap().event_type, T::WorkflowCompleted);
    for (i, e) in d.history.iter().enumerate() {
        assert_eq!(e.sequence_number, i as u64 + 1);
        if e.is_decision() {
            let cause = e.causation_id.expect("decisions have a cause");
            let pos = d
                .history
                .iter()
                .position(|c| c.event_id == cause)
                .expect("cause in history");
            assert!(pos < i);
            assert!(
                !d.history[pos].is_decision(),
                "decisions are caused by inputs"
            );
        }
    }
    assert_eq!(&fold(&d.history), d.wf());
    // d's dispatch carries b's and c's output
    assert_eq!(
        d.history
            .iter()
            .filter(|e| e.event_type == T::DependencyResolved)
            .count(),
        3
    );
}

#[test]
fn failed_task_is_retried_then_fails_the_workflow() {
    let mut d = Driver::new(diamond(2));
    d.input(T::WorkflowCreated, None, DataMap::new());
    assert_eq!(d.fail_task("a", 1), Outcome::Applied);
    assert_eq!(d.wf().state, WorkflowState::Retrying);
    // the backoff is a durable timer; the next attempt is scheduled when it fires
    assert_eq!(d.wf().task_state("a"), TaskState::Retrying);
    assert_eq!(d.wf().timers.len(), 1);
    assert_eq!(d.fire_due(), 1);
    assert_eq!(d.wf().task("a").attempt, 2);
    assert_eq!(d.wf().task_state("a"), TaskState::Scheduled);
    assert!(d.wf().timers.is_empty());
    // the late result of attempt 1 is rejected and recorded
    assert!(matches!(
        d.input(T::TaskCompleted, Some(("a", 1)), DataMap::new()),
        Outcome::Rejected(crate::fsm::Rejection::StaleAttempt { .. })
    ));
    assert_eq!(d.types().last(), Some(&"error.occurred"));
    assert_eq!(
        d.input(T::TaskStarted, Some(("a", 2)), DataMap::new()),
        Outcome::Applied
    );
    assert_eq!(d.wf().state, WorkflowState::Running);
    assert_eq!(d.fail_task("a", 2), Outcome::Applied);
    assert_eq!(d.wf().state, WorkflowState::Failed);
    for t in ["b", "c", "d"] {
        assert_eq!(d.wf().task_state(t), TaskState::Skipped);
    }
    assert!(d
        .wf()
        .error
        .as_ref()
        .unwrap()
        .message
        .contains("after 2 attempt(s)"));
    assert_eq!(&fold(&d.history), d.wf());
    // results after the end are stale
    assert!(matches!(
        d.input(T::TaskCompleted, Some(("a", 2)), DataMap::new()),
        Outcome::Stale { .. }
    ));
}

#[test]
fn unknown_instance_and_unknown_type_and_bad_inputs() {
    let mut d = Driver::new(diamond(1));
    assert!(matches!(
        d.input(T::TaskCompleted, Some(("a", 1)), DataMap::new()),
        Outcome::Rejected(_)
    ));
    assert!(
        d.history.is_empty(),
        "nothing to record against for an unknown instance"
    );

    let mut d = Driver::new(Defs(vec![]));
    d.input(T::WorkflowCreated, None, DataMap::new());
    assert_eq!(d.wf().state, WorkflowState::Failed);
    assert_eq!(
        d.types(),
        ["workflow.created", "error.occurred", "workflow.failed"]
    );

    let mut d = Driver::new(diamond(1));
    d.input(T::WorkflowCreated, None, DataMap::new());
    assert!(matches!(
        d.input(T::TaskScheduled, Some(("a", 1)), DataMap::new()),
        Outcome::Rejected(_)
    ));
    assert!(matches!(
        d.input(T::TaskCompleted, Some(("zz", 1)), DataMap::new()),
        Outcome::Rejected(_)
    ));
    assert!(matches!(
        d.input(T::WorkflowCreated, None, DataMap::new()),
        Outcome::Rejected(_)
    ));
    assert_eq!(
        d.history
            .iter()
            .filter(|e| e.event_type == T::ErrorOccurred)
            .count(),
        3
    );
    assert_eq!(&fold(&d.history), d.wf());
}

#[test]
fn cancel_closes_open_tasks() {
    let mut d = Driver::new(diamond(1));
    d.input(T::WorkflowCreated, None, DataMap::new());
    d.input(T::WorkflowCancelled, None, DataMap::new());
    assert_eq!(d.wf().state, WorkflowState::Cancelled);
    assert_eq!(d.wf().task_state("a"), TaskState::Cancelled);
    assert_eq!(d.wf().task_state("d"), TaskState::Skipped);
    // cancelling a finished workflow is rejected with the reason recorded
    assert!(matches!(
        d.input(T::WorkflowCancelled, None, DataMap::new()),
        Outcome::Rejected(crate::fsm::Rejection::Finished(WorkflowState::Cancelled))
    ));
    assert_eq!(d.types().last(), Some(&"error.occurred"));
    assert_eq!(&fold(&d.history), d.wf());
}

/// One random input: (kind, task, attempt, retryable). Kinds 0..=7 are input
/// events, 8 fires the earliest timer. Weighted so that runs get somewhere: a
/// cancel is rare, starts and completions are common. Tasks 0..=5 are named;
/// 6..=8 pick one of the tasks that are scheduled or running now. Attempt 0
/// means the task's current attempt (so that results are often accepted).
fn arb_input() -> impl Strategy<Value = (usize, usize, u32, bool)> {
    let kind = prop_oneof![
        2 => Just(0usize), // workflow.created
        20 => Just(1),     // task.started
        20 => Just(2),     // task.completed
        5 => Just(3),      // task.failed
        1 => Just(4),      // workflow.cancelled
        4 => Just(5),      // signal `go`
        2 => Just(6),      // workflow.paused
        3 => Just(7),      // workflow.resumed
        4 => Just(8),      // fire the earliest timer
    ];
    (kind, 0usize..9, 0u32..4, any::<bool>())
}

/// Runs one random input sequence on two drivers; checks they agree and that
/// the state is the fold of the history; returns every workflow state reached.
fn run_inputs(
    inputs: &[(usize, usize, u32, bool)],
) -> Result<std::collections::BTreeSet<WorkflowState>, TestCaseError> {
    let types = [
        T::WorkflowCreated,
        T::TaskStarted,
        T::TaskCompleted,
        T::TaskFailed,
        T::WorkflowCancelled,
        T::DependencyResolved,
        T::WorkflowPaused,
        T::WorkflowResumed,
    ];
    let names = ["a", "b", "c", "d", "m", "undo_a"];
    let mut d1 = Driver::new(rich());
    let mut d2 = Driver::new(rich());
    let mut reached = std::collections::BTreeSet::new();
    // Most runs start with a created workflow; some get inputs before it.
    let created = [(0, 0, 1, false)];
    let first = if inputs.first().is_some_and(|i| i.3) {
        &created[..0]
    } else {
        &created[..]
    };
    for &(ty, task, attempt, retryable) in first.iter().chain(inputs) {
        if ty >= types.len() {
            // fire the earliest pending timer, if any
            let next = |d: &Driver| {
                d.state
                    .as_ref()
                    .and_then(|s| s.timers.values().map(|t| t.fire_at_ms).min())
                    .unwrap_or(0)
            };
            let (f1, f2) = (d1.fire_until(next(&d1)), d2.fire_until(next(&d2)));
            prop_assert_eq!(f1, f2);
        } else {
            let mut data: DataMap = BTreeMap::new();
            data.insert("retryable".into(), WorkflowData::Bool(retryable));
            let name = match task {
                0..=5 => names[task],
                _ => {
                    let active: Vec<&str> = names
                        .iter()
                        .copied()
                        .filter(|n| {
                            d1.state.as_ref().is_some_and(|s| {
                                matches!(s.task_state(n), TaskState::Scheduled | TaskState::Running)
                            })
                        })
                        .collect();
                    active
                        .get(task % active.len().max(1))
                        .copied()
                        .unwrap_or(names[0])
                }
            };
            let attempt = match attempt {
                0 => d1.state.as_ref().map_or(1, |s| s.task(name).attempt.max(1)),
                n => n,
            };
            let task = (1..=3).contains(&ty).then_some((name, attempt));
            let extra: &[(&str, &str)] = if ty == 5 {
                &[(meta::SIGNAL, "go")]
            } else {
                &[]
            };
            let o1 = d1.input_with(types[ty], task, data.clone(), extra);
            let o2 = d2.input_with(types[ty], task, data, extra);
            prop_assert_eq!(o1, o2);
        }
        if let Some(s) = &d1.state {
            reached.insert(s.state);
        }
    }
    prop_assert_eq!(&d1.history, &d2.history);
    if let Some(s) = &d1.state {
        prop_assert_eq!(&fold(&d1.history), s);
        for (i, e) in d1.history.iter().enumerate() {
            prop_assert_eq!(e.sequence_number, i as u64 + 1);
        }
    }
    Ok(reached)
}

/// Random input sequences never panic, two deciders agree, and the state is
/// the fold of the history — over runs that provably reach the interesting
/// states: every terminal state, compensation, retrying and paused.
#[test]
fn random_inputs_never_panic_and_fold_deterministically() {
    use proptest::test_runner::{Config, TestRunner};
    const CASES: u32 = 2048;
    let mut runner = TestRunner::new(Config::with_cases(CASES));
    let reached = std::cell::RefCell::new(BTreeMap::<WorkflowState, u32>::new());
    let result = runner.run(&prop::collection::vec(arb_input(), 0..100), |inputs| {
        let states = run_inputs(&inputs)?;
        let mut r = reached.borrow_mut();
        for s in states {
            *r.entry(s).or_default() += 1;
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    let reached = reached.into_inner();
    eprintln!("runs that reached each state, of {CASES}: {reached:?}");
    for s in [
        WorkflowState::Running,
        WorkflowState::Retrying,
        WorkflowState::Paused,
        WorkflowState::Completed,
        WorkflowState::Failed,
        WorkflowState::Cancelled,
        WorkflowState::Timeout,
        WorkflowState::Compensating,
        WorkflowState::Compensated,
    ] {
        let runs = reached.get(&s).copied().unwrap_or(0);
        assert!(
            runs >= CASES / 200,
            "only {runs} of {CASES} runs reached {s}: the property says little about it ({reached:?})"
        );
    }
}

#[test]
fn a_running_instance_keeps_its_definition_version() {
    let mut defs = diamond(1);
    let mut v2 = WorkflowDefinition::new("diamond", vec![TaskConfiguration::new("only", "noop")]);
    v2.version = 2;
    v2.registered_at_ms = 5_000;
    defs.0.push(v2);
    let mut d = Driver::new(defs);
    // ts 1_001: before v2 was registered, so "latest" at that time is v1
    d.input(T::WorkflowCreated, None, DataMap::new());
    assert_eq!(d.wf().definition_version, 1);
    d.ts = 10_000; // v2 is now the latest; the instance still runs v1
    d.run_task("a", 1);
    assert_eq!(d.wf().task_state("b"), TaskState::Scheduled);
    assert!(matches!(
        d.input(T::TaskCompleted, Some(("only", 1)), DataMap::new()),
        Outcome::Rejected(_)
    ));

    let mut pinned = Driver::new(Defs(d.defs.0.clone()));
    pinned.ts = 10_000;
    let mut e = WorkflowEvent::new(T::WorkflowCreated, "diamond", pinned.id, "c", 10_001);
    e.metadata
        .insert(meta::DEFINITION_VERSION.into(), "2".into());
    let decision = decide(None, &pinned.defs, &e);
    assert_eq!(decision.state.unwrap().definition_version, 2);
}

#[test]
fn a_no_capable_node_report_is_recorded_only_while_the_attempt_waits() {
    let mut d = Driver::new(diamond(1));
    assert_eq!(
        d.input(T::WorkflowCreated, None, DataMap::new()),
        Outcome::Applied
    );
    let notice = |d: &Driver, task: &str, ts: i64| {
        crate::fsm::unschedulable_input("diamond", d.id, task, 1, "no capable node", ts)
    };
    let e = notice(&d, "a", d.ts + 1);
    assert_eq!(d.apply(&e), Outcome::Applied);
    let last = d.history.last().unwrap();
    assert_eq!(last.event_type, T::ErrorOccurred);
    assert_eq!(
        last.data_str("error_type"),
        Some(crate::fsm::NO_CAPABLE_NODE)
    );
    assert_eq!(
        d.wf().task("a").state,
        TaskState::Scheduled,
        "the attempt still waits"
    );
    assert_eq!(fold(&d.history), *d.wf());
    // Analytics count it and say so.
    let mut stats = crate::observe::analytics::TypeStats::default();
    let mut prev: Option<InstanceState> = None;
    for e in &d.history {
        let next = evolve(prev.clone(), e).unwrap();
        stats.record(prev.as_ref(), &next, e.timestamp_ms, None);
        prev = Some(next);
    }
    assert_eq!(stats.tasks["a"].unschedulable, 1);
    assert!(stats.tasks["a"].nodes.is_empty(), "not started yet");
    let report = stats.report("diamond", &Default::default());
    let insight = report.insights.iter().find(|i| i.kind == "unschedulable");
    assert_eq!(insight.map(|i| i.subject.as_str()), Some("diamond/a"));
    // Once the attempt started, a report is stale and appends nothing.
    d.run_task("a", 1);
    let late = notice(&d, "b", d.ts + 1);
    d.run_task("b", 1);
    let before = d.history.len();
    assert!(matches!(d.apply(&late), Outcome::Stale { .. }));
    assert_eq!(d.history.len(), before);
}

#[test]
fn analytics_count_attempts_by_the_node_that_ran_them() {
    let mut d = Driver::new(diamond(1));
    d.input(T::WorkflowCreated, None, DataMap::new());
    d.run_task("a", 1);
    let mut stats = crate::observe::analytics::TypeStats::default();
    let mut prev: Option<InstanceState> = None;
    for e in &d.history {
        let mut e = e.clone();
        if e.event_type == T::TaskStarted {
            e.source_node_id = "gpu-1".into();
        }
        let next = evolve(prev.clone(), &e).unwrap();
        stats.record(prev.as_ref(), &next, e.timestamp_ms, None);
        prev = Some(next);
    }
    assert_eq!(
        stats.tasks["a"].nodes,
        BTreeMap::from([("gpu-1".to_owned(), 1)])
    );
    let report = stats.report("diamond", &Default::default());
    let a = report.tasks.iter().find(|t| t.name == "a").unwrap();
    assert_eq!(a.nodes["gpu-1"], 1);
}

/// The worker hands a result to the producer without waiting for the ack of
/// its `task.started`: should `task.started` fail and be published again, it
/// lands after the result. The task completes from `scheduled`, the late
/// `task.started` is stale and changes nothing, and the fold agrees.
#[test]
fn a_result_ahead_of_its_task_started_completes_the_task_and_the_started_is_stale() {
    let mut d = Driver::new(diamond(1));
    assert_eq!(
        d.input(T::WorkflowCreated, None, DataMap::new()),
        Outcome::Applied
    );
    assert_eq!(d.wf().task("a").state, TaskState::Scheduled);
    assert_eq!(
        d.input(T::TaskCompleted, Some(("a", 1)), DataMap::new()),
        Outcome::Applied
    );
    assert_eq!(d.wf().task("a").state, TaskState::Completed);
    assert_eq!(d.wf().task("b").state, TaskState::Scheduled);
    let (before, state) = (d.history.len(), d.wf().clone());
    let late = d.input(T::TaskStarted, Some(("a", 1)), DataMap::new());
    assert!(matches!(late, Outcome::Stale { .. }), "{late:?}");
    assert_eq!(d.history.len(), before, "a stale input appends nothing");
    assert_eq!(*d.wf(), state);
    assert_eq!(fold(&d.history), *d.wf());
}
