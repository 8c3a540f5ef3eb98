//! The replicas of the orchestrator group and which partitions each owns, as
//! they announce themselves on the node registry topic (`weft.nodes`, keyed by
//! node id). An announcement is a [`NodeRecord`] with role `orchestrator`; the
//! API base URL and the owned partitions travel as labels:
//!
//! | label | value |
//! |---|---|
//! | `weft.api_url` | base URL other replicas forward requests to |
//! | `weft.partition.<topic>/<partition>` | `live@<since ms>` or `replaying@<since ms>` |
//!
//! [`Replicas`] folds the announcements into an ownership map. A replica not
//! heard from for [`STALE_AFTER`] (three announcement periods) is forgotten; of
//! two fresh replicas that claim the same partition, the one that was assigned
//! it later wins (the other is about to release it or has died). [`tasks`]
//! publishes this replica's announcements and takes in everybody's from the
//! one follower of the topic, the
//! [`KafkaNodeRegistry`](crate::protocol::KafkaNodeRegistry)'s.

pub mod tasks;
pub mod watchdog;

use std::collections::{BTreeMap, HashMap};
use std::sync::RwLock;
use std::time::Duration;

use weft_shared::event::now_ms;
use weft_shared::node::{HealthStatus, NodeRecord};

use crate::status::Owned;

/// Time between two announcements of a replica (it also announces at once on
/// every change of its partitions).
pub const ANNOUNCE_INTERVAL: Duration = Duration::from_secs(2);
/// A replica not heard from for this long is taken as gone.
pub const STALE_AFTER: Duration = Duration::from_secs(3 * ANNOUNCE_INTERVAL.as_secs());
/// The role of orchestrator records in the node registry.
pub const ROLE: &str = "orchestrator";

const LABEL_URL: &str = "weft.api_url";
const LABEL_PARTITION: &str = "weft.partition.";

/// What a replica says about itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Announcement {
    pub node_id: String,
    pub api_url: String,
    /// Owned partitions by status scope (`<topic>/<partition>`).
    pub partitions: BTreeMap<String, Owned>,
    /// A last announcement on shutdown: owns nothing any more.
    pub draining: bool,
    pub started_at_ms: i64,
    /// The replica's clock when it sent this.
    pub at_ms: i64,
}

impl Announcement {
    /// The node registry record carrying this announcement.
    pub fn to_record(&self) -> NodeRecord {
        let mut labels = BTreeMap::from([
            (LABEL_URL.to_owned(), self.api_url.clone()),
            ("version".to_owned(), env!("CARGO_PKG_VERSION").to_owned()),
        ]);
        let mut replaying = 0;
        for (scope, o) in &self.partitions {
            let state = if o.live { "live" } else { "replaying" };
            replaying += i64::from(!o.live);
            labels.insert(
                format!("{LABEL_PARTITION}{scope}"),
                format!("{state}@{}", o.since_ms),
            );
        }
        let health = match (self.draining, replaying) {
            (true, _) => HealthStatus::Draining,
            (false, 0) => HealthStatus::Healthy,
            (false, _) => HealthStatus::Degraded,
        };
        NodeRecord {
            node_id: self.node_id.clone(),
            role: ROLE.to_owned(),
            capabilities: Vec::new(),
            capacity_limits: BTreeMap::new(),
            current_load: BTreeMap::from([
                ("partitions".to_owned(), self.partitions.len() as i64),
                ("partitions_replaying".to_owned(), replaying),
            ]),
            active_tasks: Vec::new(),
            health,
            labels,
            started_at_ms: self.started_at_ms,
            heartbeat_at_ms: self.at_ms,
        }
    }

    /// The announcement in an orchestrator's record; `None` for other roles or
    /// a record without an API URL. Unreadable partition labels are skipped.
    pub fn from_record(r: &NodeRecord) -> Option<Self> {
        if r.role != ROLE {
            return None;
        }
        let api_url = r.labels.get(LABEL_URL)?.clone();
        let mut partitions = BTreeMap::new();
        for (k, v) in &r.labels {
            let Some(scope) = k.strip_prefix(LABEL_PARTITION) else {
                continue;
            };
            let Some((state, since)) = v.split_once('@') else {
                continue;
            };
            let (Ok(since_ms), live) = (since.parse(), state == "live") else {
                continue;
            };
            partitions.insert(scope.to_owned(), Owned { live, since_ms });
        }
        Some(Self {
            node_id: r.node_id.clone(),
            api_url,
            partitions,
            draining: r.health == HealthStatus::Draining,
            started_at_ms: r.started_at_ms,
            at_ms: r.heartbeat_at_ms,
        })
    }
}

