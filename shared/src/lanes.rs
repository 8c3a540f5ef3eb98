//! Lanes: where a task's dispatch goes so that only a worker able to run it
//! takes it. A task's [`Requirements`] — the capabilities it needs (declared
//! in `constraints.capabilities`, plus its `node_selector` pairs as
//! `key=value`), the resources it takes (`resource_requirements`) and whether
//! it is urgent (`critical` or `high` priority) — name a lane, and the lane
//! names a task topic: `weft.<type>.tasks` plus one dot-separated token per
//! requirement, in canonical order:
//!
//! | requirement | token |
//! |---|---|
//! | priority `critical` or `high` | `urgent` (always first) |
//! | capability `gpu` | `cap-gpu` |
//! | node selector `region: eu` | `sel-region--eu` |
//! | resource `cpu: 2` | `res-cpu--2` |
//!
//! so a task asking for a GPU in the EU with two CPUs at high priority goes to
//! `weft.render.tasks.urgent.cap-gpu.res-cpu--2.sel-region--eu`. A worker
//! subscribes (in the one worker consumer group) to every task topic whose
//! requirements its [`NodeCapabilities`] satisfy: Kafka's group assignment
//! then spreads each lane over exactly the workers able to serve it, records
//! stay keyed by instance id, and no topic is per node. Names (capabilities,
//! label keys and values, resource names) are letters, digits and `_`, with
//! single `-` between them, so a topic name parses back into its requirements.

use std::collections::{BTreeMap, BTreeSet};

use crate::data::WorkflowData;
use crate::model::{TaskConfiguration, TaskPriority};
use crate::node::NodeRecord;

/// The `constraints` key listing the capabilities a task needs.
pub const CAPABILITIES_CONSTRAINT: &str = "capabilities";
/// The `constraints` key naming the node a task prefers.
pub const PREFERRED_NODE_CONSTRAINT: &str = "preferred_node";
/// The resource every task takes one of, unless it asks for more; a worker's
/// capacity in it is its concurrency.
pub const SLOTS: &str = "slots";
/// Kafka's limit on a topic name.
const MAX_TOPIC_LEN: usize = 249;

const URGENT: &str = "urgent";
const CAP: &str = "cap-";
const SEL: &str = "sel-";
const RES: &str = "res-";
const PAIR: &str = "--";

/// A requirement that cannot name a lane.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LaneError {
    #[error("{what} '{name}' is not a valid name: use letters, digits and '_', with single '-' between them")]
    BadName { what: &'static str, name: String },
    #[error("resource '{name}' asks for {amount}: a resource amount must be at least 1")]
    BadAmount { name: String, amount: i64 },
    #[error("'{given}' is not a resource capacity: write name=amount, e.g. cpu=4")]
    BadResource { given: String },
    #[error("constraints.capabilities must be a list of capability names")]
    BadCapabilities,
    #[error("the task topic '{topic}' would be {len} characters, over Kafka's limit of {MAX_TOPIC_LEN}: ask for fewer or shorter requirements")]
    TooLong { topic: String, len: usize },
}

/// What a task needs of the worker that runs it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Requirements {
    /// Plain capabilities (`gpu`) and label pairs (`region=eu`).
    pub capabilities: BTreeSet<String>,
    /// Resource amounts (`cpu` → 2); never `slots` 1, which every task takes.
    pub resources: BTreeMap<String, i64>,
    /// `critical` or `high` priority: served before the others.
    pub urgent: bool,
}

impl Requirements {
    /// Requirements of the given capabilities and resources (not urgent).
    pub fn new(
        capabilities: impl IntoIterator<Item = String>,
        resources: BTreeMap<String, i64>,
    ) -> Self {
        Self {
            capabilities: capabilities.into_iter().collect(),
            resources,
            urgent: false,
        }
    }

