//! Decider tests for the reliability surface: durable retry timers and every
//! backoff strategy, execution / response / heartbeat / workflow timeouts,
//! cancel with worker control records, pause and resume, signals and `wait`
//! tasks, decision branches, nested groups and saga compensation.

use crate::data::{DataMap, WorkflowData};
use crate::definition::WorkflowDefinition;
use crate::event::WorkflowEventType as T;
use crate::fsm::tests::{fold, Defs, Driver};
use crate::fsm::{meta, Outcome, Rejection, TimerKind};
use crate::model::{BackoffStrategy, RetryConfiguration, TaskConfiguration, TaskType};
use crate::state::{TaskState, WorkflowState};

fn def(tasks: Vec<TaskConfiguration>) -> Driver {
    let mut d = Driver::new(Defs(vec![WorkflowDefinition::new("wf", tasks)]));
    d.input(T::WorkflowCreated, None, DataMap::new());
    d
}

fn typed(name: &str, ty: TaskType) -> TaskConfiguration {
    let mut t = TaskConfiguration::new(name, "noop");
    t.task_type = ty;
    t
}

fn params(mut t: TaskConfiguration, kv: &[(&str, WorkflowData)]) -> TaskConfiguration {
    for (k, v) in kv {
        t.parameters.insert((*k).into(), v.clone());
    }
    t
}

fn list(items: &[&str]) -> WorkflowData {
    WorkflowData::List(items.iter().map(|s| s.to_string()).collect())
}

fn error(error_type: &str, retryable: bool) -> DataMap {
    let mut data = DataMap::new();
    data.insert("error_type".into(), error_type.into());
    data.insert("message".into(), "x".into());
    data.insert("retryable".into(), WorkflowData::Bool(retryable));
    data
}

fn consistent(d: &Driver) {
    assert_eq!(
        &fold(&d.history),
        d.wf(),
        "state equals the fold of the history"
    );
}

#[test]
fn backoff_strategies_set_durable_timers() {
    let cases = [
        (BackoffStrategy::Fixed, vec![], [100, 100, 100]),
        (BackoffStrategy::Linear, vec![], [100, 200, 250]),
        (BackoffStrategy::Exponential, vec![], [100, 200, 250]),
        (BackoffStrategy::Custom, vec![7, 70], [7, 70, 70]),
    ];
    for (strategy, custom, expected) in cases {
        let mut t = TaskConfiguration::new("a", "noop");
        t.retry_config = RetryConfiguration {
            max_attempts: 4,
            backoff_strategy: strategy,
            base_delay_ms: 100,
            max_delay_ms: 250,
            custom_delays_ms: custom,
            ..Default::default()
        };
        let mut d = def(vec![t]);
        for (i, delay) in expected.iter().enumerate() {
            let attempt = i as u32 + 1;
            d.fail_task("a", attempt);
            let timer = d.wf().timers.values().next().cloned().expect("retry timer");
            assert_eq!(timer.kind, TimerKind::Retry);
            assert_eq!(
                timer.fire_at_ms - d.ts,
                *delay as i64,
                "{strategy} attempt {attempt}"
            );
            // not scheduled before the timer fires
            assert_eq!(d.fire_until(timer.fire_at_ms - 1), 0);
            assert_eq!(d.fire_due(), 1);
            assert_eq!(d.wf().task("a").attempt, attempt + 1);
            assert_eq!(d.dispatches.last().unwrap().attempt, attempt + 1);
        }
        d.fail_task("a", 4);
        assert_eq!(d.wf().state, WorkflowState::Failed, "{strategy}");
        consistent(&d);
    }
}

#[test]
fn jitter_retry_on_and_stop_on() {
    let mut t = TaskConfiguration::new("a", "noop");
    t.retry_config = RetryConfiguration {
        max_attempts: 5,
        backoff_strategy: BackoffStrategy::Fixed,
        base_delay_ms: 1_000,
        jitter: true,
        retry_on: vec!["flaky".into(), "boom".into()],
        stop_on: vec!["boom".into()],
        ..Default::default()
    };
    let mut d = def(vec![t.clone()]);
    d.input(T::TaskFailed, Some(("a", 1)), error("flaky", true));
    let delay = d.wf().timers.values().next().unwrap().fire_at_ms - d.ts;
    assert!((500..=1_000).contains(&delay), "jittered delay {delay}");
    d.fire_due();
    // not in retry_on: final
    d.input(T::TaskFailed, Some(("a", 2)), error("other", true));
    assert_eq!(d.wf().state, WorkflowState::Failed);

    let mut d = def(vec![t.clone()]);
    d.input(T::TaskFailed, Some(("a", 1)), error("boom", true));
    assert_eq!(
        d.wf().state,
        WorkflowState::Failed,
        "stop_on wins over retry_on"
    );
    let mut d = def(vec![t]);
    d.input(T::TaskFailed, Some(("a", 1)), error("flaky", false));
    assert_eq!(
        d.wf().state,
        WorkflowState::Failed,
        "terminal errors are not retried"
    );
    consistent(&d);
}

