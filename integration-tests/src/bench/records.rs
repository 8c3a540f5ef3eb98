//! What Weft's records and histories look like, measured rather than assumed:
//! a sample of the records on a topic (value sizes, header names and sizes,
//! the values themselves, reused as the raw chain's payloads), and the causal
//! chain of a history (the broker round trips on a workflow's critical path).

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::{json, Value};

use crate::broker::client_config;

/// Records read from the start of a topic.
#[derive(Clone, Debug, Default)]
pub struct RecordSample {
    pub topic: String,
    /// The values, in the order read.
    pub values: Vec<Vec<u8>>,
    /// Header name → (records carrying it, total value bytes).
    pub headers: BTreeMap<String, (usize, usize)>,
}

impl RecordSample {
    pub fn len(&self) -> usize {
        self.values.len()
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    pub fn mean_value_bytes(&self) -> f64 {
        if self.values.is_empty() {
            return 0.0;
        }
        self.values.iter().map(Vec::len).sum::<usize>() as f64 / self.values.len() as f64
    }

    pub fn mean_headers(&self) -> f64 {
        if self.values.is_empty() {
            return 0.0;
        }
        self.headers.values().map(|(n, _)| n).sum::<usize>() as f64 / self.values.len() as f64
    }

    /// The headers at least half the records carry, with their mean value length.
    pub fn common_headers(&self) -> Vec<(String, usize)> {
        self.headers
            .iter()
            .filter(|(_, (n, _))| *n * 2 >= self.values.len())
            .map(|(k, (n, bytes))| (k.clone(), bytes / (*n).max(1)))
            .collect()
    }

    pub fn to_json(&self) -> Value {
        json!({
            "topic": self.topic,
            "records": self.len(),
            "mean_value_bytes": super::stats::round(self.mean_value_bytes(), 1),
            "mean_headers": super::stats::round(self.mean_headers(), 2),
            "headers": self.headers.iter().map(|(k, (n, b))| {
                (k.clone(), json!({ "records": n, "mean_bytes": b / (*n).max(1) }))
            }).collect::<serde_json::Map<_, _>>(),
        })
    }
}

/// Reads up to `max` records from the start of every partition of `topic`
/// (no consumer group), for at most `budget`. Blocking.
pub fn sample_topic(
    bootstrap: &str,
    topic: &str,
    max: usize,
    budget: Duration,
) -> Result<RecordSample> {
    let consumer: BaseConsumer = client_config(bootstrap)
        .set(
            "group.id",
            format!("weft-bench-sample-{}", uuid::Uuid::new_v4()),
        )
        .set("enable.auto.commit", "false")
        .create()
        .context("creating the sampling consumer")?;
    let timeout = Duration::from_secs(10);
    let md = consumer.fetch_metadata(Some(topic), timeout)?;
    let mut tpl = TopicPartitionList::new();
    for p in md.topics().iter().flat_map(|t| t.partitions()) {
        tpl.add_partition_offset(topic, p.id(), Offset::Beginning)?;
    }
    if tpl.count() == 0 {
        bail!("{topic} has no partitions");
    }
    consumer.assign(&tpl)?;
    let mut out = RecordSample {
        topic: topic.to_owned(),
        ..RecordSample::default()
    };
    let deadline = Instant::now() + budget;
    while out.values.len() < max && Instant::now() < deadline {
        let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        out.values.push(m.payload().unwrap_or_default().to_vec());
        if let Some(h) = m.headers() {
            for header in h.iter() {
                let e = out.headers.entry(header.key.to_owned()).or_default();
                e.0 += 1;
                e.1 += header.value.map_or(0, <[u8]>::len);
            }
        }
    }
    Ok(out)
}

/// One causal link of a history: `cause` led to `effect`, `ms` apart (event timestamps).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    pub cause: String,
    pub effect: String,
    pub ms: i64,
    /// Round trips it spans (1 for a link of the chain; more for a [`segments`] span).
    pub hops: usize,
}

/// Event types a component stamps with its own clock when it produces them.
/// Decisions (`task.scheduled`, `workflow.completed`, …) carry the timestamp of
/// the input they were derived from (the decider is deterministic), so a link
/// ending in a decision shows 0 ms and its time shows in the next link.
const STAMPED: &[&str] = &[
    "workflow.created",
    "task.started",
    "task.completed",
    "task.failed",
];

/// The chain's links merged into spans between independently stamped events:
/// `workflow.created -> task.completed(A)` (2 round trips), …; a trailing
/// decision (`workflow.completed`) stays a span of its own (its time is not
/// visible in the history).
pub fn segments(links: &[Link]) -> Vec<Link> {
    let mut out: Vec<Link> = Vec::new();
    let mut open: Option<Link> = None;
    for l in links {
        let mut span = match open.take() {
            Some(mut s) => {
                s.effect = l.effect.clone();
                s.ms += l.ms;
                s.hops += l.hops;
                s
            }
            None => l.clone(),
        };
        let ty = l.effect.split('(').next().unwrap_or("");
        if STAMPED.contains(&ty) {
            out.push(span);
        } else {
            span.effect = l.effect.clone();
            open = Some(span);
        }
    }
    out.extend(open);
    out
}