    /// What `task` needs: its `constraints.capabilities`, its node selector
    /// and its resources, and whether its priority is urgent.
    pub fn of_task(task: &TaskConfiguration) -> Result<Self, LaneError> {
        let mut capabilities = BTreeSet::new();
        match task.constraints.get(CAPABILITIES_CONSTRAINT) {
            None => {}
            Some(WorkflowData::List(names)) => capabilities.extend(names.iter().cloned()),
            Some(WorkflowData::Str(name)) => {
                capabilities.insert(name.clone());
            }
            Some(_) => return Err(LaneError::BadCapabilities),
        }
        for (k, v) in task.node_selector.iter().flatten() {
            capabilities.insert(format!("{k}={v}"));
        }
        let resources = task
            .resource_requirements
            .iter()
            .filter(|(k, v)| !(k.as_str() == SLOTS && **v == 1))
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        let req = Self {
            capabilities,
            resources,
            urgent: matches!(task.priority, TaskPriority::Critical | TaskPriority::High),
        };
        req.validate()?;
        Ok(req)
    }

    /// Checks every name and amount.
    pub fn validate(&self) -> Result<(), LaneError> {
        for c in &self.capabilities {
            match c.split_once('=') {
                Some((k, v)) => {
                    check_name("node selector key", k)?;
                    check_name("node selector value", v)?;
                }
                None => check_name("capability", c)?,
            }
        }
        for (name, amount) in &self.resources {
            check_name("resource", name)?;
            if *amount < 1 {
                return Err(LaneError::BadAmount {
                    name: name.clone(),
                    amount: *amount,
                });
            }
        }
        Ok(())
    }

    /// The same requirements at normal priority.
    pub fn unprioritised(&self) -> Self {
        Self {
            urgent: false,
            ..self.clone()
        }
    }

    /// Whether any capability or resource is asked for (priority aside).
    pub fn is_constrained(&self) -> bool {
        !self.capabilities.is_empty() || !self.resources.is_empty()
    }

    /// How much of `resource` a task of these requirements takes (`slots`: at least 1).
    pub fn amount(&self, resource: &str) -> i64 {
        let asked = self.resources.get(resource).copied().unwrap_or(0);
        if resource == SLOTS {
            asked.max(1)
        } else {
            asked
        }
    }

    /// The lane's tokens after `tasks` (empty for the default lane).
    pub fn suffix(&self) -> String {
        let mut tokens: Vec<String> = Vec::new();
        if self.urgent {
            tokens.push(URGENT.to_owned());
        }
        let mut rest: Vec<String> = self
            .capabilities
            .iter()
            .map(|c| match c.split_once('=') {
                Some((k, v)) => format!("{SEL}{k}{PAIR}{v}"),
                None => format!("{CAP}{c}"),
            })
            .chain(
                self.resources
                    .iter()
                    .map(|(k, v)| format!("{RES}{k}{PAIR}{v}")),
            )
            .collect();
        rest.sort();
        tokens.extend(rest);
        tokens.join(".")
    }

    /// Parses the tokens after `tasks` back into requirements.
    pub fn parse_suffix(suffix: &str) -> Option<Self> {
        let mut req = Self::default();
        if suffix.is_empty() {
            return Some(req);
        }
        for (i, token) in suffix.split('.').enumerate() {
            if token == URGENT && i == 0 {
                req.urgent = true;
            } else if let Some(c) = token.strip_prefix(CAP) {
                valid_name(c).then_some(())?;
                req.capabilities.insert(c.to_owned());
            } else if let Some(pair) = token.strip_prefix(SEL) {
                let (k, v) = pair.split_once(PAIR)?;
                (valid_name(k) && valid_name(v)).then_some(())?;
                req.capabilities.insert(format!("{k}={v}"));
            } else if let Some(pair) = token.strip_prefix(RES) {
                let (k, v) = pair.split_once(PAIR)?;
                let amount: i64 = v.parse().ok().filter(|n| *n >= 1)?;
                valid_name(k).then_some(())?;
                req.resources.insert(k.to_owned(), amount);
            } else {
                return None;
            }
        }
        // Only the canonical spelling names a lane.
        (req.suffix() == suffix).then_some(req)
    }

    /// The task topic of this lane for `tasks_topic` (`weft.<type>.tasks`).
    pub fn topic(&self, tasks_topic: &str) -> String {
        let suffix = self.suffix();
        if suffix.is_empty() {
            tasks_topic.to_owned()
        } else {
            format!("{tasks_topic}.{suffix}")
        }
    }

