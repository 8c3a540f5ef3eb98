//! Redriving a DLQ record back to the topic it came from, once.
//!
//! The log decides who redrives (as with definition versions, ADR 0011):
//!
//! 1. Read the record's DLQ partition. A `done` marker for its source means
//!    it was redriven: nothing to do, answer where the copy went. A recent
//!    `claim` (younger than [`CLAIM_TTL`]) means a redrive is under way:
//!    nothing to do either.
//! 2. Append a `claim` marker with a fresh id, then read the partition past it.
//!    The claim wins only if every earlier claim of the source is older than
//!    its own by more than [`CLAIM_TTL`] (their claimants died before
//!    finishing); otherwise another redrive got there first and this one
//!    does nothing.
//! 3. The winner appends the record (as it was, or the fixed value) to its
//!    source topic and partition (a workflow event that keeps the refused
//!    record's idempotency key gets one derived from the source: the
//!    orchestrator remembers the refused key and would drop the copy), with the original headers minus the DLQ
//!    ones plus `weft-redriven-from` and `weft-dlq-record`, then appends the
//!    `done` marker naming where the copy went.
//!
//! A redrive of any DLQ copy of the same source is the same redrive (copies
//! are grouped by source), so the second request is always a no-op. A
//! claimant that dies between its claim and its `done` leaves a claim that
//! expires after [`CLAIM_TTL`]; the next request then redrives.

use std::time::Duration;

use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use weft_shared::avro::AvroRecord;
use weft_shared::config::KafkaSettings;
use weft_shared::event::now_ms;
use weft_shared::ids::{EventId, InstanceId};
use weft_shared::topics::{headers as h, TopicKind};
use weft_shared::{Topics, WorkflowEvent};

use super::read::read_topic_async;
use super::{
    entries, Error, Raw, Redrive, DLQ_RECORD, MARKER, REDRIVEN_FROM, REDRIVEN_TO, REDRIVE_ID,
    REDRIVE_OF,
};

/// How long a claim without its `done` marker holds off other redrives.
pub const CLAIM_TTL: Duration = Duration::from_secs(60);
const SEND_TIMEOUT: Duration = Duration::from_secs(10);

/// What a redrive request did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// This request redrove the record: the copy is at `to`.
    Redriven { id: String, to: String },
    /// It had been redriven before (by `id`); nothing was appended.
    AlreadyRedriven { id: String, to: String },
    /// Another redrive (`id`) is under way; nothing was appended.
    InProgress { id: String },
}

/// Where to send what.
pub struct Request<'a> {
    pub settings: &'a KafkaSettings,
    pub producer: &'a FutureProducer,
    pub topics: &'a Topics,
    pub workflow_type: &'a str,
    pub partition: i32,
    pub offset: i64,
    /// A fixed value to send instead of the record's own.
    pub value: Option<Vec<u8>>,
}

/// Redrives the DLQ record at `partition`/`offset` (see the module doc).
pub async fn redrive(req: Request<'_>) -> Result<Outcome, Error> {
    let dlq = req.topics.dlq(req.workflow_type);
    let records = read_topic_async(req.settings, &dlq, Some(req.partition)).await?;
    let record = find(&records, req.partition, req.offset)?;
    let source = record.headers.get(h::DLQ_SOURCE).cloned().ok_or_else(|| {
        Error::BadRequest(format!(
            "{dlq}/{}/{} has no {} header: not a DLQ record",
            req.partition,
            req.offset,
            h::DLQ_SOURCE
        ))
    })?;
    let (target, target_partition) = target(req.topics, req.workflow_type, &source)?;
    if let Some(done) = settled(&records, &source, now_ms()) {
        return Ok(done);
    }
    let claim_id = InstanceId::random().to_string();
    let claim = vec![
        (MARKER, "claim"),
        (REDRIVE_OF, source.as_str()),
        (REDRIVE_ID, claim_id.as_str()),
    ];
    let claimed_at = send(req.producer, &dlq, req.partition, &record, None, claim).await?;
    let records = read_topic_async(req.settings, &dlq, Some(req.partition)).await?;
    if let Some(winner) = winner(&records, &source, claimed_at) {
        if winner != claim_id {
            tracing::info!(%source, claim = %claim_id, %winner, "redrive lost its claim: another redrive got there first");
            return Ok(match settled(&records, &source, i64::MIN) {
                Some(done @ Outcome::AlreadyRedriven { .. }) => done,
                _ => Outcome::InProgress { id: winner },
            });
        }
    }
    let dlq_record = format!("{dlq}/{}/{}", req.partition, req.offset);
    let mut headers: Vec<(&str, &str)> = record
        .headers
        .iter()
        .filter(|(k, _)| k.as_str() != h::DLQ_REASON && k.as_str() != h::DLQ_SOURCE)
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .filter(|(k, _)| *k != REDRIVEN_FROM && *k != DLQ_RECORD)
        .collect();
    headers.push((REDRIVEN_FROM, &source));
    headers.push((DLQ_RECORD, &dlq_record));
    let value = rekeyed(
        req.value.clone().or_else(|| record.value.clone()),
        record.value.as_deref(),
        &source,
    );
    let to = send(
        req.producer,
        &target,
        target_partition,
        &record,
        value.as_deref(),
        headers,
    )
    .await?;
    let to = format!("{target}/{target_partition}/{}", to.1);
    let done = vec![
        (MARKER, "done"),
        (REDRIVE_OF, source.as_str()),
        (REDRIVE_ID, claim_id.as_str()),
        (REDRIVEN_TO, to.as_str()),
    ];
    send(req.producer, &dlq, req.partition, &record, None, done).await?;
    tracing::info!(%source, %to, claim = %claim_id, fixed = req.value.is_some(), "dlq record redriven");
    Ok(Outcome::Redriven { id: claim_id, to })
}

