//! [`WorkflowEventBus`] over Kafka with rdkafka: one idempotent producer for
//! everything published, one `StreamConsumer` (a consumer-group member) per
//! subscription, and a short-lived assigned consumer per replay, which reads
//! the type's events topic up to the high watermarks it saw when it started.
//!
//! A subscription stores the offset of each record once its handler returned
//! (auto-committed every second, and committed synchronously when it is
//! unsubscribed), so a group resumes after what it handled: at-least-once.
//! Topics are created on first use unless [`KafkaEventBus::without_topic_creation`]
//! was called (brokers that forbid it; librdkafka's mock cluster).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::watch;
use weft_shared::avro::AvroRecord;
use weft_shared::config::KafkaSettings;
use weft_shared::ids::{InstanceId, TaskId};
use weft_shared::kafka::{self, client_config, Role, TopicSpec};
use weft_shared::topics::headers as h;
use weft_shared::{DataMap, TaskDispatch, Topics, WorkflowEvent, WorkflowEventType};

use super::bus::{Subscription, WorkflowEventBus};
use super::{deliver, sequenced, Error, Result, WorkflowEventHandler};

/// How long a publish may wait for the broker's acknowledgement.
const SEND_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a replay may take to read the topic up to its end.
const REPLAY_TIMEOUT: Duration = Duration::from_secs(120);

/// Kafka event bus.
pub struct KafkaEventBus {
    settings: KafkaSettings,
    topics: Topics,
    producer: FutureProducer,
    create_topics: bool,
    ensured: Mutex<HashSet<String>>,
}

impl KafkaEventBus {
    /// A bus on the cluster `settings` names, with its own producer.
    pub fn new(settings: KafkaSettings, topics: Topics) -> Result<Self> {
        let producer = client_config(&settings, Role::Producer).create()?;
        Ok(Self {
            settings,
            topics,
            producer,
            create_topics: true,
            ensured: Mutex::new(HashSet::new()),
        })
    }

    /// Never creates topics (they must exist).
    pub fn without_topic_creation(mut self) -> Self {
        self.create_topics = false;
        self
    }

    /// Creates the topics of `topic`'s workflow type (or `topic` alone) once.
    async fn ensure(&self, topic: &str) -> Result<()> {
        if !self.create_topics || self.lock().contains(topic) {
            return Ok(());
        }
        let specs = match self.topics.parse(topic) {
            Some((ty, _)) => {
                kafka::workflow_type_topics(&self.topics, ty, self.settings.partitions)
            }
            None => vec![TopicSpec {
                name: topic.to_owned(),
                partitions: self.settings.partitions,
                compacted: false,
            }],
        };
        kafka::ensure_topics(&self.settings, &specs).await?;
        self.lock().extend(specs.into_iter().map(|s| s.name));
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.ensured.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn send(
        &self,
        topic: &str,
        key: &str,
        payload: &[u8],
        headers: &[(&str, &str)],
    ) -> Result<()> {
        self.ensure(topic).await?;
        let record = FutureRecord::to(topic)
            .key(key)
            .payload(payload)
            .headers(kafka::headers(headers));
        self.producer
            .send(record, SEND_TIMEOUT)
            .await
            .map_err(|(e, _)| Error::Kafka(e))?;
        Ok(())
    }
}

#[async_trait]
impl WorkflowEventBus for KafkaEventBus {
    async fn publish_workflow_event(
        &self,
        event: &WorkflowEvent,
        target_topic: Option<&str>,
    ) -> Result<()> {
        let topic = target_topic
            .map(str::to_owned)
            .unwrap_or_else(|| self.topics.events(&event.workflow_type));
        let headers = [
            (h::EVENT_TYPE, event.event_type.as_str()),
            (h::IDEMPOTENCY_KEY, event.idempotency_key.as_str()),
        ];
        let key = event.instance_id.to_string();
        self.send(&topic, &key, &event.encode(), &headers).await
    }

