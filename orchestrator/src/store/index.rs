//! Secondary indexes and the query over them. Two column families hold one
//! empty-valued key per instance: `by_created_v1` ordered by (type, created_at,
//! id) and `by_state_v1` ordered by (type, state, created_at, id). A query seeks
//! one range per requested state (or the by-created range when no state is
//! given) and merges them by (created_at, id), so it reads only the entries it
//! returns (plus one to know whether there is a next page), never every instance.
//! Each entry is checked against the instance it names, so a stale entry is
//! skipped rather than returned. Pages resume after an opaque cursor holding the
//! last (created_at, id) returned: positions never change, so paging is stable.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use rocksdb::{DBRawIteratorWithThreadMode, IteratorMode, WriteBatch, DB};
use weft_shared::fsm::InstanceState;
use weft_shared::ids::InstanceId;
use weft_shared::WorkflowState;

use super::{decode_state, keys, Batch, Error, Result, Store};

/// What the indexes and the snapshot cadence need to know about the stored
/// version of an instance that is about to be overwritten.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Previous {
    pub state: WorkflowState,
    pub last_seq: u64,
    pub created_at_ms: i64,
}

impl Previous {
    pub fn of(s: &InstanceState) -> Self {
        Self {
            state: s.state,
            last_seq: s.last_seq,
            created_at_ms: s.created_at_ms,
        }
    }
}

/// A query over the instances of one workflow type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Query {
    pub workflow_type: String,
    /// Any of these states; empty means every state.
    pub states: Vec<WorkflowState>,
    /// Only instances created strictly after this time (epoch ms).
    pub created_after_ms: Option<i64>,
    /// Most instances on one page (0 returns an empty page).
    pub limit: usize,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

impl Query {
    /// Every instance of `workflow_type`, 100 per page.
    pub fn new(workflow_type: impl Into<String>) -> Self {
        Self {
            workflow_type: workflow_type.into(),
            states: Vec::new(),
            created_after_ms: None,
            limit: 100,
            cursor: None,
        }
    }
}

/// One page of a query, ordered by (created_at, id).
#[derive(Clone, Debug, PartialEq)]
pub struct Page {
    pub items: Vec<InstanceState>,
    /// Where the next page starts; `None` on the last page.
    pub next_cursor: Option<String>,
}

type Pos = [u8; keys::POSITION_LEN];

const CURSOR_PREFIX: &str = "c1.";

fn encode_cursor(pos: &Pos) -> String {
    let mut s = String::from(CURSOR_PREFIX);
    for b in pos {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

fn decode_cursor(cursor: &str) -> Result<Pos> {
    let bad = || Error::BadCursor(cursor.chars().take(80).collect());
    let hex = cursor.strip_prefix(CURSOR_PREFIX).ok_or_else(bad)?;
    if hex.len() != keys::POSITION_LEN * 2 || !hex.is_ascii() {
        return Err(bad());
    }
    let mut pos = [0u8; keys::POSITION_LEN];
    for (i, b) in pos.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex[i * 2..i * 2 + 2], 16).map_err(|_| bad())?;
    }
    Ok(pos)
}

/// Adds `s`'s index entries to the batch, removing the entry of its previous state.
pub(super) fn put(b: &mut Batch<'_>, previous: Option<Previous>, s: &InstanceState) {
    let (ty, id) = (&s.workflow_type, s.instance_id);
    let by_state = b.store.cf(keys::CF_BY_STATE);
    if let Some(p) = previous {
        if p.state == s.state && p.created_at_ms == s.created_at_ms {
            return;
        }
        b.wb.delete_cf(
            by_state,
            keys::by_state(ty, p.state.as_str(), p.created_at_ms, id),
        );
        if p.created_at_ms != s.created_at_ms {
            b.wb.delete_cf(
                b.store.cf(keys::CF_BY_CREATED),
                keys::by_created(ty, p.created_at_ms, id),
            );
        }
    }
    b.wb.put_cf(
        by_state,
        keys::by_state(ty, s.state.as_str(), s.created_at_ms, id),
        [],
    );
    b.wb.put_cf(
        b.store.cf(keys::CF_BY_CREATED),
        keys::by_created(ty, s.created_at_ms, id),
        [],
    );
}

/// Writes the index entries of every stored instance (an index column family
/// was missing: a database from before the index existed).
pub(super) fn backfill(store: &Store) -> Result<()> {
    let started = std::time::Instant::now();
    let mut wb = WriteBatch::default();
    let mut count = 0u64;
    for item in store
        .db
        .iterator_cf(store.cf(keys::CF_INSTANCES), IteratorMode::Start)
    {
        let (_, v) = item?;
        let s = decode_state(&v)?;
        let (ty, id) = (&s.workflow_type, s.instance_id);
        wb.put_cf(
            store.cf(keys::CF_BY_STATE),
            keys::by_state(ty, s.state.as_str(), s.created_at_ms, id),
            [],
        );
        wb.put_cf(
            store.cf(keys::CF_BY_CREATED),
            keys::by_created(ty, s.created_at_ms, id),
            [],
        );
        count += 1;
        if wb.len() >= 20_000 {
            store.db.write(std::mem::take(&mut wb))?;
        }
    }
    store.db.write(wb)?;
    tracing::info!(
        instances = count,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "secondary indexes rebuilt"
    );
    Ok(())
}

/// One index range being merged.
struct Range<'a> {
    /// Index into the queried types.
    ty: usize,
    /// The state every entry of the range must still be in (by-state ranges).
    state: Option<WorkflowState>,
    scope: Vec<u8>,
    it: DBRawIteratorWithThreadMode<'a, DB>,
}

