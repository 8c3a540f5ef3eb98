//! Per-partition offset tracking. Tasks of one partition finish out of order,
//! but a Kafka commit says "everything before this offset is done", so the
//! tracker remembers each received offset and whether it is done, and only
//! the contiguous done prefix is ever committed. Each assignment of a partition
//! gets a new generation, so a late completion from before a rebalance never
//! marks an offset of the new assignment.
//!
//! An `exactly_once` result commits its offset in its own transaction, so it
//! waits until it is at the head of its partition ([`OffsetTracker::earlier_pending`])
//! and then marks its record done together with the commit
//! ([`OffsetTracker::commit_through`]); see ADR 0013.

use std::collections::{BTreeMap, HashMap};

/// One received record: where it is and which assignment of its partition it belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ticket {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    generation: u64,
}

/// A position to commit: the next offset to consume of a partition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Position {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
}

#[derive(Debug)]
struct Partition {
    generation: u64,
    /// Received offsets not yet part of the done prefix, and whether each is done.
    pending: BTreeMap<i64, bool>,
    /// The position the done prefix reached (next offset to consume), if any.
    done_up_to: Option<i64>,
    /// The last position handed out for committing.
    committed: Option<i64>,
}

/// Offset trackers of every partition this worker holds.
#[derive(Debug, Default)]
pub struct OffsetTracker {
    partitions: HashMap<(String, i32), Partition>,
    next_generation: u64,
}

impl OffsetTracker {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records that `offset` of `topic`/`partition` was received (in partition order).
    pub fn track(&mut self, topic: &str, partition: i32, offset: i64) -> Ticket {
        let next_generation = &mut self.next_generation;
        let part = self
            .partitions
            .entry((topic.to_owned(), partition))
            .or_insert_with(|| {
                *next_generation += 1;
                Partition {
                    generation: *next_generation,
                    pending: BTreeMap::new(),
                    done_up_to: None,
                    committed: None,
                }
            });
        part.pending.insert(offset, false);
        Ticket {
            topic: topic.to_owned(),
            partition,
            offset,
            generation: part.generation,
        }
    }

    /// Marks a ticket's record done; false when its partition was revoked since.
    pub fn done(&mut self, ticket: &Ticket) -> bool {
        let Some(part) = self.current(ticket) else {
            return false;
        };
        if let Some(slot) = part.pending.get_mut(&ticket.offset) {
            *slot = true;
        }
        while let Some(entry) = part.pending.first_entry() {
            if !*entry.get() {
                break;
            }
            let (offset, _) = entry.remove_entry();
            part.done_up_to = Some(offset + 1);
        }
        true
    }

    /// The position of the ticket's partition once the ticket is done (without
    /// marking it): what a transaction that finishes this record may commit.
    /// `None` when the partition was revoked or the prefix would not move.
    pub fn position_if_done(&self, ticket: &Ticket) -> Option<i64> {
        let part = self
            .partitions
            .get(&(ticket.topic.clone(), ticket.partition))?;
        if part.generation != ticket.generation {
            return None;
        }
        let mut position = part.done_up_to;
        for (&offset, &done) in &part.pending {
            if done || offset == ticket.offset {
                position = Some(offset + 1);
            } else {
                break;
            }
        }
        position.filter(|p| Some(*p) > part.done_up_to)
    }

    /// Whether a record before the ticket's is still not done in its
    /// partition; `None` when the partition was revoked since the ticket.
    pub fn earlier_pending(&self, ticket: &Ticket) -> Option<bool> {
        let part = self
            .partitions
            .get(&(ticket.topic.clone(), ticket.partition))
            .filter(|p| p.generation == ticket.generation)?;
        Some(part.pending.range(..ticket.offset).any(|(_, done)| !*done))
    }

    /// Marks the ticket's record done once a transaction committed its
    /// partition through `position` (under the commit lane, so that no later
    /// plain commit hands out less; the next one may repeat `position`, which
    /// is harmless). False when the partition was revoked since the ticket.
    pub fn commit_through(&mut self, ticket: &Ticket, position: i64) -> bool {
        if !self.done(ticket) {
            return false;
        }
        debug_assert!(self
            .current(ticket)
            .is_some_and(|p| p.done_up_to >= Some(position)));
        true
    }

    /// Positions that moved since they were last handed out; they count as committed now.
    pub fn take_committable(&mut self) -> Vec<Position> {
        let mut out = Vec::new();
        for ((topic, partition), part) in &mut self.partitions {
            if let Some(pos) = part.done_up_to.filter(|p| part.committed < Some(*p)) {
                part.committed = Some(pos);
                out.push(Position {
                    topic: topic.clone(),
                    partition: *partition,
                    offset: pos,
                });
            }
        }
        out.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
        out
    }

    /// Every partition's done position, moved or not (for the final commit at shutdown).
    pub fn all_positions(&self) -> Vec<Position> {
        let mut out: Vec<Position> = self
            .partitions
            .iter()
            .filter_map(|((topic, partition), part)| {
                part.done_up_to.map(|offset| Position {
                    topic: topic.clone(),
                    partition: *partition,
                    offset,
                })
            })
            .collect();
        out.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
        out
    }

