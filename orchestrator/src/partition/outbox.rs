//! A partition's outbox mirrored in memory, and the rule that keeps a dispatch
//! from being published once it is pointless: a dispatch goes out only while
//! its attempt is the task's current one, still `scheduled` (no worker has
//! reported on it), and its instance has not ended. The rule is applied at
//! publish time against the projection, so a go-live after replay, a restart
//! with a pending outbox and a rebuild never send a worker an attempt that has
//! already reported.

use std::collections::{BTreeMap, HashMap};

use weft_shared::fsm::InstanceState;
use weft_shared::ids::InstanceId;
use weft_shared::state::TaskState;

use crate::store::{OutboxKind, OutboxRecord};

/// The outbox of one partition.
#[derive(Default)]
pub struct Outbox {
    pub records: BTreeMap<u64, OutboxRecord>,
    pub by_ident: HashMap<String, u64>,
    pub next_seq: u64,
}

impl Outbox {
    /// The outbox as stored.
    pub fn load(stored: Vec<(u64, OutboxRecord)>) -> Self {
        let mut outbox = Self::default();
        for (seq, r) in stored {
            outbox.by_ident.insert(r.ident.clone(), seq);
            outbox.records.insert(seq, r);
            outbox.next_seq = seq + 1;
        }
        outbox
    }

    pub fn push(&mut self, r: OutboxRecord) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.by_ident.insert(r.ident.clone(), seq);
        self.records.insert(seq, r);
        seq
    }

    pub fn remove(&mut self, ident: &str) -> Option<u64> {
        let seq = self.by_ident.remove(ident)?;
        self.records.remove(&seq);
        Some(seq)
    }

    /// Removes the entry `seq` (published or withheld).
    pub fn take(&mut self, seq: u64) -> Option<OutboxRecord> {
        let r = self.records.remove(&seq)?;
        if self.by_ident.get(&r.ident) == Some(&seq) {
            self.by_ident.remove(&r.ident);
        }
        Some(r)
    }

    /// Pushes `r` in place of a pending record with the same ident (a newer
    /// snapshot of an instance supersedes one not yet published).
    pub fn replace(&mut self, r: OutboxRecord, added: &mut Vec<u64>, removed: &mut Vec<u64>) {
        removed.extend(self.remove(&r.ident));
        added.push(self.push(r));
    }
}

/// The instance, task and attempt a dispatch's ident (`<instance>:<task>:<attempt>`) names.
pub fn dispatch_attempt(ident: &str) -> Option<(InstanceId, &str, u32)> {
    let (id, rest) = ident.split_once(':')?;
    let (task, attempt) = rest.rsplit_once(':')?;
    Some((id.parse().ok()?, task, attempt.parse().ok()?))
}

/// Whether a dispatch of `task` attempt `attempt` is still worth publishing
/// given its instance's state now (`None`: no such instance).
pub fn dispatch_wanted(state: Option<&InstanceState>, task: &str, attempt: u32) -> bool {
    let Some(s) = state else { return false };
    if s.state.is_terminal() {
        return false;
    }
    let Some(t) = s.tasks.get(task) else {
        return false;
    };
    t.attempt == attempt && t.state == TaskState::Scheduled
}

/// Whether `r` is a dispatch (the only kind the rule withholds).
pub fn is_dispatch(r: &OutboxRecord) -> bool {
    r.kind == OutboxKind::Dispatch
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dispatch_idents_parse() {
        let id = InstanceId::random();
        let ident = format!("{id}:charge:card:3");
        assert_eq!(dispatch_attempt(&ident), Some((id, "charge:card", 3)));
        assert_eq!(dispatch_attempt("nonsense"), None);
    }
}
