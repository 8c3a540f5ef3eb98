//! Tests of the workflow-document parser: both syntaxes, defaults and
//! inheritance, durations, and that every error names its location.

use super::*;
use crate::data::WorkflowData;
use crate::model::{
    BackoffStrategy, DependencyCondition, ExecutionSemantics, TaskPriority, TaskType,
};

const DIAMOND_YAML: &str = r#"
type: diamond
description: A fans out to B and C, which join in D
input: { region: eu, count: 2 }
timeout: { execution: 10m }
retry: { max_attempts: 3, backoff: fixed, base_delay: 100ms, max_delay: 10s }
tags: [demo]
metadata: { team: payments }
tasks:
  - name: A
    handler: noop
    parameters: { ms: 10 }
  - name: B
    type: effect
    depends_on: [A]
    retry: { base_delay: 200ms, jitter: true, retry_on: [io], stop_on: [fatal] }
    timeout: { execution: 30s, heartbeat: 10s, response: 5s, cleanup: 5s, grace: 1s }
    semantics: exactly_once
    priority: high
    compensation: undo_b
  - name: C
    depends_on: [{ task: A, condition: finished }]
    resources: { cpu: 2 }
    node_selector: { zone: a }
    tags: [x]
  - name: D
    depends_on: [B, C]
  - name: undo_b
"#;

const DIAMOND_JSON: &str = r#"{
  "type": "diamond",
  "description": "A fans out to B and C, which join in D",
  "input": {"region": "eu", "count": 2},
  "timeout": {"execution": "10m"},
  "retry": {"max_attempts": 3, "backoff": "fixed", "base_delay": 100, "max_delay": "10s"},
  "tags": ["demo"],
  "metadata": {"team": "payments"},
  "tasks": [
    {"name": "A", "handler": "noop", "parameters": {"ms": 10}},
    {"name": "B", "type": "effect", "depends_on": ["A"],
     "retry": {"base_delay": "200ms", "jitter": true, "retry_on": ["io"], "stop_on": ["fatal"]},
     "timeout": {"execution": 30000, "heartbeat": "10s", "response": "5s", "cleanup": "5s", "grace": "1s"},
     "semantics": "exactly_once", "priority": "high", "compensation": "undo_b"},
    {"name": "C", "depends_on": [{"task": "A", "condition": "finished"}],
     "resources": {"cpu": 2}, "node_selector": {"zone": "a"}, "tags": ["x"]},
    {"name": "D", "depends_on": ["B", "C"]},
    {"name": "undo_b"}
  ]
}"#;

fn err(text: &str) -> String {
    parse_definition(text, None).unwrap_err().to_string()
}

/// A one-task YAML document with `extra` lines appended to the task.
fn one_task(extra: &str) -> String {
    format!("type: wf\ntasks:\n  - name: a\n{extra}")
}

