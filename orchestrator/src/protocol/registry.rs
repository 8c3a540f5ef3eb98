//! `WorkflowNodeRegistry` (the protocol's `ProtocolWorkflowNodeRegistry`): the
//! nodes of the cluster, what each can do and how busy it is.
//!
//! Semantics every implementation keeps (the conformance suite checks them):
//! a registration is a [`NodeRecord`] keyed by node id (the registration id);
//! each heartbeat replaces its health, load and active tasks and stamps it
//! with the time. The view ([`nodes`](WorkflowNodeRegistry::nodes)) lists a
//! node with its own health while it was heard from within
//! [`Liveness::unhealthy_after`], as `unhealthy` (silent) after that, and not
//! at all once silent for [`Liveness::gone_after`]; a gone registration is
//! unknown (its heartbeats answer `false`) until it registers again. Reads may
//! lag writes (the Kafka registry reads its own records back from the topic).
//!
//! A node is *capable* of some requirements when it is a `worker`, live and
//! `healthy` (never `draining`, `degraded`, `unhealthy` or silent), not
//! excluded, and satisfies them as [`weft_shared::lanes::NodeCapabilities`]
//! decides: every capability token (`gpu`, or `key=value` matched by a
//! capability or a label) and at least the asked amount of every resource in
//! its capacity limits. Capable nodes come least loaded first (load: the
//! `in_flight` current load over the `slots` capacity, or `concurrency`), ties
//! by node id; a task is assigned to its preferred node when that one is
//! capable, else to the first capable node.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use weft_shared::lanes::{NodeCapabilities, Requirements, SLOTS};
use weft_shared::model::TaskConfiguration;
use weft_shared::node::{HealthStatus, NodeRecord};

use super::{Error, Result};

/// The role of nodes that run tasks.
pub const WORKER_ROLE: &str = "worker";
/// The current-load entry counting the tasks a node runs.
pub const IN_FLIGHT: &str = "in_flight";

/// Who a node is: what `register_workflow_node` takes besides capabilities
/// and capacity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeMetadata {
    pub node_id: String,
    /// `worker` for nodes that run tasks (`orchestrator` for replicas).
    pub role: String,
    pub labels: BTreeMap<String, String>,
}

impl NodeMetadata {
    /// A worker without labels.
    pub fn worker(node_id: impl Into<String>) -> Self {
        Self {
            node_id: node_id.into(),
            role: WORKER_ROLE.to_owned(),
            labels: BTreeMap::new(),
        }
    }

    /// Adds a label (builder style).
    pub fn label(mut self, key: &str, value: &str) -> Self {
        self.labels.insert(key.to_owned(), value.to_owned());
        self
    }
}

/// How long a silent node stays listed as itself, then as unhealthy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Liveness {
    /// Silent this long: listed as `unhealthy`, never capable.
    pub unhealthy_after: Duration,
    /// Silent this long: gone from the view, its registration unknown.
    pub gone_after: Duration,
}

impl Default for Liveness {
    /// 15 s (three worker heartbeats) and 60 s.
    fn default() -> Self {
        Self {
            unhealthy_after: Duration::from_secs(15),
            gone_after: Duration::from_secs(60),
        }
    }
}

impl Liveness {
    /// `gone_after` is raised to `unhealthy_after` if shorter.
    pub fn new(unhealthy_after: Duration, gone_after: Duration) -> Self {
        Self {
            unhealthy_after,
            gone_after: gone_after.max(unhealthy_after),
        }
    }

    /// Whether a node last heard from at `heartbeat_at_ms` is gone at `now_ms`.
    pub fn is_gone(&self, heartbeat_at_ms: i64, now_ms: i64) -> bool {
        now_ms - heartbeat_at_ms > millis(self.gone_after)
    }
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// A node as the registry sees it now: its latest record and its liveness.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeView {
    pub record: NodeRecord,
    /// The record's health while the node is heard from, `unhealthy` once silent.
    pub health: HealthStatus,
    /// Not heard from within [`Liveness::unhealthy_after`].
    pub silent: bool,
    /// Time since its last heartbeat (its clock against ours; at least 0).
    pub heartbeat_age_ms: i64,
}

impl NodeView {
    /// The view of `record` at `now_ms`; `None` once it is gone.
    pub fn of(record: NodeRecord, liveness: &Liveness, now_ms: i64) -> Option<Self> {
        if liveness.is_gone(record.heartbeat_at_ms, now_ms) {
            return None;
        }
        let heartbeat_age_ms = (now_ms - record.heartbeat_at_ms).max(0);
        let silent = heartbeat_age_ms > millis(liveness.unhealthy_after);
        let health = if silent {
            HealthStatus::Unhealthy
        } else {
            record.health
        };
        Some(Self {
            record,
            health,
            silent,
            heartbeat_age_ms,
        })
    }

    pub fn node_id(&self) -> &str {
        &self.record.node_id
    }

    /// `in_flight` over the capacity in slots (at least 1).
    pub fn load(&self) -> f64 {
        let in_flight = self.record.current_load.get(IN_FLIGHT).copied();
        let slots = NodeCapabilities::of_record(&self.record).capacity_of(SLOTS);
        in_flight.unwrap_or(0).max(0) as f64 / slots.max(1) as f64
    }

    /// Whether it may take work: a live, healthy worker.
    pub fn is_available(&self) -> bool {
        self.record.role == WORKER_ROLE && self.health == HealthStatus::Healthy
    }
}

