//! Tests of traces and analytics over histories the real decider produced.

use std::collections::BTreeMap;

use super::analytics::{Thresholds, TypeStats};
use super::otlp::export_request;
use super::trace::{build, SpanKind, SpanStatus, Trace};
use super::{transitions, Transition};
use crate::data::{DataMap, WorkflowData};
use crate::definition::WorkflowDefinition;
use crate::event::{WorkflowEvent, WorkflowEventType as T};
use crate::fsm::tests::{Defs, Driver};
use crate::fsm::{evolve, InstanceState};
use crate::model::{RetryConfiguration, TaskConfiguration, TaskType};
use crate::state::{TaskState, WorkflowState};

/// `a`, then a parallel group `g` of `m1` and `m2`, then `z`; 2 attempts each.
fn defs() -> Defs {
    let mut g = TaskConfiguration::new("g", "noop").after("a");
    g.task_type = TaskType::Parallel;
    g.parameters.insert(
        "tasks".into(),
        WorkflowData::List(vec!["m1".into(), "m2".into()]),
    );
    let mut tasks = vec![
        TaskConfiguration::new("a", "noop"),
        g,
        TaskConfiguration::new("m1", "noop"),
        TaskConfiguration::new("m2", "noop"),
        TaskConfiguration::new("z", "noop").after("g"),
    ];
    for t in &mut tasks {
        t.retry_config = RetryConfiguration {
            max_attempts: 2,
            base_delay_ms: 10,
            ..Default::default()
        };
    }
    Defs(vec![WorkflowDefinition::new("shop", tasks)])
}

/// Starts `task`, lets `step` ms pass and completes it.
fn ran(d: &mut Driver, task: &str, attempt: u32, step: i64) {
    d.input(T::TaskStarted, Some((task, attempt)), DataMap::new());
    d.ts += step;
    d.input(T::TaskCompleted, Some((task, attempt)), DataMap::new());
}

/// Runs one instance: `a` fails once and is retried; every step takes `step`
/// ms; with `fail_m1`, `m1` fails both its attempts and so does the workflow.
fn run(seed: u8, step: i64, fail_m1: bool) -> Driver {
    let mut d = Driver::new(defs());
    d.id = crate::ids::InstanceId::derived(&[b"obs", &[seed]]);
    d.input(T::WorkflowCreated, None, DataMap::new());
    d.ts += step;
    d.input(T::TaskStarted, Some(("a", 1)), DataMap::new());
    d.ts += step;
    d.fail_task("a", 1);
    d.fire_due();
    d.ts += step;
    ran(&mut d, "a", 2, step);
    for m in ["m2", "m1"] {
        d.ts += step;
        if fail_m1 && m == "m1" {
            d.input(T::TaskStarted, Some((m, 1)), DataMap::new());
            d.fail_task(m, 1);
            d.fire_due();
            d.input(T::TaskStarted, Some((m, 2)), DataMap::new());
            d.fail_task(m, 2);
        } else {
            ran(&mut d, m, 1, step);
        }
    }
    if !fail_m1 {
        d.ts += step;
        ran(&mut d, "z", 1, step);
    }
    d
}

fn record_all(stats: &mut TypeStats, history: &[WorkflowEvent]) {
    let defs = defs();
    let mut state: Option<InstanceState> = None;
    for e in history {
        let next = evolve(state.clone(), e).unwrap();
        stats.record(state.as_ref(), &next, e.timestamp_ms, defs.0.first());
        state = Some(next);
    }
}

fn trace_of(d: &Driver) -> Trace {
    build(&d.history, d.defs.0.first()).unwrap()
}

#[test]
fn transitions_name_the_workflow_and_every_task_that_moved() {
    let d = run(1, 5, false);
    let mut state: Option<InstanceState> = None;
    let mut seen = Vec::new();
    for e in &d.history {
        let next = evolve(state.clone(), e).unwrap();
        seen.extend(transitions(state.as_ref(), &next));
        state = Some(next);
    }
    assert_eq!(
        seen[0],
        Transition::Workflow {
            from: None,
            to: WorkflowState::Pending
        }
    );
    let retried = Transition::Task {
        task: "a".into(),
        attempt: 2,
        from: TaskState::Retrying,
        to: TaskState::Scheduled,
    };
    assert!(seen.contains(&retried), "{seen:?}");
    assert!(seen.contains(&Transition::Workflow {
        from: Some(WorkflowState::Running),
        to: WorkflowState::Completed
    }));
}