#[test]
fn attempt_timeouts_fail_the_attempt_cancel_it_and_retry() {
    let mut t = TaskConfiguration::new("a", "noop");
    t.timeout_config.response_timeout_ms = 1_000;
    t.timeout_config.execution_timeout_ms = 5_000;
    t.timeout_config.heartbeat_timeout_ms = 2_000;
    t.timeout_config.grace_period_ms = 300;
    t.retry_config = RetryConfiguration {
        max_attempts: 3,
        base_delay_ms: 0,
        ..Default::default()
    };
    let mut d = def(vec![t]);
    // nobody starts attempt 1: the response timeout dispatches attempt 2
    assert_eq!(d.fire_until(d.ts + 1_000), 1);
    assert_eq!(d.wf().task("a").attempt, 2);
    assert_eq!(
        d.wf().error_history.last().unwrap().error_type,
        "response_timeout"
    );
    assert_eq!(d.controls.len(), 1);
    // attempt 2 starts, then its heartbeats stop
    d.input(T::TaskStarted, Some(("a", 2)), DataMap::new());
    let kinds: Vec<TimerKind> = d.wf().timers.values().map(|t| t.kind).collect();
    assert_eq!(kinds.len(), 2);
    assert!(kinds.contains(&TimerKind::Execution) && kinds.contains(&TimerKind::Heartbeat));
    d.fire_until(d.ts + 2_000);
    assert_eq!(d.wf().task("a").attempt, 3);
    assert_eq!(d.controls.last().unwrap().attempt, 2);
    assert_eq!(d.controls.last().unwrap().grace_period_ms, 300);
    // attempt 3 overruns: final failure, the task ends `timeout`
    d.input(T::TaskStarted, Some(("a", 3)), DataMap::new());
    let exec = d
        .wf()
        .timers
        .values()
        .find(|t| t.kind == TimerKind::Execution)
        .unwrap()
        .clone();
    let hb = d
        .wf()
        .timers
        .values()
        .find(|t| t.kind == TimerKind::Heartbeat)
        .unwrap()
        .clone();
    // a heartbeat timer never fires while the owner sees heartbeats: simulate by firing exec only
    let e = exec.fire_event("wf", d.id);
    d.ts = exec.fire_at_ms;
    let _ = hb;
    assert_eq!(d.state.as_ref().map(|s| s.timers.len()), Some(2));
    let decision = crate::fsm::decide(d.state.as_ref(), &d.defs, &e);
    d.state = decision.state.clone();
    d.history.extend(decision.appended);
    assert_eq!(d.wf().task_state("a"), TaskState::Timeout);
    assert_eq!(d.wf().state, WorkflowState::Failed);
    assert!(d.wf().timers.is_empty());
    // the late result of the timed-out attempt is rejected with a reason
    assert!(matches!(
        d.input(T::TaskCompleted, Some(("a", 2)), DataMap::new()),
        Outcome::Stale { .. } | Outcome::Rejected(_)
    ));
    consistent(&d);
}

#[test]
fn workflow_timeout_cancels_running_tasks() {
    let mut w = WorkflowDefinition::new("wf", vec![TaskConfiguration::new("a", "noop")]);
    w.timeout_config.execution_timeout_ms = 10_000;
    let mut d = Driver::new(Defs(vec![w]));
    d.input(T::WorkflowCreated, None, DataMap::new());
    d.input(T::TaskStarted, Some(("a", 1)), DataMap::new());
    assert_eq!(d.fire_due(), 1);
    assert_eq!(d.wf().state, WorkflowState::Timeout);
    assert_eq!(d.wf().task_state("a"), TaskState::Cancelled);
    assert_eq!(d.controls.len(), 1);
    assert_eq!(d.types().last(), Some(&"workflow.timeout"));
    consistent(&d);
}

