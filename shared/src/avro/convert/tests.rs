//! Unit tests of the conversions against the embedded schemas: enum symbols
//! agree with the Rust enums, converted values validate against the published
//! schemas, and `read` agrees with `apache_avro`'s reader. Byte-level tests
//! live in `shared/tests/golden.rs`.

use std::collections::BTreeMap;

use apache_avro::types::Value;
use serde_json::Value as Json;

use super::ToAvro;
use crate::avro::codec::{encode_record, HEADER_LEN};
use crate::avro::read::read_datum;
use crate::avro::schemas::{entries, entry};
use crate::control::ControlAction;
use crate::data::{Scalar, WorkflowData};
use crate::definition::WorkflowDefinition;
use crate::event::{WorkflowEvent, WorkflowEventType};
use crate::ids::InstanceId;
use crate::model::{
    BackoffStrategy, DependencyCondition, ExecutionSemantics, IsolationLevel, TaskConfiguration,
    TaskPriority, TaskType,
};
use crate::node::HealthStatus;
use crate::state::{TaskState, WorkflowState};

/// Every enum defined in any schema, by name, with its symbols.
fn schema_enums() -> BTreeMap<String, Vec<Vec<String>>> {
    fn walk(node: &Json, out: &mut BTreeMap<String, Vec<Vec<String>>>) {
        match node {
            Json::Object(obj) => {
                if obj.get("type").and_then(Json::as_str) == Some("enum") {
                    let name = obj["name"].as_str().unwrap_or_default().to_owned();
                    let symbols = obj["symbols"]
                        .as_array()
                        .map(|s| {
                            s.iter()
                                .filter_map(Json::as_str)
                                .map(str::to_owned)
                                .collect()
                        })
                        .unwrap_or_default();
                    out.entry(name).or_default().push(symbols);
                }
                obj.values().for_each(|v| walk(v, out));
            }
            Json::Array(items) => items.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    let mut out = BTreeMap::new();
    for e in entries() {
        walk(&serde_json::from_str(e.json).unwrap(), &mut out);
    }
    out
}

fn names<T: std::fmt::Display>(all: &[T]) -> Vec<String> {
    all.iter().map(ToString::to_string).collect()
}

#[test]
fn schema_enum_symbols_are_the_wire_names_in_protocol_order() {
    let expected: BTreeMap<&str, Vec<String>> = BTreeMap::from([
        ("TaskType", names(TaskType::ALL)),
        ("ExecutionSemantics", names(ExecutionSemantics::ALL)),
        ("TaskPriority", names(TaskPriority::ALL)),
        ("IsolationLevel", names(IsolationLevel::ALL)),
        ("BackoffStrategy", names(BackoffStrategy::ALL)),
        ("DependencyCondition", names(DependencyCondition::ALL)),
        ("TaskState", names(TaskState::ALL)),
        ("WorkflowState", names(WorkflowState::ALL)),
        ("HealthStatus", names(HealthStatus::ALL)),
        ("ControlAction", names(ControlAction::ALL)),
    ]);
    let found = schema_enums();
    assert_eq!(
        found.keys().map(String::as_str).collect::<Vec<_>>(),
        expected.keys().copied().collect::<Vec<_>>()
    );
    for (name, definitions) in found {
        for symbols in definitions {
            assert_eq!(symbols, expected[name.as_str()], "enum {name}");
        }
    }
}

#[test]
fn event_type_doc_lists_every_event_type() {
    let json = entry("WorkflowEvent").unwrap().json;
    for t in WorkflowEventType::ALL {
        assert!(
            json.contains(&format!(" {t},")) || json.contains(&format!(" {t}.")),
            "{t} missing"
        );
    }
}

#[test]
fn converted_values_validate_against_the_published_schemas() {
    let instance = InstanceId::random();
    let mut event = WorkflowEvent::new(
        WorkflowEventType::WorkflowCreated,
        "orders",
        instance,
        "k",
        1,
    );
    event.data.insert("n".into(), 3.into());
    assert!(event
        .to_avro()
        .validate(&entry("WorkflowEvent").unwrap().schema));

    let mut task = TaskConfiguration::new("charge", "http").after("reserve");
    task.node_selector = Some(BTreeMap::from([("zone".into(), "a".into())]));
    let def = WorkflowDefinition::new(
        "orders",
        vec![TaskConfiguration::new("reserve", "noop"), task],
    );
    assert!(def
        .to_avro()
        .validate(&entry("WorkflowDefinition").unwrap().schema));
}

/// `apache_avro`'s value with its `Uuid`s as the strings `read` returns.
fn uuids_as_strings(value: Value) -> Value {
    match value {
        Value::Uuid(u) => Value::String(u.hyphenated().to_string()),
        Value::Union(i, v) => Value::Union(i, Box::new(uuids_as_strings(*v))),
        Value::Array(items) => Value::Array(items.into_iter().map(uuids_as_strings).collect()),
        Value::Map(m) => Value::Map(
            m.into_iter()
                .map(|(k, v)| (k, uuids_as_strings(v)))
                .collect(),
        ),
        Value::Record(fields) => Value::Record(
            fields
                .into_iter()
                .map(|(k, v)| (k, uuids_as_strings(v)))
                .collect(),
        ),
        other => other,
    }
}

#[test]
fn read_agrees_with_apache_avro() {
    let mut event = WorkflowEvent::new(
        WorkflowEventType::TaskFailed,
        "orders",
        InstanceId::random(),
        "k",
        -5,
    );
    event.causation_id = Some(crate::ids::EventId::random());
    event.correlation_chain = vec![crate::ids::EventId::random(); 3];
    event.data = BTreeMap::from([
        ("s".to_owned(), WorkflowData::Str("é".into())),
        ("i".to_owned(), WorkflowData::Int(-1 << 40)),
        ("f".to_owned(), WorkflowData::Float(f64::MAX)),
        ("b".to_owned(), WorkflowData::Bool(true)),
        (
            "l".to_owned(),
            WorkflowData::List(vec!["a".into(), "b".into()]),
        ),
        (
            "m".to_owned(),
            WorkflowData::Map(BTreeMap::from([("x".to_owned(), Scalar::Float(0.5))])),
        ),
    ]);
    let mut task = TaskConfiguration::new("charge", "http").after("reserve");
    task.compensation = Some("refund".into());
    let def = WorkflowDefinition::new(
        "orders",
        vec![TaskConfiguration::new("reserve", "noop"), task],
    );
    let cases = [
        ("WorkflowEvent", encode_record("WorkflowEvent", &event)),
        (
            "WorkflowDefinition",
            encode_record("WorkflowDefinition", &def),
        ),
    ];
    for (name, bytes) in cases {
        let e = entry(name).unwrap();
        let (ours, end) = read_datum(&e.schema, &e.names, &bytes, HEADER_LEN).unwrap();
        assert_eq!(end, bytes.len());
        let lib = apache_avro::from_avro_datum(&e.schema, &mut &bytes[HEADER_LEN..], None).unwrap();
        assert_eq!(ours, uuids_as_strings(lib), "{name}");
    }
}
