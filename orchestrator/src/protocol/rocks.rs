//! [`WorkflowPersistence`] over the orchestrator's RocksDB [`Store`]: events,
//! instance states, indexes and snapshots in the same column families (and the
//! same write path) the partitions use, so a snapshot is taken every
//! `Store::snapshot_every` events and queries use the secondary indexes.

use std::sync::Mutex;

use async_trait::async_trait;
use weft_shared::fsm::evolve;
use weft_shared::ids::InstanceId;
use weft_shared::{WorkflowEvent, WorkflowSnapshot, WorkflowState};

use super::{Error, Result, WorkflowPersistence};
use crate::store::{to_snapshot, Previous, Store};

/// RocksDB-backed persistence (cheap to clone through its [`Store`]).
pub struct RocksPersistence {
    store: Store,
    /// Serialises appends (read state, fold, write).
    writes: Mutex<()>,
}

impl RocksPersistence {
    pub fn new(store: Store) -> Self {
        Self {
            store,
            writes: Mutex::new(()),
        }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }
}

#[async_trait]
impl WorkflowPersistence for RocksPersistence {
    async fn save_workflow_snapshot(&self, snapshot: &WorkflowSnapshot) -> Result<bool> {
        self.store.save_snapshot(snapshot)?;
        Ok(true)
    }

    async fn load_workflow_snapshot(
        &self,
        workflow_type: &str,
        instance_id: InstanceId,
    ) -> Result<Option<WorkflowSnapshot>> {
        Ok(self.store.load_snapshot(workflow_type, instance_id)?)
    }

    async fn delete_workflow_snapshot(
        &self,
        workflow_type: &str,
        instance_id: InstanceId,
    ) -> Result<bool> {
        Ok(self.store.delete_snapshot(workflow_type, instance_id)?)
    }

    async fn store_workflow_event(&self, event: &WorkflowEvent) -> Result<bool> {
        if event.sequence_number == 0 {
            return Err(Error::InvalidEvent(format!(
                "event {} has no sequence number",
                event.event_id
            )));
        }
        let (ty, id) = (&event.workflow_type, event.instance_id);
        let _guard = self.writes.lock().unwrap_or_else(|e| e.into_inner());
        let current = self.store.instance(ty, id)?;
        let last = current.as_ref().map(|s| s.last_seq).unwrap_or(0);
        if event.sequence_number <= last {
            let seq = event.sequence_number;
            let stored = self.store.events(ty, id, seq, Some(seq), 1)?;
            return match stored.first() {
                Some(e) if e == event => Ok(false),
                _ => Err(Error::Conflict {
                    instance: id.to_string(),
                    seq,
                }),
            };
        }
        if self.store.seen(ty, id, &event.idempotency_key)? {
            return Ok(false);
        }
        let previous = current.as_ref().map(Previous::of);
        let next = evolve(current, event)?;
        let mut b = self.store.batch();
        b.put_event(event);
        b.put_instance(previous, &next, None)?;
        b.commit()?;
        Ok(true)
    }

    async fn get_workflow_events(
        &self,
        workflow_type: &str,
        instance_id: InstanceId,
        from_seq: u64,
        to_seq: Option<u64>,
        limit: Option<usize>,
    ) -> Result<Vec<WorkflowEvent>> {
        let limit = limit.unwrap_or(usize::MAX);
        Ok(self
            .store
            .events(workflow_type, instance_id, from_seq, to_seq, limit)?)
    }

    async fn reconstruct_workflow_state(
        &self,
        workflow_type: &str,
        instance_id: InstanceId,
        up_to_seq: Option<u64>,
    ) -> Result<Option<WorkflowSnapshot>> {
        let up_to = up_to_seq.unwrap_or(u64::MAX);
        let state = self.store.reconstruct(workflow_type, instance_id, up_to)?;
        Ok(state.map(|s| to_snapshot(&s, None)))
    }

    async fn query_workflows(
        &self,
        workflow_type: Option<&str>,
        states: &[WorkflowState],
        created_after_ms: Option<i64>,
        limit: usize,
    ) -> Result<Vec<WorkflowSnapshot>> {
        let types = match workflow_type {
            Some(ty) => vec![ty.to_owned()],
            None => self.store.workflow_types()?,
        };
        let page =
            self.store
                .query_types(&types, states, created_after_ms, None, limit, &|_| true)?;
        Ok(page.items.iter().map(|s| to_snapshot(s, None)).collect())
    }
}
