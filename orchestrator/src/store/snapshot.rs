//! Snapshots: an instance's state every N events, stored in RocksDB (keyed by
//! sequence number: the newest [`SNAPSHOTS_KEPT`] of an instance, plus the
//! oldest one of every [`SNAPSHOT_LADDER`] × N events, so a reconstruction at an
//! old sequence number folds a bounded tail too) and published to
//! the compacted `<prefix>.<type>.snapshots` topic as the protocol's Avro
//! `WorkflowSnapshot` (see `convert` for the mapping). [`Store::reconstruct`]
//! starts from the newest snapshot at or below the requested sequence number
//! and folds only the tail of the history with `evolve`.

use rocksdb::{Direction, IteratorMode};
use weft_shared::avro::AvroRecord;
use weft_shared::fsm::{evolve, InstanceState};
use weft_shared::ids::InstanceId;
use weft_shared::topics::headers as h;
use weft_shared::{WorkflowDefinition, WorkflowSnapshot};

use super::convert::{from_snapshot, to_snapshot};
use super::outbox::{OutboxKind, OutboxRecord};
use super::{keys, Batch, Error, Previous, Result, Store};

/// Default snapshot interval, in events per instance (`orchestrator.snapshot_every`).
pub const DEFAULT_SNAPSHOT_EVERY: u64 = 100;
/// The newest snapshots kept in RocksDB per instance.
pub const SNAPSHOTS_KEPT: usize = 3;
/// Of older snapshots, the first one of every `SNAPSHOT_LADDER × interval`
/// events is kept; the others are deleted.
pub const SNAPSHOT_LADDER: u64 = 10;

impl OutboxRecord {
    /// A snapshot for the compacted snapshots `topic`, keyed by instance id.
    /// Its ident names only the instance: a newer snapshot replaces an older one
    /// still waiting in the outbox.
    pub fn snapshot(topic: String, snap: &WorkflowSnapshot) -> Self {
        Self {
            kind: OutboxKind::Snapshot,
            ident: format!("snapshot:{}", snap.instance_id),
            topic,
            key: snap.instance_id.to_string().into_bytes(),
            payload: snap.encode(),
            headers: vec![(
                h::IDEMPOTENCY_KEY.into(),
                format!("snapshot:{}:{}", snap.instance_id, snap.sequence_number),
            )],
        }
    }
}

/// Stores a snapshot of `s` when its `last_seq` crossed a multiple of the interval.
pub(super) fn maybe_take(
    b: &mut Batch<'_>,
    previous: Option<Previous>,
    s: &InstanceState,
    definition: Option<&WorkflowDefinition>,
) -> Result<Option<WorkflowSnapshot>> {
    let every = b.store.snapshot_every;
    let before = previous.map(|p| p.last_seq).unwrap_or(0);
    if every == 0 || s.last_seq / every <= before / every {
        return Ok(None);
    }
    let snap = to_snapshot(s, definition);
    put(b, &snap)?;
    tracing::debug!(workflow_type = %s.workflow_type, instance_id = %s.instance_id, seq = s.last_seq, "snapshot taken");
    Ok(Some(snap))
}

/// Adds `snap` to the batch and deletes the older snapshots that are neither
/// among the newest nor the first of their ladder step.
fn put(b: &mut Batch<'_>, snap: &WorkflowSnapshot) -> Result<()> {
    let (ty, id) = (&snap.workflow_type, snap.instance_id);
    let cf = b.store.cf(keys::CF_SNAPSHOTS);
    let older: Vec<u64> = b
        .store
        .snapshot_seqs(ty, id)?
        .into_iter()
        .filter(|seq| *seq < snap.sequence_number)
        .collect();
    let recent = older.len().saturating_sub(SNAPSHOTS_KEPT - 1);
    let step = b.store.snapshot_every.max(1) * SNAPSHOT_LADDER;
    let mut previous_step = None;
    for (i, seq) in older.iter().enumerate() {
        let first_of_step = previous_step != Some(seq / step);
        previous_step = Some(seq / step);
        if i < recent && !first_of_step {
            b.wb.delete_cf(cf, keys::event(ty, id, *seq));
        }
    }
    b.wb.put_cf(cf, keys::event(ty, id, snap.sequence_number), snap.encode());
    Ok(())
}

