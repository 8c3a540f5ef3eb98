//! RocksDB key layout, versioned: every key is built here, big-endian so that
//! byte order is sort order. Instance-scoped keys start with the workflow type
//! and a 0 byte (types never contain 0), then the 16-byte instance id.

use weft_shared::ids::InstanceId;

/// Column families and what they hold.
pub const CF_INSTANCES: &str = "instances_v1";
pub const CF_EVENTS: &str = "events_v1";
pub const CF_IDEMPOTENCY: &str = "idempotency_v1";
pub const CF_OUTBOX: &str = "outbox_v1";
pub const CF_META: &str = "meta_v1";
/// Secondary index: `<type> 0 <state> 0 <created_at> <id>` -> empty.
pub const CF_BY_STATE: &str = "by_state_v1";
/// Secondary index: `<type> 0 <created_at> <id>` -> empty.
pub const CF_BY_CREATED: &str = "by_created_v1";
/// Snapshots: `<instance key> <seq u64>` -> Avro `WorkflowSnapshot`.
pub const CF_SNAPSHOTS: &str = "snapshots_v1";
/// Durable timers: `<partition scope> <fire_at> <id> <timer id>` -> Timer JSON.
pub const CF_TIMERS: &str = "timers_v1";
pub const ALL_CFS: &[&str] = &[
    CF_INSTANCES,
    CF_EVENTS,
    CF_IDEMPOTENCY,
    CF_OUTBOX,
    CF_META,
    CF_BY_STATE,
    CF_BY_CREATED,
    CF_SNAPSHOTS,
    CF_TIMERS,
];
/// The index column families, rebuilt from the instances when missing.
pub const INDEX_CFS: &[&str] = &[CF_BY_STATE, CF_BY_CREATED];

/// Version byte in front of every stored instance state.
pub const STATE_ENCODING_V1: u8 = 1;

/// `<type> 0 <id>`: one instance.
pub fn instance(ty: &str, id: InstanceId) -> Vec<u8> {
    let mut k = Vec::with_capacity(ty.len() + 17);
    k.extend_from_slice(ty.as_bytes());
    k.push(0);
    k.extend_from_slice(id.as_bytes());
    k
}

/// `<instance key> <seq u64>`: one event of an instance's history.
pub fn event(ty: &str, id: InstanceId, seq: u64) -> Vec<u8> {
    let mut k = instance(ty, id);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// `<instance key> <idempotency key>`: marks an applied idempotency key.
pub fn idempotency(ty: &str, id: InstanceId, key: &str) -> Vec<u8> {
    let mut k = instance(ty, id);
    k.extend_from_slice(key.as_bytes());
    k
}

/// `<type> 0`: the scope of one workflow type in the index column families.
pub fn type_scope(ty: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(ty.len() + 1);
    k.extend_from_slice(ty.as_bytes());
    k.push(0);
    k
}

/// `<type> 0 <state> 0`: one state's range of the by-state index.
pub fn state_scope(ty: &str, state: &str) -> Vec<u8> {
    let mut k = type_scope(ty);
    k.extend_from_slice(state.as_bytes());
    k.push(0);
    k
}

/// Length of the `<created_at> <id>` position that ends every index key.
pub const POSITION_LEN: usize = 24;

/// `<created_at> <id>`: where an instance sorts in an index (created_at with
/// its sign bit flipped, so negative times sort first).
pub fn position(created_at_ms: i64, id: &[u8; 16]) -> [u8; POSITION_LEN] {
    let mut p = [0u8; POSITION_LEN];
    p[..8].copy_from_slice(&((created_at_ms as u64) ^ (1 << 63)).to_be_bytes());
    p[8..].copy_from_slice(id);
    p
}

/// The `(created_at, id)` of a position.
pub fn parse_position(p: &[u8]) -> Option<(i64, InstanceId)> {
    if p.len() != POSITION_LEN {
        return None;
    }
    let ts = u64::from_be_bytes(p[..8].try_into().ok()?) ^ (1 << 63);
    Some((ts as i64, InstanceId::from_bytes(p[8..].try_into().ok()?)))
}

/// By-state index key of an instance.
pub fn by_state(ty: &str, state: &str, created_at_ms: i64, id: InstanceId) -> Vec<u8> {
    let mut k = state_scope(ty, state);
    k.extend_from_slice(&position(created_at_ms, id.as_bytes()));
    k
}

/// By-creation index key of an instance.
pub fn by_created(ty: &str, created_at_ms: i64, id: InstanceId) -> Vec<u8> {
    let mut k = type_scope(ty);
    k.extend_from_slice(&position(created_at_ms, id.as_bytes()));
    k
}

/// `<topic> 0 <partition i32>`: the scope of one source partition.
pub fn partition_scope(topic: &str, partition: i32) -> Vec<u8> {
    let mut k = Vec::with_capacity(topic.len() + 5);
    k.extend_from_slice(topic.as_bytes());
    k.push(0);
    k.extend_from_slice(&partition.to_be_bytes());
    k
}

/// `<partition scope> <seq u64>`: one pending outbox record of a partition.
pub fn outbox(topic: &str, partition: i32, seq: u64) -> Vec<u8> {
    let mut k = partition_scope(topic, partition);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// Meta key of a partition's next offset to consume.
pub fn offset(topic: &str, partition: i32) -> Vec<u8> {
    let mut k = b"offset/".to_vec();
    k.extend_from_slice(&partition_scope(topic, partition));
    k
}

/// Meta key of a partition's analytics aggregates.
pub fn analytics(topic: &str, partition: i32) -> Vec<u8> {
    let mut k = ANALYTICS_PREFIX.to_vec();
    k.extend_from_slice(&partition_scope(topic, partition));
    k
}

/// Prefix of every analytics key in the meta column family.
pub const ANALYTICS_PREFIX: &[u8] = b"analytics/";

/// The smallest key greater than every key starting with `prefix`.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0xff; prefix.len() + 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_keys_sort_by_sequence() {
        let id = InstanceId::random();
        let a = event("t", id, 2);
        let b = event("t", id, 10);
        assert!(a < b);
        assert!(a.starts_with(&instance("t", id)));
        assert!(b < prefix_end(&instance("t", id)));
    }

    #[test]
    fn positions_sort_by_time_then_id() {
        let a = InstanceId::from_bytes([0xff; 16]);
        let b = InstanceId::from_bytes([0; 16]);
        assert!(position(-5, a.as_bytes()) < position(3, b.as_bytes()));
        assert!(position(3, b.as_bytes()) < position(3, a.as_bytes()));
        assert_eq!(parse_position(&position(-5, a.as_bytes())), Some((-5, a)));
        let k = by_state("t", "running", 7, a);
        assert!(k.starts_with(&state_scope("t", "running")));
        assert!(!k.starts_with(&state_scope("t", "run")));
    }

    #[test]
    fn types_do_not_alias() {
        let id = InstanceId::random();
        assert!(!instance("ab", id).starts_with(&instance("a", id)));
        assert_eq!(prefix_end(&[1, 0xff]), vec![2]);
    }
}
