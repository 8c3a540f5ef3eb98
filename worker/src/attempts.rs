//! The attempts this worker process knows about: the ones running (or waiting
//! to run) with their cancellation tokens, the attempt keys it already took
//! (so a duplicate dispatch of the same attempt is dropped), and the execution
//! ids a control record cancelled (so a dispatch that arrives after its cancel
//! is skipped). The remembered sets are bounded in size and age.
//!
//! Each running attempt knows its record's partition: when the partition is
//! revoked, [`Attempts::revoke`] stops its attempts (except `at_most_once`
//! ones, whose records are committed already) and forgets that they were
//! taken, so that the record runs again here if the partition comes back.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::hash::Hash;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use weft_shared::ids::ExecutionId;

use crate::offsets::Ticket;

/// How many attempt keys and cancelled ids are remembered at most.
pub(crate) const REMEMBERED: usize = 65_536;
/// How long they are remembered at most.
pub(crate) const REMEMBER_FOR: Duration = Duration::from_secs(6 * 3600);

/// A set that forgets its oldest entries past `capacity` entries or `ttl` age.
#[derive(Debug)]
pub(crate) struct Recent<K> {
    set: HashSet<K>,
    order: VecDeque<(Instant, K)>,
    capacity: usize,
    ttl: Duration,
}

impl<K: Clone + Eq + Hash> Recent<K> {
    pub fn new(capacity: usize, ttl: Duration) -> Self {
        Self {
            set: HashSet::new(),
            order: VecDeque::new(),
            capacity: capacity.max(1),
            ttl,
        }
    }

