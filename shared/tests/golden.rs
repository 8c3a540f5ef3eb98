//! The Avro wire contract, pinned: every record type's encoding is compared
//! with checked-in golden bytes (`tests/golden/*.bin`), round-trips, and is
//! read back by `apache_avro`'s own reader with the published schema.
//!
//! A missing golden file is written and the test fails, asking you to re-run
//! and commit it. `WEFT_BLESS=1 cargo test -p weft-shared --test golden`
//! rewrites them all — only do that for an intended wire-format change, since
//! records already in Kafka keep the old bytes.

#[path = "avro/errors.rs"]
mod errors;
#[path = "avro/fixtures.rs"]
mod fixtures;
#[path = "avro/props.rs"]
mod props;

use std::fmt::Debug;
use std::path::PathBuf;

use apache_avro::Schema;
use weft_shared::avro::{
    fingerprint_of, schema_json, schema_name_of, AvroRecord, HEADER_LEN, SCHEMA_NAMES,
};

fn golden_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(format!("{name}.bin"))
}

/// Compares `bytes` with golden file `name`, writing it when missing or when
/// blessing; returns a note when it was missing (the caller fails after writing
/// every missing file, so one run writes them all).
fn check_golden(name: &str, bytes: &[u8]) -> Option<String> {
    let path = golden_path(name);
    let bless = std::env::var("WEFT_BLESS").is_ok_and(|v| v == "1");
    match std::fs::read(&path) {
        Ok(golden) if !bless => {
            if golden != bytes {
                let at = golden
                    .iter()
                    .zip(bytes)
                    .position(|(a, b)| a != b)
                    .unwrap_or(golden.len().min(bytes.len()));
                panic!(
                    "the encoding of {name} changed: {} bytes now, {} in {} (first difference at byte {at}).\n\
                     This changes Weft's wire format. If that is intended, re-run with WEFT_BLESS=1 and \
                     commit the new golden files; otherwise fix the codec or the schema.",
                    bytes.len(),
                    golden.len(),
                    path.display()
                );
            }
            None
        }
        Ok(_) => {
            write_golden(&path, bytes);
            None
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            write_golden(&path, bytes);
            (!bless).then(|| path.display().to_string())
        }
        Err(e) => panic!("cannot read {}: {e}", path.display()),
    }
}

/// Fails if any golden file was missing (and has been written).
fn report_missing(missing: impl IntoIterator<Item = Option<String>>) {
    let missing: Vec<String> = missing.into_iter().flatten().collect();
    assert!(
        missing.is_empty(),
        "golden files were missing and have now been written: {}; re-run the tests and commit them",
        missing.join(", ")
    );
}

fn write_golden(path: &std::path::Path, bytes: &[u8]) {
    std::fs::create_dir_all(path.parent().expect("golden files live in a directory"))
        .and_then(|()| std::fs::write(path, bytes))
        .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
}

/// Everything a record must satisfy, whatever its type; the golden-file note.
fn check_record<T: AvroRecord + PartialEq + Debug>(golden: &str, value: &T) -> Option<String> {
    let bytes = value.encode();
    assert_eq!(
        bytes,
        value.encode(),
        "{golden}: encoding is not deterministic"
    );
    assert_eq!(schema_name_of(&bytes), Some(T::SCHEMA_NAME));
    let decoded = T::decode(&bytes).unwrap_or_else(|e| panic!("{golden}: {e}"));
    assert_eq!(&decoded, value, "{golden}: decode(encode(x)) != x");
    assert_eq!(
        decoded.encode(),
        bytes,
        "{golden}: re-encoding changed the bytes"
    );
    check_with_apache_avro::<T>(golden, &bytes);
    check_golden(golden, &bytes)
}

/// The header is the marker and the schema's fingerprint, and `apache_avro`,
/// given only the published schema text, reads the whole body into a value
/// valid for the schema. (Its own fingerprints are wrong for logical types, see
/// `readme_lists_the_current_fingerprints` for the independent check.)
fn check_with_apache_avro<T: AvroRecord>(golden: &str, bytes: &[u8]) {
    let schema = Schema::parse_str(schema_json(T::SCHEMA_NAME).unwrap()).unwrap();
    assert_eq!(bytes[..2], [0xC3, 0x01]);
    assert_eq!(
        bytes[2..HEADER_LEN],
        fingerprint_of(T::SCHEMA_NAME).unwrap()
    );
    let mut body = &bytes[HEADER_LEN..];
    let value = apache_avro::from_avro_datum(&schema, &mut body, None)
        .unwrap_or_else(|e| panic!("{golden}: apache_avro cannot read the body: {e}"));
    assert!(
        body.is_empty(),
        "{golden}: apache_avro left {} bytes unread",
        body.len()
    );
    assert!(
        value.validate(&schema),
        "{golden}: apache_avro's value does not validate"
    );
}

#[test]
fn workflow_event() {
    report_missing([
        check_record("workflow_event_full", &fixtures::full_event()),
        check_record("workflow_event_minimal", &fixtures::minimal_event()),
    ]);
}

#[test]
fn task_dispatch() {
    report_missing([
        check_record("task_dispatch_full", &fixtures::full_dispatch()),
        check_record("task_dispatch_minimal", &fixtures::minimal_dispatch()),
    ]);
}