    /// [`topic`](Self::topic), checked against Kafka's length limit.
    pub fn checked_topic(&self, tasks_topic: &str) -> Result<String, LaneError> {
        let topic = self.topic(tasks_topic);
        if topic.len() > MAX_TOPIC_LEN {
            return Err(LaneError::TooLong {
                len: topic.len(),
                topic,
            });
        }
        Ok(topic)
    }
}

/// What a node offers: capabilities (plain and `key=value`), labels and capacity.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeCapabilities {
    pub capabilities: BTreeSet<String>,
    pub labels: BTreeMap<String, String>,
    /// Capacity per resource; `slots` is the node's concurrency.
    pub capacity: BTreeMap<String, i64>,
}

impl NodeCapabilities {
    /// What a node registry record says the node offers.
    pub fn of_record(record: &NodeRecord) -> Self {
        Self {
            capabilities: record.capabilities.iter().cloned().collect(),
            labels: record.labels.clone(),
            capacity: record.capacity_limits.clone(),
        }
    }

    /// What a worker declares: `capabilities` (names and `key=value`
    /// labels) and `resources` (`name=amount`); its `slots` are its concurrency.
    pub fn declared(
        capabilities: &[String],
        resources: &[String],
        concurrency: usize,
    ) -> Result<Self, LaneError> {
        let mut node = Self::default();
        for c in capabilities
            .iter()
            .map(|c| c.trim())
            .filter(|c| !c.is_empty())
        {
            match c.split_once('=') {
                Some((k, v)) => {
                    check_name("label key", k.trim())?;
                    check_name("label value", v.trim())?;
                    node.labels.insert(k.trim().to_owned(), v.trim().to_owned());
                }
                None => check_name("capability", c)?,
            }
            node.capabilities.insert(c.replace(' ', ""));
        }
        for r in resources.iter().map(|r| r.trim()).filter(|r| !r.is_empty()) {
            let (name, amount) = r.split_once('=').ok_or_else(|| LaneError::BadResource {
                given: r.to_owned(),
            })?;
            let name = name.trim();
            check_name("resource", name)?;
            let amount: i64 = amount.trim().parse().map_err(|_| LaneError::BadResource {
                given: r.to_owned(),
            })?;
            if amount < 1 {
                return Err(LaneError::BadAmount {
                    name: name.to_owned(),
                    amount,
                });
            }
            node.capacity.insert(name.to_owned(), amount);
        }
        node.capacity
            .entry(SLOTS.to_owned())
            .or_insert(i64::try_from(concurrency).unwrap_or(i64::MAX));
        Ok(node)
    }

    /// Whether the node has `token` (`gpu` or `key=value`).
    pub fn has(&self, token: &str) -> bool {
        if self.capabilities.contains(token) {
            return true;
        }
        token
            .split_once('=')
            .is_some_and(|(k, v)| self.labels.get(k).is_some_and(|l| l == v))
    }

    /// Capacity in `resource` (`slots` falls back on `concurrency`).
    pub fn capacity_of(&self, resource: &str) -> i64 {
        match self.capacity.get(resource) {
            Some(n) => *n,
            None if resource == SLOTS => self.capacity.get("concurrency").copied().unwrap_or(0),
            None => 0,
        }
    }

    /// Whether the node can ever run a task of `req`: every capability, and
    /// at least the asked amount of every resource.
    pub fn satisfies(&self, req: &Requirements) -> bool {
        req.capabilities.iter().all(|c| self.has(c))
            && req.resources.iter().all(|(r, n)| self.capacity_of(r) >= *n)
    }
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with('-')
        && !s.ends_with('-')
        && !s.contains(PAIR)
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

fn check_name(what: &'static str, name: &str) -> Result<(), LaneError> {
    if valid_name(name) {
        Ok(())
    } else {
        Err(LaneError::BadName {
            what,
            name: name.to_owned(),
        })
    }
}

mod context;

pub use context::{ContextLimits, CONTEXT_CAPABILITIES, CONTEXT_RESOURCE_LIMITS};

#[cfg(test)]
mod tests;
