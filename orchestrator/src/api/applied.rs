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
//!   cancel, pause, resume or signal;
//! - a decision about every instance of a type (deleting it, see
//!   `lifecycle::delete`) first [`settle`]s: each replica waits until its
//!   partitions of the type have folded everything the topic held, and
//!   refuses (503) rather than decide on a partition that did not catch up.
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
    // Only a partition this replica owns has its projection here.
    let partitions: Vec<i32> = candidate_partitions(s, fw.map(|e| e.0.as_ref()), &topic, id)
        .await
        .into_iter()
        .filter(|p| s.status.owns(&scope(&topic, *p)).is_some())
        .collect();
    // A partition whose watermark the broker did not give is not waited for.
    let (mut pending, _unknown) = watermarks(s, &topic, &partitions).await?;
    let deadline = Instant::now() + READ_WAIT;
    loop {
        if let Some(st) = s.store.instance(ty, id)? {
            tracing::debug!(workflow_type = %ty, instance_id = %id, "read waited for the apply of its start");
            return Ok(Some(st));
        }
        drop_caught_up(s, &topic, &mut pending)?;
        if pending.is_empty() {
            return Ok(None);
        }
        if Instant::now() >= deadline {
            tracing::info!(workflow_type = %ty, instance_id = %id, partitions = ?numbers(&pending), "read gave up waiting for the partition to catch up");
            return Ok(None);
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Waits (bounded by [`READ_WAIT`]) until this replica's projection has
/// folded every record that `partitions` of `topic` held when it was called,
/// so that what it then reads of them includes every write accepted before.
/// A 503 names the partitions it cannot vouch for: one this replica does not
/// own (any more), one whose high watermark the broker did not give, one that
/// did not catch up in time. Never an answer from a partition that lags.
pub(super) async fn settle(s: &AppState, topic: &str, partitions: &[i32]) -> Result<(), ApiError> {
    let names = |ps: &[i32]| {
        ps.iter()
            .map(|p| scope(topic, *p))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let lost: Vec<i32> = partitions
        .iter()
        .copied()
        .filter(|p| s.status.owns(&scope(topic, *p)).is_none())
        .collect();
    if !lost.is_empty() {
        return Err(ApiError::unavailable(format!(
            "replica {} no longer owns {} (a rebalance is in progress); try again shortly",
            s.node_id,
            names(&lost)
        )));
    }
    let (mut pending, unknown) = watermarks(s, topic, partitions).await?;
    if !unknown.is_empty() {
        return Err(ApiError::unavailable(format!(
            "the broker did not give the high watermark of {}, so whether it holds writes not yet applied is unknown; try again shortly",
            names(&unknown)
        )));
    }
    let deadline = Instant::now() + READ_WAIT;
    loop {
        drop_caught_up(s, topic, &mut pending)?;
        if pending.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            let behind = numbers(&pending);
            tracing::warn!(%topic, partitions = ?behind, node_id = %s.node_id, "partitions did not fold their accepted writes in time");
            return Err(ApiError::unavailable(format!(
                "replica {} has not applied every accepted write of {} within {}s (its processor lags); try again shortly",
                s.node_id,
                names(&behind),
                READ_WAIT.as_secs()
            )));
        }
        tokio::time::sleep(POLL).await;
    }
}

/// A partition waited on until its processor has folded up to `high`.
struct Catching {
    partition: i32,
    /// The high watermark when the wait began.
    high: i64,
    /// The stored offset last seen, and since when it has not moved.
    last: i64,
    since: Instant,
}

/// `partitions` of `topic`, each with its high watermark now (fetched in
/// parallel), and the partitions whose watermark the broker did not give.
async fn watermarks(
    s: &AppState,
    topic: &str,
    partitions: &[i32],
) -> Result<(Vec<Catching>, Vec<i32>), ApiError> {
    let highs =
        futures::future::join_all(partitions.iter().map(|p| high_watermark(s, topic, *p))).await;
    let (mut pending, mut unknown) = (Vec::new(), Vec::new());
    for (p, high) in partitions.iter().copied().zip(highs) {
        match high {
            Some(high) => pending.push(Catching {
                partition: p,
                high,
                last: s.store.offset(topic, p)?.unwrap_or(0),
                since: Instant::now(),
            }),
            None => unknown.push(p),
        }
    }
    Ok((pending, unknown))
}

/// Drops from `pending` the partitions that have caught up: stored offset at
/// the high watermark, or one below it (a trailing transaction marker) with
/// nothing folded for [`QUIET`].
fn drop_caught_up(s: &AppState, topic: &str, pending: &mut Vec<Catching>) -> Result<(), ApiError> {
    let mut still = Vec::with_capacity(pending.len());
    for mut c in pending.drain(..) {
        let stored = s.store.offset(topic, c.partition)?.unwrap_or(0);
        if stored != c.last {
            (c.last, c.since) = (stored, Instant::now());
        }
        let caught_up = stored >= c.high || (stored + 1 >= c.high && c.since.elapsed() >= QUIET);
        if !caught_up {
            still.push(c);
        }
    }
    *pending = still;
    Ok(())
}

fn numbers(pending: &[Catching]) -> Vec<i32> {
    pending.iter().map(|c| c.partition).collect()
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
    owned_partitions(s, topic)
}

/// The partitions of `topic` this replica owns.
pub(super) fn owned_partitions(s: &AppState, topic: &str) -> Vec<i32> {
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