#[test]
fn workflow_snapshot() {
    report_missing([
        check_record("workflow_snapshot_full", &fixtures::full_snapshot()),
        check_record("workflow_snapshot_minimal", &fixtures::minimal_snapshot()),
    ]);
}

#[test]
fn workflow_definition() {
    report_missing([
        check_record("workflow_definition_full", &fixtures::full_definition()),
        check_record(
            "workflow_definition_minimal",
            &fixtures::minimal_definition(),
        ),
    ]);
}

#[test]
fn node_record() {
    report_missing([
        check_record("node_record_full", &fixtures::full_node()),
        check_record("node_record_minimal", &fixtures::minimal_node()),
    ]);
}

#[test]
fn task_control() {
    report_missing([
        check_record("task_control_full", &fixtures::full_control()),
        check_record("task_control_minimal", &fixtures::minimal_control()),
    ]);
}

#[test]
fn task_heartbeat() {
    report_missing([
        check_record("task_heartbeat_full", &fixtures::full_heartbeat()),
        check_record("task_heartbeat_minimal", &fixtures::minimal_heartbeat()),
    ]);
}

/// Control records and task heartbeats were JSON up to release 0.1: that form
/// is still read (one release), the same values as the Avro golden records.
#[test]
fn legacy_json_control_plane_records_still_read() {
    use weft_shared::control::{TaskControl, TaskHeartbeat};
    let c = fixtures::full_control();
    let json = format!(
        r#"{{"action":"cancel","workflow_type":"orders","instance_id":"{}","task_name":"charge","attempt":2,"execution_id":"{}","grace_period_ms":1500,"reason":"workflow cancelled: customer asked ✓"}}"#,
        c.instance_id, c.execution_id
    );
    assert_eq!(TaskControl::decode(json.as_bytes()).unwrap(), c);
    let golden = std::fs::read(golden_path("task_control_full")).unwrap();
    assert_eq!(TaskControl::decode(&golden).unwrap(), c);

    let hb = fixtures::full_heartbeat();
    let json = format!(
        r#"{{"workflow_type":"orders","instance_id":"{}","task_name":"charge","attempt":2,"execution_id":"{}","node_id":"worker-1","at_ms":{}}}"#,
        hb.instance_id,
        hb.execution_id,
        fixtures::T0 + 4_000
    );
    assert_eq!(TaskHeartbeat::decode(json.as_bytes()).unwrap(), hb);
}

#[test]
fn every_schema_is_served_and_parses_standalone() {
    for name in SCHEMA_NAMES {
        let json = schema_json(name).unwrap();
        let schema = Schema::parse_str(json).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            schema.name().unwrap().fullname(None),
            format!("io.weft.v1.{name}")
        );
        assert_eq!(
            fingerprint_of(&format!("io.weft.v1.{name}")),
            fingerprint_of(name)
        );
    }
}

/// The fingerprints in the README were computed by fastavro, an independent
/// implementation (as Java's `SchemaNormalization.parsingFingerprint64` would).
#[test]
fn readme_lists_the_current_fingerprints() {
    let readme = include_str!("../../schemas/README.md");
    for name in SCHEMA_NAMES {
        let hex: String = fingerprint_of(name)
            .unwrap()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert!(
            readme.contains(&format!("| `{name}` | `{hex}` |")),
            "schemas/README.md must list the fingerprint of {name} as | `{name}` | `{hex}` |"
        );
    }
}

/// A `workflow.created` event written by Python's fastavro exactly as
/// `schemas/README.md` shows (see `avro/fastavro_event.py`) decodes here.
#[test]
fn fastavro_event_decodes() {
    use weft_shared::data::Scalar;
    use weft_shared::{InstanceId, WorkflowData, WorkflowEvent, WorkflowEventType};

    let path = golden_path("fastavro_workflow_created");
    let bytes = std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; regenerate it with python3 shared/tests/avro/fastavro_event.py",
            path.display()
        )
    });
    let event = WorkflowEvent::decode(&bytes).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(event.event_type, WorkflowEventType::WorkflowCreated);
    assert_eq!(
        event.instance_id,
        InstanceId::for_idempotency_key("orders", "order-42")
    );
    assert_eq!(event.sequence_number, 0);
    assert_eq!(event.causation_id, None);
    assert_eq!(event.timestamp_ms, fixtures::T0);
    assert_eq!(event.idempotency_key, "order-42");
    assert_eq!(event.source_node_id, "checkout-service");
    assert_eq!(
        event
            .metadata
            .get("weft.definition_version")
            .map(String::as_str),
        Some("3")
    );
    assert_eq!(event.data["amount"], WorkflowData::Float(12.5));
    assert_eq!(event.data["quantity"], WorkflowData::Int(3));
    assert_eq!(event.data["express"], WorkflowData::Bool(true));
    assert_eq!(
        event.data["items"],
        WorkflowData::List(vec!["sku-1".into(), "sku-2".into()])
    );
    let WorkflowData::Map(address) = &event.data["address"] else {
        panic!("{:?}", event.data["address"])
    };
    assert_eq!(address["zip"], Scalar::Int(150));
    assert_eq!(address["verified"], Scalar::Bool(false));
}