#[test]
fn cancel_tells_workers_and_records_the_reason() {
    let mut d = def(vec![
        TaskConfiguration::new("a", "noop"),
        TaskConfiguration::new("b", "noop").after("a"),
    ]);
    d.input(T::TaskStarted, Some(("a", 1)), DataMap::new());
    let mut data = DataMap::new();
    data.insert("reason".into(), "operator".into());
    d.input(T::WorkflowCancelled, None, data);
    assert_eq!(d.wf().state, WorkflowState::Cancelled);
    assert_eq!(d.controls.len(), 1);
    assert_eq!(d.controls[0].reason, "operator");
    assert_eq!(d.wf().task_state("b"), TaskState::Skipped);
    consistent(&d);
}

#[test]
fn pause_holds_new_dispatches_until_resume() {
    let mut t = TaskConfiguration::new("a", "noop");
    t.retry_config = RetryConfiguration {
        max_attempts: 2,
        base_delay_ms: 50,
        ..Default::default()
    };
    let mut d = def(vec![t, TaskConfiguration::new("b", "noop").after("a")]);
    d.fail_task("a", 1);
    assert_eq!(
        d.input(T::WorkflowPaused, None, DataMap::new()),
        Outcome::Applied
    );
    assert_eq!(d.wf().state, WorkflowState::Paused);
    // pausing twice is rejected and recorded
    assert!(matches!(
        d.input(T::WorkflowPaused, None, DataMap::new()),
        Outcome::Rejected(_)
    ));
    // the backoff ends while paused: nothing is dispatched
    let before = d.dispatches.len();
    assert_eq!(d.fire_due(), 1);
    assert_eq!(d.dispatches.len(), before);
    assert_eq!(d.wf().task_state("a"), TaskState::Retrying);
    // resume: the retry goes out now
    assert_eq!(
        d.input(T::WorkflowResumed, None, DataMap::new()),
        Outcome::Applied
    );
    assert_eq!(d.dispatches.len(), before + 1);
    assert_eq!(d.wf().task("a").attempt, 2);
    // a result arriving while paused is applied, but b waits for resume
    d.input(T::WorkflowPaused, None, DataMap::new());
    d.run_task("a", 2);
    assert_eq!(d.wf().task_state("b"), TaskState::Pending);
    d.input(T::WorkflowResumed, None, DataMap::new());
    assert_eq!(d.wf().task_state("b"), TaskState::Scheduled);
    assert!(matches!(
        d.input(T::WorkflowResumed, None, DataMap::new()),
        Outcome::Rejected(_)
    ));
    consistent(&d);
}

#[test]
fn signals_complete_wait_tasks_and_waits_time_out() {
    let wait = params(
        typed("approve", TaskType::Wait),
        &[("signal", "approved".into()), ("duration", "1m".into())],
    );
    let mut d = def(vec![
        wait.clone(),
        TaskConfiguration::new("ship", "noop").after("approve"),
    ]);
    assert_eq!(
        d.wf().task_state("approve"),
        TaskState::WaitingForDependency
    );
    let mut data = DataMap::new();
    data.insert("by".into(), "alice".into());
    assert_eq!(
        d.input_with(
            T::DependencyResolved,
            None,
            data,
            &[(meta::SIGNAL, "approved")]
        ),
        Outcome::Applied
    );
    assert_eq!(d.wf().task_state("approve"), TaskState::Completed);
    assert_eq!(d.wf().task("approve").output.unwrap()["by"], "alice".into());
    assert_eq!(d.wf().task_state("ship"), TaskState::Scheduled);
    assert!(d.wf().signals.is_empty() && d.wf().timers.is_empty());
    d.run_task("ship", 1);
    assert_eq!(d.wf().state, WorkflowState::Completed);
    // a signal to a finished workflow is rejected, and the reason recorded
    assert!(matches!(
        d.input_with(
            T::DependencyResolved,
            None,
            DataMap::new(),
            &[(meta::SIGNAL, "approved")]
        ),
        Outcome::Rejected(Rejection::Finished(_))
    ));
    consistent(&d);

    // a signal sent before the wait starts is kept for it
    let mut d = def(vec![TaskConfiguration::new("first", "noop"), {
        let mut w = wait.clone();
        w.dependencies = TaskConfiguration::new("x", "noop")
            .after("first")
            .dependencies;
        w
    }]);
    d.input_with(
        T::DependencyResolved,
        None,
        DataMap::new(),
        &[(meta::SIGNAL, "approved")],
    );
    assert_eq!(d.wf().signals.len(), 1);
    d.run_task("first", 1);
    assert_eq!(d.wf().task_state("approve"), TaskState::Completed);
    assert_eq!(d.wf().state, WorkflowState::Completed);
    consistent(&d);

    // no signal within the duration: the wait times out and the workflow fails
    let mut d = def(vec![wait]);
    assert_eq!(d.fire_due(), 1);
    assert_eq!(d.wf().task_state("approve"), TaskState::Timeout);
    assert_eq!(d.wf().state, WorkflowState::Failed);
    consistent(&d);

    // a plain wait completes after its duration
    let mut d = def(vec![params(
        typed("pause", TaskType::Wait),
        &[("duration_ms", WorkflowData::Int(500))],
    )]);
    let due = d.wf().timers.values().next().unwrap().fire_at_ms;
    assert_eq!(due - d.ts, 500);
    d.fire_due();
    assert_eq!(d.wf().state, WorkflowState::Completed);
    consistent(&d);
}

