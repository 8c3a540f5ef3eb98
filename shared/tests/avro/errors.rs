//! Decoding errors: every way a record can be wrong gives a distinct error
//! whose message names what is wrong and where.

use apache_avro::types::Value;
use apache_avro::Schema;
use weft_shared::avro::{fingerprint_of, schema_json, AvroRecord, CodecError, HEADER_LEN};
use weft_shared::{TaskDispatch, WorkflowEvent, WorkflowSnapshot};

use super::fixtures;

/// Re-encodes `record` with `apache_avro` after `edit` changed its value, so
/// that values Weft would never write can be tested.
fn edited<T: AvroRecord>(record: &T, edit: impl FnOnce(&mut Value)) -> Vec<u8> {
    let schema = Schema::parse_str(schema_json(T::SCHEMA_NAME).unwrap()).unwrap();
    let bytes = record.encode();
    let mut value = apache_avro::from_avro_datum(&schema, &mut &bytes[HEADER_LEN..], None).unwrap();
    edit(&mut value);
    let mut out = bytes[..HEADER_LEN].to_vec();
    out.extend(apache_avro::to_avro_datum(&schema, value).unwrap());
    out
}

/// The field `name` of a record value.
fn field<'a>(value: &'a mut Value, name: &str) -> &'a mut Value {
    match value {
        Value::Record(fields) => &mut fields.iter_mut().find(|(n, _)| n == name).unwrap().1,
        other => panic!("not a record: {other:?}"),
    }
}

