//! The two background tasks behind [`Replicas`](super::Replicas): the announcer
//! publishes this replica's [`Announcement`] every [`ANNOUNCE_INTERVAL`] and at
//! once when its partitions change (a last, `draining` one on shutdown); the
//! node registry's follower (which tails the topic from a little before its
//! end) hands it every orchestrator's announcement to fold into the map. Both
//! log failures and carry on: a replica that cannot announce is simply not
//! forwarded to.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio::sync::watch;
use weft_shared::avro::AvroRecord;
use weft_shared::event::now_ms;
use weft_shared::Topics;

use super::{Announcement, Replicas, ANNOUNCE_INTERVAL};
use crate::protocol::{KafkaNodeRegistry, RecordObserver};
use crate::status::Status;
/// Coalesces a burst of partition changes (a rebalance) into one announcement.
const SETTLE: Duration = Duration::from_millis(50);

/// Who this replica is, for its announcements.
#[derive(Clone)]
pub struct Announcer {
    pub node_id: String,
    pub api_url: String,
    pub started_at_ms: i64,
    pub status: Arc<Status>,
    pub producer: FutureProducer,
    pub topics: Topics,
}

impl Announcer {
    fn announcement(&self, draining: bool) -> Announcement {
        Announcement {
            node_id: self.node_id.clone(),
            api_url: self.api_url.clone(),
            partitions: if draining {
                Default::default()
            } else {
                self.status.owned()
            },
            draining,
            started_at_ms: self.started_at_ms,
            at_ms: now_ms(),
        }
    }

    async fn publish(&self, draining: bool) {
        let a = self.announcement(draining);
        let payload = a.to_record().encode();
        let topic = self.topics.nodes();
        let record = FutureRecord::to(&topic)
            .key(&self.node_id)
            .payload(&payload);
        let sent = tokio::time::timeout(
            2 * ANNOUNCE_INTERVAL,
            self.producer.send(record, ANNOUNCE_INTERVAL),
        )
        .await;
        match sent {
            Ok(Ok(_)) => {
                tracing::debug!(
                    partitions = a.partitions.len(),
                    draining,
                    "replica announced"
                )
            }
            Ok(Err((e, _))) => tracing::warn!(error = %e, %topic, "could not announce the replica"),
            Err(_) => tracing::warn!(%topic, "announcing the replica timed out"),
        }
    }

    /// Announces until `stop` turns true, then announces `draining`.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let mut changes = self.status.watch();
        let mut tick = tokio::time::interval(ANNOUNCE_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                changed = changes.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    tokio::time::sleep(SETTLE).await;
                    changes.borrow_and_update();
                    tick.reset();
                }
                stopped = stop.changed() => {
                    if stopped.is_err() || *stop.borrow() {
                        break;
                    }
                }
            }
            self.publish(false).await;
        }
        self.publish(true).await;
        tracing::info!(node_id = %self.node_id, "replica announced draining");
    }
}

/// Feeds `replicas` from the node registry's follower (the only reader of
/// the topic in an orchestrator) for as long as it runs.
pub async fn follow(replicas: Arc<Replicas>, nodes: Arc<KafkaNodeRegistry>) {
    let observer: RecordObserver = Arc::new(move |record| {
        if let Some(a) = Announcement::from_record(record) {
            tracing::trace!(node_id = %a.node_id, partitions = a.partitions.len(), "replica announcement");
            replicas.apply(a);
        }
    });
    nodes.follow(Some(observer)).await;
}
