//! Readiness: which partitions this orchestrator owns and whether each has
//! finished replaying. `/readyz` is green once the consumer is subscribed and
//! every owned partition is live.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

/// Shared readiness state.
#[derive(Default)]
pub struct Status {
    subscribed: AtomicBool,
    partitions: Mutex<BTreeMap<String, bool>>,
}

impl Status {
    pub fn set_subscribed(&self) {
        self.subscribed.store(true, Ordering::SeqCst);
    }

    pub fn set_live(&self, scope: &str, live: bool) {
        self.partitions
            .lock()
            .expect("status lock")
            .insert(scope.to_owned(), live);
    }

    pub fn remove(&self, scope: &str) {
        self.partitions.lock().expect("status lock").remove(scope);
    }

    /// `(ready, partitions still replaying)`.
    pub fn readiness(&self) -> (bool, Vec<String>) {
        let replaying: Vec<String> = self
            .partitions
            .lock()
            .expect("status lock")
            .iter()
            .filter(|(_, live)| !**live)
            .map(|(k, _)| k.clone())
            .collect();
        (
            self.subscribed.load(Ordering::SeqCst) && replaying.is_empty(),
            replaying,
        )
    }

    /// Owned partitions and whether each is live.
    pub fn partitions(&self) -> BTreeMap<String, bool> {
        self.partitions.lock().expect("status lock").clone()
    }
}
