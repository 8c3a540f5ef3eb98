//! The durable timer index: every pending timer of every instance of a source
//! partition, ordered by due time, so the partition's owner finds what is due
//! with one range scan. It is derived from the instance states (which derive
//! their timers from the history) and written in the same batch, so it is
//! rebuilt with the projection and a timer that fell due while no
//! orchestrator ran fires as soon as one owns the partition again.

use std::collections::BTreeMap;

use rocksdb::{Direction, IteratorMode};
use weft_shared::fsm::Timer;
use weft_shared::ids::InstanceId;

use super::keys::{self, CF_TIMERS};
use super::{Batch, Error, Result, Store};

/// `<partition scope> <fire_at (sign flipped)> <instance id> <timer id>`.
fn key(topic: &str, partition: i32, id: InstanceId, t: &Timer) -> Vec<u8> {
    let mut k = keys::partition_scope(topic, partition);
    k.extend_from_slice(&((t.fire_at_ms as u64) ^ (1 << 63)).to_be_bytes());
    k.extend_from_slice(id.as_bytes());
    k.extend_from_slice(t.id().as_bytes());
    k
}

impl Batch<'_> {
    /// Brings the index in line with an instance's timers: `before` are the
    /// timers it had when the batch began, `after` the ones it has now.
    pub fn sync_timers(
        &mut self,
        topic: &str,
        partition: i32,
        id: InstanceId,
        before: &BTreeMap<String, Timer>,
        after: &BTreeMap<String, Timer>,
    ) {
        let cf = self.store.cf(CF_TIMERS);
        for (tid, t) in before {
            if after.get(tid) != Some(t) {
                self.wb.delete_cf(cf, key(topic, partition, id, t));
            }
        }
        for (tid, t) in after {
            if before.get(tid) != Some(t) {
                let v = serde_json::to_vec(t).expect("timer serialises");
                self.wb.put_cf(cf, key(topic, partition, id, t), v);
            }
        }
    }
}

impl Store {
    /// Timers of a partition due at or before `now_ms`, earliest first (at most `limit`).
    pub fn due_timers(
        &self,
        topic: &str,
        partition: i32,
        now_ms: i64,
        limit: usize,
    ) -> Result<Vec<(InstanceId, Timer)>> {
        let scope = keys::partition_scope(topic, partition);
        let end = keys::prefix_end(&scope);
        let mut out = Vec::new();
        let iter = self.db.iterator_cf(
            self.cf(CF_TIMERS),
            IteratorMode::From(&scope, Direction::Forward),
        );
        for item in iter {
            let (k, v) = item?;
            if k.as_ref() >= end.as_slice() || out.len() >= limit {
                break;
            }
            let t: Timer =
                serde_json::from_slice(&v).map_err(|e| Error::CorruptState(e.to_string()))?;
            if t.fire_at_ms > now_ms {
                break;
            }
            let rest = &k[scope.len() + 8..];
            let id: [u8; 16] = rest
                .get(..16)
                .and_then(|b| b.try_into().ok())
                .ok_or_else(|| Error::CorruptState("timer key".into()))?;
            out.push((InstanceId::from_bytes(id), t));
        }
        Ok(out)
    }

    /// When the earliest pending timer of a partition is due, if any.
    pub fn next_timer_at(&self, topic: &str, partition: i32) -> Result<Option<i64>> {
        Ok(self
            .due_timers(topic, partition, i64::MAX, 1)?
            .first()
            .map(|(_, t)| t.fire_at_ms))
    }
}

#[cfg(test)]
mod tests {
    use weft_shared::fsm::TimerKind;

    use super::*;

    #[test]
    fn due_timers_come_in_order_and_follow_the_state() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (a, b) = (InstanceId::random(), InstanceId::random());
        let t1 = Timer::task(TimerKind::Retry, "x", 2, 2_000);
        let t2 = Timer::workflow(TimerKind::Workflow, 1_000);
        let t3 = Timer::task(TimerKind::Wait, "w", 1, -5);
        let map = |ts: &[&Timer]| ts.iter().map(|t| (t.id(), (*t).clone())).collect();
        let none = BTreeMap::new();
        let mut wb = store.batch();
        wb.sync_timers("e", 0, a, &none, &map(&[&t1, &t2]));
        wb.sync_timers("e", 1, b, &none, &map(&[&t3]));
        wb.commit().unwrap();
        let due = store.due_timers("e", 0, 1_500, 10).unwrap();
        assert_eq!(due, vec![(a, t2.clone())]);
        assert_eq!(store.next_timer_at("e", 0).unwrap(), Some(1_000));
        assert_eq!(store.due_timers("e", 1, 0, 10).unwrap(), vec![(b, t3)]);
        // t2 fired (cleared), t1 stays
        let mut wb = store.batch();
        wb.sync_timers("e", 0, a, &map(&[&t1, &t2]), &map(&[&t1]));
        wb.commit().unwrap();
        assert_eq!(
            store.due_timers("e", 0, i64::MAX, 10).unwrap(),
            vec![(a, t1)]
        );
    }
}