/// A workflow event redriven with the idempotency key of the record it came
/// from gets a key of its own, derived from the source (`<key>#redrive:<source>`,
/// and an id derived the same way): the orchestrator recorded the original
/// key as seen when it refused the record, and would drop the copy as a
/// duplicate. Anything else is sent as it is.
fn rekeyed(value: Option<Vec<u8>>, original: Option<&[u8]>, source: &str) -> Option<Vec<u8>> {
    let bytes = value?;
    let (Ok(mut event), Some(Ok(orig))) = (
        WorkflowEvent::decode(&bytes),
        original.map(WorkflowEvent::decode),
    ) else {
        return Some(bytes);
    };
    if event.idempotency_key != orig.idempotency_key {
        return Some(bytes);
    }
    event.idempotency_key = format!("{}#redrive:{source}", orig.idempotency_key);
    event.event_id = EventId::derived(&[b"redrive", source.as_bytes()]);
    Some(event.encode())
}

fn find(records: &[Raw], partition: i32, offset: i64) -> Result<Raw, Error> {
    records
        .iter()
        .find(|r| r.offset == offset && !r.headers.contains_key(MARKER))
        .cloned()
        .ok_or_else(|| Error::NotFound(format!("{partition}/{offset}")))
}

/// The topic and partition a source names, if it is a topic of this type.
fn target(topics: &Topics, ty: &str, source: &str) -> Result<(String, i32), Error> {
    let bad = || {
        Error::BadRequest(format!(
            "the DLQ source '{source}' is not topic/partition/offset of a topic of '{ty}'"
        ))
    };
    let mut parts = source.rsplitn(3, '/');
    let (_offset, partition, topic) = (
        parts.next(),
        parts.next().ok_or_else(bad)?,
        parts.next().ok_or_else(bad)?,
    );
    let partition: i32 = partition.parse().map_err(|_| bad())?;
    match topics.parse(topic) {
        Some((t, TopicKind::Events | TopicKind::Tasks)) if t == ty => {
            Ok((topic.to_owned(), partition))
        }
        _ => Err(bad()),
    }
}

/// A redrive of `source` that is done, or a claim still fresh at `now`.
fn settled(records: &[Raw], source: &str, now: i64) -> Option<Outcome> {
    let e = entries(records).into_iter().find(|e| e.source == source)?;
    match e.redrive {
        Redrive::Done { id, to, .. } => Some(Outcome::AlreadyRedriven { id, to }),
        Redrive::Claimed { .. } => {
            let fresh = records.iter().rev().find(|r| {
                r.headers.get(MARKER).map(String::as_str) == Some("claim")
                    && r.headers.get(REDRIVE_OF).map(String::as_str) == Some(source)
                    && r.timestamp_ms > now.saturating_sub(CLAIM_TTL.as_millis() as i64)
            })?;
            Some(Outcome::InProgress {
                id: fresh.headers.get(REDRIVE_ID).cloned().unwrap_or_default(),
            })
        }
        Redrive::None => None,
    }
}

