//! The lifecycle of definition versions: deprecated versions take no new
//! starts, and a deleted type takes none at all until a newer version is
//! registered. Lifecycle changes are records of their own in
//! `weft.definitions` (key `lifecycle:<type>:<nonce>`, a JSON value), folded
//! in log order with the registrations, so every replica agrees.
//!
//! The lifecycle is enforced where starts are accepted (the API), never by
//! the decider: a rebuild must decide every start in the history the way it
//! was decided, whatever happened to its version later, and running
//! instances keep their version. Definitions are never removed from the
//! catalog: the histories of a deleted type stay readable.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The key prefix of lifecycle records.
pub const KEY_PREFIX: &str = "lifecycle:";
/// The `kind` of a lifecycle record's value.
pub const KIND: &str = "weft.definition_lifecycle";

/// What a lifecycle record does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// No new starts of `version`.
    Deprecate,
    /// Starts of `version` are taken again.
    Reinstate,
    /// No new starts of any version up to the latest when the record is folded.
    Delete,
}

/// One lifecycle record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    pub kind: String,
    pub workflow_type: String,
    pub action: Action,
    /// The version (`deprecate`, `reinstate`); none for `delete`.
    #[serde(default)]
    pub version: Option<u32>,
    pub at_ms: i64,
    #[serde(default)]
    pub reason: Option<String>,
}

impl Change {
    pub fn new(ty: &str, action: Action, version: Option<u32>, reason: Option<String>) -> Self {
        Self {
            kind: KIND.into(),
            workflow_type: ty.into(),
            action,
            version,
            at_ms: weft_shared::event::now_ms(),
            reason,
        }
    }

    /// The record key: `lifecycle:<type>:<nonce>` (compaction keeps every change).
    pub fn key(&self) -> String {
        format!(
            "{KEY_PREFIX}{}:{}",
            self.workflow_type,
            uuid::Uuid::new_v4().simple()
        )
    }
}

/// A deprecation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Deprecation {
    pub at_ms: i64,
    pub reason: Option<String>,
}

/// The folded lifecycle of every type.
#[derive(Clone, Debug, Default)]
pub struct Lifecycle {
    deprecated: BTreeMap<(String, u32), Deprecation>,
    /// Type -> (highest version deleted, when).
    deleted_through: BTreeMap<String, (u32, i64)>,
}

impl Lifecycle {
    /// Folds one change; `latest` is the type's latest version at this point of the log.
    pub fn apply(&mut self, c: &Change, latest: Option<u32>) {
        let ty = c.workflow_type.clone();
        match (c.action, c.version) {
            (Action::Deprecate, Some(v)) => {
                self.deprecated.insert(
                    (ty, v),
                    Deprecation {
                        at_ms: c.at_ms,
                        reason: c.reason.clone(),
                    },
                );
            }
            (Action::Reinstate, Some(v)) => {
                self.deprecated.remove(&(ty, v));
            }
            (Action::Delete, _) => {
                if let Some(latest) = latest {
                    self.deleted_through.insert(ty, (latest, c.at_ms));
                }
            }
            _ => {}
        }
    }

    pub fn deprecation(&self, ty: &str, version: u32) -> Option<&Deprecation> {
        self.deprecated.get(&(ty.to_owned(), version))
    }

    /// Whether `version` of `ty` was deleted (it is at most the latest version when the type was deleted).
    pub fn deleted(&self, ty: &str, version: u32) -> bool {
        self.deleted_through
            .get(ty)
            .is_some_and(|(through, _)| version <= *through)
    }

    /// When `ty` was deleted, if its latest version `latest` is deleted.
    pub fn type_deleted(&self, ty: &str, latest: u32) -> Option<i64> {
        self.deleted_through
            .get(ty)
            .filter(|(through, _)| latest <= *through)
            .map(|(_, at)| *at)
    }
}

/// The lifecycle record in a `weft.definitions` record, if it is one.
pub fn parse(key: &str, payload: &[u8]) -> Option<Result<Change, String>> {
    if !key.starts_with(KEY_PREFIX) {
        return None;
    }
    Some(
        serde_json::from_slice::<Change>(payload)
            .map_err(|e| e.to_string())
            .and_then(|c| {
                if c.kind == KIND {
                    Ok(c)
                } else {
                    Err(format!("kind '{}' is not {KIND}", c.kind))
                }
            }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deprecations_and_deletes_fold_in_log_order() {
        let mut l = Lifecycle::default();
        l.apply(
            &Change::new("a", Action::Deprecate, Some(1), Some("old".into())),
            Some(2),
        );
        assert!(l.deprecation("a", 1).is_some() && l.deprecation("a", 2).is_none());
        l.apply(&Change::new("a", Action::Reinstate, Some(1), None), Some(2));
        assert!(l.deprecation("a", 1).is_none());
        l.apply(&Change::new("a", Action::Delete, None, None), Some(2));
        assert!(l.deleted("a", 2) && l.type_deleted("a", 2).is_some());
        // A newer registration brings the type back; the deleted versions stay deleted.
        assert!(l.type_deleted("a", 3).is_none() && l.deleted("a", 1) && !l.deleted("a", 3));
    }

    #[test]
    fn records_are_recognised_by_key_and_kind() {
        let c = Change::new("a", Action::Deprecate, Some(1), None);
        let bytes = serde_json::to_vec(&c).unwrap();
        assert_eq!(parse(&c.key(), &bytes), Some(Ok(c.clone())));
        assert_eq!(parse("a:1:hash:nonce", &bytes), None);
        assert!(parse("lifecycle:a:x", b"{}").unwrap().is_err());
    }
}
