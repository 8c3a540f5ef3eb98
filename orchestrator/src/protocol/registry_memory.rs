//! [`WorkflowNodeRegistry`] in memory: registrations and heartbeats go
//! straight into a [`NodeTable`], so reads see writes at once. For tests and
//! embedding; the orchestrator uses [`KafkaNodeRegistry`](super::KafkaNodeRegistry).

use std::collections::BTreeMap;

use async_trait::async_trait;
use weft_shared::event::now_ms;
use weft_shared::node::HealthStatus;

use super::registry::{
    heartbeat_record, registration_record, validate_registration, Liveness, NodeMetadata, NodeView,
    WorkflowNodeRegistry,
};
use super::registry_view::NodeTable;
use super::Result;

/// In-memory node registry.
#[derive(Default)]
pub struct InMemoryNodeRegistry {
    table: NodeTable,
    liveness: Liveness,
}

impl InMemoryNodeRegistry {
    /// An empty registry with the given liveness durations.
    pub fn new(liveness: Liveness) -> Self {
        Self {
            table: NodeTable::default(),
            liveness,
        }
    }
}

#[async_trait]
impl WorkflowNodeRegistry for InMemoryNodeRegistry {
    async fn register_workflow_node(
        &self,
        node_metadata: NodeMetadata,
        capabilities: Vec<String>,
        capacity_limits: BTreeMap<String, i64>,
    ) -> Result<String> {
        validate_registration(&node_metadata, &capacity_limits)?;
        let record = registration_record(node_metadata, capabilities, capacity_limits, now_ms());
        let id = record.node_id.clone();
        self.table.observe(record);
        tracing::debug!(node_id = %id, "node registered");
        Ok(id)
    }

    async fn update_node_heartbeat(
        &self,
        registration_id: &str,
        health: HealthStatus,
        current_load: BTreeMap<String, i64>,
        active_tasks: Vec<String>,
    ) -> Result<bool> {
        let now = now_ms();
        let Some(known) = self
            .table
            .get(registration_id)
            .filter(|r| !self.liveness.is_gone(r.heartbeat_at_ms, now))
        else {
            return Ok(false);
        };
        let record = heartbeat_record(known, health, current_load, active_tasks, now);
        self.table.observe(record);
        Ok(true)
    }

    async fn nodes(&self) -> Result<Vec<NodeView>> {
        Ok(self.table.views(&self.liveness, now_ms()))
    }

    fn liveness(&self) -> Liveness {
        self.liveness
    }
}