impl Range<'_> {
    /// The position of the current entry, if it is still inside the range.
    fn current(&self) -> Option<Pos> {
        let k = self.it.key()?;
        if k.len() != self.scope.len() + keys::POSITION_LEN || !k.starts_with(&self.scope) {
            return None;
        }
        k[self.scope.len()..].try_into().ok()
    }
}

/// The cursor that resumes a listing right after the instance created at
/// `created_at_ms` with id `id`. Positions are global, so pages of several
/// replicas' stores merge and resume with it.
pub fn cursor_after(created_at_ms: i64, id: InstanceId) -> String {
    encode_cursor(&keys::position(created_at_ms, id.as_bytes()))
}

impl Store {
    /// One page of the instances of `q.workflow_type` in any of `q.states`,
    /// created after `q.created_after_ms`, in (created_at, id) order.
    pub fn query_workflows(&self, q: &Query) -> Result<Page> {
        self.query_workflows_where(q, &|_| true)
    }

    /// [`Store::query_workflows`] over the instances `keep` accepts (a replica
    /// lists only the partitions it owns); the page still holds up to `q.limit`.
    pub fn query_workflows_where(
        &self,
        q: &Query,
        keep: &dyn Fn(&InstanceState) -> bool,
    ) -> Result<Page> {
        let after = q.cursor.as_deref().map(decode_cursor).transpose()?;
        self.query_types(
            std::slice::from_ref(&q.workflow_type),
            &q.states,
            q.created_after_ms,
            after,
            q.limit,
            keep,
        )
    }

    /// The workflow types that have instances (one seek per type).
    pub fn workflow_types(&self) -> Result<Vec<String>> {
        let mut out = Vec::new();
        let mut it = self.db.raw_iterator_cf(self.cf(keys::CF_BY_CREATED));
        it.seek_to_first();
        while let Some(k) = it.key() {
            let Some(end) = k.iter().position(|b| *b == 0) else {
                break;
            };
            let ty = String::from_utf8_lossy(&k[..end]).into_owned();
            it.seek(keys::prefix_end(&keys::type_scope(&ty)));
            out.push(ty);
        }
        it.status()?;
        Ok(out)
    }

    /// The merge behind [`Store::query_workflows`], over several types (ordered
    /// by (created_at, id) across them).
    pub(crate) fn query_types(
        &self,
        types: &[String],
        states: &[WorkflowState],
        created_after_ms: Option<i64>,
        cursor: Option<Pos>,
        limit: usize,
        keep: &dyn Fn(&InstanceState) -> bool,
    ) -> Result<Page> {
        let mut states = states.to_vec();
        states.sort_by_key(|s| s.as_str());
        states.dedup();
        let mut after = created_after_ms.map(|t| keys::position(t, &[0xff; 16]));
        if let Some(c) = cursor {
            after = after.max(Some(c));
        }
        let mut ranges = Vec::new();
        for (t, ty) in types.iter().enumerate() {
            if states.is_empty() {
                ranges.push((t, None, keys::type_scope(ty), keys::CF_BY_CREATED));
            } else {
                for s in &states {
                    let scope = keys::state_scope(ty, s.as_str());
                    ranges.push((t, Some(*s), scope, keys::CF_BY_STATE));
                }
            }
        }
        let mut open = Vec::with_capacity(ranges.len());
        let mut heap = BinaryHeap::new();
        for (ty, state, scope, cf) in ranges {
            let mut it = self.db.raw_iterator_cf(self.cf(cf));
            let mut start = scope.clone();
            if let Some(a) = &after {
                start.extend_from_slice(a);
            }
            it.seek(&start);
            let mut r = Range {
                ty,
                state,
                scope,
                it,
            };
            if after.is_some() && r.current() == after {
                r.it.next();
            }
            if let Some(pos) = r.current() {
                heap.push(Reverse((pos, open.len())));
            }
            r.it.status()?;
            open.push(r);
        }
        let mut items = Vec::new();
        let mut last = None;
        let mut more = false;
        while let Some(Reverse((pos, i))) = heap.pop() {
            let r = &mut open[i];
            r.it.next();
            r.it.status()?;
            if let Some(next) = r.current() {
                heap.push(Reverse((next, i)));
            }
            let Some((created, id)) = keys::parse_position(&pos) else {
                continue;
            };
            let r = &open[i];
            let Some(s) = self.instance(&types[r.ty], id)? else {
                continue;
            };
            // A stale entry (the instance moved on) or a second entry of one instance.
            let current = s.created_at_ms == created
                && r.state.is_none_or(|st| st == s.state)
                && last != Some((pos, r.ty));
            if !current || !keep(&s) {
                continue;
            }
            if items.len() >= limit {
                more = true;
                break;
            }
            items.push(s);
            last = Some((pos, r.ty));
        }
        Ok(Page {
            items,
            next_cursor: if more {
                last.map(|(p, _)| encode_cursor(&p))
            } else {
                None
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_reject_garbage() {
        let pos = keys::position(-42, &[7; 16]);
        let c = encode_cursor(&pos);
        assert_eq!(decode_cursor(&c).unwrap(), pos);
        for bad in ["", "c1.zz", "c2.00", &c[..c.len() - 2], "c1.ééééé"] {
            assert!(
                matches!(decode_cursor(bad), Err(Error::BadCursor(_))),
                "{bad}"
            );
        }
    }
}
