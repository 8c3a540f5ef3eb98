//! Where and when tasks ran, read from their histories: the figures issue 15's
//! tests and `weft-bench`'s lanes scenario judge capability routing, priority,
//! resource limits and the spread over workers by.
//!
//! A [`TaskRun`] is one task of one instance: when it was scheduled (the
//! orchestrator's `task.scheduled`), each attempt's `task.started` (the
//! worker's, whose `data.node_id` names the node that ran it) and its
//! `task.completed`. Histories come from the API ([`api_runs`]: what the
//! orchestrator accepted) or, for tens of thousands of instances, raw from the
//! type's events topic ([`topic_runs`]).

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result};
use futures::stream::{self, StreamExt, TryStreamExt};
use rdkafka::message::Message;
use serde_json::Value;
use weft_shared::avro::AvroRecord;
use weft_shared::WorkflowEvent;

use crate::ApiClient;

/// The event metadata key naming the task.
const META_TASK: &str = "weft.task";
/// The event metadata key naming the attempt.
const META_ATTEMPT: &str = "weft.attempt";

/// One event of a task, whatever it was read from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskEvent {
    pub instance_id: String,
    /// `task.scheduled`, `task.started`, `task.completed`, …
    pub event_type: String,
    pub task: String,
    pub attempt: Option<u32>,
    pub timestamp_ms: i64,
    /// `data.node_id` of a `task.started`.
    pub node_id: Option<String>,
    /// Who produced the event (`source_node_id`): for a `task.completed`, the
    /// worker that ran the task to its end.
    pub source_node_id: String,
}

impl TaskEvent {
    /// The task event in one event of the API's history JSON (`None`: not a
    /// task's event).
    pub fn from_json(e: &Value) -> Option<Self> {
        let task = e["metadata"][META_TASK].as_str()?;
        Some(Self {
            instance_id: e["instance_id"].as_str().unwrap_or_default().to_owned(),
            event_type: e["event_type"].as_str()?.to_owned(),
            task: task.to_owned(),
            attempt: e["metadata"][META_ATTEMPT]
                .as_str()
                .and_then(|a| a.parse().ok()),
            timestamp_ms: e["timestamp_ms"].as_i64()?,
            node_id: e["data"]["node_id"].as_str().map(str::to_owned),
            source_node_id: e["source_node_id"].as_str().unwrap_or_default().to_owned(),
        })
    }

    /// The task event in one record of an events topic.
    pub fn from_event(e: &WorkflowEvent) -> Option<Self> {
        let task = e.metadata.get(META_TASK)?;
        let node_id = match e.data.get("node_id") {
            Some(weft_shared::WorkflowData::Str(s)) => Some(s.clone()),
            _ => None,
        };
        Some(Self {
            instance_id: e.instance_id.to_string(),
            event_type: e.event_type.as_str().to_owned(),
            task: task.clone(),
            attempt: e.metadata.get(META_ATTEMPT).and_then(|a| a.parse().ok()),
            timestamp_ms: e.timestamp_ms,
            node_id,
            source_node_id: e.source_node_id.clone(),
        })
    }
}

/// One task of one instance.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TaskRun {
    pub instance_id: String,
    pub task: String,
    /// The first `task.scheduled`.
    pub scheduled_ms: Option<i64>,
    /// Every `task.started`, in history order: `(node id, timestamp)`.
    pub starts: Vec<(String, i64)>,
    pub completed_ms: Option<i64>,
    /// The node that produced the `task.completed`.
    pub completed_by: Option<String>,
}

impl TaskRun {
    /// The node of the last start (the one that completed it, if it completed).
    pub fn node(&self) -> Option<&str> {
        self.starts.last().map(|(n, _)| n.as_str())
    }

    /// The first start's time.
    pub fn started_ms(&self) -> Option<i64> {
        self.starts.first().map(|(_, t)| *t)
    }

    /// From `task.scheduled` to the first `task.started`.
    pub fn queue_ms(&self) -> Option<i64> {
        Some(self.started_ms()? - self.scheduled_ms?)
    }
}

/// The task runs in a sequence of task events (any instances, any order
/// within an instance's history as read).
pub fn runs_of(events: impl IntoIterator<Item = TaskEvent>) -> Vec<TaskRun> {
    let mut runs: BTreeMap<(String, String), TaskRun> = BTreeMap::new();
    for e in events {
        let run = runs
            .entry((e.instance_id.clone(), e.task.clone()))
            .or_insert_with(|| TaskRun {
                instance_id: e.instance_id.clone(),
                task: e.task.clone(),
                ..TaskRun::default()
            });
        match e.event_type.as_str() {
            "task.scheduled" => {
                run.scheduled_ms.get_or_insert(e.timestamp_ms);
            }
            "task.started" => run
                .starts
                .push((e.node_id.unwrap_or_default(), e.timestamp_ms)),
            "task.completed" => {
                run.completed_ms = Some(e.timestamp_ms);
                run.completed_by = Some(e.source_node_id);
            }
            _ => {}
        }
    }
    runs.into_values().collect()
}