#[test]
fn trace_has_a_root_a_span_per_state_and_per_task_attempt() {
    let d = run(2, 40, false);
    assert_eq!(d.wf().state, WorkflowState::Completed);
    let t = trace_of(&d);
    assert_eq!(t.trace_id, d.id.0.simple().to_string());
    let root = &t.spans[0];
    assert_eq!(root.kind, SpanKind::Workflow);
    assert_eq!(root.status, SpanStatus::Ok);
    assert_eq!(root.parent_span_id, None);
    assert_eq!(root.start_ms, d.history[0].timestamp_ms);
    assert_eq!(root.end_ms, Some(d.history.last().unwrap().timestamp_ms));
    let names: Vec<&str> = t.spans.iter().map(|s| s.name.as_str()).collect();
    for n in [
        "state pending",
        "state running",
        "task a",
        "task g",
        "task m1",
        "task m2",
        "task z",
    ] {
        assert!(names.contains(&n), "{n} missing from {names:?}");
    }
    // Two attempts of `a`: the first failed and was retried.
    let a: Vec<_> = t.spans.iter().filter(|s| s.name == "task a").collect();
    assert_eq!(a.len(), 2);
    assert!(matches!(&a[0].status, SpanStatus::Error(m) if m.contains("boom")));
    assert_eq!(a[0].attributes["task.outcome"], "retrying");
    assert_eq!(a[1].status, SpanStatus::Ok);
    assert_eq!(a[1].attributes["task.attempt"], "2");
    // Started one ms after the step began, completed one ms after it ended.
    assert_eq!(a[1].attributes["task.run_ms"], "41");
    // A task attempt's span is the parent span its dispatch carried.
    for (span, dispatch) in a
        .iter()
        .zip(d.dispatches.iter().filter(|x| x.task_name == "a"))
    {
        assert!(
            dispatch.traceparent.contains(&span.span_id),
            "{} vs {}",
            dispatch.traceparent,
            span.span_id
        );
    }
    // Group members are children of the group's span; the rest of the root.
    let g = t.spans.iter().find(|s| s.name == "task g").unwrap();
    assert_eq!(g.attributes["task.type"], "parallel");
    for s in &t.spans[1..] {
        let parent = s.parent_span_id.as_deref();
        let want = if s.name == "task m1" || s.name == "task m2" {
            &g.span_id
        } else {
            &root.span_id
        };
        assert_eq!(parent, Some(want.as_str()), "parent of {}", s.name);
        assert!(s.end_ms.is_some(), "{} is closed", s.name);
        assert!(
            s.start_ms >= root.start_ms && s.end_ms <= root.end_ms,
            "{} inside the root",
            s.name
        );
    }
    let ids: std::collections::HashSet<_> = t.spans.iter().map(|s| &s.span_id).collect();
    assert_eq!(ids.len(), t.spans.len(), "span ids are unique");
    assert_eq!(trace_of(&d), t, "the same history gives the same trace");
}

#[test]
fn a_failed_workflow_has_an_error_root_and_open_spans_end_in_otlp() {
    let d = run(3, 10, true);
    assert!(d.wf().state.is_terminal(), "{}", d.wf().state);
    let t = trace_of(&d);
    assert!(
        matches!(&t.spans[0].status, SpanStatus::Error(m) if m.starts_with(d.wf().state.as_str()))
    );

    // Cut the history short: the root and the running task are open.
    let cut = d
        .history
        .iter()
        .position(|e| e.event_type == T::TaskStarted)
        .unwrap()
        + 1;
    let partial = build(&d.history[..cut], d.defs.0.first()).unwrap();
    assert_eq!(partial.spans[0].end_ms, None);
    let v = export_request(&partial, "weft-test", 99_000);
    let spans = v["resourceSpans"][0]["scopeSpans"][0]["spans"]
        .as_array()
        .unwrap();
    assert_eq!(spans.len(), partial.spans.len());
    assert_eq!(spans[0]["traceId"].as_str().unwrap().len(), 32);
    assert_eq!(spans[0]["spanId"].as_str().unwrap().len(), 16);
    assert_eq!(spans[0]["endTimeUnixNano"], "99000000000");
    assert!(spans[0]["attributes"]
        .as_array()
        .unwrap()
        .iter()
        .any(|a| a["key"] == "weft.open"));
    assert!(spans[1]["parentSpanId"].is_string());
}

