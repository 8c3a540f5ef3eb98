//! The life of one assigned partition: wait for the previous processor of the
//! same partition to finish (a hand-off never overlaps), learn the replay end
//! (retried until the broker answers: a guessed replay end would publish the
//! decisions of the whole replayed range), open a processor from the stored
//! state and run it. A processor that fails or panics while the partition is
//! still assigned is replaced by a new one that starts again from the stored
//! offset; the records it held are sought again ([`super::feed`]).

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use rdkafka::consumer::{BaseConsumer, Consumer};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::feed::Fed;
use super::{Exit, Partition, Placement, ReplayProgress, Seek, Shared};

/// Longest wait between two tries to open a processor or read the replay end.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Everything one partition's supervisor needs.
pub struct Assignment {
    pub shared: Shared,
    pub topic: String,
    pub partition: i32,
    pub workflow_type: String,
    pub progress: ReplayProgress,
    pub seeks: mpsc::UnboundedSender<Seek>,
    /// Reads watermarks and metadata.
    pub metadata: Arc<BaseConsumer>,
    /// The previous processor of the same partition, if any.
    pub previous: Option<JoinHandle<()>>,
}

/// Runs the partition until it is revoked (its channel closes).
pub async fn supervise(a: Assignment, mut rx: mpsc::Receiver<Fed>) {
    if let Some(prev) = a.previous {
        let _ = prev.await;
    }
    let (topic, partition) = (a.topic.clone(), a.partition);
    let mut backoff = Duration::from_millis(100);
    let (replay_end, partition_count) = loop {
        match watermark_and_count(&a.metadata, &topic, partition).await {
            Ok(found) => break found,
            Err(e) => {
                if rx.is_closed() {
                    return;
                }
                tracing::warn!(%topic, partition, error = %e, "cannot read the partition's high watermark; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    };
    let at = Placement {
        topic: topic.clone(),
        partition,
        workflow_type: a.workflow_type.clone(),
        replay_end,
        partition_count,
    };
    let mut backoff = Duration::from_millis(100);
    loop {
        if rx.is_closed() && rx.is_empty() {
            return;
        }
        let opened = Partition::open(
            a.shared.clone(),
            at.clone(),
            a.progress.clone(),
            a.seeks.clone(),
        );
        let mut processor = match opened {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(%topic, partition, error = %e, "cannot open the partition processor; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        let exit = AssertUnwindSafe(processor.run(&mut rx))
            .catch_unwind()
            .await;
        drop(processor);
        let reason = match exit {
            Ok(Exit::Revoked) => return,
            Ok(Exit::Fenced(reason)) => {
                // A newer owner took the partition's transactional id: leave the
                // group so it settles, and drop what is fed here until revoked.
                tracing::error!(%topic, partition, %reason, "partition processor fenced; rejoining the group");
                a.shared.status.request_rejoin();
                while rx.recv().await.is_some() {}
                return;
            }
            Ok(Exit::Failed(reason)) => reason,
            Err(panic) => panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_else(|| "panic".into()),
        };
        a.shared.metrics.processor_restarts.inc();
        tracing::error!(%topic, partition, %reason, "partition processor failed; starting a new one from the stored offset");
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
        // The failed processor may have taken records it never folded, and no
        // later record may come to show the gap: fetch from the stored offset.
        if let Ok(Some(offset)) = a.shared.store.offset(&topic, partition) {
            let _ = a.seeks.send(Seek {
                topic: topic.clone(),
                partition,
                offset,
            });
        }
    }
}

/// The partition's high watermark and the topic's partition count.
async fn watermark_and_count(
    consumer: &Arc<BaseConsumer>,
    topic: &str,
    partition: i32,
) -> Result<(i64, Option<i32>), rdkafka::error::KafkaError> {
    let (c, t) = (consumer.clone(), topic.to_owned());
    tokio::task::spawn_blocking(move || {
        let (_, high) = c.fetch_watermarks(&t, partition, Duration::from_secs(10))?;
        let count = c
            .fetch_metadata(Some(&t), Duration::from_secs(10))
            .ok()
            .and_then(|md| {
                let m = md.topics().iter().find(|m| m.name() == t)?;
                (m.error().is_none() && !m.partitions().is_empty())
                    .then_some(m.partitions().len() as i32)
            });
        Ok((high, count))
    })
    .await
    .unwrap_or_else(|e| {
        Err(rdkafka::error::KafkaError::Canceled).inspect_err(|_| {
            tracing::error!(error = %e, "watermark task failed");
        })
    })
}
