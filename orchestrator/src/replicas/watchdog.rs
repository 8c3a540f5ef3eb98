//! The ownership watchdog: every partition of every events topic should have
//! exactly one live owner. It compares this replica's partitions with what the
//! other replicas announce and asks the engine to rejoin its consumer group
//! (a new member, so the group rebalances from scratch) when, for longer than
//! [`GRACE`]:
//!
//! - a partition is *orphaned*: nobody owns it (a replica died and the group
//!   did not hand its partitions to the survivors), or
//! - a partition this replica owns was claimed later by another live replica
//!   (the group gave it away without telling this replica).
//!
//! Both happen on brokers whose group coordinator completes a rebalance
//! without every member rejoining: Tansu 0.6 keeps the generation when it
//! drops a member that stopped heartbeating, so only the member that noticed
//! rejoins and the others keep their old assignment. A correct broker never
//! lets either state last [`GRACE`]. To keep replicas from rejoining all at
//! once for the same orphan, each waits [`ANNOUNCE_INTERVAL`] longer per
//! replica ahead of it in node id order, and any change of this replica's own
//! partitions (a rebalance, maybe another replica's rejoin) starts the wait
//! over.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use weft_shared::event::now_ms;
use weft_shared::Topics;

use super::{Replicas, ANNOUNCE_INTERVAL};
use crate::definitions::Registry;
use crate::partitioner::PartitionCounts;
use crate::status::{scope, Status};

/// How long an orphaned or doubly claimed partition is tolerated. Longer than
/// a rebalance takes; counted from when the partition's old owner went stale.
pub const GRACE: Duration = Duration::from_secs(8);

/// What the watchdog looks at.
pub struct Watchdog {
    pub node_id: String,
    pub topics: Topics,
    pub registry: Arc<Registry>,
    pub status: Arc<Status>,
    pub replicas: Arc<Replicas>,
    pub counts: Arc<PartitionCounts>,
}

impl Watchdog {
    /// Partitions nobody owns, and partitions of this replica claimed later by
    /// another. When nobody owns anything the group has not formed yet: that is
    /// the engine's join watchdog's business, not an orphan.
    async fn trouble(&self) -> (Vec<String>, Vec<String>) {
        let (mut orphaned, mut taken, mut owned) = (Vec::new(), Vec::new(), 0);
        let now = now_ms();
        let types: Vec<String> = self.registry.catalog().types().map(str::to_owned).collect();
        for ty in types {
            let topic = self.topics.events(&ty);
            let Some(n) = self.counts.get(&topic).await else {
                continue;
            };
            for p in 0..n {
                let s = scope(&topic, p);
                let other = self.replicas.owner(&s, now, &self.node_id);
                let mine = self.status.owns(&s);
                owned += usize::from(mine.is_some() || other.is_some());
                match (mine, other) {
                    (None, None) => orphaned.push(s),
                    (Some(mine), Some(o)) if o.since_ms > mine.since_ms => {
                        taken.push(format!("{s} (by {})", o.node_id))
                    }
                    _ => {}
                }
            }
        }
        if owned == 0 {
            orphaned.clear();
        }
        (orphaned, taken)
    }

    /// How much longer than [`GRACE`] this replica waits for an orphan.
    fn stagger(&self) -> Duration {
        let fresh = self.replicas.fresh();
        let rank = fresh.iter().filter(|id| **id < self.node_id).count();
        ANNOUNCE_INTERVAL * rank as u32
    }

    /// Watches until `stop` turns true.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(ANNOUNCE_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Give the replica time to join and announce before judging.
        let mut orphaned_since: Option<Instant> = None;
        let mut taken_since: Option<Instant> = None;
        let mut quiet_until = Instant::now() + 2 * GRACE;
        let mut changes = self.status.watch();
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                stopped = stop.changed() => {
                    if stopped.is_err() || *stop.borrow() {
                        return;
                    }
                    continue;
                }
            }
            let (orphaned, taken) = self.trouble().await;
            let now = Instant::now();
            if changes.has_changed().unwrap_or(false) {
                changes.borrow_and_update();
                (orphaned_since, taken_since) = (None, None);
            }
            let orphaned_at = *orphaned_since.get_or_insert(now);
            let taken_at = *taken_since.get_or_insert(now);
            if orphaned.is_empty() {
                orphaned_since = None;
            }
            if taken.is_empty() {
                taken_since = None;
            }
            if now < quiet_until {
                continue;
            }
            let orphan_due = !orphaned.is_empty() && now - orphaned_at >= GRACE + self.stagger();
            let taken_due = !taken.is_empty() && now - taken_at >= GRACE;
            if orphan_due || taken_due {
                tracing::warn!(
                    ?orphaned,
                    ?taken,
                    grace_s = GRACE.as_secs(),
                    "partitions without an owner, or taken over unannounced, for too long; rejoining the group"
                );
                self.status.request_rejoin();
                (orphaned_since, taken_since) = (None, None);
                quiet_until = now + 2 * GRACE;
            }
        }
    }
}
