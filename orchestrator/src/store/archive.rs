//! Removing an ended instance from the projection (archival, ADR 0018): its
//! state, index entries, stored history, idempotency keys and snapshots go in
//! one write batch. Its history stays in the events topic; the archive
//! requests in `weft.archive` make a rebuild remove it again.

use weft_shared::ids::InstanceId;

use super::{keys, Result, Store};

impl Store {
    /// Removes the instance if it is stored and has ended; `false` otherwise
    /// (not stored, or not ended: a running instance is never removed).
    pub fn remove_ended_instance(&self, ty: &str, id: InstanceId) -> Result<bool> {
        let Some(s) = self.instance(ty, id)? else {
            return Ok(false);
        };
        if !s.state.is_terminal() {
            return Ok(false);
        }
        let key = keys::instance(ty, id);
        let end = keys::prefix_end(&key);
        let mut b = self.batch();
        b.wb.delete_cf(self.cf(keys::CF_INSTANCES), &key);
        b.wb.delete_cf(
            self.cf(keys::CF_BY_STATE),
            keys::by_state(ty, s.state.as_str(), s.created_at_ms, id),
        );
        b.wb.delete_cf(
            self.cf(keys::CF_BY_CREATED),
            keys::by_created(ty, s.created_at_ms, id),
        );
        for cf in [keys::CF_EVENTS, keys::CF_IDEMPOTENCY, keys::CF_SNAPSHOTS] {
            b.wb.delete_range_cf(self.cf(cf), &key, &end);
        }
        b.commit()?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use weft_shared::fsm::InstanceState;
    use weft_shared::state::WorkflowState;

    use super::*;
    use crate::store::Query;

    fn state(ty: &str, id: InstanceId, st: WorkflowState) -> InstanceState {
        let mut s: InstanceState = serde_json::from_value(serde_json::json!({
            "workflow_type": ty, "instance_id": id, "definition_version": 1, "state": "pending",
            "last_seq": 0, "created_event_id": id, "created_at_ms": 5, "updated_at_ms": 9,
            "input": {}, "tasks": {}, "error": null, "error_history": [], "timers": {},
            "signals": {}, "compensations": []
        }))
        .expect("a minimal state");
        s.state = st;
        s
    }

    #[test]
    fn only_ended_instances_are_removed_with_everything_they_own() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (done, running) = (InstanceId::random(), InstanceId::random());
        let mut b = store.batch();
        b.put_instance(None, &state("t", done, WorkflowState::Completed), None)
            .unwrap();
        b.put_instance(None, &state("t", running, WorkflowState::Running), None)
            .unwrap();
        b.put_input_key("t", done, "k", "workflow.cancelled");
        b.commit().unwrap();
        assert!(!store.remove_ended_instance("t", running).unwrap());
        assert!(store.remove_ended_instance("t", done).unwrap());
        assert!(store.instance("t", done).unwrap().is_none());
        assert!(!store.seen("t", done, "k").unwrap());
        let all = store
            .query_workflows(&Query {
                workflow_type: "t".into(),
                states: vec![],
                created_after_ms: None,
                limit: 10,
                cursor: None,
            })
            .unwrap();
        assert_eq!(all.items.len(), 1, "the index no longer lists it");
        assert!(!store.remove_ended_instance("t", done).unwrap());
    }
}
