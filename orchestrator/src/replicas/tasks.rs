//! The two background tasks behind [`Replicas`](super::Replicas): the announcer
//! publishes this replica's [`Announcement`] every [`ANNOUNCE_INTERVAL`] and at
//! once when its partitions change (a last, `draining` one on shutdown); the
//! follower tails the node registry topic from a little before its end and
//! folds every orchestrator's announcement into the map. Both log failures and
//! carry on: a replica that cannot announce is simply not forwarded to.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Message, Offset, TopicPartitionList};
use tokio::sync::watch;
use weft_shared::avro::AvroRecord;
use weft_shared::config::KafkaSettings;
use weft_shared::event::now_ms;
use weft_shared::kafka::{self, client_config, Role};
use weft_shared::node::NodeRecord;
use weft_shared::Topics;

use super::{Announcement, Replicas, ANNOUNCE_INTERVAL};
use crate::status::Status;

/// Records of the node registry read back at start-up: far more than the
/// announcements of [`STALE_AFTER`](super::STALE_AFTER), which is all that counts.
const BACKLOG: i64 = 1_000;
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

/// Follows the node registry topic into `replicas` for as long as it runs;
/// retries when the broker cannot be reached.
pub async fn follow(replicas: Arc<Replicas>, settings: KafkaSettings, topics: Topics) {
    loop {
        if let Err(e) = follow_once(&replicas, &settings, &topics).await {
            tracing::warn!(error = %e, "following the node registry failed; retrying");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn follow_once(
    replicas: &Replicas,
    settings: &KafkaSettings,
    topics: &Topics,
) -> Result<(), kafka::Error> {
    let topic = topics.nodes();
    let mut cfg = client_config(settings, Role::Consumer);
    cfg.set(
        "group.id",
        format!("weft-replicas-{}", uuid::Uuid::new_v4()),
    );
    // Announcements come every couple of seconds: a half-second long-poll is
    // plenty and spares the broker (Tansu answers a fetch only when it expires).
    cfg.set("fetch.wait.max.ms", "500");
    let consumer: StreamConsumer = cfg.create()?;
    let (low, high) = {
        let (c, t) = (&consumer, topic.clone());
        tokio::task::block_in_place(|| c.fetch_watermarks(&t, 0, Duration::from_secs(10)))?
    };
    let start = (high - BACKLOG).max(low);
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(&topic, 0, Offset::Offset(start))?;
    consumer.assign(&tpl)?;
    tracing::info!(%topic, from = start, to = high, "following replica announcements");
    loop {
        let msg = consumer.recv().await?;
        let Some(payload) = msg.payload() else {
            continue;
        };
        match NodeRecord::decode(payload) {
            Ok(record) => {
                replicas.record(record.clone());
                if let Some(a) = Announcement::from_record(&record) {
                    tracing::trace!(node_id = %a.node_id, partitions = a.partitions.len(), "replica announcement");
                    replicas.apply(a);
                }
            }
            Err(e) => {
                tracing::debug!(offset = msg.offset(), error = %e, "skipping an undecodable node record")
            }
        }
    }
}