#[test]
fn analytics_count_outcomes_durations_and_attempts() {
    let mut stats = TypeStats::default();
    let ok = run(4, 100, false);
    let bad = run(5, 100, true);
    record_all(&mut stats, &ok.history);
    record_all(&mut stats, &bad.history);
    assert_eq!(stats.started, 2);
    assert_eq!(stats.ended(), 2);
    assert_eq!(stats.finished.get("completed"), Some(&1));
    let a = &stats.tasks["a"];
    assert_eq!(a.attempts, 4, "two attempts of a per instance");
    assert_eq!(stats.tasks["g"].task_type.as_deref(), Some("parallel"));
    assert_eq!(a.outcomes.get("retrying"), Some(&2));
    assert_eq!(a.outcomes.get("completed"), Some(&2));
    assert_eq!(a.run_ms.count, 4);
    assert_eq!(stats.tasks["m1"].outcomes.get("failed"), Some(&1));
    let took = ok.history.last().unwrap().timestamp_ms - ok.history[0].timestamp_ms;
    assert_eq!(stats.completed_ms.max, took as u64);

    let r = stats.report(
        "shop",
        &Thresholds {
            min_samples: 1,
            ..Default::default()
        },
    );
    assert_eq!(r.success_rate, Some(0.5));
    assert_eq!(r.in_flight, 0);
    assert!(r
        .insights
        .iter()
        .any(|i| i.kind == "low_success_rate" && i.value == 0.5));
    assert!(r
        .insights
        .iter()
        .any(|i| i.kind == "flaky_task" && i.subject == "shop/a"));
    assert!(!r.insights.iter().any(|i| i.kind == "slow_workflow"));
}

#[test]
fn the_slowest_task_is_the_bottleneck_and_slow_types_are_flagged() {
    let mut d = Driver::new(defs());
    d.input(T::WorkflowCreated, None, DataMap::new());
    d.run_task("a", 1);
    d.run_task("m2", 1);
    ran(&mut d, "m1", 1, 60_000);
    d.run_task("z", 1);
    let mut stats = TypeStats::default();
    record_all(&mut stats, &d.history);
    let r = stats.report("shop", &Thresholds::default());
    assert_eq!(r.bottleneck.as_deref(), Some("m1"));
    assert_eq!(r.tasks[0].name, "m1");
    assert!(r.tasks[0].time_share > 0.9, "{}", r.tasks[0].time_share);
    let kinds: Vec<&str> = r.insights.iter().map(|i| i.kind.as_str()).collect();
    assert!(
        kinds.contains(&"bottleneck") && kinds.contains(&"slow_workflow"),
        "{kinds:?}"
    );
    assert!(
        !kinds.contains(&"low_success_rate"),
        "one sample is not enough: {kinds:?}"
    );
}

#[test]
fn merged_partitions_equal_one_aggregate_of_everything() {
    let runs: Vec<Driver> = (10..16).map(|i| run(i, i64::from(i), i % 3 == 0)).collect();
    let mut all = TypeStats::default();
    let mut parts = [TypeStats::default(), TypeStats::default()];
    for (i, d) in runs.iter().enumerate() {
        record_all(&mut all, &d.history);
        record_all(&mut parts[i % 2], &d.history);
    }
    let mut merged = TypeStats::default();
    merged.merge(&parts[0]);
    merged.merge(&parts[1]);
    assert_eq!(merged, all);
    let json = serde_json::to_string(&merged).unwrap();
    let back: TypeStats = serde_json::from_str(&json).unwrap();
    assert_eq!(back, merged, "stored as JSON and read back unchanged");
    let empty: BTreeMap<String, u64> = BTreeMap::new();
    assert_ne!(merged.finished, empty);
}