#[test]
fn diamond_parses_the_same_from_yaml_and_json() {
    let yaml = parse_definition(DIAMOND_YAML, None).unwrap();
    let json = parse_definition(DIAMOND_JSON, None).unwrap();
    assert_eq!(yaml, json);
    assert_eq!(
        parse_definition(DIAMOND_JSON, Some(DefinitionFormat::Json)).unwrap(),
        json
    );
    // JSON is YAML too.
    assert_eq!(
        parse_definition(DIAMOND_JSON, Some(DefinitionFormat::Yaml)).unwrap(),
        json
    );

    let d = yaml;
    assert_eq!(
        (d.workflow_type.as_str(), d.version, d.registered_at_ms),
        ("diamond", 0, 0)
    );
    assert_eq!(d.default_input["region"], WorkflowData::Str("eu".into()));
    assert_eq!(d.default_input["count"], WorkflowData::Int(2));
    assert_eq!(d.timeout_config.execution_timeout_ms, 600_000);
    assert_eq!(d.tags, ["demo"]);
    assert_eq!(d.metadata["team"], "payments");
    assert_eq!(d.default_retry.backoff_strategy, BackoffStrategy::Fixed);

    let a = d.task("A").unwrap();
    assert_eq!(
        (a.handler.as_str(), a.task_type),
        ("noop", TaskType::Compute)
    );
    assert_eq!(a.parameters["ms"], WorkflowData::Int(10));
    assert_eq!(a.retry_config, d.default_retry);

    let b = d.task("B").unwrap();
    assert_eq!(b.handler, "B", "the handler defaults to the task name");
    assert_eq!(b.task_type, TaskType::Effect);
    assert_eq!(b.execution_semantics, ExecutionSemantics::ExactlyOnce);
    assert_eq!(b.priority, TaskPriority::High);
    assert_eq!(b.compensation.as_deref(), Some("undo_b"));
    // Task retry fields override the workflow default, the rest is inherited.
    let r = &b.retry_config;
    assert_eq!(
        (r.max_attempts, r.base_delay_ms, r.max_delay_ms),
        (3, 200, 10_000)
    );
    assert!(r.jitter);
    assert_eq!(
        (r.retry_on.as_slice(), r.stop_on.as_slice()),
        (&["io".to_owned()][..], &["fatal".to_owned()][..])
    );
    let t = &b.timeout_config;
    assert_eq!(
        [
            t.execution_timeout_ms,
            t.heartbeat_timeout_ms,
            t.response_timeout_ms,
            t.cleanup_timeout_ms,
            t.grace_period_ms
        ],
        [30_000, 10_000, 5_000, 5_000, 1_000]
    );

    let c = d.task("C").unwrap();
    assert_eq!(c.dependencies[0].condition, DependencyCondition::Finished);
    assert_eq!(c.resource_requirements["cpu"], 2);
    assert_eq!(c.node_selector.as_ref().unwrap()["zone"], "a");
    let deps: Vec<_> = d
        .task("D")
        .unwrap()
        .dependencies
        .iter()
        .map(|x| x.task_name.as_str())
        .collect();
    assert_eq!(deps, ["B", "C"]);
    assert_eq!(
        d.task("D").unwrap().dependencies[0].condition,
        DependencyCondition::Completed
    );
}

#[test]
fn format_detection() {
    assert_eq!(
        DefinitionFormat::detect("  \n {\"type\": 1}"),
        DefinitionFormat::Json
    );
    assert_eq!(DefinitionFormat::detect("type: x"), DefinitionFormat::Yaml);
    assert_eq!(DefinitionFormat::Yaml.to_string(), "YAML");
}

#[test]
fn minimal_document_takes_defaults() {
    let d = parse_definition(&one_task(""), None).unwrap();
    let t = &d.tasks[0];
    assert_eq!(t, &TaskConfiguration::new("a", "a"));
    assert_eq!(d.default_retry, RetryConfiguration::default());
    assert_eq!(d.timeout_config, TimeoutConfiguration::default());
}

#[test]
fn durations() {
    let d = parse_definition(
        &one_task("    retry: { max_attempts: 4, backoff: custom, custom_delays: [1s, 1500, \"250\", 1m 30s] }\n"),
        None,
    )
    .unwrap();
    assert_eq!(
        d.tasks[0].retry_config.custom_delays_ms,
        [1_000, 1_500, 250, 90_000]
    );
    let p = "tasks[0] (a).retry.custom_delays[0]";
    assert_eq!(
        duration_ms(&Json::from(-1), p).unwrap_err().to_string(),
        format!("{p}: invalid duration -1")
    );
    assert!(duration_ms(&Json::from(1.5), p).is_err());
    assert!(duration_ms(&Json::Bool(true), p).is_err());
    assert!(duration_ms(&Json::from(""), p).is_err());
}

#[test]
fn invalid_duration_names_the_task_and_field() {
    let text = "type: wf\ntasks:\n  - name: a\n  - name: b\n  - name: charge\n    timeout: { execution: soon }\n";
    assert_eq!(
        err(text),
        "tasks[2] (charge).timeout.execution: invalid duration 'soon'"
    );
    assert_eq!(
        err("type: wf\ntimeout: { grace: 1 week-ish }\ntasks: [{name: a}]"),
        "timeout.grace: invalid duration '1 week-ish'"
    );
    assert_eq!(
        err("type: wf\nretry: { base_delay: never }\ntasks: [{name: a}]"),
        "retry.base_delay: invalid duration 'never'"
    );
}

