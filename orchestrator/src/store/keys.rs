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
pub const ALL_CFS: &[&str] = &[CF_INSTANCES, CF_EVENTS, CF_IDEMPOTENCY, CF_OUTBOX, CF_META];

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
    fn types_do_not_alias() {
        let id = InstanceId::random();
        assert!(!instance("ab", id).starts_with(&instance("a", id)));
        assert_eq!(prefix_end(&[1, 0xff]), vec![2]);
    }
}