/// The owner of a partition as the announcements tell it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Owner {
    pub node_id: String,
    pub api_url: String,
    pub live: bool,
    /// When it was assigned the partition (its clock).
    pub since_ms: i64,
}

/// The latest announcement of every replica.
#[derive(Default)]
pub struct Replicas {
    nodes: RwLock<HashMap<String, Announcement>>,
}

impl Replicas {
    /// Takes in an announcement (an older one than known is ignored).
    pub fn apply(&self, a: Announcement) {
        let mut nodes = self.nodes.write().expect("replicas lock");
        if nodes
            .get(&a.node_id)
            .is_some_and(|known| known.at_ms > a.at_ms)
        {
            return;
        }
        nodes.insert(a.node_id.clone(), a);
    }

    /// The owner of `scope` at `now_ms` other than `except` (this replica,
    /// which knows its own partitions better): among the replicas heard from
    /// within [`STALE_AFTER`] that claim it, the one assigned it last.
    pub fn owner(&self, scope: &str, now_ms: i64, except: &str) -> Option<Owner> {
        let stale_before = now_ms - STALE_AFTER.as_millis() as i64;
        let nodes = self.nodes.read().expect("replicas lock");
        nodes
            .values()
            .filter(|a| a.node_id != except && !a.draining && a.at_ms >= stale_before)
            .filter_map(|a| a.partitions.get(scope).map(|o| (a, o)))
            .max_by(|(a, x), (b, y)| (x.since_ms, &a.node_id).cmp(&(y.since_ms, &b.node_id)))
            .map(|(a, o)| Owner {
                node_id: a.node_id.clone(),
                api_url: a.api_url.clone(),
                live: o.live,
                since_ms: o.since_ms,
            })
    }

    /// Node ids of the replicas heard from within [`STALE_AFTER`] of now.
    pub fn fresh(&self) -> Vec<String> {
        let stale_before = now_ms() - STALE_AFTER.as_millis() as i64;
        let nodes = self.nodes.read().expect("replicas lock");
        let mut ids: Vec<String> = nodes
            .values()
            .filter(|a| !a.draining && a.at_ms >= stale_before)
            .map(|a| a.node_id.clone())
            .collect();
        ids.sort();
        ids
    }
}

#[cfg(test)]
mod tests {
    use weft_shared::avro::AvroRecord;

    use super::*;

    fn ann(node: &str, at_ms: i64, parts: &[(&str, bool, i64)]) -> Announcement {
        Announcement {
            node_id: node.into(),
            api_url: format!("http://{node}"),
            partitions: parts
                .iter()
                .map(|(s, live, since_ms)| {
                    (
                        (*s).to_owned(),
                        Owned {
                            live: *live,
                            since_ms: *since_ms,
                        },
                    )
                })
                .collect(),
            draining: false,
            started_at_ms: 1,
            at_ms,
        }
    }

    #[test]
    fn announcements_round_trip_through_the_node_record() {
        let a = ann(
            "o-1",
            1_000,
            &[("weft.x.events/0", true, 5), ("weft.x.events/3", false, 9)],
        );
        let record = NodeRecord::decode(&a.to_record().encode()).expect("decodes");
        assert_eq!(record.health, HealthStatus::Degraded);
        assert_eq!(Announcement::from_record(&record), Some(a));
        let mut worker = record;
        worker.role = "worker".into();
        assert_eq!(Announcement::from_record(&worker), None);
    }

    #[test]
    fn the_latest_fresh_claim_owns_a_partition() {
        let r = Replicas::default();
        let now = 100_000;
        r.apply(ann(
            "a",
            now - 1_000,
            &[("t/0", true, 10), ("t/1", true, 10)],
        ));
        r.apply(ann("b", now - 500, &[("t/1", false, 50)]));
        let owner = |s| r.owner(s, now, "me").map(|o| (o.node_id, o.live));
        assert_eq!(owner("t/0"), Some(("a".into(), true)));
        // b was assigned t/1 after a: a is about to release it, or dead.
        assert_eq!(owner("t/1"), Some(("b".into(), false)));
        assert_eq!(owner("t/2"), None);
        // Not heard from for three periods: gone.
        let later = now - 1_000 + STALE_AFTER.as_millis() as i64 + 1;
        assert_eq!(r.owner("t/0", later, "me"), None);
        // Itself is left out; an older announcement does not replace a newer one.
        assert_eq!(r.owner("t/0", now, "a"), None);
        r.apply(ann("b", now - 900, &[]));
        assert_eq!(owner("t/1"), Some(("b".into(), false)));
        // Draining: owns nothing.
        let mut bye = ann("a", now, &[("t/0", true, 10)]);
        bye.draining = true;
        r.apply(bye);
        assert_eq!(owner("t/0"), None);
    }
}