#[test]
fn a_retry_without_backoff_folded_as_one_step_is_still_counted() {
    let mut d = Driver::new(defs());
    for t in &mut d.defs.0[0].tasks {
        t.retry_config.base_delay_ms = 0;
    }
    d.input(T::WorkflowCreated, None, DataMap::new());
    d.input(T::TaskStarted, Some(("a", 1)), DataMap::new());
    let before = d.state.clone();
    d.fail_task("a", 1);
    assert_eq!(d.wf().task("a").attempt, 2, "scheduled again at once");
    let mut stats = TypeStats::default();
    // The orchestrator folds a whole input's change at once.
    stats.record(before.as_ref(), d.wf(), d.ts, d.defs.0.first());
    assert_eq!(stats.tasks["a"].attempts, 1);
    assert_eq!(stats.tasks["a"].outcomes.get("retrying"), Some(&1));
}

#[test]
fn measured_usage_reaches_the_state_analytics_and_the_task_span() {
    let mut d = Driver::new(defs());
    d.input(T::WorkflowCreated, None, DataMap::new());
    d.input(T::TaskStarted, Some(("a", 1)), DataMap::new());
    let usage = |cpu: &'static str, rss: &'static str| {
        [
            ("weft.usage.cpu_ms", cpu),
            ("weft.usage.wall_ms", "300"),
            ("weft.usage.peak_rss_kb", rss),
            ("weft.usage.scope", "child"),
            ("weft.metric.rows", "7"),
        ]
    };
    d.input_with(
        T::TaskFailed,
        Some(("a", 1)),
        DataMap::from([
            ("error_type".to_owned(), "boom".into()),
            ("message".to_owned(), "it broke".into()),
            ("retryable".to_owned(), WorkflowData::Bool(true)),
        ]),
        &usage("100", "4000"),
    );
    d.fire_due();
    d.input(T::TaskStarted, Some(("a", 2)), DataMap::new());
    d.input_with(
        T::TaskCompleted,
        Some(("a", 2)),
        DataMap::new(),
        &usage("250", "9000"),
    );
    let rt = d.state.as_ref().unwrap().task("a");
    assert_eq!(rt.resource_usage["cpu_ms"], 250);
    assert_eq!(rt.usage_scope, "child");
    assert_eq!(rt.metrics["rows"], 7.0);

    let mut stats = TypeStats::default();
    record_all(&mut stats, &d.history);
    let a = &stats.tasks["a"];
    assert_eq!(a.cpu_ms.count, 2, "both attempts measured");
    assert_eq!(a.peak_rss_kb, 9000);
    let r = stats.report("shop", &Thresholds::default());
    let ta = r.tasks.iter().find(|t| t.name == "a").unwrap();
    assert_eq!(ta.cpu.max_ms, 250);
    assert_eq!(ta.wall.count, 2);
    assert_eq!(ta.peak_rss_kb, 9000);
    // a task no worker measured reports nothing
    assert_eq!(stats.tasks.get("m1").map_or(0, |t| t.cpu_ms.count), 0);

    let trace = build(&d.history, Some(&defs().0[0])).unwrap();
    let spans: Vec<_> = trace
        .spans
        .iter()
        .filter(|s| s.kind == SpanKind::Task && s.name == "task a")
        .collect();
    assert_eq!(spans.len(), 2);
    assert_eq!(spans[0].attributes["task.cpu_ms"], "100");
    assert_eq!(spans[1].attributes["task.cpu_ms"], "250");
    assert_eq!(spans[1].attributes["task.peak_rss_kb"], "9000");
    assert_eq!(spans[1].attributes["task.usage_scope"], "child");
    assert_eq!(spans[1].attributes["task.metric.rows"], "7");
}
