//! [`WorkflowPersistence`] in memory: histories, states folded with `evolve`,
//! snapshots every N events, queries by filtering and sorting. For tests and
//! embedding; it keeps every snapshot and never forgets anything.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Mutex;

use async_trait::async_trait;
use weft_shared::fsm::{evolve, InstanceState};
use weft_shared::ids::InstanceId;
use weft_shared::{WorkflowEvent, WorkflowSnapshot, WorkflowState};

use super::{Error, Result, WorkflowPersistence};
use crate::store::{from_snapshot, to_snapshot};

#[derive(Default)]
struct Instance {
    events: Vec<WorkflowEvent>,
    state: Option<InstanceState>,
    keys: HashSet<String>,
    snapshots: BTreeMap<u64, WorkflowSnapshot>,
}

/// In-memory persistence.
pub struct InMemoryPersistence {
    snapshot_every: u64,
    instances: Mutex<HashMap<(String, InstanceId), Instance>>,
}

impl InMemoryPersistence {
    /// Takes a snapshot every `snapshot_every` events of an instance (0: never).
    pub fn new(snapshot_every: u64) -> Self {
        Self {
            snapshot_every,
            instances: Mutex::new(HashMap::new()),
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut HashMap<(String, InstanceId), Instance>) -> T) -> T {
        f(&mut self.instances.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

fn reconstruct(i: &Instance, up_to: u64) -> Result<Option<InstanceState>> {
    let mut state = match i.snapshots.range(..=up_to).next_back() {
        Some((_, snap)) => Some(from_snapshot(snap)?),
        None => None,
    };
    let from = state.as_ref().map(|s| s.last_seq).unwrap_or(0) as usize;
    let to = (up_to.min(i.events.len() as u64)) as usize;
    for e in i.events.get(from..to).unwrap_or_default() {
        state = Some(evolve(state, e)?);
    }
    Ok(state)
}

#[async_trait]
impl WorkflowPersistence for InMemoryPersistence {
    async fn save_workflow_snapshot(&self, snapshot: &WorkflowSnapshot) -> Result<bool> {
        from_snapshot(snapshot)?;
        let key = (snapshot.workflow_type.clone(), snapshot.instance_id);
        self.with(|m| {
            let i = m.entry(key).or_default();
            i.snapshots
                .insert(snapshot.sequence_number, snapshot.clone());
        });
        Ok(true)
    }

    async fn load_workflow_snapshot(
        &self,
        workflow_type: &str,
        instance_id: InstanceId,
    ) -> Result<Option<WorkflowSnapshot>> {
        let key = (workflow_type.to_owned(), instance_id);
        Ok(self.with(|m| {
            m.get(&key)
                .and_then(|i| i.snapshots.values().next_back().cloned())
        }))
    }

    async fn delete_workflow_snapshot(
        &self,
        workflow_type: &str,
        instance_id: InstanceId,
    ) -> Result<bool> {
        let key = (workflow_type.to_owned(), instance_id);
        Ok(self.with(|m| {
            m.get_mut(&key).is_some_and(|i| {
                let had = !i.snapshots.is_empty();
                i.snapshots.clear();
                had
            })
        }))
    }

    async fn store_workflow_event(&self, event: &WorkflowEvent) -> Result<bool> {
        let seq = event.sequence_number;
        if seq == 0 {
            return Err(Error::InvalidEvent(format!(
                "event {} has no sequence number",
                event.event_id
            )));
        }
        let key = (event.workflow_type.clone(), event.instance_id);
        let every = self.snapshot_every;
        self.with(|m| {
            let i = m.entry(key).or_default();
            if seq <= i.events.len() as u64 {
                return match i.events.get(seq as usize - 1) {
                    Some(e) if e == event => Ok(false),
                    _ => Err(Error::Conflict {
                        instance: event.instance_id.to_string(),
                        seq,
                    }),
                };
            }
            if i.keys.contains(&event.idempotency_key) {
                return Ok(false);
            }
            let next = evolve(i.state.clone(), event)?;
            if every > 0 && next.last_seq % every == 0 {
                i.snapshots.insert(next.last_seq, to_snapshot(&next, None));
            }
            i.state = Some(next);
            i.keys.insert(event.idempotency_key.clone());
            i.events.push(event.clone());
            Ok(true)
        })
    }

    async fn get_workflow_events(
        &self,
        workflow_type: &str,
        instance_id: InstanceId,
        from_seq: u64,
        to_seq: Option<u64>,
        limit: Option<usize>,
    ) -> Result<Vec<WorkflowEvent>> {
        let key = (workflow_type.to_owned(), instance_id);
        Ok(self.with(|m| {
            let Some(i) = m.get(&key) else {
                return Vec::new();
            };
            i.events
                .iter()
                .filter(|e| e.sequence_number >= from_seq)
                .filter(|e| to_seq.is_none_or(|t| e.sequence_number <= t))
                .take(limit.unwrap_or(usize::MAX))
                .cloned()
                .collect()
        }))
    }

    async fn reconstruct_workflow_state(
        &self,
        workflow_type: &str,
        instance_id: InstanceId,
        up_to_seq: Option<u64>,
    ) -> Result<Option<WorkflowSnapshot>> {
        let key = (workflow_type.to_owned(), instance_id);
        let up_to = up_to_seq.unwrap_or(u64::MAX);
        self.with(|m| match m.get(&key) {
            None => Ok(None),
            Some(i) => Ok(reconstruct(i, up_to)?.map(|s| to_snapshot(&s, None))),
        })
    }

    async fn query_workflows(
        &self,
        workflow_type: Option<&str>,
        states: &[WorkflowState],
        created_after_ms: Option<i64>,
        limit: usize,
    ) -> Result<Vec<WorkflowSnapshot>> {
        Ok(self.with(|m| {
            let mut found: Vec<&InstanceState> = m
                .values()
                .filter_map(|i| i.state.as_ref())
                .filter(|s| workflow_type.is_none_or(|t| s.workflow_type == t))
                .filter(|s| states.is_empty() || states.contains(&s.state))
                .filter(|s| created_after_ms.is_none_or(|t| s.created_at_ms > t))
                .collect();
            found.sort_by_key(|s| (s.created_at_ms, s.instance_id));
            found
                .into_iter()
                .take(limit)
                .map(|s| to_snapshot(s, None))
                .collect()
        }))
    }
}
