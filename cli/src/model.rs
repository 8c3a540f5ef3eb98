//! Lenient, read-only views of the API's JSON: every field is optional or
//! defaulted and unknown fields are ignored, so a server that adds fields (or
//! a half-initialised instance) never breaks the CLI. Raw `serde_json::Value`
//! is kept wherever the CLI only prints what it got.

use serde::Deserialize;
use serde_json::Value;

/// Workflow states after which nothing changes any more.
pub const TERMINAL_WORKFLOW_STATES: &[&str] =
    &["completed", "failed", "cancelled", "timeout", "compensated"];

/// `GET /v1/workflows/{type}/{id}`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct InstanceView {
    pub instance_id: String,
    pub workflow_type: String,
    pub definition_version: Option<u64>,
    pub state: String,
    pub sequence_number: u64,
    pub created_at_ms: Option<i64>,
    pub updated_at_ms: Option<i64>,
    pub tasks: Vec<TaskView>,
    pub error: Option<ErrorView>,
}

impl InstanceView {
    pub fn from_json(value: &Value) -> Result<Self, serde_json::Error> {
        Self::deserialize(value)
    }

    pub fn is_terminal(&self) -> bool {
        TERMINAL_WORKFLOW_STATES.contains(&self.state.as_str())
    }

    pub fn task(&self, name: &str) -> Option<&TaskView> {
        self.tasks.iter().find(|t| t.name == name)
    }

    /// The instance's error, or else the first failed task's.
    pub fn effective_error(&self) -> Option<&ErrorView> {
        self.error
            .as_ref()
            .or_else(|| self.tasks.iter().find_map(|t| t.error.as_ref()))
    }

    /// Server-side run time (last update minus creation), if both are known.
    pub fn server_duration_ms(&self) -> Option<u64> {
        let (c, u) = (self.created_at_ms?, self.updated_at_ms?);
        (c > 0 && u >= c).then(|| (u - c) as u64)
    }
}

/// One entry of an instance's `tasks`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct TaskView {
    pub name: String,
    pub state: String,
    pub attempt: u32,
    pub output: Option<Value>,
    pub error: Option<ErrorView>,
    /// What the last ended attempt used, as its worker measured it
    /// (`cpu_ms`, `wall_ms`, `peak_rss_kb`); kept raw (any JSON) to stay lenient.
    pub resource_usage: Value,
    /// Where the usage was measured: `child` or `process`.
    pub usage_scope: Option<String>,
    /// The metrics the last ended attempt's handler reported.
    pub metrics: Value,
    /// The last checkpoint an attempt saved (the next attempt starts from it).
    pub checkpoint: Option<Value>,
    /// Checkpoints saved over all attempts.
    pub checkpoints: u64,
}

impl TaskView {
    /// A whole number of `resource_usage` (`cpu_ms`, `wall_ms`, `peak_rss_kb`).
    pub fn usage(&self, key: &str) -> Option<i64> {
        let v = &self.resource_usage[key];
        v.as_i64().or_else(|| v.as_f64().map(|f| f.round() as i64))
    }

    /// Whether the worker reported any usage or metric for the task.
    pub fn has_usage(&self) -> bool {
        let filled = |v: &Value| v.as_object().is_some_and(|m| !m.is_empty());
        filled(&self.resource_usage) || filled(&self.metrics)
    }
}

/// `{"error_type": ..., "message": ...}` of a task or instance.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct ErrorView {
    pub error_type: Option<String>,
    pub message: Option<String>,
}

impl std::fmt::Display for ErrorView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.error_type.as_deref(), self.message.as_deref()) {
            (Some(t), Some(m)) if !t.is_empty() && !m.is_empty() => write!(f, "{t}: {m}"),
            (Some(t), _) if !t.is_empty() => f.write_str(t),
            (_, Some(m)) if !m.is_empty() => f.write_str(m),
            _ => f.write_str("unknown error"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_the_documented_shape_and_ignores_extras() {
        let v = json!({
            "instance_id": "i1", "workflow_type": "demo", "definition_version": 2,
            "state": "failed", "sequence_number": 7, "created_at_ms": 1000, "updated_at_ms": 3400,
            "input": {"n": 1}, "something_new": true,
            "tasks": [
                {"name": "a", "state": "completed", "attempt": 1, "output": {"x": 1}, "error": null},
                {"name": "b", "state": "failed", "attempt": 3, "output": null,
                 "error": {"error_type": "Boom", "message": "it broke", "retryable": false}}
            ],
            "error": null
        });
        let i = InstanceView::from_json(&v).unwrap();
        assert!(i.is_terminal());
        assert_eq!(i.server_duration_ms(), Some(2400));
        assert_eq!(i.task("b").unwrap().attempt, 3);
        assert_eq!(i.effective_error().unwrap().to_string(), "Boom: it broke");
        assert!(!i.task("a").unwrap().has_usage());
    }

    #[test]
    fn reads_usage_and_checkpoints_leniently() {
        let v = json!({"tasks": [
            {"name": "a", "resource_usage": {"cpu_ms": 412, "wall_ms": 430.4, "peak_rss_kb": 3172},
             "usage_scope": "child", "metrics": {}, "checkpoint": {"next_step": 5}, "checkpoints": 5},
            {"name": "b", "resource_usage": null, "usage_scope": null, "metrics": null, "checkpoint": null}
        ]});
        let i = InstanceView::from_json(&v).unwrap();
        let a = i.task("a").unwrap();
        assert!(a.has_usage());
        assert_eq!(
            (a.usage("cpu_ms"), a.usage("wall_ms"), a.usage("nope")),
            (Some(412), Some(430), None)
        );
        assert_eq!(
            (a.checkpoints, a.usage_scope.as_deref()),
            (5, Some("child"))
        );
        let b = i.task("b").unwrap();
        assert!(!b.has_usage() && b.checkpoint.is_none() && b.checkpoints == 0);
    }

    #[test]
    fn tolerates_a_sparse_instance() {
        let i = InstanceView::from_json(&json!({"state": "running"})).unwrap();
        assert!(!i.is_terminal());
        assert!(i.tasks.is_empty());
        assert_eq!(i.server_duration_ms(), None);
    }
}