#[test]
fn a_decision_chooses_branches_and_the_rest_are_skipped() {
    let mut d = def(vec![
        typed("route", TaskType::Decision),
        TaskConfiguration::new("express", "noop").after("route"),
        TaskConfiguration::new("standard", "noop").after("route"),
        TaskConfiguration::new("after_standard", "noop").after("standard"),
    ]);
    d.input(T::TaskStarted, Some(("route", 1)), DataMap::new());
    let mut out = DataMap::new();
    out.insert("branches".into(), list(&["express"]));
    d.input(T::TaskCompleted, Some(("route", 1)), out);
    assert_eq!(d.wf().task_state("express"), TaskState::Scheduled);
    assert_eq!(d.wf().task_state("standard"), TaskState::Skipped);
    assert_eq!(d.wf().task_state("after_standard"), TaskState::Skipped);
    d.run_task("express", 1);
    assert_eq!(d.wf().state, WorkflowState::Completed);
    consistent(&d);
}

#[test]
fn groups_nest_and_run_as_sub_state_machines() {
    // outer (sequential): [inner (parallel): [p1, p2], s2]; then "last" after outer
    let mut d = def(vec![
        params(
            typed("outer", TaskType::Sequential),
            &[("tasks", list(&["inner", "s2"]))],
        ),
        params(
            typed("inner", TaskType::Parallel),
            &[("tasks", list(&["p1", "p2"]))],
        ),
        TaskConfiguration::new("p1", "noop"),
        TaskConfiguration::new("p2", "noop"),
        TaskConfiguration::new("s2", "noop"),
        TaskConfiguration::new("last", "noop").after("outer"),
    ]);
    assert_eq!(d.wf().task_state("outer"), TaskState::Running);
    assert_eq!(d.wf().task_state("inner"), TaskState::Running);
    assert_eq!(d.wf().task_state("p1"), TaskState::Scheduled);
    assert_eq!(d.wf().task_state("p2"), TaskState::Scheduled);
    assert_eq!(
        d.wf().task_state("s2"),
        TaskState::Pending,
        "sequential: waits for inner"
    );
    assert!(d
        .dispatches
        .iter()
        .all(|x| x.task_name != "outer" && x.task_name != "inner"));
    d.run_task("p1", 1);
    assert_eq!(d.wf().task_state("inner"), TaskState::Running);
    d.run_task("p2", 1);
    assert_eq!(d.wf().task_state("inner"), TaskState::Completed);
    assert_eq!(d.wf().task_state("s2"), TaskState::Scheduled);
    assert_eq!(d.wf().task_state("last"), TaskState::Pending);
    d.run_task("s2", 1);
    assert_eq!(d.wf().task_state("outer"), TaskState::Completed);
    d.run_task("last", 1);
    assert_eq!(d.wf().state, WorkflowState::Completed);
    consistent(&d);

    // a member's failure fails its groups, innermost first, then the workflow
    let mut d = def(vec![
        params(
            typed("g", TaskType::Parallel),
            &[("tasks", list(&["m1", "m2"]))],
        ),
        TaskConfiguration::new("m1", "noop"),
        TaskConfiguration::new("m2", "noop"),
    ]);
    d.input(T::TaskFailed, Some(("m1", 1)), error("boom", false));
    assert_eq!(d.wf().task_state("g"), TaskState::Failed);
    assert_eq!(d.wf().task_state("m2"), TaskState::Cancelled);
    assert_eq!(d.wf().state, WorkflowState::Failed);
    consistent(&d);
}