/// The claim of `source` that wins among those up to offset `upto`: the first
/// one no later claim came more than [`CLAIM_TTL`] after.
fn winner(records: &[Raw], source: &str, upto: (i32, i64)) -> Option<String> {
    let claims: Vec<&Raw> = records
        .iter()
        .filter(|r| r.offset <= upto.1)
        .filter(|r| r.headers.get(MARKER).map(String::as_str) == Some("claim"))
        .filter(|r| r.headers.get(REDRIVE_OF).map(String::as_str) == Some(source))
        .collect();
    let last_ts = claims.last()?.timestamp_ms;
    claims
        .iter()
        .find(|c| c.timestamp_ms >= last_ts - CLAIM_TTL.as_millis() as i64)
        .and_then(|c| c.headers.get(REDRIVE_ID).cloned())
}

/// Appends a record (`value` none: a marker) keyed like `like`; returns (partition, offset).
async fn send(
    producer: &FutureProducer,
    topic: &str,
    partition: i32,
    like: &Raw,
    value: Option<&[u8]>,
    headers: Vec<(&str, &str)>,
) -> Result<(i32, i64), Error> {
    let hs = headers.iter().fold(OwnedHeaders::new(), |acc, (k, v)| {
        acc.insert(Header {
            key: k,
            value: Some(v.as_bytes()),
        })
    });
    let mut rec: FutureRecord<'_, [u8], [u8]> =
        FutureRecord::to(topic).partition(partition).headers(hs);
    if let Some(k) = like.key.as_deref() {
        rec = rec.key(k);
    }
    if let Some(v) = value {
        rec = rec.payload(v);
    }
    let d = producer
        .send(rec, SEND_TIMEOUT)
        .await
        .map_err(|(e, _)| Error::Unavailable(format!("could not append to {topic}: {e}")))?;
    Ok((d.partition, d.offset))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(offset: i64, ts: i64, id: &str) -> Raw {
        Raw {
            partition: 0,
            offset,
            timestamp_ms: ts,
            key: None,
            value: None,
            headers: [(MARKER, "claim"), (REDRIVE_OF, "s"), (REDRIVE_ID, id)]
                .iter()
                .map(|(k, v)| ((*k).into(), (*v).into()))
                .collect(),
        }
    }

    #[test]
    fn the_first_live_claim_wins() {
        let ttl = CLAIM_TTL.as_millis() as i64;
        let two = [claim(1, 1000, "a"), claim(2, 1005, "b")];
        assert_eq!(winner(&two, "s", (0, 2)).as_deref(), Some("a"));
        // "a" was abandoned: "b" came more than a TTL later.
        let late = [claim(1, 1000, "a"), claim(2, 1001 + ttl, "b")];
        assert_eq!(winner(&late, "s", (0, 2)).as_deref(), Some("b"));
        assert_eq!(winner(&late, "other", (0, 2)), None);
    }

    #[test]
    fn a_redriven_event_gets_a_key_of_its_own() {
        use weft_shared::WorkflowEventType as T;
        let e = WorkflowEvent::new(T::WorkflowCancelled, "a", InstanceId::random(), "k", 1);
        let bytes = e.encode();
        let out = rekeyed(Some(bytes.clone()), Some(&bytes), "weft.a.events/0/3").unwrap();
        let out = WorkflowEvent::decode(&out).unwrap();
        assert_eq!(out.idempotency_key, "k#redrive:weft.a.events/0/3");
        // Deterministic: a second copy would be dropped as a duplicate by the engine.
        let again = rekeyed(Some(bytes.clone()), Some(&bytes), "weft.a.events/0/3").unwrap();
        assert_eq!(
            WorkflowEvent::decode(&again).unwrap().event_id,
            out.event_id
        );
        // A fixed event with a key of its own, or no event at all, is sent as it is.
        let mut fixed = e.clone();
        fixed.idempotency_key = "new".into();
        let f = fixed.encode();
        assert_eq!(rekeyed(Some(f.clone()), Some(&bytes), "s"), Some(f));
        assert_eq!(
            rekeyed(Some(vec![1, 2]), Some(&bytes), "s"),
            Some(vec![1, 2])
        );
    }

    #[test]
    fn targets_are_topics_of_the_type() {
        let t = Topics::new("weft".to_owned());
        assert_eq!(
            target(&t, "a", "weft.a.events/3/17").unwrap(),
            ("weft.a.events".into(), 3)
        );
        assert!(target(&t, "a", "weft.b.events/3/17").is_err());
        assert!(target(&t, "a", "weft.a.dlq/0/1").is_err());
        assert!(target(&t, "a", "nonsense").is_err());
    }
}
