//! Topic naming: every topic name Weft uses comes from here, so the prefix and
//! the per-type layout are decided in one place.

use crate::lanes::Requirements;

/// Names of Weft's topics under one prefix (default `weft`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Topics {
    prefix: String,
}

impl Default for Topics {
    fn default() -> Self {
        Self::new("weft")
    }
}

impl Topics {
    pub fn new(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Every event of every instance of `workflow_type`: the source of truth.
    pub fn events(&self, workflow_type: &str) -> String {
        format!("{}.{workflow_type}.events", self.prefix)
    }

    /// Task dispatch records of `workflow_type`.
    pub fn tasks(&self, workflow_type: &str) -> String {
        format!("{}.{workflow_type}.tasks", self.prefix)
    }

    /// Latest snapshot per instance (compacted).
    pub fn snapshots(&self, workflow_type: &str) -> String {
        format!("{}.{workflow_type}.snapshots", self.prefix)
    }

    /// Task heartbeats of running attempts (not history; see `control`).
    pub fn heartbeats(&self, workflow_type: &str) -> String {
        format!("{}.{workflow_type}.heartbeats", self.prefix)
    }

    /// Records that could not be decoded or applied, with the reason in headers.
    pub fn dlq(&self, workflow_type: &str) -> String {
        format!("{}.{workflow_type}.dlq", self.prefix)
    }

    /// Every version of every definition (compacted, keyed `<type>@<version>`).
    pub fn definitions(&self) -> String {
        format!("{}.definitions", self.prefix)
    }

    /// The node registry (compacted, keyed by node id).
    pub fn nodes(&self) -> String {
        format!("{}.nodes", self.prefix)
    }

    /// The task topic of `workflow_type`'s lane for `req` (see [`crate::lanes`]).
    pub fn lane(&self, workflow_type: &str, req: &Requirements) -> String {
        req.topic(&self.tasks(workflow_type))
    }

    /// The workflow type of a per-type topic name, and which kind it is. A
    /// lane's task topic (`weft.<type>.tasks.<lane>`) is of kind `Tasks`.
    pub fn parse<'t>(&self, topic: &'t str) -> Option<(&'t str, TopicKind)> {
        let rest = topic.strip_prefix(&self.prefix)?.strip_prefix('.')?;
        let (ty, kind) = rest.split_once('.')?;
        let kind = match kind {
            "events" => TopicKind::Events,
            "tasks" => TopicKind::Tasks,
            "snapshots" => TopicKind::Snapshots,
            "dlq" => TopicKind::Dlq,
            "heartbeats" => TopicKind::Heartbeats,
            lane => {
                let suffix = lane.strip_prefix("tasks.").filter(|s| !s.is_empty())?;
                Requirements::parse_suffix(suffix)?;
                TopicKind::Tasks
            }
        };
        (!ty.is_empty()).then_some((ty, kind))
    }

    /// The workflow type and lane requirements of a task topic (the default
    /// lane's requirements are empty).
    pub fn parse_lane<'t>(&self, topic: &'t str) -> Option<(&'t str, Requirements)> {
        let rest = topic.strip_prefix(&self.prefix)?.strip_prefix('.')?;
        let (ty, kind) = rest.split_once('.')?;
        let req = match kind.strip_prefix("tasks") {
            Some("") => Requirements::default(),
            Some(lane) => {
                let suffix = lane.strip_prefix('.').filter(|s| !s.is_empty())?;
                Requirements::parse_suffix(suffix)?
            }
            None => return None,
        };
        (!ty.is_empty()).then_some((ty, req))
    }
}

/// The kinds of per-type topic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TopicKind {
    Events,
    Tasks,
    Snapshots,
    Dlq,
    Heartbeats,
}

/// Kafka record headers Weft writes.
pub mod headers {
    /// The event type of an event record (`workflow.created`, …).
    pub const EVENT_TYPE: &str = "weft-event-type";
    /// W3C trace context.
    pub const TRACEPARENT: &str = "traceparent";
    /// The record's idempotency key.
    pub const IDEMPOTENCY_KEY: &str = "weft-idempotency-key";
    /// Why a record went to the DLQ.
    pub const DLQ_REASON: &str = "weft-dlq-reason";
    /// Where a DLQ record came from: `topic/partition/offset`.
    pub const DLQ_SOURCE: &str = "weft-dlq-source";
    /// On an input an orchestrator forwarded from the wrong partition of its
    /// events topic: where it first landed, `topic/partition/offset`.
    pub const FORWARDED_FROM: &str = "weft-forwarded-from";
    /// On a tasks-topic record: it is a control record (`TaskControl`), not a
    /// dispatch; the value names the action (`cancel`).
    pub const CONTROL: &str = "weft-control";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_parse() {
        let t = Topics::default();
        assert_eq!(t.events("orders"), "weft.orders.events");
        assert_eq!(
            t.parse("weft.orders.events"),
            Some(("orders", TopicKind::Events))
        );
        assert_eq!(
            t.parse("weft.orders.tasks"),
            Some(("orders", TopicKind::Tasks))
        );
        assert_eq!(t.parse("weft.definitions"), None);
        assert_eq!(t.parse("other.orders.events"), None);
        assert_eq!(t.parse("weft.orders.tasks.nonsense"), None);
        let req = Requirements::new(["gpu".to_owned()], Default::default());
        let lane = t.lane("orders", &req);
        assert_eq!(lane, "weft.orders.tasks.cap-gpu");
        assert_eq!(t.parse(&lane), Some(("orders", TopicKind::Tasks)));
        assert_eq!(t.parse_lane(&lane), Some(("orders", req)));
        assert_eq!(
            t.parse_lane("weft.orders.tasks"),
            Some(("orders", Requirements::default()))
        );
        assert_eq!(t.parse_lane("weft.orders.events"), None);
        assert_eq!(t.parse_lane("weft.orders.tasks."), None);
        assert_eq!(t.parse("weft.orders.tasks."), None);
    }
}