    /// Adds `key`; false when it was there already.
    pub fn insert(&mut self, key: K) -> bool {
        self.expire(Instant::now());
        if !self.set.insert(key.clone()) {
            return false;
        }
        self.order.push_back((Instant::now(), key));
        while self.order.len() > self.capacity {
            if let Some((_, old)) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
        true
    }

    /// Forgets `key` (rare: a scan of the age order).
    pub fn remove(&mut self, key: &K) {
        if self.set.remove(key) {
            self.order.retain(|(_, k)| k != key);
        }
    }

    pub fn contains(&mut self, key: &K) -> bool {
        self.expire(Instant::now());
        self.set.contains(key)
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.set.len()
    }

    fn expire(&mut self, now: Instant) {
        while let Some((at, _)) = self.order.front() {
            if now.duration_since(*at) < self.ttl {
                break;
            }
            if let Some((_, old)) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
    }
}

/// A running (or waiting) attempt as its runner sees it.
#[derive(Clone, Debug)]
pub(crate) struct AttemptHandle {
    /// Fired by a cancel (control record), a deadline, or the shutdown; handed to the handler.
    pub token: CancellationToken,
    /// Set, before `token` fires, when a control record cancelled the attempt: its grace period.
    cancel_grace: Arc<OnceLock<Duration>>,
    /// Set, before `token` fires, when its record's partition was revoked: its grace period.
    revoke_grace: Arc<OnceLock<Duration>>,
}

impl AttemptHandle {
    /// The grace period of the control record that cancelled the attempt, if one did.
    pub fn cancelled_by_control(&self) -> Option<Duration> {
        self.cancel_grace.get().copied()
    }

    /// The grace period the attempt has to stop because its partition was revoked, if it was.
    pub fn revoked(&self) -> Option<Duration> {
        self.revoke_grace.get().copied()
    }
}

/// What [`Attempts::admit`] needs to know about a dispatch besides its identity.
#[derive(Clone, Copy, Debug)]
pub(crate) struct AdmitOptions {
    /// Attach the ticket of a duplicate to the running attempt (done with it).
    pub attach: bool,
    /// Stop the attempt when its partition is revoked (not for `at_most_once`).
    pub revocable: bool,
    /// How long its handler may take to stop when asked.
    pub grace: Duration,
}

#[derive(Debug)]
struct Running {
    handle: AttemptHandle,
    attempt_key: String,
    /// The partition of the record it runs for.
    partition: (String, i32),
    options: AdmitOptions,
    /// Tickets of duplicate dispatches of this attempt: done when the attempt is.
    duplicates: Vec<Ticket>,
}

/// What to do with a received dispatch.
#[derive(Debug)]
pub(crate) enum Admission {
    /// Run it.
    Run(AttemptHandle),
    /// This attempt is running here now: its ticket was attached to the running one.
    DuplicateOfRunning,
    /// This attempt already ran here.
    DuplicateOfFinished,
    /// A control record cancelled this attempt before it came.
    Cancelled,
}

/// The registry of attempts of one worker process.
#[derive(Debug)]
pub(crate) struct Attempts {
    running: HashMap<ExecutionId, Running>,
    taken: Recent<String>,
    cancelled: Recent<ExecutionId>,
}

impl Default for Attempts {
    fn default() -> Self {
        Self {
            running: HashMap::new(),
            taken: Recent::new(REMEMBERED, REMEMBER_FOR),
            cancelled: Recent::new(REMEMBERED, REMEMBER_FOR),
        }
    }
}

impl Attempts {
    /// Decides about a dispatch of `attempt_key` / `execution_id` received
    /// with `ticket`; a duplicate of a running attempt with `attach` keeps its
    /// ticket until that attempt is done. The token of an admitted attempt is
    /// a child of `parent`.
    pub fn admit(
        &mut self,
        attempt_key: &str,
        execution_id: ExecutionId,
        ticket: &Ticket,
        options: AdmitOptions,
        parent: &CancellationToken,
    ) -> Admission {
        let attach = options.attach;
        if self.cancelled.contains(&execution_id) {
            return Admission::Cancelled;
        }
        if let Some(running) = self
            .running
            .values_mut()
            .find(|r| r.attempt_key == attempt_key)
        {
            if attach {
                running.duplicates.push(ticket.clone());
            }
            return Admission::DuplicateOfRunning;
        }
        if !self.taken.insert(attempt_key.to_owned()) {
            return Admission::DuplicateOfFinished;
        }
        let handle = AttemptHandle {
            token: parent.child_token(),
            cancel_grace: Arc::default(),
            revoke_grace: Arc::default(),
        };
        self.running.insert(
            execution_id,
            Running {
                handle: handle.clone(),
                attempt_key: attempt_key.to_owned(),
                partition: (ticket.topic.clone(), ticket.partition),
                options,
                duplicates: Vec::new(),
            },
        );
        Admission::Run(handle)
    }

    /// Records that `execution_id` is cancelled and signals it if it runs
    /// here: whether it did, or `None` when the cancel was known already.
    pub fn cancel(&mut self, execution_id: ExecutionId, grace: Duration) -> Option<bool> {
        if !self.cancelled.insert(execution_id) {
            return None;
        }
        let Some(running) = self.running.get(&execution_id) else {
            return Some(false);
        };
        let _ = running.handle.cancel_grace.set(grace);
        running.handle.token.cancel();
        Some(true)
    }

    /// Whether a control record cancelled `execution_id`.
    #[cfg(test)]
    pub fn is_cancelled(&mut self, execution_id: ExecutionId) -> bool {
        self.cancelled.contains(&execution_id)
    }

    /// Stops the revocable attempts running for records of `partitions`
    /// (their tokens fire, each with its grace period); returns the longest
    /// grace period of those it stopped, `None` when it stopped none.
    pub fn revoke(&mut self, partitions: &BTreeSet<(String, i32)>) -> Option<Duration> {
        let mut longest = None;
        for running in self.running.values() {
            if !running.options.revocable || !partitions.contains(&running.partition) {
                continue;
            }
            let grace = running.options.grace;
            let _ = running.handle.revoke_grace.set(grace);
            running.handle.token.cancel();
            longest = longest.max(Some(grace));
        }
        longest
    }

    /// Revocable attempts still running for records of `partitions`.
    pub fn running_in(&self, partitions: &BTreeSet<(String, i32)>) -> usize {
        self.running
            .values()
            .filter(|r| r.options.revocable && partitions.contains(&r.partition))
            .count()
    }

    /// Forgets a finished attempt; returns the tickets of its duplicates.
    /// `published`: its result went out. An attempt stopped by a revocation
    /// before it published is forgotten as taken too: its record is another
    /// worker's now, and runs here again if it comes back. One that published
    /// while the revocation waited for it stays taken: its record may come
    /// back uncommitted (an earlier record of the partition was not done), and
    /// is then a duplicate.
    pub fn finish(&mut self, execution_id: ExecutionId, published: bool) -> Vec<Ticket> {
        let Some(running) = self.running.remove(&execution_id) else {
            return Vec::new();
        };
        if running.handle.revoked().is_some() && !published {
            self.taken.remove(&running.attempt_key);
        }
        running.duplicates
    }

    /// Attempts running or waiting now.
    #[cfg(test)]
    pub fn running(&self) -> usize {
        self.running.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::offsets::OffsetTracker;

    #[test]
    fn recent_forgets_the_oldest_past_capacity_and_age() {
        let mut r = Recent::new(2, Duration::from_secs(60));
        assert!(r.insert(1));
        assert!(!r.insert(1));
        assert!(r.insert(2));
        assert!(r.insert(3));
        assert!(!r.contains(&1), "evicted by capacity");
        assert!(r.contains(&2) && r.contains(&3));
        assert_eq!(r.len(), 2);
        let mut aged = Recent::new(10, Duration::ZERO);
        aged.insert(1);
        assert!(!aged.contains(&1), "expired at once");
    }

    const RUN: AdmitOptions = AdmitOptions {
        attach: true,
        revocable: true,
        grace: Duration::from_millis(100),
    };

    #[test]
    fn revocation_stops_the_partition_s_attempts_and_forgets_them() {
        let mut tr = OffsetTracker::new();
        let root = CancellationToken::new();
        let mut a = Attempts::default();
        let (p0, p1) = (tr.track("t", 0, 0), tr.track("t", 1, 0));
        let (e0, e1, e2) = (
            ExecutionId::random(),
            ExecutionId::random(),
            ExecutionId::random(),
        );
        let Admission::Run(h0) = a.admit("i:a:1", e0, &p0, RUN, &root) else {
            panic!("runs");
        };
        let Admission::Run(h1) = a.admit("i:b:1", e1, &p1, RUN, &root) else {
            panic!("runs");
        };
        let at_most_once = AdmitOptions {
            attach: false,
            revocable: false,
            ..RUN
        };
        let Admission::Run(h2) = a.admit("i:c:1", e2, &p0, at_most_once, &root) else {
            panic!("runs");
        };
        let revoked = BTreeSet::from([("t".to_owned(), 0)]);
        assert_eq!(a.running_in(&revoked), 1);
        assert_eq!(a.revoke(&revoked), Some(Duration::from_millis(100)));
        assert!(h0.token.is_cancelled());
        assert_eq!(h0.revoked(), Some(Duration::from_millis(100)));
        assert_eq!(h0.cancelled_by_control(), None);
        assert!(!h1.token.is_cancelled(), "another partition");
        assert!(
            !h2.token.is_cancelled(),
            "at_most_once is committed already"
        );
        assert_eq!(a.running_in(&revoked), 1, "until its runner finishes");
        a.finish(e0, false);
        assert_eq!(a.running_in(&revoked), 0);
        // the partition came back: its record runs again here
        assert!(matches!(
            a.admit("i:a:1", e0, &p0, RUN, &root),
            Admission::Run(_)
        ));
        // An attempt that published while its revocation waited stays taken:
        // its record, back uncommitted, is a duplicate.
        assert_eq!(a.revoke(&revoked), Some(Duration::from_millis(100)));
        a.finish(e0, true);
        assert!(matches!(
            a.admit("i:a:1", e0, &p0, RUN, &root),
            Admission::DuplicateOfFinished
        ));
        a.finish(e1, true);
        assert!(matches!(
            a.admit("i:b:1", e1, &p1, RUN, &root),
            Admission::DuplicateOfFinished
        ));
        assert_eq!(a.revoke(&BTreeSet::new()), None);
    }

    #[test]
    fn duplicates_cancels_and_finishing() {
        let mut tr = OffsetTracker::new();
        let root = CancellationToken::new();
        let mut a = Attempts::default();
        let exec = ExecutionId::random();
        let t0 = tr.track("t", 0, 0);
        let t1 = tr.track("t", 0, 1);
        let Admission::Run(handle) = a.admit("i:x:1", exec, &t0, RUN, &root) else {
            panic!("first dispatch runs");
        };
        assert!(matches!(
            a.admit("i:x:1", exec, &t1, RUN, &root),
            Admission::DuplicateOfRunning
        ));
        assert_eq!(a.running(), 1);
        assert_eq!(a.finish(exec, true), vec![t1.clone()]);
        assert!(matches!(
            a.admit("i:x:1", exec, &t1, RUN, &root),
            Admission::DuplicateOfFinished
        ));
        assert!(!handle.token.is_cancelled());

        // a cancel of a running attempt fires its token with the grace period
        let other = ExecutionId::random();
        let Admission::Run(h2) = a.admit("i:y:1", other, &t0, RUN, &root) else {
            panic!("runs");
        };
        assert_eq!(a.cancel(other, Duration::from_millis(250)), Some(true));
        assert_eq!(a.cancel(other, Duration::ZERO), None, "known already");
        assert!(h2.token.is_cancelled());
        assert_eq!(h2.cancelled_by_control(), Some(Duration::from_millis(250)));
        a.finish(other, false);

        // a cancel that comes first makes the dispatch skipped
        let later = ExecutionId::random();
        assert_eq!(a.cancel(later, Duration::ZERO), Some(false));
        assert!(a.is_cancelled(later));
        assert!(matches!(
            a.admit("i:z:1", later, &t0, RUN, &root),
            Admission::Cancelled
        ));
        // the shutdown token reaches every attempt
        let Admission::Run(h3) = a.admit("i:w:1", ExecutionId::random(), &t0, RUN, &root) else {
            panic!("runs");
        };
        root.cancel();
        assert!(h3.token.is_cancelled());
        assert_eq!(h3.cancelled_by_control(), None);
    }
}