    async fn subscribe_to_workflow_events(
        &self,
        workflow_type: &str,
        event_types: &[WorkflowEventType],
        handler: Arc<dyn WorkflowEventHandler>,
        group_id: &str,
    ) -> Result<Subscription> {
        let topic = self.topics.events(workflow_type);
        self.ensure(&topic).await?;
        let mut cfg = client_config(&self.settings, Role::Consumer);
        cfg.set("group.id", group_id)
            .set("enable.auto.commit", "true")
            .set("auto.commit.interval.ms", "1000")
            .set("enable.auto.offset.store", "false");
        let consumer: StreamConsumer = cfg.create()?;
        consumer.subscribe(&[&topic])?;
        let (stop_tx, mut stop) = watch::channel(false);
        let types = event_types.to_vec();
        let group = group_id.to_owned();
        tracing::info!(%topic, group_id = %group, "subscribed to workflow events");
        let task = tokio::spawn(async move {
            loop {
                let m = tokio::select! {
                    m = consumer.recv() => m,
                    _ = stop.wait_for(|s| *s) => break,
                };
                let m = match m {
                    Ok(m) => m.detach(),
                    Err(e) => {
                        tracing::warn!(%topic, group_id = %group, error = %e, "consuming workflow events failed");
                        continue;
                    }
                };
                match m.payload().map(WorkflowEvent::decode) {
                    Some(Ok(event)) if types.is_empty() || types.contains(&event.event_type) => {
                        let mut context = DataMap::new();
                        context.insert("source".into(), "subscription".into());
                        context.insert("topic".into(), m.topic().into());
                        context.insert("partition".into(), i64::from(m.partition()).into());
                        context.insert("offset".into(), m.offset().into());
                        context.insert("group_id".into(), group.as_str().into());
                        deliver(handler.as_ref(), &event, &context).await;
                    }
                    Some(Ok(_)) => {}
                    _ => {
                        tracing::warn!(%topic, offset = m.offset(), "skipping an undecodable record")
                    }
                }
                if let Err(e) = consumer.store_offset(m.topic(), m.partition(), m.offset()) {
                    tracing::warn!(%topic, error = %e, "cannot store the consumed offset");
                }
            }
            // Commit what was handled and leave the group before unsubscribe returns.
            let closed = tokio::task::spawn_blocking(move || {
                if let Err(e) = consumer.commit_consumer_state(CommitMode::Sync) {
                    tracing::debug!(error = %e, "nothing committed on unsubscribe");
                }
                drop(consumer);
            });
            let _ = closed.await;
            tracing::info!(%topic, group_id = %group, "unsubscribed from workflow events");
        });
        Ok(Subscription::new(stop_tx, task))
    }

    async fn coordinate_task_execution(
        &self,
        dispatches: &[TaskDispatch],
        assignments: &BTreeMap<TaskId, String>,
    ) -> Result<()> {
        for d in dispatches {
            let topic = assignments
                .get(&d.task_id)
                .cloned()
                .unwrap_or_else(|| self.topics.tasks(&d.workflow_type));
            let attempt = d.attempt_key();
            let headers = [
                (h::TRACEPARENT, d.traceparent.as_str()),
                (h::IDEMPOTENCY_KEY, attempt.as_str()),
            ];
            self.send(&topic, &d.instance_id.to_string(), &d.encode(), &headers)
                .await?;
        }
        Ok(())
    }

    async fn replay_events(
        &self,
        workflow_type: &str,
        instance_id: InstanceId,
        from_seq: u64,
        to_seq: Option<u64>,
        handler: Option<Arc<dyn WorkflowEventHandler>>,
    ) -> Result<Vec<WorkflowEvent>> {
        let topic = self.topics.events(workflow_type);
        let settings = self.settings.clone();
        let records = tokio::task::spawn_blocking(move || read_key(&settings, &topic, instance_id))
            .await
            .map_err(|e| Error::Other(format!("replay task failed: {e}")))??;
        let events = records
            .iter()
            .filter_map(|payload| WorkflowEvent::decode(payload).ok());
        let events = sequenced(events, instance_id, from_seq, to_seq);
        if let Some(handler) = handler {
            let mut context = DataMap::new();
            context.insert("source".into(), "replay".into());
            for e in &events {
                deliver(handler.as_ref(), e, &context).await;
            }
        }
        Ok(events)
    }
}

/// The payloads of every record keyed `instance` in `topic`, read from the
/// start of each partition to the high watermark it had when the read began.
fn read_key(settings: &KafkaSettings, topic: &str, instance: InstanceId) -> Result<Vec<Vec<u8>>> {
    let mut cfg = client_config(settings, Role::Consumer);
    cfg.set("group.id", format!("weft-replay-{}", InstanceId::random()));
    let consumer: BaseConsumer = cfg.create()?;
    let timeout = Duration::from_secs(10);
    let md = consumer.fetch_metadata(Some(topic), timeout)?;
    let Some(t) = md
        .topics()
        .iter()
        .find(|t| t.name() == topic && t.error().is_none())
    else {
        return Ok(Vec::new());
    };
    let mut tpl = TopicPartitionList::new();
    let mut ends = HashMap::new();
    for p in t.partitions() {
        let (low, high) = consumer.fetch_watermarks(topic, p.id(), timeout)?;
        if high > low {
            tpl.add_partition_offset(topic, p.id(), Offset::Beginning)?;
            ends.insert(p.id(), high);
        }
    }
    consumer.assign(&tpl)?;
    let key = instance.to_string();
    let deadline = Instant::now() + REPLAY_TIMEOUT;
    let mut out = Vec::new();
    while !ends.is_empty() {
        if Instant::now() > deadline {
            return Err(Error::Other(format!(
                "replay of {topic} did not reach the end within {REPLAY_TIMEOUT:?}"
            )));
        }
        let m = match consumer.poll(Duration::from_millis(100)) {
            None => continue,
            Some(Ok(m)) => m,
            Some(Err(e)) => {
                // Transient (a connection dropped): librdkafka reconnects and resumes.
                tracing::debug!(%topic, error = %e, "replay consumer error; continuing");
                continue;
            }
        };
        if m.key() == Some(key.as_bytes()) {
            out.extend(m.payload().map(<[u8]>::to_vec));
        }
        if ends
            .get(&m.partition())
            .is_some_and(|end| m.offset() + 1 >= *end)
        {
            ends.remove(&m.partition());
        }
    }
    Ok(out)
}