/// The task runs of the instances `ids` of `ty`, from their histories on the
/// API (`concurrency` requests at once).
pub async fn api_runs(
    api: &ApiClient,
    ty: &str,
    ids: &[String],
    concurrency: usize,
) -> Result<Vec<TaskRun>> {
    let histories: Vec<Value> = stream::iter(ids)
        .map(|id| async move { api.events(ty, id).await })
        .buffer_unordered(concurrency.max(1))
        .try_collect()
        .await?;
    let mut events = Vec::new();
    for h in &histories {
        let list = h["events"].as_array().context("a history without events")?;
        events.extend(list.iter().filter_map(TaskEvent::from_json));
    }
    Ok(runs_of(events))
}

/// The task runs of every instance of `ty`, read raw from `weft.<ty>.events`
/// to its end (records the orchestrator rejected included, which a run to
/// its end has none of).
pub fn topic_runs(bootstrap: &str, ty: &str, deadline: Duration) -> Result<Vec<TaskRun>> {
    let topic = weft_shared::Topics::default().events(ty);
    let (_, _, records) = crate::rebuild::consume_all(bootstrap, &topic, deadline, true)?;
    let mut events = Vec::with_capacity(records.len());
    for r in &records {
        let Some(bytes) = r.payload() else { continue };
        let e = WorkflowEvent::decode(bytes)
            .with_context(|| format!("a record of {topic} is no WorkflowEvent"))?;
        events.extend(TaskEvent::from_event(&e));
    }
    Ok(runs_of(events))
}

/// How many of `runs` ran at once at most, counting each as running from its
/// first start for `hold_ms`. With `hold_ms` at most the handler's own run
/// time this undercounts, never overcounts: a worker takes a task's resources
/// before it stamps `task.started` and frees them after the handler returned.
pub fn peak_overlap<'a>(runs: impl IntoIterator<Item = &'a TaskRun>, hold_ms: i64) -> usize {
    let intervals: Vec<(i64, i64)> = runs
        .into_iter()
        .filter_map(TaskRun::started_ms)
        .map(|s| (s, s + hold_ms))
        .collect();
    super::stats::in_flight(&intervals).1
}

/// Runs per node (of their last start).
pub fn per_node<'a>(runs: impl IntoIterator<Item = &'a TaskRun>) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for r in runs {
        if let Some(n) = r.node() {
            *out.entry(n.to_owned()).or_default() += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(id: &str, ty: &str, ts: i64, node: Option<&str>) -> TaskEvent {
        TaskEvent {
            instance_id: id.into(),
            event_type: ty.into(),
            task: "t".into(),
            attempt: None,
            timestamp_ms: ts,
            node_id: node.map(str::to_owned),
            source_node_id: node.unwrap_or("orchestrator-0").to_owned(),
        }
    }

    #[test]
    fn runs_keep_the_first_schedule_every_start_and_the_completion() {
        let runs = runs_of([
            ev("a", "task.scheduled", 10, None),
            ev("a", "task.started", 15, Some("worker-0")),
            ev("b", "task.scheduled", 11, None),
            ev("a", "task.scheduled", 40, None),
            ev("a", "task.started", 45, Some("worker-1")),
            ev("a", "task.completed", 50, Some("worker-1")),
        ]);
        assert_eq!(runs.len(), 2);
        let a = &runs[0];
        assert_eq!(a.scheduled_ms, Some(10));
        assert_eq!(a.queue_ms(), Some(5));
        assert_eq!(a.node(), Some("worker-1"));
        assert_eq!(a.completed_ms, Some(50));
        assert_eq!(a.completed_by.as_deref(), Some("worker-1"));
        assert_eq!(runs[1].started_ms(), None);
        assert_eq!(per_node(&runs), BTreeMap::from([("worker-1".into(), 1)]));
    }

    #[test]
    fn overlap_counts_runs_within_their_hold_time() {
        let at = |id: &str, ts| runs_of([ev(id, "task.started", ts, Some("w"))]).remove(0);
        let runs = [at("a", 0), at("b", 0), at("c", 400), at("d", 399)];
        assert_eq!(peak_overlap(&runs, 400), 3, "d starts before a and b end");
        assert_eq!(peak_overlap(&runs[..3], 400), 2, "c starts as a and b end");
    }

    #[test]
    fn api_json_events_are_read() {
        let e = serde_json::json!({
            "instance_id": "i", "event_type": "task.started", "timestamp_ms": 7,
            "metadata": {"weft.task": "t", "weft.attempt": "2"}, "data": {"node_id": "worker-3"}
        });
        let t = TaskEvent::from_json(&e).unwrap();
        assert_eq!(
            (t.attempt, t.node_id.as_deref()),
            (Some(2), Some("worker-3"))
        );
        assert!(
            TaskEvent::from_json(&serde_json::json!({"event_type": "workflow.started"})).is_none()
        );
    }
}
