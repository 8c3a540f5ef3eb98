//! The idle watch: a member that was assigned nothing rejoins the group while
//! a partition of its task topics has no live owner. A development-broker
//! workaround (`kafka.broker_workarounds`), for Tansu 0.6: it keeps a crashed
//! member in the group until that member's session expires and finishes the
//! rebalance a restarted worker joined meanwhile by giving the crashed member
//! every partition and the live one none; when the session then expires it
//! does not rebalance again. The live member sits idle beside partitions
//! nobody reads until it leaves and rejoins, which the coordinator finishes
//! without the dead member.
//!
//! An empty assignment is normal — more workers than partitions, as an
//! autoscaler makes them — so an idle member rejoins only when some partition
//! of its subscribed task topics has been without a live owner for
//! [`UNOWNED_AFTER`]: no worker heartbeating on the node registry within
//! [`FRESH_FOR`] claims it ([`Claims`]). Workers heartbeat every
//! [`HEARTBEAT_INTERVAL`] and at once when their assignment changes, so a
//! partition the group handed to a live worker is claimed within moments of
//! the rebalance; the time covers a rebalance under way (new task topics, a
//! member joining). Nothing is called unowned before the claims are known
//! (the nodes topic followed for [`FRESH_FOR`]). After [`MAX_TRIES`] rejoins
//! without an assignment it gives up until it is assigned something again.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::lanes::Served;
use rdkafka::consumer::Consumer;

use crate::claims::Claims;
#[cfg(doc)]
use crate::claims::FRESH_FOR;
use crate::consumer::{lock, TaskConsumer};
#[cfg(doc)]
use crate::heartbeat::HEARTBEAT_INTERVAL;

/// How often an idle member looks.
pub const CHECK_EVERY: Duration = Duration::from_secs(5);
/// How long a partition must have been seen without a live owner.
pub const UNOWNED_AFTER: Duration = Duration::from_secs(20);
/// Rejoins without being assigned anything, after which the watch waits for
/// an assignment (a broker that keeps handing everything to a silent member).
pub const MAX_TRIES: u32 = 3;
/// Broker round trips of one check are bounded by this.
const CALL_TIMEOUT: Duration = Duration::from_secs(2);

/// A task partition: topic and partition number.
type Partition = (String, i32);

/// Where this member stands in its group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Membership {
    /// Partitions are assigned here: the orphan watch looks after the others.
    Busy,
    /// No rebalance ended for it since it (re)subscribed: the join watchdog's case.
    Joining,
    /// A rebalance ended and assigned it nothing.
    Idle,
}

/// The idle watch's state: since when each partition is seen without an
/// owner, and the rejoins that got this member nothing.
pub(crate) struct UnownedWatch {
    since: HashMap<Partition, Instant>,
    unowned_after: Duration,
    tries: u32,
}

impl UnownedWatch {
    /// A watch that rejoins once a partition has had no live owner for `unowned_after`.
    pub(crate) fn new(unowned_after: Duration) -> Self {
        Self {
            since: HashMap::new(),
            unowned_after,
            tries: 0,
        }
    }

    /// Checks once; true when it rejoined the group.
    pub(crate) fn check(
        &mut self,
        consumer: &TaskConsumer,
        served: &Served,
        claims: &Claims,
    ) -> bool {
        let context = consumer.context();
        let membership = if !lock(&context.assignment).is_empty() {
            Membership::Busy
        } else if context.joined.load(Ordering::SeqCst) {
            Membership::Idle
        } else {
            Membership::Joining
        };
        let unowned = self.step(
            Instant::now(),
            membership,
            || blocking(|| subscribed_partitions(consumer, served)),
            |p| claims.claimed(p),
        );
        if unowned.is_empty() {
            return false;
        }
        let unowned: Vec<String> = unowned.iter().map(|(t, p)| format!("{t}/{p}")).collect();
        tracing::warn!(
            unowned = ?unowned,
            rejoin = self.tries,
            max_rejoins = MAX_TRIES,
            "nothing is assigned here while task partitions have no live owner (a crashed member may still hold them); rejoining the group"
        );
        if self.tries == MAX_TRIES {
            tracing::warn!("the idle watch rejoins no more until something is assigned here");
        }
        crate::consumer::rejoin(consumer)
    }

