//! Where a schedule's runs live (ADR 0017, "Runs on the schedule's partition").
//!
//! A schedule is driven by the owner of the events partition its name hashes
//! to. The instance a tick starts gets an id derived from the schedule and the
//! tick that hashes to that same partition, so the previous run, which the
//! overlap policy asks about, is always in the driving replica's own
//! projection: no request to a peer (which would need credentials when API
//! authentication is on) is needed.
//!
//! The candidates are the idempotency keys `schedule:<name>:<tick ms>` (the
//! id of releases before this scheme, `k = 0`) then
//! `schedule:<name>:<tick ms>:<k>` for `k = 1, 2, ...`; the first whose
//! instance id lands on the schedule's partition is the tick's id. Every
//! replica computes the same id from the same partition count, so "one start
//! per tick" still holds. With `n` partitions one candidate in `n` lands, so
//! the search tries `n` on average and is bounded by [`max_candidates`].

use weft_shared::ids::InstanceId;

use crate::partitioner::Partitioner;

/// The fewest candidates tried before a tick is given up as unplaceable.
pub const MIN_CANDIDATES: u32 = 10_000;

/// Where the runs of a schedule go, as its driver sees it now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Placement {
    pub partitioner: Partitioner,
    /// Partitions of the type's events topic.
    pub partitions: i32,
    /// The partition the schedule's name hashes to (its driver owns it).
    pub partition: i32,
}

impl Placement {
    /// The placement of schedule `name` among `partitions` partitions.
    pub fn of(partitioner: Partitioner, name: &str, partitions: i32) -> Self {
        Self {
            partitioner,
            partitions,
            partition: partitioner.partition(name.as_bytes(), partitions),
        }
    }

    /// The partition instance `id` is on.
    pub fn partition_of(&self, id: InstanceId) -> i32 {
        self.partitioner
            .partition(id.to_string().as_bytes(), self.partitions)
    }

    /// The instance id of tick `tick_ms` of schedule `name` (type `ty`): the
    /// first candidate on the schedule's partition; `None` if none of the
    /// first [`max_candidates`] is (odds about `e^-64`).
    pub fn tick_instance(&self, ty: &str, name: &str, tick_ms: i64) -> Option<InstanceId> {
        (0..max_candidates(self.partitions))
            .map(|k| InstanceId::for_idempotency_key(ty, &tick_key(name, tick_ms, k)))
            .find(|id| self.partition_of(*id) == self.partition)
    }
}

/// How many candidates are tried with `partitions` partitions: at least
/// [`MIN_CANDIDATES`], and 64 times the expected number.
pub fn max_candidates(partitions: i32) -> u32 {
    (partitions.max(1) as u32)
        .saturating_mul(64)
        .max(MIN_CANDIDATES)
}

/// Candidate `k`'s idempotency key of a tick.
pub fn tick_key(name: &str, tick_ms: i64, k: u32) -> String {
    if k == 0 {
        format!("schedule:{name}:{tick_ms}")
    } else {
        format!("schedule:{name}:{tick_ms}:{k}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KINDS: [Partitioner; 3] = [Partitioner::Murmur2, Partitioner::Crc32, Partitioner::Fnv1a];

    #[test]
    fn tick_ids_land_on_the_schedules_partition() {
        for p in KINDS {
            for n in [1, 2, 3, 6, 12, 64] {
                for name in ["nightly", "every2", "a", "sync-orders_7"] {
                    let at = Placement::of(p, name, n);
                    assert!((0..n).contains(&at.partition));
                    for tick in (0..40).map(|i| 1_700_000_000_000 + i * 1_000) {
                        let id = at.tick_instance("pay", name, tick).expect("placed");
                        assert_eq!(at.partition_of(id), at.partition, "{p:?} {n} {name} {tick}");
                    }
                }
            }
        }
    }

    #[test]
    fn tick_ids_are_deterministic_and_distinct() {
        let at = Placement::of(Partitioner::Murmur2, "every2", 6);
        let ids: Vec<InstanceId> = (0..50)
            .map(|i| at.tick_instance("tick", "every2", i * 2_000).unwrap())
            .collect();
        // Another replica (another value, same inputs) computes the same ids.
        let again = Placement::of(Partitioner::Murmur2, "every2", 6);
        for (i, id) in ids.iter().enumerate() {
            assert_eq!(
                again.tick_instance("tick", "every2", i as i64 * 2_000),
                Some(*id)
            );
        }
        let distinct: std::collections::BTreeSet<_> = ids.iter().map(|i| i.to_string()).collect();
        assert_eq!(distinct.len(), ids.len(), "one instance per tick");
        // The type and the schedule are part of the id.
        assert_ne!(at.tick_instance("other", "every2", 0), Some(ids[0]));
    }

    #[test]
    fn candidate_zero_is_the_previous_scheme() {
        // With one partition every id lands: the id is the one releases before
        // this scheme gave, so a run they started is found again.
        let at = Placement::of(Partitioner::Murmur2, "s", 1);
        assert_eq!(
            at.tick_instance("t", "s", 60_000),
            Some(InstanceId::for_idempotency_key("t", "schedule:s:60000"))
        );
        assert_eq!(tick_key("s", 60_000, 3), "schedule:s:60000:3");
    }

    #[test]
    fn the_search_is_bounded() {
        assert_eq!(max_candidates(1), MIN_CANDIDATES);
        assert_eq!(max_candidates(1_000), 64_000);
        assert_eq!(max_candidates(i32::MAX), u32::MAX);
        // Most ticks need few candidates: about n on average, never past the bound.
        let n = 12;
        let at = Placement::of(Partitioner::Murmur2, "bounded", n);
        let mut total = 0u64;
        for tick in 0..200 {
            let k = (0..max_candidates(n))
                .position(|k| {
                    let key = tick_key("bounded", tick, k);
                    at.partition_of(InstanceId::for_idempotency_key("t", &key)) == at.partition
                })
                .expect("placed within the bound");
            total += k as u64 + 1;
        }
        let mean = total as f64 / 200.0;
        assert!(
            mean < 3.0 * n as f64,
            "mean candidates {mean} with {n} partitions"
        );
    }
}
