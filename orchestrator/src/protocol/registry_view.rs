//! The node table both registries keep: the latest [`NodeRecord`] of every
//! node, by node id. A record older (by heartbeat time) than the one known is
//! ignored, so records may arrive late or twice; records of gone nodes are
//! dropped when the view is read.

use std::collections::HashMap;
use std::sync::RwLock;

use weft_shared::node::NodeRecord;

use super::registry::{Liveness, NodeView};

/// The latest record of every node.
#[derive(Default)]
pub struct NodeTable {
    records: RwLock<HashMap<String, NodeRecord>>,
}

impl NodeTable {
    /// Keeps `record` unless a newer one of its node is known; whether kept.
    pub fn observe(&self, record: NodeRecord) -> bool {
        let mut records = self.records.write().unwrap_or_else(|p| p.into_inner());
        if records
            .get(&record.node_id)
            .is_some_and(|known| known.heartbeat_at_ms > record.heartbeat_at_ms)
        {
            return false;
        }
        records.insert(record.node_id.clone(), record);
        true
    }

    /// The latest record of `node_id`, gone or not.
    pub fn get(&self, node_id: &str) -> Option<NodeRecord> {
        let records = self.records.read().unwrap_or_else(|p| p.into_inner());
        records.get(node_id).cloned()
    }

    /// The view at `now_ms` by (role, node id); forgets the gone nodes.
    pub fn views(&self, liveness: &Liveness, now_ms: i64) -> Vec<NodeView> {
        let mut records = self.records.write().unwrap_or_else(|p| p.into_inner());
        records.retain(|_, r| !liveness.is_gone(r.heartbeat_at_ms, now_ms));
        let mut all: Vec<NodeView> = records
            .values()
            .filter_map(|r| NodeView::of(r.clone(), liveness, now_ms))
            .collect();
        all.sort_by(|a, b| (&a.record.role, a.node_id()).cmp(&(&b.record.role, b.node_id())));
        all
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use weft_shared::node::HealthStatus;

    use super::*;

    fn record(node: &str, role: &str, at_ms: i64) -> NodeRecord {
        NodeRecord {
            node_id: node.into(),
            role: role.into(),
            capabilities: vec![],
            capacity_limits: BTreeMap::new(),
            current_load: BTreeMap::new(),
            active_tasks: vec![],
            health: HealthStatus::Draining,
            labels: BTreeMap::new(),
            started_at_ms: 1,
            heartbeat_at_ms: at_ms,
        }
    }

    #[test]
    fn newest_record_wins_and_silence_turns_unhealthy_then_gone() {
        let t = NodeTable::default();
        let l = Liveness::new(Duration::from_millis(100), Duration::from_millis(300));
        assert!(t.observe(record("w", "worker", 1_000)));
        assert!(!t.observe(record("w", "worker", 999)), "older is ignored");
        assert!(
            t.observe(record("w", "worker", 1_000)),
            "same time replaces"
        );
        assert!(t.observe(record("o", "orchestrator", 1_050)));
        let at = |now| {
            t.views(&l, now)
                .into_iter()
                .map(|v| (v.record.node_id, v.health, v.silent, v.heartbeat_age_ms))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            at(1_100),
            vec![
                ("o".into(), HealthStatus::Draining, false, 50),
                ("w".into(), HealthStatus::Draining, false, 100),
            ]
        );
        assert_eq!(
            at(1_101)[1],
            ("w".into(), HealthStatus::Unhealthy, true, 101)
        );
        assert_eq!(at(1_301).len(), 1, "w is gone after 300 ms");
        assert_eq!(t.get("w"), None, "and forgotten");
        // A clock ahead of ours: age 0, not negative.
        t.observe(record("w", "worker", 2_000));
        assert_eq!(
            at(1_400),
            vec![("w".into(), HealthStatus::Draining, false, 0)]
        );
    }
}