    /// One check at `now`: the partitions to rejoin for (empty: stay). Reads
    /// the subscribed `partitions` only for an idle member with tries left;
    /// `claimed` says whether a live worker holds one (`None`: not known yet).
    fn step(
        &mut self,
        now: Instant,
        membership: Membership,
        partitions: impl FnOnce() -> Option<BTreeSet<Partition>>,
        claimed: impl Fn(&Partition) -> Option<bool>,
    ) -> Vec<Partition> {
        match membership {
            Membership::Busy => {
                self.since.clear();
                self.tries = 0;
                return Vec::new();
            }
            Membership::Joining => {
                self.since.clear();
                return Vec::new();
            }
            Membership::Idle if self.tries >= MAX_TRIES => return Vec::new(),
            Membership::Idle => {}
        }
        let Some(partitions) = partitions() else {
            return Vec::new();
        };
        let unowned = self.observe(now, &partitions, claimed);
        if !unowned.is_empty() {
            self.tries += 1;
            self.since.clear();
        }
        unowned
    }

    /// Takes in the partitions seen at `now` and whether a live worker claims
    /// each (`None`: not known yet); the ones unclaimed for `unowned_after`.
    fn observe(
        &mut self,
        now: Instant,
        partitions: &BTreeSet<Partition>,
        claimed: impl Fn(&Partition) -> Option<bool>,
    ) -> Vec<Partition> {
        self.since.retain(|p, _| partitions.contains(p));
        let mut out = Vec::new();
        for p in partitions {
            let claim = claimed(p);
            if claim == Some(true) {
                self.since.remove(p);
                continue;
            }
            let since = *self.since.entry(p.clone()).or_insert(now);
            if claim == Some(false) && now.duration_since(since) >= self.unowned_after {
                out.push(p.clone());
            }
        }
        out
    }
}

/// The partitions of the task topics this consumer subscribes to (by name,
/// or, for the `^` patterns of a worker of all types, every lane it serves),
/// as the broker's metadata has them; `None` if it cannot be read.
fn subscribed_partitions(consumer: &TaskConsumer, served: &Served) -> Option<BTreeSet<Partition>> {
    let subscription = consumer.subscription().ok()?;
    let names: Vec<String> = subscription
        .elements()
        .iter()
        .map(|e| e.topic().to_owned())
        .collect();
    if names.is_empty() {
        return None;
    }
    let patterns = names.iter().any(|n| n.starts_with('^'));
    let md = consumer.fetch_metadata(None, CALL_TIMEOUT).ok()?;
    let mut out = BTreeSet::new();
    for t in md.topics() {
        let wanted = names.iter().any(|n| n == t.name()) || (patterns && served.serves(t.name()));
        if !wanted || t.error().is_some() {
            continue;
        }
        out.extend(t.partitions().iter().map(|p| (t.name().to_owned(), p.id())));
    }
    Some(out)
}