#[test]
fn bad_marker_names_what_it_found() {
    let mut bytes = fixtures::minimal_event().encode();
    bytes[0] = 0x00;
    let err = WorkflowEvent::decode(&bytes).unwrap_err();
    assert!(matches!(err, CodecError::BadMarker { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("c3 01") && msg.contains("0001") && msg.contains("Confluent"),
        "{msg}"
    );

    let err = WorkflowEvent::decode(br#"{"event_type":"workflow.created"}"#).unwrap_err();
    assert!(err.to_string().contains("JSON?"), "{err}");
}

#[test]
fn too_short_for_a_header() {
    for bytes in [&[][..], &[0xC3][..], &[0xC3, 0x01, 1, 2, 3][..]] {
        let err = WorkflowEvent::decode(bytes).unwrap_err();
        assert!(
            matches!(err, CodecError::TooShort { len, .. } if len == bytes.len()),
            "{err:?}"
        );
    }
}

#[test]
fn unknown_fingerprint_is_named_in_hex() {
    let mut bytes = fixtures::minimal_event().encode();
    bytes[2..HEADER_LEN].copy_from_slice(&[0xde, 0xad, 0xbe, 0xef, 0x00, 0x11, 0x22, 0x33]);
    let err = WorkflowEvent::decode(&bytes).unwrap_err();
    let known: String = fingerprint_of("WorkflowEvent")
        .unwrap()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    match &err {
        CodecError::UnknownFingerprint {
            expected,
            found,
            known: k,
        } => {
            assert_eq!(*expected, "WorkflowEvent");
            assert_eq!(found, "deadbeef00112233");
            assert_eq!(k, &known);
        }
        other => panic!("{other:?}"),
    }
    assert!(err.to_string().contains("deadbeef00112233"), "{err}");
}

#[test]
fn a_record_of_another_weft_schema_is_named() {
    let bytes = fixtures::minimal_node().encode();
    let err = WorkflowEvent::decode(&bytes).unwrap_err();
    assert!(
        matches!(
            err,
            CodecError::WrongSchema {
                expected: "WorkflowEvent",
                actual: "NodeRecord",
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn every_truncation_is_reported_as_such() {
    let bytes = fixtures::full_snapshot().encode();
    for cut in HEADER_LEN..bytes.len() {
        match WorkflowSnapshot::decode(&bytes[..cut]) {
            Err(CodecError::Truncated { len, path, .. }) => {
                assert_eq!(len, cut);
                assert!(path.starts_with("WorkflowSnapshot"), "{path}");
            }
            other => panic!("cut at {cut}: {other:?}"),
        }
    }
    let err = WorkflowEvent::decode(&fixtures::full_event().encode()[..40]).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("WorkflowEvent.event_id: the record ends at byte 40"),
        "{err}"
    );
}

#[test]
fn trailing_bytes_are_rejected() {
    let mut bytes = fixtures::minimal_event().encode();
    bytes.extend([0, 0]);
    let err = WorkflowEvent::decode(&bytes).unwrap_err();
    assert!(
        matches!(err, CodecError::TrailingBytes { count: 2, .. }),
        "{err:?}"
    );
}

#[test]
fn a_corrupt_union_branch_names_field_and_offset() {
    let event = fixtures::minimal_event();
    let mut bytes = event.encode();
    // event_id, event_type, workflow_type, instance_id (each length + text), sequence_number 0.
    let offset = HEADER_LEN
        + (1 + 36)
        + (1 + "workflow.created".len())
        + (1 + "orders".len())
        + (1 + 36)
        + 1;
    assert_eq!(bytes[offset], 0, "causation_id is null");
    bytes[offset] = 0x0a; // branch 5
    let err = WorkflowEvent::decode(&bytes).unwrap_err();
    assert!(
        matches!(&err, CodecError::Corrupt { offset: o, .. } if *o == offset),
        "{err:?}"
    );
    assert_eq!(err.path(), Some("WorkflowEvent.causation_id"));
    assert!(err.to_string().contains("union branch 5"), "{err}");
}

#[test]
fn an_invalid_uuid_names_its_field() {
    let mut bytes = fixtures::minimal_event().encode();
    bytes[HEADER_LEN + 1..HEADER_LEN + 37].copy_from_slice(&[b'z'; 36]);
    let err = WorkflowEvent::decode(&bytes).unwrap_err();
    assert!(matches!(err, CodecError::InvalidUuid { .. }), "{err:?}");
    assert_eq!(err.path(), Some("WorkflowEvent.event_id"));

    let snapshot = fixtures::full_snapshot();
    let bytes = edited(&snapshot, |v| {
        let Value::Array(results) = field(v, "results") else {
            panic!()
        };
        *field(&mut results[0], "task_id") = Value::String("not-a-uuid".into());
    });
    // apache_avro writes the string as it is; Weft's reader names the nested field.
    let err = WorkflowSnapshot::decode(&bytes).unwrap_err();
    assert_eq!(
        err.path(),
        Some("WorkflowSnapshot.results[0].task_id"),
        "{err}"
    );
    assert!(
        err.to_string().contains("invalid UUID 'not-a-uuid'"),
        "{err}"
    );
}

#[test]
fn an_unknown_event_type_lists_the_known_ones() {
    let bytes = edited(&fixtures::minimal_event(), |v| {
        *field(v, "event_type") = Value::String("workflow.exploded".into());
    });
    let err = WorkflowEvent::decode(&bytes).unwrap_err();
    assert!(
        matches!(err, CodecError::UnknownEnumValue { .. }),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.starts_with("WorkflowEvent.event_type: unknown WorkflowEventType 'workflow.exploded'"),
        "{msg}"
    );
    assert!(msg.contains("workflow.created"), "{msg}");
}

#[test]
fn an_out_of_range_enum_index_is_corrupt() {
    let mut bytes = fixtures::minimal_node().encode();
    // node_id "n", role "orchestrator", then four empty collections, then health.
    let offset = HEADER_LEN + 2 + (1 + "orchestrator".len()) + 4;
    assert_eq!(bytes[offset], 0, "health is healthy");
    bytes[offset] = 0x10; // index 8
    let err = weft_shared::node::NodeRecord::decode(&bytes).unwrap_err();
    assert_eq!(err.path(), Some("NodeRecord.health"));
    assert!(
        err.to_string()
            .contains("enum index 8 is not a HealthStatus"),
        "{err}"
    );
}

#[test]
fn numbers_out_of_range_are_rejected() {
    let bytes = edited(&fixtures::minimal_event(), |v| {
        *field(v, "sequence_number") = Value::Long(-1)
    });
    let err = WorkflowEvent::decode(&bytes).unwrap_err();
    assert!(
        matches!(err, CodecError::OutOfRange { value: -1, .. }),
        "{err:?}"
    );
    assert_eq!(err.path(), Some("WorkflowEvent.sequence_number"));

    let bytes = edited(&fixtures::minimal_dispatch(), |v| {
        *field(v, "attempt") = Value::Long(1 << 40)
    });
    let err = TaskDispatch::decode(&bytes).unwrap_err();
    assert_eq!(err.path(), Some("TaskDispatch.attempt"), "{err}");
}

#[test]
fn a_huge_declared_length_fails_fast() {
    // A string length of about 2^62 right after the header: no allocation, just an error.
    let mut bytes = fixtures::minimal_event().encode()[..HEADER_LEN].to_vec();
    bytes.extend([0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f]);
    let err = WorkflowEvent::decode(&bytes).unwrap_err();
    assert!(matches!(err, CodecError::Truncated { .. }), "{err:?}");
    // The same for an array count: correlation_chain claims 2^40 items.
    let event = fixtures::minimal_event();
    let mut bytes = event.encode();
    let offset = HEADER_LEN + (1 + 36) + (1 + 16) + (1 + 6) + (1 + 36) + 1 + 1;
    assert_eq!(bytes[offset], 0, "correlation_chain is empty");
    let mut tail = bytes.split_off(offset);
    bytes.extend([0x80, 0x80, 0x80, 0x80, 0x80, 0x40]);
    bytes.extend(tail.drain(1..));
    let err = WorkflowEvent::decode(&bytes).unwrap_err();
    assert!(matches!(err, CodecError::Truncated { .. }), "{err:?}");
    assert_eq!(err.path(), Some("WorkflowEvent.correlation_chain"));
}