impl Store {
    /// Sequence numbers of the stored snapshots of an instance, oldest first.
    pub(super) fn snapshot_seqs(&self, ty: &str, id: InstanceId) -> Result<Vec<u64>> {
        let scope = keys::instance(ty, id);
        let mut out = Vec::new();
        let iter = self.db.iterator_cf(
            self.cf(keys::CF_SNAPSHOTS),
            IteratorMode::From(&scope, Direction::Forward),
        );
        for item in iter {
            let (k, _) = item?;
            if !k.starts_with(&scope) {
                break;
            }
            let seq = k[scope.len()..].try_into().map(u64::from_be_bytes);
            out.push(seq.map_err(|_| Error::CorruptSnapshot("snapshot key".into()))?);
        }
        Ok(out)
    }

    /// The newest snapshot of an instance with a sequence number ≤ `seq`.
    pub fn snapshot_at_or_below(
        &self,
        ty: &str,
        id: InstanceId,
        seq: u64,
    ) -> Result<Option<WorkflowSnapshot>> {
        let scope = keys::instance(ty, id);
        let mut it = self.db.raw_iterator_cf(self.cf(keys::CF_SNAPSHOTS));
        it.seek_for_prev(keys::event(ty, id, seq));
        it.status()?;
        match (it.key(), it.value()) {
            (Some(k), Some(v)) if k.starts_with(&scope) => WorkflowSnapshot::decode(v)
                .map(Some)
                .map_err(|e| Error::CorruptSnapshot(e.to_string())),
            _ => Ok(None),
        }
    }

    /// The newest snapshot of an instance.
    pub fn load_snapshot(&self, ty: &str, id: InstanceId) -> Result<Option<WorkflowSnapshot>> {
        self.snapshot_at_or_below(ty, id, u64::MAX)
    }

    /// Stores a snapshot (it must convert to an instance state).
    pub fn save_snapshot(&self, snap: &WorkflowSnapshot) -> Result<()> {
        from_snapshot(snap)?;
        let mut b = self.batch();
        put(&mut b, snap)?;
        b.commit()
    }

    /// Deletes every stored snapshot of an instance; whether there was one.
    pub fn delete_snapshot(&self, ty: &str, id: InstanceId) -> Result<bool> {
        let seqs = self.snapshot_seqs(ty, id)?;
        let mut b = self.batch();
        for seq in &seqs {
            b.wb.delete_cf(self.cf(keys::CF_SNAPSHOTS), keys::event(ty, id, *seq));
        }
        b.commit()?;
        Ok(!seqs.is_empty())
    }

    /// The state of an instance after event `up_to_seq` (after its last event
    /// if the history is shorter): the newest snapshot at or below it, with the
    /// events after the snapshot folded in. `None` if no such event is stored.
    pub fn reconstruct(
        &self,
        ty: &str,
        id: InstanceId,
        up_to_seq: u64,
    ) -> Result<Option<InstanceState>> {
        if up_to_seq == 0 {
            return Ok(None);
        }
        let current = self.instance(ty, id)?;
        match &current {
            None => return Ok(None),
            Some(s) if s.last_seq <= up_to_seq => return Ok(current),
            Some(_) => {}
        }
        let mut state = match self.snapshot_at_or_below(ty, id, up_to_seq)? {
            Some(snap) => Some(from_snapshot(&snap)?),
            None => None,
        };
        let from = state.as_ref().map(|s| s.last_seq + 1).unwrap_or(1);
        if from <= up_to_seq {
            let tail = (up_to_seq - from + 1) as usize;
            for e in self.events(ty, id, from, Some(up_to_seq), tail)? {
                state = Some(evolve(state, &e)?);
            }
        }
        Ok(state)
    }
}
