//! The dead-letter queue of a workflow type (`weft.<type>.dlq`): reading it,
//! grouping its records by where they came from, redriving one back to its
//! topic once, and counting its records per reason.
//!
//! A DLQ record carries `weft-dlq-reason` and `weft-dlq-source`
//! (`topic/partition/offset` of the original). The same source can be dead
//! lettered more than once (an orchestrator that rebuilds its projection
//! refuses the same bad input again), so every view groups by source: one
//! [`Entry`] per source, with how many copies the DLQ holds.
//!
//! A redrive leaves its trace in the DLQ topic itself (the topics stay the
//! only state): *marker* records with no value, keyed like the record, that
//! carry [`MARKER`] (`claim` or `done`) and [`REDRIVE_OF`] (the source). See
//! [`redrive`] for how a claim makes a redrive happen once.
//!
//! Submodules: [`read`] (reading a topic to its end), [`redrive`],
//! [`counts`] (the per-reason metric).

pub mod counts;
pub mod read;
pub mod redrive;

use std::collections::BTreeMap;

use serde_json::{json, Value};
use weft_shared::avro::AvroRecord;
use weft_shared::dispatch::TaskDispatch;
use weft_shared::topics::headers as h;
use weft_shared::WorkflowEvent;

pub use read::Raw;

/// Header of a marker record: `claim` or `done`.
pub const MARKER: &str = "weft-dlq-redrive";
/// Header of a marker record: the `weft-dlq-source` of the record redriven.
pub const REDRIVE_OF: &str = "weft-dlq-redrive-of";
/// Header of a marker record: the id of the claim (a `done` names the claim it completes).
pub const REDRIVE_ID: &str = "weft-dlq-redrive-id";
/// Header of a `done` marker: where the redriven record went (`topic/partition/offset`).
pub const REDRIVEN_TO: &str = "weft-redriven-to";
/// Header of a redriven record: the `weft-dlq-source` it was redriven from.
pub const REDRIVEN_FROM: &str = "weft-redriven-from";
/// Header of a redriven record: the DLQ record (`topic/partition/offset`) it was copied from.
pub const DLQ_RECORD: &str = "weft-dlq-record";

/// DLQ errors.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("reading {topic} did not reach its end within {secs} s")]
    Timeout { topic: String, secs: u64 },
    #[error("no DLQ record at {0}")]
    NotFound(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unavailable(String),
}

/// What happened to a source's redrive.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Redrive {
    /// Not redriven.
    None,
    /// A claim without its `done` marker (in progress, or its claimant died).
    Claimed { id: String, at_ms: i64 },
    /// Redriven: the copy is at `to`.
    Done { id: String, to: String, at_ms: i64 },
}

/// One dead-lettered source: the first DLQ copy of it, and what became of it.
#[derive(Clone, Debug)]
pub struct Entry {
    pub record: Raw,
    pub source: String,
    pub reason: String,
    /// DLQ records holding this source (more than one after rebuilds).
    pub copies: usize,
    pub redrive: Redrive,
}

impl Entry {
    /// `partition/offset` of the record in the DLQ topic: how tools name it.
    pub fn id(&self) -> String {
        format!("{}/{}", self.record.partition, self.record.offset)
    }
}

/// Groups DLQ records by source, in the order they first appear; markers set
/// each source's redrive state.
pub fn entries(records: &[Raw]) -> Vec<Entry> {
    let mut out: Vec<Entry> = Vec::new();
    let mut at: BTreeMap<String, usize> = BTreeMap::new();
    let mut markers = Vec::new();
    for r in records {
        if r.headers.contains_key(MARKER) {
            markers.push(r);
            continue;
        }
        let Some(source) = r.headers.get(h::DLQ_SOURCE) else {
            continue;
        };
        if let Some(&i) = at.get(source) {
            out[i].copies += 1;
            continue;
        }
        at.insert(source.clone(), out.len());
        out.push(Entry {
            record: r.clone(),
            source: source.clone(),
            reason: r.headers.get(h::DLQ_REASON).cloned().unwrap_or_default(),
            copies: 1,
            redrive: Redrive::None,
        });
    }
    for m in markers {
        let Some(&i) = m.headers.get(REDRIVE_OF).and_then(|s| at.get(s)) else {
            continue;
        };
        let id = m.headers.get(REDRIVE_ID).cloned().unwrap_or_default();
        let e = &mut out[i];
        match m.headers.get(MARKER).map(String::as_str) {
            Some("done") if !matches!(e.redrive, Redrive::Done { .. }) => {
                let to = m.headers.get(REDRIVEN_TO).cloned().unwrap_or_default();
                e.redrive = Redrive::Done {
                    id,
                    to,
                    at_ms: m.timestamp_ms,
                };
            }
            Some("claim") if e.redrive == Redrive::None => {
                e.redrive = Redrive::Claimed {
                    id,
                    at_ms: m.timestamp_ms,
                };
            }
            _ => {}
        }
    }
    out
}