/// The available nodes of `views` that satisfy `req` and are not excluded,
/// least loaded first, ties by node id.
pub fn capable(views: Vec<NodeView>, req: &Requirements, exclude: &[String]) -> Vec<NodeView> {
    let mut found: Vec<NodeView> = views
        .into_iter()
        .filter(|v| v.is_available() && !exclude.iter().any(|x| x == v.node_id()))
        .filter(|v| NodeCapabilities::of_record(&v.record).satisfies(req))
        .collect();
    found.sort_by(|a, b| {
        a.load()
            .partial_cmp(&b.load())
            .unwrap_or(Ordering::Equal)
            .then_with(|| a.node_id().cmp(b.node_id()))
    });
    found
}

/// The node a task goes to among `capable` ones (as [`capable`] orders them):
/// `preferred` if it is one of them, else the first.
pub fn choose(capable: &[NodeView], preferred: Option<&str>) -> Option<String> {
    preferred
        .and_then(|p| capable.iter().find(|v| v.node_id() == p))
        .or_else(|| capable.first())
        .map(|v| v.node_id().to_owned())
}

/// Checks a registration: a node id and a role, no negative capacity.
pub fn validate_registration(
    node: &NodeMetadata,
    capacity_limits: &BTreeMap<String, i64>,
) -> Result<()> {
    if node.node_id.trim().is_empty() {
        return Err(Error::InvalidNode("a node needs a node id".into()));
    }
    if node.role.trim().is_empty() {
        return Err(Error::InvalidNode(format!(
            "node '{}' needs a role (worker or orchestrator)",
            node.node_id
        )));
    }
    if let Some((name, n)) = capacity_limits.iter().find(|(_, n)| **n < 0) {
        return Err(Error::InvalidNode(format!(
            "node '{}' declares a negative capacity {n} of '{name}'",
            node.node_id
        )));
    }
    Ok(())
}

/// The record of a new registration at `now_ms`: healthy, idle.
pub fn registration_record(
    node: NodeMetadata,
    capabilities: Vec<String>,
    capacity_limits: BTreeMap<String, i64>,
    now_ms: i64,
) -> NodeRecord {
    NodeRecord {
        node_id: node.node_id,
        role: node.role,
        capabilities,
        capacity_limits,
        current_load: BTreeMap::new(),
        active_tasks: Vec::new(),
        health: HealthStatus::Healthy,
        labels: node.labels,
        started_at_ms: now_ms,
        heartbeat_at_ms: now_ms,
    }
}

/// `known` after a heartbeat at `now_ms` (never earlier than its last one).
pub fn heartbeat_record(
    mut known: NodeRecord,
    health: HealthStatus,
    current_load: BTreeMap<String, i64>,
    active_tasks: Vec<String>,
    now_ms: i64,
) -> NodeRecord {
    known.health = health;
    known.current_load = current_load;
    known.active_tasks = active_tasks;
    known.heartbeat_at_ms = now_ms.max(known.heartbeat_at_ms);
    known
}

/// Registering nodes, their heartbeats, and finding nodes for tasks.
#[async_trait]
pub trait WorkflowNodeRegistry: Send + Sync {
    /// Registers (or registers again) a node with what it can do and how
    /// much; returns the registration id (its node id).
    async fn register_workflow_node(
        &self,
        node_metadata: NodeMetadata,
        capabilities: Vec<String>,
        capacity_limits: BTreeMap<String, i64>,
    ) -> Result<String>;

    /// Records a heartbeat of a registered node; `false` if the registration
    /// is unknown (never made, or gone).
    async fn update_node_heartbeat(
        &self,
        registration_id: &str,
        health: HealthStatus,
        current_load: BTreeMap<String, i64>,
        active_tasks: Vec<String>,
    ) -> Result<bool>;

    /// Every node of the view (gone ones left out), by role then node id.
    async fn nodes(&self) -> Result<Vec<NodeView>>;

    /// How long nodes stay live, then listed, once silent.
    fn liveness(&self) -> Liveness;

    /// The capable nodes (see the module doc), least loaded first.
    async fn find_capable_nodes(
        &self,
        required_capabilities: &[String],
        resource_requirements: &BTreeMap<String, i64>,
        exclude_nodes: &[String],
    ) -> Result<Vec<NodeView>> {
        let req = Requirements::new(
            required_capabilities.iter().cloned(),
            resource_requirements.clone(),
        );
        Ok(capable(self.nodes().await?, &req, exclude_nodes))
    }

    /// The node `task` should run on: `preferred_node` when it is capable,
    /// else the least loaded capable node; `None` when no node is capable.
    async fn assign_task_to_node(
        &self,
        task: &TaskConfiguration,
        preferred_node: Option<&str>,
    ) -> Result<Option<String>> {
        let req = Requirements::of_task(task).map_err(|e| {
            Error::InvalidTask(format!("task '{}' cannot be placed: {e}", task.name))
        })?;
        let found = capable(self.nodes().await?, &req, &[]);
        let chosen = choose(&found, preferred_node);
        tracing::debug!(
            task = %task.name,
            preferred = preferred_node.unwrap_or(""),
            capable = found.len(),
            node_id = chosen.as_deref().unwrap_or(""),
            "task assigned to a node"
        );
        Ok(chosen)
    }
}
