//! When a replaying partition's replay is over. Below its *replay end* (the
//! high watermark at takeover) a partition folds without publishing; it goes
//! live once the events consumer has handed over every record below that end.
//! The engine reports the consumer's position in each partition
//! ([`ReplayProgress`]); a safety valve lets a partition that is stuck go live
//! anyway, with a warning, since republishing decisions is harmless (they are
//! deduplicated on apply) and a replay that never ends stalls its workflows;
//! dispatches decided below the replay end are held until the replay gets
//! there, since a worker cannot tell an attempt that already reported.
//! See ADR 0007 and ADR 0009.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::Partition;

/// A replaying partition goes live below its replay end (with a warning) when
/// its consumer position has not moved and the consumer has handed over no
/// record of any partition for this long: a broker whose high watermark counts
/// offsets it never serves must not stall the partition for ever.
const STUCK_AFTER: Duration = Duration::from_secs(30);
/// ... or when its own position has not moved for this long while other
/// partitions kept the consumer busy (a broker may serve some partitions of a
/// fetch and starve others for a while: Tansu does on large topics).
const STARVED_AFTER: Duration = Duration::from_secs(600);

/// What the engine tells a replaying partition about its events consumer.
#[derive(Clone, Debug)]
pub struct ReplayProgress {
    /// The consumer's position in this partition (the next offset it hands
    /// over); `-1` until known.
    pub position: Arc<AtomicI64>,
    /// When the consumer last handed over a record of any partition (epoch ms).
    pub consumer_active_ms: Arc<AtomicI64>,
}

impl ReplayProgress {
    /// Progress of a new partition; `consumer_active_ms` is shared by the consumer's partitions.
    pub fn new(consumer_active_ms: Arc<AtomicI64>) -> Self {
        Self {
            position: Arc::new(AtomicI64::new(-1)),
            consumer_active_ms,
        }
    }
}

impl Partition {
    /// With nothing to fold, decides whether replay is over: the consumer has
    /// handed over everything below the replay end (its position counts past
    /// transaction markers and compacted gaps, so no record is missing), or
    /// this partition is stuck ([`STUCK_AFTER`], [`STARVED_AFTER`]).
    pub(super) async fn check_replay_end(
        &mut self,
        idle: &mut (Instant, i64),
    ) -> Result<(), super::Exit> {
        let position = self.progress.position.load(Ordering::Acquire);
        if position >= self.replay_end {
            return self.go_live(false).await;
        }
        if position != idle.1 {
            *idle = (Instant::now(), position);
            return Ok(());
        }
        let consumer_idle_ms =
            weft_shared::event::now_ms() - self.progress.consumer_active_ms.load(Ordering::Acquire);
        let stuck =
            idle.0.elapsed() >= STUCK_AFTER && consumer_idle_ms >= STUCK_AFTER.as_millis() as i64;
        if stuck || idle.0.elapsed() >= STARVED_AFTER {
            tracing::warn!(topic = %self.topic, partition = self.partition, position, replay_end = self.replay_end, consumer_idle_ms, "replay made no progress; going live below the replay end (dispatches held until it gets there)");
            return self.go_live(true).await;
        }
        Ok(())
    }
}