#[test]
fn unknown_fields_name_their_location() {
    let e = err(&one_task("    retires: 3\n"));
    assert!(
        e.starts_with("tasks[0] (a): unknown field `retires`"),
        "{e}"
    );
    let e = err(&one_task("    retry: { max_attempt: 3 }\n"));
    assert!(
        e.starts_with("tasks[0] (a).retry: unknown field `max_attempt`"),
        "{e}"
    );
    let e = err(&one_task("    timeout: { exec: 3 }\n"));
    assert!(
        e.starts_with("tasks[0] (a).timeout: unknown field `exec`"),
        "{e}"
    );
    let e = err(&one_task("    depends_on: [{ task: b, when: failed }]\n"));
    assert!(
        e.starts_with("tasks[0] (a).depends_on[0]: unknown field `when`"),
        "{e}"
    );
    let e = err("type: wf\ntsks: []\n");
    assert!(e.starts_with("top level: unknown field `tsks`"), "{e}");
    let e = err("{\"type\": \"wf\", \"tasks\": [{\"nme\": \"a\"}]}");
    assert!(e.starts_with("tasks[0]: unknown field `nme`"), "{e}");
}

#[test]
fn missing_and_mistyped_fields() {
    assert!(err("tasks: [{name: a}]").starts_with("top level: missing field `type`"));
    assert!(err("type: wf\ntasks: [{handler: x}]").starts_with("tasks[0]: missing field `name`"));
    let e = err(&one_task("    retry: { max_attempts: -1 }\n"));
    assert_eq!(
        e,
        "tasks[0] (a).retry.max_attempts: invalid value: integer `-1`, expected u32"
    );
    let e = err(&one_task("    resources: { cpu: x }\n"));
    assert_eq!(
        e,
        "tasks[0] (a).resources: invalid type: string \"x\", expected i64"
    );
    let e = err(&one_task("    tags: tag\n"));
    assert!(
        e.starts_with("tasks[0] (a).tags: invalid type: string"),
        "{e}"
    );
    assert!(err("type: wf\ntasks: [{name: 5}]").starts_with("tasks[0]: invalid type: integer `5`"));
    assert!(err("type: wf\ntasks: {}").starts_with("tasks: invalid type: map, expected a sequence"));
    assert!(err("type: [wf]\ntasks: []").starts_with("top level: invalid type: sequence"));
    let e = err(&one_task("    depends_on: [3]\n"));
    assert_eq!(
        e,
        "tasks[0] (a).depends_on[0]: expected a task name or {task, condition}, found 3"
    );
}

#[test]
fn bad_enum_values_name_the_field() {
    let e = err(&one_task("    priority: urgent\n"));
    assert_eq!(
        e,
        "tasks[0] (a).priority: unknown TaskPriority 'urgent' (expected one of: low, normal, high, critical)"
    );
    assert!(err(&one_task("    type: magic\n"))
        .starts_with("tasks[0] (a).type: unknown TaskType 'magic'"));
    assert!(err(&one_task("    semantics: maybe\n")).starts_with("tasks[0] (a).semantics: unknown"));
    assert!(
        err("type: wf\nretry: {backoff: random}\ntasks: [{name: a}]")
            .starts_with("retry.backoff: unknown")
    );
    let e = err(
        "type: wf\ntasks: [{name: b}, {name: a, depends_on: [{task: b, condition: eventually}]}]",
    );
    assert!(
        e.starts_with("tasks[1] (a).depends_on[0].condition: unknown DependencyCondition"),
        "{e}"
    );
}

#[test]
fn data_maps_name_the_path() {
    let e = err(&one_task("    parameters: { x: { y: { z: 1 } } }\n"));
    assert_eq!(
        e,
        "tasks[0] (a).parameters.x.y: nested maps may hold only strings, numbers and booleans"
    );
    let e = err("type: wf\ninput: [1]\ntasks: [{name: a}]");
    assert_eq!(e, "input: expected a JSON object");
    let e = err(&one_task("    constraints: { n: null }\n"));
    assert_eq!(
        e,
        "tasks[0] (a).constraints.n: null is not allowed in workflow data"
    );
}

