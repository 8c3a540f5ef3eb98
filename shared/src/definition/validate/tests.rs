//! Tests of the structural checks and the topological order.

use super::*;
use crate::model::TaskConfiguration;

fn task(name: &str, deps: &[&str]) -> TaskConfiguration {
    deps.iter()
        .fold(TaskConfiguration::new(name, "noop"), |t, d| t.after(d))
}

fn def(tasks: Vec<TaskConfiguration>) -> WorkflowDefinition {
    WorkflowDefinition::new("wf", tasks)
}

fn err(d: &WorkflowDefinition) -> String {
    validate(d).unwrap_err().to_string()
}

#[test]
fn diamond_is_valid_and_ordered() {
    let d = def(vec![
        task("d", &["b", "c"]),
        task("c", &["a"]),
        task("b", &["a"]),
        task("a", &[]),
    ]);
    validate(&d).unwrap();
    assert_eq!(topological_order(&d), ["a", "c", "b", "d"]);
}

#[test]
fn topological_order_prefers_written_order() {
    let d = def(vec![task("x", &[]), task("y", &[]), task("z", &["x"])]);
    assert_eq!(topological_order(&d), ["x", "y", "z"]);
    let cyclic = def(vec![task("a", &["b"]), task("b", &["a"]), task("c", &[])]);
    assert_eq!(topological_order(&cyclic), ["c"]);
}

#[test]
fn type_name() {
    let mut d = def(vec![task("a", &[])]);
    d.workflow_type = "Bad Name".into();
    assert_eq!(
        err(&d),
        "workflow type 'Bad Name' is invalid: use 1-100 of [a-z0-9_-]"
    );
    d.workflow_type = String::new();
    assert!(matches!(
        validate(&d),
        Err(DefinitionError::InvalidType { .. })
    ));
    d.workflow_type = "x".repeat(101);
    assert!(matches!(
        validate(&d),
        Err(DefinitionError::InvalidType { .. })
    ));
    d.workflow_type = "order_fulfil-2".into();
    validate(&d).unwrap();
}

#[test]
fn no_tasks() {
    assert_eq!(err(&def(vec![])), "no tasks");
}

#[test]
fn task_names() {
    let d = def(vec![task("Ok_1", &[]), task("not ok", &[])]);
    assert_eq!(
        err(&d),
        "task name 'not ok' (tasks[1]) is invalid: use 1-100 of [A-Za-z0-9_-]"
    );
    let d = def(vec![
        task("a", &[]),
        task("b", &[]),
        task("c", &[]),
        task("a", &[]),
    ]);
    assert_eq!(err(&d), "duplicate task name 'a' (tasks[0] and tasks[3])");
    assert_eq!(
        validate(&d).unwrap_err(),
        DefinitionError::DuplicateTask {
            name: "a".into(),
            first: 0,
            second: 3
        }
    );
}

#[test]
fn dependencies() {
    let d = def(vec![task("a", &["a"])]);
    assert_eq!(err(&d), "task 'a' depends on itself");
    let d = def(vec![task("a", &[]), task("d", &["a", "x"])]);
    assert_eq!(err(&d), "task 'd' depends on unknown task 'x'");
    let d = def(vec![task("a", &[]), task("b", &["a", "a"])]);
    assert_eq!(err(&d), "task 'b' lists dependency 'a' more than once");
}

#[test]
fn cycles_are_reported_with_their_path() {
    // a waits for c, b for a, c for b: a -> b -> c -> a in execution order.
    let d = def(vec![
        task("a", &["c"]),
        task("b", &["a"]),
        task("c", &["b"]),
    ]);
    assert_eq!(err(&d), "dependency cycle: a -> b -> c -> a");
    // Entered from outside; still rotated to the first-written member.
    let d = def(vec![
        task("start", &[]),
        task("y", &["x"]),
        task("x", &["start", "y"]),
        task("end", &["y"]),
    ]);
    assert_eq!(
        validate(&d).unwrap_err(),
        DefinitionError::Cycle {
            path: vec!["y".into(), "x".into(), "y".into()]
        }
    );
}

#[test]
fn compensation() {
    let mut d = def(vec![task("a", &[]), task("undo", &[])]);
    d.tasks[0].compensation = Some("x".into());
    assert_eq!(err(&d), "compensation task 'x' of 'a' does not exist");
    d.tasks[0].compensation = Some("a".into());
    assert_eq!(err(&d), "task 'a' cannot be its own compensation");
    d.tasks[0].compensation = Some("undo".into());
    validate(&d).unwrap();
}

#[test]
fn retry_policies() {
    let mut d = def(vec![task("a", &[])]);
    d.default_retry.max_attempts = 0;
    assert_eq!(err(&d), "retry.max_attempts must be at least 1");
    d.default_retry.max_attempts = 1;
    d.tasks[0].retry_config.base_delay_ms = 500;
    d.tasks[0].retry_config.max_delay_ms = 100;
    assert_eq!(
        err(&d),
        "tasks[0] (a).retry.max_delay (100ms) must not be less than base_delay (500ms)"
    );
}

#[test]
fn empty_handler() {
    let d = def(vec![TaskConfiguration::new("a", " ")]);
    assert_eq!(err(&d), "task 'a' has an empty handler");
}

#[test]
fn groups_and_waits_are_checked() {
    let ok = r#"
type: shaped
tasks:
  - {name: g, type: sequential, parameters: {tasks: [a, b]}}
  - {name: a, handler: noop}
  - {name: b, handler: noop}
  - {name: w, type: wait, parameters: {duration: 2s}, depends_on: [g]}
"#;
    let def = crate::definition::parse_definition(ok, None).expect("valid");
    assert_eq!(
        def.task("w").unwrap().parameters["duration_ms"],
        crate::data::WorkflowData::Int(2_000)
    );
    for (doc, needle) in [
        ("tasks:\n  - {name: g, type: parallel}\n  - {name: a}", "parameters.tasks"),
        ("tasks:\n  - {name: g, type: parallel, parameters: {tasks: [zz]}}", "member 'zz' does not exist"),
        (
            "tasks:\n  - {name: g, type: parallel, parameters: {tasks: [a]}}\n  - {name: h, type: parallel, parameters: {tasks: [a]}}\n  - {name: a}",
            "already belongs to group 'g'",
        ),
        (
            "tasks:\n  - {name: g, type: parallel, parameters: {tasks: [h]}}\n  - {name: h, type: parallel, parameters: {tasks: [g]}}",
            "contain each other",
        ),
        ("tasks:\n  - {name: w, type: wait}", "parameters.signal"),
        ("tasks:\n  - {name: w, type: wait, parameters: {duration: soon}}", "invalid duration"),
    ] {
        let err = crate::definition::parse_definition(&format!("type: bad\n{doc}"), None)
            .expect_err(doc)
            .to_string();
        assert!(err.contains(needle), "{doc}: {err}");
    }
}
