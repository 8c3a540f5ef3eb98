//! Readiness and ownership: which partitions this orchestrator owns, since
//! when, and whether each has finished replaying. `/readyz` is green once the
//! consumer is subscribed and every owned partition is live. The engine claims
//! a partition as soon as the group assigns it (it replays from then on) and
//! releases it on revocation; the partition processor only flips it to live.
//! Every change bumps a version that the replica announcer watches. The
//! ownership watchdog asks the engine to rejoin its group through here too.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use tokio::sync::watch;
use weft_shared::event::now_ms;

/// The status key of a partition: `<topic>/<partition>`.
pub fn scope(topic: &str, partition: i32) -> String {
    format!("{topic}/{partition}")
}

/// One owned partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Owned {
    /// Replay finished: decisions are published as they are made.
    pub live: bool,
    /// When this replica was assigned the partition (epoch ms).
    pub since_ms: i64,
}

/// Shared readiness state.
pub struct Status {
    subscribed: AtomicBool,
    partitions: Mutex<BTreeMap<String, Owned>>,
    changes: watch::Sender<u64>,
    rejoin: watch::Sender<u64>,
}

impl Default for Status {
    fn default() -> Self {
        Self {
            subscribed: AtomicBool::new(false),
            partitions: Mutex::new(BTreeMap::new()),
            changes: watch::channel(0).0,
            rejoin: watch::channel(0).0,
        }
    }
}

impl Status {
    pub fn set_subscribed(&self) {
        self.subscribed.store(true, Ordering::SeqCst);
    }

    fn changed(&self) {
        self.changes.send_modify(|v| *v += 1);
    }

    /// The partition was assigned to this replica: owned, replaying.
    pub fn claim(&self, scope: &str) {
        let owned = Owned {
            live: false,
            since_ms: now_ms(),
        };
        self.partitions
            .lock()
            .expect("status lock")
            .insert(scope.to_owned(), owned);
        self.changed();
    }

    /// Marks a claimed partition live (or replaying); ignored for a partition
    /// that is no longer claimed (a revoked processor finishing its batch).
    pub fn set_live(&self, scope: &str, live: bool) {
        let changed = match self.partitions.lock().expect("status lock").get_mut(scope) {
            Some(o) if o.live != live => {
                o.live = live;
                true
            }
            _ => false,
        };
        if changed {
            self.changed();
        }
    }

    /// The partition was revoked.
    pub fn remove(&self, scope: &str) {
        let removed = self
            .partitions
            .lock()
            .expect("status lock")
            .remove(scope)
            .is_some();
        if removed {
            self.changed();
        }
    }

    /// `(ready, partitions still replaying)`.
    pub fn readiness(&self) -> (bool, Vec<String>) {
        let replaying: Vec<String> = self
            .partitions
            .lock()
            .expect("status lock")
            .iter()
            .filter(|(_, o)| !o.live)
            .map(|(k, _)| k.clone())
            .collect();
        (
            self.subscribed.load(Ordering::SeqCst) && replaying.is_empty(),
            replaying,
        )
    }

    /// Owned partitions and whether each is live.
    pub fn partitions(&self) -> BTreeMap<String, bool> {
        self.owned().into_iter().map(|(k, o)| (k, o.live)).collect()
    }

    /// Owned partitions with their state.
    pub fn owned(&self) -> BTreeMap<String, Owned> {
        self.partitions.lock().expect("status lock").clone()
    }

    /// One partition, if this replica owns it.
    pub fn owns(&self, scope: &str) -> Option<Owned> {
        self.partitions
            .lock()
            .expect("status lock")
            .get(scope)
            .copied()
    }

    /// Notified on every claim, release and change of liveness.
    pub fn watch(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Asks the engine to leave its consumer group and join afresh.
    pub fn request_rejoin(&self) {
        self.rejoin.send_modify(|v| *v += 1);
    }

    /// Notified on every [`request_rejoin`](Self::request_rejoin).
    pub fn rejoin_requests(&self) -> watch::Receiver<u64> {
        self.rejoin.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claimed_partitions_replay_until_live() {
        let s = Status::default();
        s.set_subscribed();
        assert!(s.readiness().0);
        let changes = s.watch();
        s.claim("t/0");
        assert!(changes.has_changed().unwrap());
        assert_eq!(s.readiness(), (false, vec!["t/0".to_owned()]));
        s.set_live("t/0", true);
        assert!(s.readiness().0);
        assert!(s.owns("t/0").is_some_and(|o| o.live));
        s.remove("t/0");
        // A revoked processor that goes live late does not resurrect the claim.
        s.set_live("t/0", true);
        assert!(s.owns("t/0").is_none());
        assert!(s.partitions().is_empty());
    }
}
