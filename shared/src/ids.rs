//! Typed identifiers: each id is a UUID newtype so an instance id can never be
//! passed where a task id is expected. Ids that Weft derives (task ids, event ids
//! of decisions, execution ids) are UUIDv5 values of their inputs, which keeps
//! every decision deterministic under replay.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Namespace for all UUIDv5 values Weft derives.
pub const WEFT_NAMESPACE: Uuid = Uuid::from_u128(0x7765_6674_2d6e_616d_6573_7061_6365_0001);

macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub Uuid);

        impl $name {
            /// A fresh random id.
            pub fn random() -> Self {
                Self(Uuid::new_v4())
            }

            /// The id derived from `parts` (UUIDv5 in Weft's namespace).
            pub fn derived(parts: &[&[u8]]) -> Self {
                Self(derive_uuid(parts))
            }

            /// The 16 raw bytes, big-endian (order-preserving in keys).
            pub fn as_bytes(&self) -> &[u8; 16] {
                self.0.as_bytes()
            }

            pub fn from_bytes(bytes: [u8; 16]) -> Self {
                Self(Uuid::from_bytes(bytes))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.hyphenated().fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                Uuid::parse_str(s).map(Self).map_err(|_| IdError {
                    what: $what,
                    value: s.chars().take(64).collect(),
                })
            }
        }

        impl From<Uuid> for $name {
            fn from(u: Uuid) -> Self {
                Self(u)
            }
        }
    };
}

/// An id that failed to parse.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid {what} '{value}': expected a UUID such as 0191c3c8-6a3e-7f00-8000-000000000000")]
pub struct IdError {
    pub what: &'static str,
    pub value: String,
}

uuid_id!(
    /// One workflow instance; the Kafka key of every record about it.
    InstanceId,
    "instance id"
);
uuid_id!(
    /// One event in a workflow's history.
    EventId,
    "event id"
);
uuid_id!(
    /// One task of one workflow instance (derived from the instance id and task name).
    TaskId,
    "task id"
);
uuid_id!(
    /// One execution attempt of a task (derived from the task id and attempt number).
    ExecutionId,
    "execution id"
);
uuid_id!(
    /// A request correlation id carried through a workflow for tracing.
    CorrelationId,
    "correlation id"
);

/// UUIDv5 of the concatenated parts, each length-prefixed so that parts never alias.
pub fn derive_uuid(parts: &[&[u8]]) -> Uuid {
    let mut buf = Vec::with_capacity(parts.iter().map(|p| p.len() + 4).sum());
    for p in parts {
        buf.extend_from_slice(&(p.len() as u32).to_be_bytes());
        buf.extend_from_slice(p);
    }
    Uuid::new_v5(&WEFT_NAMESPACE, &buf)
}

impl TaskId {
    /// The id of task `name` in `instance`.
    pub fn of(instance: InstanceId, name: &str) -> Self {
        Self::derived(&[b"task", instance.as_bytes(), name.as_bytes()])
    }
}

impl ExecutionId {
    /// The id of attempt `attempt` of `task`.
    pub fn of(task: TaskId, attempt: u32) -> Self {
        Self::derived(&[b"exec", task.as_bytes(), &attempt.to_be_bytes()])
    }
}

impl EventId {
    /// The id of the `index`-th event derived from the event `cause`.
    pub fn derived_from(cause: EventId, index: u32) -> Self {
        Self::derived(&[b"event", cause.as_bytes(), &index.to_be_bytes()])
    }

    /// The id of the event of `instance` named `name` (a timer firing, say).
    pub fn named(instance: InstanceId, name: &str) -> Self {
        Self::derived(&[b"named", instance.as_bytes(), name.as_bytes()])
    }
}

impl InstanceId {
    /// The instance id a start request with `idempotency_key` maps to, so that the
    /// same key given twice names the same instance.
    pub fn for_idempotency_key(workflow_type: &str, key: &str) -> Self {
        Self::derived(&[b"instance", workflow_type.as_bytes(), key.as_bytes()])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_rejects_garbage_with_the_kind_of_id() {
        let err = "nope".parse::<InstanceId>().unwrap_err();
        assert_eq!(err.what, "instance id");
        assert!(err.to_string().contains("invalid instance id 'nope'"));
    }

    #[test]
    fn derived_ids_are_stable_and_distinct() {
        let i = InstanceId::for_idempotency_key("orders", "k1");
        assert_eq!(i, InstanceId::for_idempotency_key("orders", "k1"));
        assert_ne!(i, InstanceId::for_idempotency_key("orders", "k2"));
        assert_ne!(TaskId::of(i, "a"), TaskId::of(i, "b"));
        let t = TaskId::of(i, "a");
        assert_ne!(ExecutionId::of(t, 1), ExecutionId::of(t, 2));
        // length prefixes keep ("ab","c") and ("a","bc") apart
        assert_ne!(derive_uuid(&[b"ab", b"c"]), derive_uuid(&[b"a", b"bc"]));
    }

    #[test]
    fn display_round_trips() {
        let id = InstanceId::random();
        assert_eq!(id.to_string().parse::<InstanceId>().unwrap(), id);
    }
}