/// Runs a blocking broker call without stalling other tasks where possible.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(ps: &[i32]) -> BTreeSet<Partition> {
        ps.iter().map(|p| ("weft.a.tasks".to_owned(), *p)).collect()
    }

    #[test]
    fn a_partition_held_by_a_live_worker_is_never_unowned() {
        let mut w = UnownedWatch::new(Duration::from_secs(20));
        let t0 = Instant::now();
        for s in 0..20 {
            let now = t0 + Duration::from_secs(5 * s);
            assert!(w.observe(now, &parts(&[0, 1]), |_| Some(true)).is_empty());
        }
    }

    #[test]
    fn unowned_only_after_the_whole_time_without_a_claim() {
        let mut w = UnownedWatch::new(Duration::from_secs(20));
        let t0 = Instant::now();
        let at = |s| t0 + Duration::from_secs(s);
        // claims not known yet: the clock runs, nothing is called unowned
        assert!(w.observe(at(0), &parts(&[0, 1]), |_| None).is_empty());
        assert!(w.observe(at(10), &parts(&[0, 1]), |_| None).is_empty());
        // partition 1 gets an owner; 0 has none
        let claimed = |p: &Partition| Some(p.1 == 1);
        assert!(w.observe(at(15), &parts(&[0, 1]), claimed).is_empty());
        assert_eq!(
            w.observe(at(20), &parts(&[0, 1]), claimed),
            [("weft.a.tasks".to_owned(), 0)]
        );
    }

    #[test]
    fn a_claim_in_between_starts_the_time_again() {
        let mut w = UnownedWatch::new(Duration::from_secs(20));
        let t0 = Instant::now();
        let at = |s| t0 + Duration::from_secs(s);
        assert!(w.observe(at(0), &parts(&[0]), |_| Some(false)).is_empty());
        assert!(w.observe(at(10), &parts(&[0]), |_| Some(true)).is_empty());
        assert!(w.observe(at(25), &parts(&[0]), |_| Some(false)).is_empty());
        assert!(w.observe(at(40), &parts(&[0]), |_| Some(false)).is_empty());
        assert_eq!(w.observe(at(45), &parts(&[0]), |_| Some(false)).len(), 1);
    }

    #[test]
    fn a_new_partition_gets_the_whole_time_for_its_rebalance() {
        let mut w = UnownedWatch::new(Duration::from_secs(20));
        let t0 = Instant::now();
        let at = |s| t0 + Duration::from_secs(s);
        assert!(w.observe(at(0), &parts(&[]), |_| Some(false)).is_empty());
        // a new task topic: not claimed until the group has rebalanced
        assert!(w.observe(at(30), &parts(&[0]), |_| Some(false)).is_empty());
        assert!(w.observe(at(45), &parts(&[0]), |_| Some(false)).is_empty());
        assert_eq!(w.observe(at(50), &parts(&[0]), |_| Some(false)).len(), 1);
    }

    #[test]
    fn rejoins_are_bounded_until_something_is_assigned() {
        let mut w = UnownedWatch::new(Duration::from_secs(20));
        let t0 = Instant::now();
        let at = |s| t0 + Duration::from_secs(s);
        let all = || Some(parts(&[0]));
        let mut rejoins = 0;
        let mut s = 0;
        // a broker that keeps handing the partition to a silent member
        for _ in 0..40 {
            s += 5;
            if !w
                .step(at(s), Membership::Idle, all, |_| Some(false))
                .is_empty()
            {
                rejoins += 1;
                // the rejoin: a rebalance that ends with nothing assigned again
                s += 5;
                assert!(w
                    .step(at(s), Membership::Joining, all, |_| Some(false))
                    .is_empty());
            }
        }
        assert_eq!(rejoins, MAX_TRIES);
        // an assignment gives it its tries back
        assert!(w
            .step(at(s + 5), Membership::Busy, all, |_| Some(false))
            .is_empty());
        assert!(w
            .step(at(s + 10), Membership::Idle, all, |_| Some(false))
            .is_empty());
        assert_eq!(
            w.step(at(s + 30), Membership::Idle, all, |_| Some(false))
                .len(),
            1
        );
    }

    #[test]
    fn only_an_idle_member_reads_the_partitions() {
        let mut w = UnownedWatch::new(Duration::ZERO);
        let now = Instant::now();
        let unread = || -> Option<BTreeSet<Partition>> { panic!("read the partitions") };
        assert!(w
            .step(now, Membership::Busy, unread, |_| Some(false))
            .is_empty());
        assert!(w
            .step(now, Membership::Joining, unread, |_| Some(false))
            .is_empty());
        assert_eq!(
            w.step(
                now,
                Membership::Idle,
                || Some(parts(&[0, 1])),
                |_| Some(false)
            )
            .len(),
            2
        );
    }
}
