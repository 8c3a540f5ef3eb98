//! Read your writes. An accepted request appends an input event to the
//! instance's events topic and answers before its partition processor has
//! folded it; a read right after could then be told the instance does not
//! exist. Two waits, both bounded, close that window:
//!
//! - a read that finds no instance ([`instance_or_wait`]) waits until the
//!   processors of the partitions that may hold it have folded everything the
//!   topic held when the read began (its high watermark), or the instance
//!   shows up; only then is it "not found";
//! - a control request ([`wait_applied`]) waits until its own record, at the
//!   offset the broker acknowledged, is folded, so a read after it sees the
//!   cancel, pause, resume or signal.
//!
//! A processor's stored offset is the offset after the last record it folded;
//! a trailing transaction marker is never folded, so a topic whose last
//! record is a marker keeps its stored offset one below the high watermark.
//! The not-found wait therefore gives up on a partition once nothing has been
//! folded for [`QUIET`] while it sits one below.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Extension;
use rdkafka::producer::Producer;
use weft_shared::fsm::InstanceState;
use weft_shared::ids::InstanceId;

use super::forward::Forwarder;
use super::{ApiError, AppState};
use crate::status::scope;

/// How long a read waits for the apply of a write it may have raced.
pub const READ_WAIT: Duration = Duration::from_secs(5);
/// How long a control request waits for its own record to be folded.
pub const CONTROL_WAIT: Duration = Duration::from_secs(5);
/// How often the store is looked at while waiting.
const POLL: Duration = Duration::from_millis(10);
/// A partition one below its high watermark that folded nothing this long is caught up.
const QUIET: Duration = Duration::from_millis(300);

/// The instance, if it exists once every write accepted before this call has
/// been folded (bounded by [`READ_WAIT`]); `None` means it does not exist.
pub(super) async fn instance_or_wait(
    s: &AppState,
    fw: Option<&Extension<Arc<Forwarder>>>,
    ty: &str,
    id: InstanceId,
) -> Result<Option<InstanceState>, ApiError> {
    if let Some(st) = s.store.instance(ty, id)? {
        return Ok(Some(st));
    }
    let topic = s.topics.events(ty);
    let partitions = candidate_partitions(s, fw.map(|e| e.0.as_ref()), &topic, id).await;
    let mut pending = Vec::new();
    for p in partitions {
        // Only a partition this replica owns has its projection here.
        if s.status.owns(&scope(&topic, p)).is_none() {
            continue;
        }
        if let Some(high) = high_watermark(s, &topic, p).await {
            pending.push((
                p,
                high,
                s.store.offset(&topic, p)?.unwrap_or(0),
                Instant::now(),
            ));
        }
    }
    let deadline = Instant::now() + READ_WAIT;
    loop {
        if let Some(st) = s.store.instance(ty, id)? {
            tracing::debug!(workflow_type = %ty, instance_id = %id, "read waited for the apply of its start");
            return Ok(Some(st));
        }
        let mut still = Vec::with_capacity(pending.len());
        for (p, high, last, since) in pending {
            let stored = s.store.offset(&topic, p)?.unwrap_or(0);
            let (last, since) = if stored != last {
                (stored, Instant::now())
            } else {
                (last, since)
            };
            let caught_up = stored >= high || (stored + 1 >= high && since.elapsed() >= QUIET);
            if !caught_up {
                still.push((p, high, last, since));
            }
        }
        pending = still;
        if pending.is_empty() {
            return Ok(None);
        }
        if Instant::now() >= deadline {
            tracing::info!(workflow_type = %ty, instance_id = %id, partitions = ?pending.iter().map(|p| p.0).collect::<Vec<_>>(), "read gave up waiting for the partition to catch up");
            return Ok(None);
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Waits (bounded by `bound`) until the record at `offset` of
/// `topic`/`partition` is folded into this replica's projection; `false` if
/// it was not in time or this replica does not own the partition.
pub(super) async fn wait_applied(
    s: &AppState,
    topic: &str,
    partition: i32,
    offset: i64,
    bound: Duration,
) -> Result<bool, ApiError> {
    if s.status.owns(&scope(topic, partition)).is_none() {
        return Ok(false);
    }
    let deadline = Instant::now() + bound;
    loop {
        if s.store.offset(topic, partition)?.unwrap_or(0) > offset {
            return Ok(true);
        }
        if Instant::now() >= deadline {
            tracing::info!(%topic, partition, offset, "the apply of an accepted request did not happen in time");
            return Ok(false);
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The partitions that may hold `id`: the one its key hashes to when the
/// placement is known, else every partition of the topic this replica owns.
async fn candidate_partitions(
    s: &AppState,
    fw: Option<&Forwarder>,
    topic: &str,
    id: InstanceId,
) -> Vec<i32> {
    if let Some(fw) = fw {
        if let (Some(partitioner), Some(n)) = (fw.partitioner, fw.counts.get(topic).await) {
            return vec![partitioner.partition(id.to_string().as_bytes(), n)];
        }
    }
    let prefix = format!("{topic}/");
    s.status
        .owned()
        .keys()
        .filter_map(|k| k.strip_prefix(&prefix)?.parse().ok())
        .collect()
}

/// The high watermark of a partition, from the broker (`None` if it does not answer).
async fn high_watermark(s: &AppState, topic: &str, partition: i32) -> Option<i64> {
    let (producer, t) = (s.producer.clone(), topic.to_owned());
    tokio::task::spawn_blocking(move || {
        producer
            .client()
            .fetch_watermarks(&t, partition, Duration::from_secs(2))
            .map(|(_, high)| high)
            .ok()
    })
    .await
    .ok()
    .flatten()
}