/// The causal chain of a completed history, from `workflow.created` to
/// `workflow.completed`, following each event's `causation_id`.
///
/// Each link is one broker round trip (a produce, then a consume by another
/// component): an input (`workflow.created`, `task.completed`, …) reaches the
/// orchestrator's partition processor only through the events topic, and a
/// `task.scheduled` reaches a worker only as its dispatch record on the tasks
/// topic. So the number of links is the number of sequential produce → consume
/// round trips on the critical path. Acks the components wait for before they
/// go on (a produce's own round trip) are not visible in a history and not counted.
pub fn causal_chain(events: &[Value]) -> Result<Vec<Link>> {
    let by_id: HashMap<&str, &Value> = events
        .iter()
        .filter_map(|e| Some((e["event_id"].as_str()?, e)))
        .collect();
    let Some(mut at) = events
        .iter()
        .rev()
        .find(|e| e["event_type"] == "workflow.completed")
    else {
        bail!("the history has no workflow.completed");
    };
    let mut links = Vec::new();
    loop {
        let cause_id = at["causation_id"].as_str().unwrap_or("");
        if cause_id.is_empty() {
            break;
        }
        let Some(cause) = by_id.get(cause_id) else {
            bail!(
                "{} {} names cause {cause_id}, which is not in the history",
                at["event_type"],
                at["event_id"]
            );
        };
        links.push(Link {
            cause: label(cause),
            effect: label(at),
            ms: at["timestamp_ms"].as_i64().unwrap_or(0)
                - cause["timestamp_ms"].as_i64().unwrap_or(0),
            hops: 1,
        });
        if links.len() > events.len() {
            bail!("the causation chain loops");
        }
        at = cause;
    }
    if at["event_type"] != "workflow.created" {
        bail!(
            "the causation chain ends at {}, not workflow.created",
            at["event_type"]
        );
    }
    links.reverse();
    Ok(links)
}

/// `event_type` plus the task it is about, if any: `task.completed(B)`.
fn label(e: &Value) -> String {
    let ty = e["event_type"].as_str().unwrap_or("?");
    let task = ["task_name", "task"].iter().find_map(|k| {
        e["data"][*k]
            .as_str()
            .or_else(|| e["metadata"][*k].as_str())
    });
    match task {
        Some(t) => format!("{ty}({t})"),
        None => ty.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(id: &str, ty: &str, cause: &str, ts: i64, task: Option<&str>) -> Value {
        json!({
            "event_id": id, "event_type": ty, "causation_id": cause, "timestamp_ms": ts,
            "data": task.map_or(json!({}), |t| json!({ "task_name": t })),
        })
    }

    #[test]
    fn chain_of_a_diamond_has_seven_links() {
        let h = vec![
            ev("1", "workflow.created", "", 0, None),
            ev("2", "task.scheduled", "1", 5, Some("A")),
            ev("3", "task.started", "2", 8, Some("A")),
            ev("4", "task.completed", "2", 10, Some("A")),
            ev("5", "task.scheduled", "4", 15, Some("B")),
            ev("6", "task.scheduled", "4", 15, Some("C")),
            ev("7", "task.completed", "5", 20, Some("B")),
            ev("8", "task.completed", "6", 22, Some("C")),
            ev("9", "task.scheduled", "8", 30, Some("D")),
            ev("10", "task.completed", "9", 40, Some("D")),
            ev("11", "workflow.completed", "10", 45, None),
        ];
        let chain = causal_chain(&h).unwrap();
        assert_eq!(chain.len(), 7, "{chain:?}");
        assert_eq!(chain[0].cause, "workflow.created");
        assert_eq!(chain[0].effect, "task.scheduled(A)");
        assert_eq!(chain[3].effect, "task.completed(C)");
        assert_eq!(chain.iter().map(|l| l.ms).sum::<i64>(), 45);
        let spans = segments(&chain);
        let labels: Vec<(String, String, usize)> = spans
            .iter()
            .map(|s| (s.cause.clone(), s.effect.clone(), s.hops))
            .collect();
        assert_eq!(
            labels,
            vec![
                ("workflow.created".into(), "task.completed(A)".into(), 2),
                ("task.completed(A)".into(), "task.completed(C)".into(), 2),
                ("task.completed(C)".into(), "task.completed(D)".into(), 2),
                ("task.completed(D)".into(), "workflow.completed".into(), 1),
            ]
        );
        assert_eq!(spans[0].ms, 10);
        assert_eq!(spans.iter().map(|s| s.hops).sum::<usize>(), 7);
    }

    #[test]
    fn a_broken_chain_is_an_error() {
        let h = vec![
            ev("1", "workflow.created", "", 0, None),
            ev("2", "workflow.completed", "9", 5, None),
        ];
        assert!(causal_chain(&h).is_err());
        assert!(causal_chain(&h[..1]).is_err());
    }
}