#[test]
fn syntax_errors() {
    let e = err("type: wf\ntasks: [\n");
    assert!(e.starts_with("invalid YAML: "), "{e}");
    let e = err("{\"type\": \"wf\",");
    assert!(e.starts_with("invalid JSON: "), "{e}");
    assert!(e.contains("line 1"), "{e}");
    assert!(err("").starts_with("invalid YAML: the document must be a mapping"));
    assert!(err("- a\n- b\n").starts_with("invalid YAML: the document must be a mapping"));
}

#[test]
fn validation_runs_after_parsing() {
    assert_eq!(err("type: wf\n"), "no tasks");
    assert_eq!(
        err("type: Bad Name\ntasks: [{name: a}]"),
        "workflow type 'Bad Name' is invalid: use 1-100 of [a-z0-9_-]"
    );
    assert_eq!(
        err("type: wf\ntasks: [{name: a}, {name: d, depends_on: [x]}]"),
        "task 'd' depends on unknown task 'x'"
    );
    assert_eq!(
        err("type: wf\ntasks: [{name: a, depends_on: [a]}]"),
        "task 'a' depends on itself"
    );
    assert_eq!(
        err("type: wf\ntasks: [{name: a}, {name: b}, {name: c}, {name: a}]"),
        "duplicate task name 'a' (tasks[0] and tasks[3])"
    );
    assert_eq!(
        err("type: wf\ntasks: [{name: a, depends_on: [c]}, {name: b, depends_on: [a]}, {name: c, depends_on: [b]}]"),
        "dependency cycle: a -> b -> c -> a"
    );
    assert_eq!(
        err("type: wf\nretry: {max_attempts: 0}\ntasks: [{name: a}]"),
        "retry.max_attempts must be at least 1"
    );
    assert_eq!(
        err(&one_task("    retry: { max_attempts: 0 }\n")),
        "tasks[0] (a).retry.max_attempts must be at least 1"
    );
    assert_eq!(
        err(&one_task("    compensation: x\n")),
        "compensation task 'x' of 'a' does not exist"
    );
    assert!(matches!(
        parse_definition(
            "type: wf\ntasks: [{name: a, retry: {base_delay: 1m, max_delay: 1s}}]",
            None
        ),
        Err(DefinitionError::RetryDelays {
            base_delay_ms: 60_000,
            max_delay_ms: 1_000,
            ..
        })
    ));
}

#[test]
fn requirements_and_context_limits_parse_and_are_checked() {
    let yaml = "type: render\ncontext:\n  capabilities: [gpu, region=eu]\n  resource_limits: {cpu: 4}\ntasks:\n  - name: draw\n    handler: noop\n    requires: [gpu]\n    node_selector: {region: eu}\n    resources: {cpu: 2}\n    priority: critical\n";
    let def = parse_definition(yaml, None).unwrap();
    let task = &def.tasks[0];
    assert_eq!(
        task.constraints.get(crate::lanes::CAPABILITIES_CONSTRAINT),
        Some(&WorkflowData::List(vec!["gpu".into()]))
    );
    let req = crate::lanes::Requirements::of_task(task).unwrap();
    assert_eq!(req.suffix(), "urgent.cap-gpu.res-cpu--2.sel-region--eu");
    let limits = crate::lanes::ContextLimits::of_metadata(&def.metadata).unwrap();
    assert_eq!(limits.resource_limits, BTreeMap::from([("cpu".into(), 4)]));
    assert!(limits.capabilities.contains("region=eu"));

    let over = yaml.replace("cpu: 2", "cpu: 8");
    let e = parse_definition(&over, None).unwrap_err().to_string();
    assert!(
        e.contains("asks for 8 cpu, over the workflow context's limit of 4"),
        "{e}"
    );
    let other = yaml.replace("requires: [gpu]", "requires: [tpu]");
    let e = parse_definition(&other, None).unwrap_err().to_string();
    assert!(e.contains("requires capability 'tpu'"), "{e}");
    let bad = yaml.replace("requires: [gpu]", "requires: [\"g p u\"]");
    let e = parse_definition(&bad, None).unwrap_err().to_string();
    assert!(e.contains("'g p u' is not a valid name"), "{e}");
}