/// A reason without the ids, counts and names that make each one unique:
/// what the per-reason metric is labelled with (bounded cardinality).
pub fn reason_class(reason: &str) -> String {
    let head = reason.split([':', '(']).next().unwrap_or(reason);
    let words: Vec<String> = head
        .split_whitespace()
        .map(|w| {
            let quoted = w.starts_with(['\'', '"']);
            let w = w.trim_matches(|c: char| c == '\'' || c == '"' || c == ',');
            if quoted || w.chars().any(|c| c.is_ascii_digit()) || w.len() > 24 {
                "_".to_owned()
            } else {
                w.to_ascii_lowercase()
            }
        })
        .take(8)
        .collect();
    let class = words.join(" ");
    if class.is_empty() {
        "unknown".into()
    } else {
        class
    }
}

/// The JSON view of an entry; `full` adds the headers and the decoded value.
pub fn view(e: &Entry, full: bool) -> Value {
    let redrive = match &e.redrive {
        Redrive::None => json!({ "state": "none" }),
        Redrive::Claimed { id, at_ms } => json!({ "state": "claimed", "id": id, "at_ms": at_ms }),
        Redrive::Done { id, to, at_ms } => {
            json!({ "state": "done", "id": id, "to": to, "at_ms": at_ms })
        }
    };
    let mut v = json!({
        "id": e.id(),
        "partition": e.record.partition,
        "offset": e.record.offset,
        "timestamp_ms": e.record.timestamp_ms,
        "key": e.record.key.as_deref().map(String::from_utf8_lossy),
        "reason": e.reason,
        "reason_class": reason_class(&e.reason),
        "source": e.source,
        "copies": e.copies,
        "redriven_from": e.record.headers.get(REDRIVEN_FROM),
        "redrive": redrive,
        "value_bytes": e.record.value.as_ref().map_or(0, Vec::len),
    });
    if full {
        v["headers"] = json!(e.record.headers);
        v["value"] = decode(e.record.value.as_deref());
    }
    v
}

/// A record value as JSON: a `WorkflowEvent` or a `TaskDispatch` when it
/// decodes as one, else its size and first bytes in hex.
pub fn decode(value: Option<&[u8]>) -> Value {
    let Some(bytes) = value else {
        return json!({ "kind": "empty" });
    };
    if let Ok(e) = WorkflowEvent::decode(bytes) {
        // The serde form: what a fixed redrive takes back (`{"event": ...}`).
        return json!({ "kind": "workflow_event", "event": serde_json::to_value(e).unwrap_or(Value::Null) });
    }
    if let Ok(d) = TaskDispatch::decode(bytes) {
        return json!({ "kind": "task_dispatch", "dispatch": serde_json::to_value(d).unwrap_or(Value::Null) });
    }
    let hex: String = bytes.iter().take(64).map(|b| format!("{b:02x}")).collect();
    json!({ "kind": "undecodable", "bytes": bytes.len(), "head_hex": hex })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(offset: i64, hs: &[(&str, &str)]) -> Raw {
        Raw {
            partition: 0,
            offset,
            timestamp_ms: offset,
            key: Some(b"k".to_vec()),
            value: Some(vec![1, 2]),
            headers: hs.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect(),
        }
    }

    #[test]
    fn copies_of_a_source_are_one_entry_and_markers_set_its_state() {
        let recs = vec![
            raw(0, &[(h::DLQ_SOURCE, "t/0/5"), (h::DLQ_REASON, "bad")]),
            raw(1, &[(h::DLQ_SOURCE, "t/0/9"), (h::DLQ_REASON, "worse")]),
            raw(2, &[(h::DLQ_SOURCE, "t/0/5"), (h::DLQ_REASON, "bad")]),
            raw(
                3,
                &[(MARKER, "claim"), (REDRIVE_OF, "t/0/5"), (REDRIVE_ID, "c1")],
            ),
            raw(
                4,
                &[(MARKER, "claim"), (REDRIVE_OF, "t/0/9"), (REDRIVE_ID, "c2")],
            ),
            raw(
                5,
                &[
                    (MARKER, "done"),
                    (REDRIVE_OF, "t/0/5"),
                    (REDRIVE_ID, "c1"),
                    (REDRIVEN_TO, "t/0/20"),
                ],
            ),
        ];
        let es = entries(&recs);
        assert_eq!(es.len(), 2);
        assert_eq!((es[0].copies, es[0].id()), (2, "0/0".to_owned()));
        assert_eq!(
            es[0].redrive,
            Redrive::Done {
                id: "c1".into(),
                to: "t/0/20".into(),
                at_ms: 5
            }
        );
        assert_eq!(
            es[1].redrive,
            Redrive::Claimed {
                id: "c2".into(),
                at_ms: 4
            }
        );
    }

    #[test]
    fn reason_classes_drop_what_is_unique() {
        assert_eq!(
            reason_class("no workflow instance 2f1c4b8e-0000-4000-8000-000000000001 of type demo"),
            "no workflow instance _ of type demo"
        );
        assert_eq!(
            reason_class("event of workflow type 'a' on the topic of 'b'"),
            "event of workflow type _ on the topic"
        );
        assert_eq!(reason_class("cannot decode: bad marker"), "cannot decode");
        assert_eq!(reason_class(""), "unknown");
    }
}
