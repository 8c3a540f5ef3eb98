//! [`WorkflowNodeRegistry`] over the compacted node registry topic
//! (`weft.nodes`, one partition, keyed by node id): a registration or a
//! heartbeat is a [`NodeRecord`] produced there (what workers in any language
//! publish too, see docs/protocol.md), and reads come from a live view that
//! ONE follower of the topic feeds: [`KafkaNodeRegistry::follow`], which an
//! orchestrator runs once and which also hands every record to an observer
//! (the replica announcements of [`crate::replicas`]). A write is seen by reads
//! once the follower has read it back.
//!
//! The follower starts [`BACKLOG`] records before the end of the topic (older
//! records are long gone nodes) and retries when the broker cannot be reached.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Message, Offset, TopicPartitionList};
use tokio::task::JoinHandle;
use weft_shared::avro::AvroRecord;
use weft_shared::config::KafkaSettings;
use weft_shared::event::now_ms;
use weft_shared::kafka::{self, client_config, Role};
use weft_shared::node::{HealthStatus, NodeRecord};
use weft_shared::Topics;

use super::registry::{
    heartbeat_record, registration_record, validate_registration, Liveness, NodeMetadata, NodeView,
    WorkflowNodeRegistry,
};
use super::registry_view::NodeTable;
use super::{Error, Result};

/// Records read back when the follower starts: far more than the heartbeats
/// of the nodes within [`Liveness::gone_after`], which is all that counts.
pub const BACKLOG: i64 = 10_000;
/// How long a registration or heartbeat may wait for the broker's acknowledgement.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);

/// Called with every record the follower reads.
pub type RecordObserver = Arc<dyn Fn(&NodeRecord) + Send + Sync>;

/// Kafka node registry.
pub struct KafkaNodeRegistry {
    settings: KafkaSettings,
    topics: Topics,
    producer: FutureProducer,
    table: NodeTable,
    liveness: Liveness,
    /// The latest record produced through this registry, by node id: a
    /// heartbeat right after a registration needs it before it is read back.
    produced: Mutex<HashMap<String, NodeRecord>>,
}

impl KafkaNodeRegistry {
    /// A registry on the cluster `settings` names, with its own producer.
    pub fn new(settings: KafkaSettings, topics: Topics) -> Result<Self> {
        let producer = client_config(&settings, Role::Producer).create()?;
        Ok(Self::with_producer(settings, topics, producer))
    }

    /// A registry producing with `producer` (the orchestrator's).
    pub fn with_producer(
        settings: KafkaSettings,
        topics: Topics,
        producer: FutureProducer,
    ) -> Self {
        Self {
            settings,
            topics,
            producer,
            table: NodeTable::default(),
            liveness: Liveness::default(),
            produced: Mutex::new(HashMap::new()),
        }
    }

    /// Other liveness durations than the defaults.
    pub fn with_liveness(mut self, liveness: Liveness) -> Self {
        self.liveness = liveness;
        self
    }

    /// Runs [`follow`](Self::follow) without an observer in a task of its own.
    pub fn spawn_follower(self: &Arc<Self>) -> JoinHandle<()> {
        let me = self.clone();
        tokio::spawn(async move { me.follow(None).await })
    }

    /// Follows the topic into the view (and `observer`) for as long as it
    /// runs; retries when the broker cannot be reached. Run it once.
    pub async fn follow(&self, observer: Option<RecordObserver>) {
        loop {
            if let Err(e) = self.follow_once(observer.as_ref()).await {
                tracing::warn!(error = %e, "following the node registry failed; retrying");
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    async fn follow_once(&self, observer: Option<&RecordObserver>) -> Result<()> {
        let topic = self.topics.nodes();
        let mut cfg = client_config(&self.settings, Role::Consumer);
        cfg.set(
            "group.id",
            format!("weft-replicas-{}", uuid::Uuid::new_v4()),
        );
        // Heartbeats come every couple of seconds: a half-second long-poll is
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
        tracing::info!(%topic, from = start, to = high, "following the node registry");
        loop {
            let msg = consumer.recv().await?;
            let Some(payload) = msg.payload() else {
                continue;
            };
            match NodeRecord::decode(payload) {
                Ok(record) => {
                    if let Some(observe) = observer {
                        observe(&record);
                    }
                    tracing::trace!(node_id = %record.node_id, role = %record.role, "node record");
                    self.table.observe(record);
                }
                Err(e) => {
                    tracing::debug!(offset = msg.offset(), error = %e, "skipping an undecodable node record")
                }
            }
        }
    }

    fn produced(&self) -> std::sync::MutexGuard<'_, HashMap<String, NodeRecord>> {
        self.produced.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Produces `record` keyed by its node id; returns once acknowledged.
    async fn publish(&self, record: NodeRecord) -> Result<()> {
        let topic = self.topics.nodes();
        let payload = record.encode();
        let sent = self
            .producer
            .send(
                FutureRecord::to(&topic)
                    .key(&record.node_id)
                    .payload(&payload)
                    .headers(kafka::headers(&[])),
                SEND_TIMEOUT,
            )
            .await;
        sent.map_err(|(e, _)| Error::Kafka(e))?;
        self.produced().insert(record.node_id.clone(), record);
        Ok(())
    }
}

#[async_trait]
impl WorkflowNodeRegistry for KafkaNodeRegistry {
    async fn register_workflow_node(
        &self,
        node_metadata: NodeMetadata,
        capabilities: Vec<String>,
        capacity_limits: BTreeMap<String, i64>,
    ) -> Result<String> {
        validate_registration(&node_metadata, &capacity_limits)?;
        let record = registration_record(node_metadata, capabilities, capacity_limits, now_ms());
        let id = record.node_id.clone();
        self.publish(record).await?;
        tracing::debug!(node_id = %id, topic = %self.topics.nodes(), "node registered");
        Ok(id)
    }

    async fn update_node_heartbeat(
        &self,
        registration_id: &str,
        health: HealthStatus,
        current_load: BTreeMap<String, i64>,
        active_tasks: Vec<String>,
    ) -> Result<bool> {
        let now = now_ms();
        let mine = self.produced().get(registration_id).cloned();
        let known = [mine, self.table.get(registration_id)]
            .into_iter()
            .flatten()
            .max_by_key(|r| r.heartbeat_at_ms)
            .filter(|r| !self.liveness.is_gone(r.heartbeat_at_ms, now));
        let Some(known) = known else {
            return Ok(false);
        };
        self.publish(heartbeat_record(
            known,
            health,
            current_load,
            active_tasks,
            now,
        ))
        .await?;
        Ok(true)
    }

    async fn nodes(&self) -> Result<Vec<NodeView>> {
        Ok(self.table.views(&self.liveness, now_ms()))
    }

    fn liveness(&self) -> Liveness {
        self.liveness
    }
}
