//! Tests of a child workflow's trace: it nests under its parent's task span
//! (ADR 0019); an ordinary workflow's trace does not change.

use super::otlp::export_request;
use super::trace::{
    build, parse_traceparent, Trace, META_PARENT_INSTANCE, META_PARENT_TASK,
    META_PARENT_TRACEPARENT, META_PARENT_TYPE,
};
use crate::data::DataMap;
use crate::definition::WorkflowDefinition;
use crate::event::WorkflowEventType as T;
use crate::fsm::tests::{Defs, Driver};
use crate::ids::InstanceId;
use crate::model::TaskConfiguration;
use crate::state::WorkflowState;

fn defs(ty: &str) -> Defs {
    Defs(vec![WorkflowDefinition::new(
        ty,
        vec![TaskConfiguration::new("only", "noop")],
    )])
}

/// One instance of `ty` whose `workflow.created` carries `created_meta`;
/// its one task runs and completes.
fn run(ty: &str, seed: &[u8], created_meta: &[(&str, &str)]) -> Driver {
    let mut d = Driver::new(defs(ty));
    d.id = InstanceId::derived(&[b"child-trace", seed]);
    d.input_with(T::WorkflowCreated, None, DataMap::new(), created_meta);
    d.input(T::TaskStarted, Some(("only", 1)), DataMap::new());
    d.input(T::TaskCompleted, Some(("only", 1)), DataMap::new());
    assert_eq!(d.wf().state, WorkflowState::Completed);
    d
}

fn trace_of(d: &Driver) -> Trace {
    build(&d.history, d.defs.0.first()).unwrap()
}

#[test]
fn a_child_trace_nests_under_the_parents_task_span() {
    let parent = run("parent", b"p", &[]);
    let pt = trace_of(&parent);
    let task_span = pt.spans.iter().find(|s| s.name == "task only").unwrap();
    // The traceparent the parent's dispatch carried: what the worker hands on.
    let tp = parent.dispatches[0].traceparent.clone();
    assert!(tp.contains(&task_span.span_id), "{tp}");
    let pid = parent.id.to_string();
    let child = run(
        "child",
        b"c",
        &[
            (META_PARENT_TYPE, "parent"),
            (META_PARENT_INSTANCE, &pid),
            (META_PARENT_TASK, "only"),
            (META_PARENT_TRACEPARENT, &tp),
        ],
    );
    let ct = trace_of(&child);
    assert_eq!(
        ct.trace_id, pt.trace_id,
        "the child shares the parent's trace"
    );
    let p = ct
        .parent
        .as_ref()
        .expect("the child's trace names its parent");
    assert_eq!(p.span_id, task_span.span_id);
    assert_eq!(p.instance_id.as_deref(), Some(pid.as_str()));
    assert_eq!(p.task.as_deref(), Some("only"));
    let root = &ct.spans[0];
    assert_eq!(
        root.parent_span_id.as_deref(),
        Some(task_span.span_id.as_str())
    );
    assert_eq!(root.attributes["workflow.parent.type"], "parent");
    assert_eq!(root.attributes["workflow.id"], child.id.to_string());
    // Every other span of the child is still inside the child's root.
    for s in &ct.spans[1..] {
        assert_eq!(s.parent_span_id.as_deref(), Some(root.span_id.as_str()));
    }
    // OTLP: every span in the parent's trace; the root's parent is the task span.
    let otlp = export_request(&ct, "weft", 0);
    let spans = otlp["resourceSpans"][0]["scopeSpans"][0]["spans"]
        .as_array()
        .unwrap();
    assert!(spans.iter().all(|s| s["traceId"] == pt.trace_id.as_str()));
    assert_eq!(spans[0]["parentSpanId"], task_span.span_id.as_str());
    // The same history gives the same trace; the API's span list says the parent.
    assert_eq!(trace_of(&child), ct);
    let json = serde_json::to_value(&ct).unwrap();
    assert_eq!(json["parent"]["span_id"], task_span.span_id.as_str());
}

