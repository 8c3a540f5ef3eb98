//! Property tests: any `WorkflowEvent` (arbitrary data maps, metadata and
//! strings) round-trips and encodes deterministically; any bytes after a valid
//! header decode to a value or an error, never a panic.

use std::collections::BTreeMap;

use proptest::collection::{btree_map, vec};
use proptest::prelude::*;
use uuid::Uuid;
use weft_shared::avro::{AvroRecord, HEADER_LEN};
use weft_shared::data::Scalar;
use weft_shared::{EventId, InstanceId, WorkflowData, WorkflowEvent, WorkflowEventType};

/// Doubles without NaN (NaN != NaN would fail equality, not the codec).
fn double() -> impl Strategy<Value = f64> {
    any::<f64>().prop_filter("not NaN", |f| !f.is_nan())
}

fn scalar() -> impl Strategy<Value = Scalar> {
    prop_oneof![
        any::<String>().prop_map(Scalar::Str),
        any::<i64>().prop_map(Scalar::Int),
        double().prop_map(Scalar::Float),
        any::<bool>().prop_map(Scalar::Bool),
    ]
}

fn data() -> impl Strategy<Value = WorkflowData> {
    prop_oneof![
        any::<String>().prop_map(WorkflowData::Str),
        any::<i64>().prop_map(WorkflowData::Int),
        double().prop_map(WorkflowData::Float),
        any::<bool>().prop_map(WorkflowData::Bool),
        vec(any::<String>(), 0..4).prop_map(WorkflowData::List),
        btree_map(any::<String>(), scalar(), 0..4).prop_map(WorkflowData::Map),
    ]
}

fn event_id() -> impl Strategy<Value = EventId> {
    any::<u128>().prop_map(|n| EventId(Uuid::from_u128(n)))
}

prop_compose! {
    fn event()(
        event_id in event_id(),
        event_type in proptest::sample::select(WorkflowEventType::ALL),
        workflow_type in "[a-z0-9_-]{1,20}",
        instance in any::<u128>(),
        sequence_number in 0..=i64::MAX as u64,
        causation_id in proptest::option::of(event_id()),
        correlation_chain in vec(event_id(), 0..4),
        timestamp_ms in any::<i64>(),
        data in btree_map(any::<String>(), data(), 0..6),
        metadata in btree_map(any::<String>(), any::<String>(), 0..4),
        idempotency_key in any::<String>(),
        source_node_id in any::<String>(),
    ) -> WorkflowEvent {
        WorkflowEvent {
            event_id,
            event_type,
            workflow_type,
            instance_id: InstanceId(Uuid::from_u128(instance)),
            sequence_number,
            causation_id,
            correlation_chain,
            timestamp_ms,
            data,
            metadata,
            idempotency_key,
            source_node_id,
        }
    }
}

proptest! {
    #[test]
    fn workflow_events_round_trip(event in event()) {
        let bytes = event.encode();
        prop_assert_eq!(&bytes, &event.clone().encode());
        let decoded = WorkflowEvent::decode(&bytes).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(decoded, event);
    }

    #[test]
    fn arbitrary_bodies_never_panic(body in vec(any::<u8>(), 0..256)) {
        let mut bytes = WorkflowEvent::new(WorkflowEventType::WorkflowCreated, "t", InstanceId(Uuid::nil()), "k", 0)
            .encode()[..HEADER_LEN]
            .to_vec();
        bytes.extend(body);
        let _ = WorkflowEvent::decode(&bytes);
    }
}

#[test]
fn maps_built_in_any_order_encode_the_same() {
    let mut a = WorkflowEvent::new(
        WorkflowEventType::TaskCompleted,
        "t",
        InstanceId(Uuid::from_u128(1)),
        "k",
        0,
    );
    a.event_id = EventId(Uuid::from_u128(2));
    let mut b = a.clone();
    for i in 0..100 {
        a.data.insert(format!("k{i}"), WorkflowData::Int(i));
        b.data
            .insert(format!("k{}", 99 - i), WorkflowData::Int(99 - i));
    }
    a.metadata = (0..20)
        .map(|i| (i.to_string(), "v".to_owned()))
        .collect::<BTreeMap<_, _>>();
    b.metadata = (0..20)
        .rev()
        .map(|i| (i.to_string(), "v".to_owned()))
        .collect();
    assert_eq!(a.encode(), b.encode());
}
