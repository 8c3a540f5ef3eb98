//! The embedded schemas of `schemas/`, parsed once: their JSON text, parsed
//! form, named types and single-object fingerprints. Each file stands alone:
//! a named type used in several files is defined in each of them.

use std::sync::LazyLock;

use apache_avro::Schema;

use super::fingerprint::fingerprint;
use super::read::{collect_names, Names};

/// The record names of every Weft schema, in the order of `schemas/`.
pub const SCHEMA_NAMES: &[&str] = &[
    "WorkflowEvent",
    "TaskDispatch",
    "WorkflowSnapshot",
    "WorkflowDefinition",
    "NodeRecord",
    "TaskControl",
    "TaskHeartbeat",
];

/// The namespace of every Weft schema.
pub const NAMESPACE: &str = "io.weft.v1";

const SOURCES: [(&str, &str); 7] = [
    (
        "WorkflowEvent",
        include_str!("../../../schemas/workflow_event.avsc"),
    ),
    (
        "TaskDispatch",
        include_str!("../../../schemas/task_dispatch.avsc"),
    ),
    (
        "WorkflowSnapshot",
        include_str!("../../../schemas/workflow_snapshot.avsc"),
    ),
    (
        "WorkflowDefinition",
        include_str!("../../../schemas/workflow_definition.avsc"),
    ),
    (
        "NodeRecord",
        include_str!("../../../schemas/node_record.avsc"),
    ),
    (
        "TaskControl",
        include_str!("../../../schemas/task_control.avsc"),
    ),
    (
        "TaskHeartbeat",
        include_str!("../../../schemas/task_heartbeat.avsc"),
    ),
];

/// One parsed schema.
pub(crate) struct Entry {
    /// The record name (`WorkflowEvent`).
    pub name: &'static str,
    /// The schema text as published.
    pub json: &'static str,
    /// The parsed schema.
    pub schema: Schema,
    /// Its named types, by full name.
    pub names: Names,
    /// CRC-64-AVRO of the Parsing Canonical Form, little-endian (as on the wire).
    pub fingerprint: [u8; 8],
}

static ENTRIES: LazyLock<Vec<Entry>> =
    LazyLock::new(|| SOURCES.iter().map(|(n, j)| load(n, j)).collect());

fn load(name: &'static str, json: &'static str) -> Entry {
    // The schemas are compiled in and covered by tests: failing here is a build defect.
    let schema = Schema::parse_str(json)
        .unwrap_or_else(|e| panic!("embedded schema {name} is invalid: {e}"));
    let tree = serde_json::from_str(json)
        .unwrap_or_else(|e| panic!("embedded schema {name} is not JSON: {e}"));
    let fingerprint = fingerprint(&tree);
    let mut names = Names::new();
    collect_names(&schema, &mut names);
    Entry {
        name,
        json,
        schema,
        names,
        fingerprint,
    }
}

/// Every schema.
pub(crate) fn entries() -> &'static [Entry] {
    &ENTRIES
}

/// The schema named `name`: a record name (`WorkflowEvent`) or a full name
/// (`io.weft.v1.WorkflowEvent`).
pub(crate) fn entry(name: &str) -> Option<&'static Entry> {
    let short = match name.strip_prefix(NAMESPACE) {
        Some(rest) => rest.strip_prefix('.')?,
        None => name,
    };
    entries().iter().find(|e| e.name == short)
}

/// The schema written with `fingerprint`.
pub(crate) fn entry_by_fingerprint(fingerprint: &[u8]) -> Option<&'static Entry> {
    entries().iter().find(|e| e.fingerprint == fingerprint)
}

/// The single-object fingerprint of schema `schema_name` (`WorkflowEvent` or
/// `io.weft.v1.WorkflowEvent`): the 8 bytes that follow `C3 01` on the wire.
pub fn fingerprint_of(schema_name: &str) -> Option<[u8; 8]> {
    entry(schema_name).map(|e| e.fingerprint)
}

/// The published JSON text of schema `schema_name` (`WorkflowEvent` or
/// `io.weft.v1.WorkflowEvent`), for serving and listing.
pub fn schema_json(schema_name: &str) -> Option<&'static str> {
    entry(schema_name).map(|e| e.json)
}

/// Lower-case hex of `bytes` in wire order.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_schema_loads_with_a_distinct_fingerprint() {
        assert_eq!(entries().len(), SCHEMA_NAMES.len());
        for (e, name) in entries().iter().zip(SCHEMA_NAMES) {
            assert_eq!(e.name, *name);
            assert_eq!(
                e.schema.name().map(|n| n.fullname(None)),
                Some(format!("{NAMESPACE}.{name}"))
            );
            assert_eq!(
                entry_by_fingerprint(&e.fingerprint).map(|x| x.name),
                Some(e.name)
            );
        }
    }

    #[test]
    fn lookup_by_short_and_full_name() {
        assert!(fingerprint_of("WorkflowEvent").is_some());
        assert_eq!(
            fingerprint_of("io.weft.v1.WorkflowEvent"),
            fingerprint_of("WorkflowEvent")
        );
        assert!(schema_json("io.weft.v1.NodeRecord")
            .unwrap()
            .contains("\"NodeRecord\""));
        assert_eq!(fingerprint_of("io.weft.v1"), None);
        assert_eq!(fingerprint_of("Nope"), None);
    }
}
