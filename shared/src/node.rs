//! Node registry records, kept in the compacted `weft.nodes` topic keyed by
//! node id: what a worker or orchestrator can do, how much, and when it was last
//! seen.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::model::string_enum;

string_enum!(
    /// Health a node reports in its heartbeat.
    HealthStatus {
        Healthy = "healthy",
        Degraded = "degraded",
        Unhealthy = "unhealthy",
        Draining = "draining",
    }
);

/// A node's registration and latest heartbeat.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodeRecord {
    pub node_id: String,
    /// `orchestrator` or `worker`.
    pub role: String,
    pub capabilities: Vec<String>,
    pub capacity_limits: BTreeMap<String, i64>,
    pub current_load: BTreeMap<String, i64>,
    pub active_tasks: Vec<String>,
    pub health: HealthStatus,
    pub labels: BTreeMap<String, String>,
    pub started_at_ms: i64,
    pub heartbeat_at_ms: i64,
}