    /// Forgets a revoked partition and returns its done position, to commit before letting go.
    pub fn revoke(&mut self, topic: &str, partition: i32) -> Option<Position> {
        let part = self.partitions.remove(&(topic.to_owned(), partition))?;
        part.done_up_to.map(|offset| Position {
            topic: topic.to_owned(),
            partition,
            offset,
        })
    }

    /// Records still received but not done, over all partitions.
    pub fn pending(&self) -> usize {
        self.partitions
            .values()
            .map(|p| p.pending.values().filter(|d| !**d).count())
            .sum()
    }

    /// Whether the ticket's partition is still held in the ticket's assignment.
    pub fn is_current(&self, ticket: &Ticket) -> bool {
        self.partitions
            .get(&(ticket.topic.clone(), ticket.partition))
            .is_some_and(|p| p.generation == ticket.generation)
    }

    fn current(&mut self, ticket: &Ticket) -> Option<&mut Partition> {
        self.partitions
            .get_mut(&(ticket.topic.clone(), ticket.partition))
            .filter(|p| p.generation == ticket.generation)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pos(partition: i32, offset: i64) -> Position {
        Position {
            topic: "t".into(),
            partition,
            offset,
        }
    }

    #[test]
    fn out_of_order_completion_commits_only_the_contiguous_prefix() {
        let mut tr = OffsetTracker::new();
        let tickets: Vec<Ticket> = (10..15).map(|o| tr.track("t", 0, o)).collect();
        assert!(tr.done(&tickets[2]));
        assert!(tr.done(&tickets[1]));
        assert_eq!(tr.take_committable(), vec![], "offset 10 is still running");
        assert!(tr.done(&tickets[0]));
        assert_eq!(tr.take_committable(), vec![pos(0, 13)]);
        assert_eq!(tr.take_committable(), vec![], "nothing moved");
        assert!(tr.done(&tickets[4]));
        assert_eq!(tr.take_committable(), vec![]);
        assert_eq!(tr.pending(), 1);
        assert!(tr.done(&tickets[3]));
        assert_eq!(tr.take_committable(), vec![pos(0, 15)]);
        assert_eq!(tr.all_positions(), vec![pos(0, 15)]);
    }

    #[test]
    fn partitions_are_independent_and_gaps_in_offsets_do_not_block() {
        let mut tr = OffsetTracker::new();
        let a = tr.track("t", 0, 5);
        let b = tr.track("t", 0, 9); // 6..8 were transaction markers or compacted away
        let c = tr.track("t", 1, 0);
        tr.done(&b);
        tr.done(&c);
        assert_eq!(tr.take_committable(), vec![pos(1, 1)]);
        tr.done(&a);
        assert_eq!(tr.take_committable(), vec![pos(0, 10)]);
    }

    #[test]
    fn revoked_partitions_ignore_late_completions() {
        let mut tr = OffsetTracker::new();
        let a = tr.track("t", 0, 0);
        let b = tr.track("t", 0, 1);
        tr.done(&a);
        assert_eq!(tr.revoke("t", 0), Some(pos(0, 1)));
        assert!(!tr.done(&b), "stale ticket");
        // reassigned: a new generation starts from the committed offset
        let b2 = tr.track("t", 0, 1);
        assert!(!tr.done(&b));
        assert_eq!(tr.take_committable(), vec![]);
        assert!(tr.done(&b2));
        assert_eq!(tr.take_committable(), vec![pos(0, 2)]);
        assert_eq!(tr.revoke("t", 7), None);
    }

    #[test]
    fn position_if_done_previews_a_transactional_commit() {
        let mut tr = OffsetTracker::new();
        let a = tr.track("t", 0, 0);
        let b = tr.track("t", 0, 1);
        let c = tr.track("t", 0, 2);
        assert_eq!(tr.position_if_done(&b), None, "offset 0 is still running");
        tr.done(&c);
        assert_eq!(tr.position_if_done(&a), Some(1), "1 is still running");
        tr.done(&b);
        assert_eq!(tr.position_if_done(&a), Some(3));
        assert_eq!(tr.take_committable(), vec![]);
        tr.done(&a);
        assert_eq!(tr.take_committable(), vec![pos(0, 3)]);
    }

    #[test]
    fn a_transaction_at_the_head_commits_and_plain_commits_never_go_back() {
        let mut tr = OffsetTracker::new();
        let a = tr.track("t", 0, 0);
        let b = tr.track("t", 0, 1);
        let c = tr.track("t", 0, 2);
        assert_eq!(tr.earlier_pending(&a), Some(false));
        assert_eq!(tr.earlier_pending(&b), Some(true), "0 is still running");
        tr.done(&c);
        assert_eq!(tr.earlier_pending(&b), Some(true));
        tr.done(&a);
        assert_eq!(tr.take_committable(), vec![pos(0, 1)]);
        assert_eq!(tr.earlier_pending(&b), Some(false), "b is at the head now");
        let position = tr.position_if_done(&b).unwrap();
        assert_eq!(position, 3, "the transaction commits through the done c");
        assert!(tr.commit_through(&b, position));
        assert_eq!(
            tr.take_committable(),
            vec![pos(0, 3)],
            "never less than the transaction's"
        );
        assert_eq!(tr.all_positions(), vec![pos(0, 3)]);
        tr.revoke("t", 0);
        assert_eq!(tr.earlier_pending(&b), None, "revoked");
        assert!(!tr.commit_through(&b, 3));
    }
}