#[test]
fn an_ordinary_trace_has_no_parent_and_a_bad_traceparent_is_ignored() {
    let plain = run("plain", b"x", &[]);
    let t = trace_of(&plain);
    assert_eq!(t.trace_id, plain.id.0.simple().to_string());
    assert_eq!(t.parent, None);
    assert_eq!(t.spans[0].parent_span_id, None);
    assert!(!t.spans[0].attributes.contains_key("workflow.parent.type"));
    let json = serde_json::to_value(&t).unwrap();
    assert!(json.get("parent").is_none(), "{json}");
    // A malformed traceparent leaves the trace the instance's own.
    let odd = run(
        "plain",
        b"y",
        &[(META_PARENT_TRACEPARENT, "00-zz-0000000000000000-01")],
    );
    let t = trace_of(&odd);
    assert_eq!(t.trace_id, odd.id.0.simple().to_string());
    assert_eq!(t.parent, None);
}

#[test]
fn traceparents_parse_only_when_well_formed() {
    let tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    assert_eq!(
        parse_traceparent(tp),
        Some((
            "0af7651916cd43dd8448eb211c80319c".into(),
            "b7ad6b7169203331".into()
        ))
    );
    for bad in [
        "",
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331",
        "00-00000000000000000000000000000000-b7ad6b7169203331-01",
        "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
        "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01",
        "00-0af7651916cd43dd8448eb211c80319-b7ad6b7169203331-01",
    ] {
        assert_eq!(parse_traceparent(bad), None, "{bad}");
    }
}

/// `(trace id, span id)` of a dispatch's traceparent.
fn ids_of(tp: &str) -> (String, String) {
    parse_traceparent(tp).unwrap_or_else(|| panic!("a well-formed traceparent: {tp}"))
}

#[test]
fn a_childs_task_dispatches_carry_the_parents_trace() {
    let parent = run("parent", b"p", &[]);
    let tp = parent.dispatches[0].traceparent.clone();
    let (parent_trace, _) = ids_of(&tp);
    // A top-level instance's dispatches: its own instance id, as before.
    assert_eq!(parent_trace, parent.id.0.simple().to_string());
    assert_eq!(parent.wf().trace_id, None);

    let child = run("child", b"c", &[(META_PARENT_TRACEPARENT, &tp)]);
    let child_tp = child.dispatches[0].traceparent.clone();
    let (trace, span) = ids_of(&child_tp);
    assert_eq!(
        trace, parent_trace,
        "the child's dispatch is in the parent's trace"
    );
    assert_ne!(trace, child.id.0.simple().to_string());
    assert_eq!(child.wf().trace_id.as_deref(), Some(parent_trace.as_str()));
    // Its span is the child's task span of the one derived tree.
    let ct = trace_of(&child);
    assert_eq!(ct.trace_id, parent_trace);
    let task_span = ct.spans.iter().find(|s| s.name == "task only").unwrap();
    assert_eq!(span, task_span.span_id);

    // A grandchild, started from the child's task, stays in the same trace.
    let grand = run("grand", b"g", &[(META_PARENT_TRACEPARENT, &child_tp)]);
    let (trace, _) = ids_of(&grand.dispatches[0].traceparent);
    assert_eq!(trace, parent_trace);
    assert_eq!(trace_of(&grand).spans[0].parent_span_id, Some(span));

    // A malformed parent traceparent leaves the dispatch in the child's own trace.
    let odd = run(
        "child",
        b"odd",
        &[(META_PARENT_TRACEPARENT, "00-zz-0000000000000000-01")],
    );
    let (trace, _) = ids_of(&odd.dispatches[0].traceparent);
    assert_eq!(trace, odd.id.0.simple().to_string());
}

#[test]
fn the_trace_id_is_stored_only_for_a_child_and_old_projections_read() {
    let parent = run("parent", b"p", &[]);
    let json = serde_json::to_value(parent.wf()).unwrap();
    assert!(json.get("trace_id").is_none(), "unchanged encoding: {json}");
    let tp = parent.dispatches[0].traceparent.clone();
    let child = run("child", b"c", &[(META_PARENT_TRACEPARENT, &tp)]);
    let mut json = serde_json::to_value(child.wf()).unwrap();
    let back: crate::fsm::InstanceState = serde_json::from_value(json.clone()).unwrap();
    assert_eq!(&back, child.wf());
    // A child's projection stored before the field existed still reads.
    json.as_object_mut().unwrap().remove("trace_id").unwrap();
    let old: crate::fsm::InstanceState = serde_json::from_value(json).unwrap();
    assert_eq!(old.trace_id, None);
    assert_eq!(old.trace_id_hex(), child.id.0.simple().to_string());
}