fn saga(comp_retries: u32) -> Driver {
    let mut undo_b = TaskConfiguration::new("undo_b", "noop");
    undo_b.retry_config.max_attempts = comp_retries;
    undo_b.retry_config.base_delay_ms = 0;
    let mut a = TaskConfiguration::new("a", "noop");
    a.compensation = Some("undo_a".into());
    let mut b = TaskConfiguration::new("b", "noop").after("a");
    b.compensation = Some("undo_b".into());
    def(vec![
        a,
        b,
        TaskConfiguration::new("c", "noop").after("b"),
        TaskConfiguration::new("undo_a", "noop"),
        undo_b,
    ])
}

#[test]
fn saga_compensates_in_reverse_completion_order() {
    let mut d = saga(1);
    assert_eq!(
        d.wf().task_state("undo_a"),
        TaskState::Pending,
        "compensations do not run in the normal flow"
    );
    d.run_task("a", 1);
    d.run_task("b", 1);
    d.input(T::TaskFailed, Some(("c", 1)), error("boom", false));
    assert_eq!(d.wf().state, WorkflowState::Compensating);
    let log: Vec<&str> = d
        .wf()
        .compensations
        .iter()
        .map(|c| c.compensation_task.as_str())
        .collect();
    assert_eq!(log, ["undo_b", "undo_a"]);
    assert_eq!(d.wf().task_state("undo_b"), TaskState::Scheduled);
    assert_eq!(
        d.wf().task_state("undo_a"),
        TaskState::Pending,
        "one at a time"
    );
    // the compensation sees the output of the task it undoes
    assert!(d.dispatches.last().unwrap().upstream.contains_key("b"));
    d.run_task("undo_b", 1);
    d.run_task("undo_a", 1);
    assert_eq!(d.wf().state, WorkflowState::Compensated);
    assert!(d
        .wf()
        .compensations
        .iter()
        .all(|c| c.state == TaskState::Completed));
    assert_eq!(d.wf().error.as_ref().unwrap().error_type, "boom");
    consistent(&d);
}

#[test]
fn a_failing_compensation_is_retried_then_the_saga_fails_with_its_log() {
    let mut d = saga(2);
    d.run_task("a", 1);
    d.run_task("b", 1);
    d.input(T::TaskFailed, Some(("c", 1)), error("boom", false));
    d.input(T::TaskFailed, Some(("undo_b", 1)), error("db", true));
    assert_eq!(d.wf().task("undo_b").attempt, 2, "retried per its policy");
    d.input(T::TaskFailed, Some(("undo_b", 2)), error("db", true));
    assert_eq!(d.wf().state, WorkflowState::Failed);
    assert_eq!(d.types().last(), Some(&"compensation.failed"));
    let log = &d.wf().compensations;
    assert_eq!(log[0].state, TaskState::Failed);
    assert_eq!(log[0].attempt, 2);
    assert_eq!(log[1].state, TaskState::Pending);
    consistent(&d);
}

/// Found by the partition simulation (seed 24): a retried attempt whose
/// `task.completed` is applied without a `task.started` before it (a worker
/// that reports no start, or a start that arrived late) left the workflow in
/// `retrying` for ever with every task completed.
#[test]
fn a_retried_attempt_completed_without_a_start_completes_the_workflow() {
    let mut t = TaskConfiguration::new("a", "noop");
    t.retry_config = RetryConfiguration {
        max_attempts: 3,
        backoff_strategy: BackoffStrategy::Fixed,
        base_delay_ms: 100,
        ..Default::default()
    };
    let mut d = def(vec![t]);
    d.input(T::TaskFailed, Some(("a", 1)), error("flaky", true));
    assert_eq!(d.wf().state, WorkflowState::Retrying);
    assert_eq!(d.fire_due(), 1);
    assert_eq!(
        d.input(T::TaskCompleted, Some(("a", 2)), DataMap::new()),
        Outcome::Applied
    );
    assert_eq!(d.wf().state, WorkflowState::Completed);
    consistent(&d);
}
