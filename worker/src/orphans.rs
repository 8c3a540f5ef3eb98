//! Detects task partitions nobody consumes. Some brokers (Tansu 0.6) finish a
//! rebalance that a just-killed member was part of and hand it partitions it
//! never reads; its session is never expired, so those partitions stall while
//! the live members happily consume the rest. Every [`CHECK_EVERY`] this
//! watch looks at the partitions of the subscribed task topics that are not
//! assigned here: one whose group offset has not moved for [`ORPHAN_AFTER`]
//! while records wait behind it, and that no worker heartbeating on the node
//! registry holds ([`Claims`]), is taken to be orphaned, and the worker leaves
//! and rejoins the group, which makes the coordinator drop the dead member.
//! A worker busy on one long task holds its partition and heartbeats, so its
//! partition is not orphaned however long the task runs. The watch runs only
//! with the development-broker workarounds on (`kafka.broker_workarounds`).

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use rdkafka::consumer::Consumer;
use rdkafka::{Offset, TopicPartitionList};
use weft_shared::topics::TopicKind;
use weft_shared::Topics;

use crate::claims::Claims;
use crate::consumer::TaskConsumer;

/// How often the watch runs.
pub const CHECK_EVERY: Duration = Duration::from_secs(10);
/// How long a partition with waiting records may go without progress.
pub const ORPHAN_AFTER: Duration = Duration::from_secs(40);
/// Broker round trips of one check are bounded by this.
const CALL_TIMEOUT: Duration = Duration::from_secs(2);

/// Progress last seen per partition not assigned here.
pub(crate) struct OrphanWatch {
    seen: HashMap<(String, i32), (i64, Instant)>,
    orphan_after: Duration,
}

impl OrphanWatch {
    /// A watch that calls a partition orphaned after `orphan_after` without progress.
    pub(crate) fn new(orphan_after: Duration) -> Self {
        Self {
            seen: HashMap::new(),
            orphan_after,
        }
    }

    /// Checks once; true when it rejoined the group.
    pub(crate) fn check(
        &mut self,
        consumer: &TaskConsumer,
        topics: &Topics,
        claims: &Claims,
    ) -> bool {
        let orphans = blocking(|| self.orphans(consumer, topics, claims));
        if orphans.is_empty() {
            return false;
        }
        tracing::warn!(orphans = ?orphans, "task partitions make no progress and are not assigned here; rejoining the group");
        self.seen.clear();
        crate::consumer::rejoin(consumer)
    }

    fn orphans(
        &mut self,
        consumer: &TaskConsumer,
        topics: &Topics,
        claims: &Claims,
    ) -> Vec<String> {
        let Ok(mine) = consumer.assignment() else {
            return Vec::new();
        };
        let mine: BTreeSet<(String, i32)> = mine
            .elements()
            .iter()
            .map(|e| (e.topic().to_owned(), e.partition()))
            .collect();
        if mine.is_empty() {
            return Vec::new(); // the idle watch (`unowned`) handles that
        }
        let Ok(md) = consumer.fetch_metadata(None, CALL_TIMEOUT) else {
            return Vec::new();
        };
        let wanted: BTreeSet<&str> = mine.iter().map(|(t, _)| t.as_str()).collect();
        let mut others = TopicPartitionList::new();
        for t in md.topics() {
            let is_tasks = matches!(topics.parse(t.name()), Some((_, TopicKind::Tasks)));
            if !is_tasks || !wanted.contains(t.name()) {
                continue;
            }
            for p in t.partitions() {
                if !mine.contains(&(t.name().to_owned(), p.id())) {
                    let _ = others.add_partition(t.name(), p.id());
                }
            }
        }
        if others.count() == 0 {
            return Vec::new();
        }
        let Ok(committed) = consumer.committed_offsets(others, CALL_TIMEOUT) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        let now = Instant::now();
        for e in committed.elements() {
            let key = (e.topic().to_owned(), e.partition());
            let Ok((low, high)) = consumer.fetch_watermarks(e.topic(), e.partition(), CALL_TIMEOUT)
            else {
                continue;
            };
            let at = match e.offset() {
                Offset::Offset(o) => o,
                _ => low,
            };
            if at >= high {
                self.seen.remove(&key);
                continue;
            }
            match self.seen.get(&key) {
                Some((prev, since)) if *prev == at => {
                    let stalled = now.duration_since(*since) >= self.orphan_after;
                    if stalled && claims.claimed(&key) == Some(false) {
                        out.push(format!("{}/{} at {at} of {high}", key.0, key.1));
                    }
                }
                _ => {
                    self.seen.insert(key, (at, now));
                }
            }
        }
        out
    }
}

/// Runs a blocking broker call without stalling other tasks where possible.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}
