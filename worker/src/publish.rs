//! Producing records: events (awaiting the broker's ack), DLQ copies of
//! undecodable dispatches, node records — and, when `kafka.transactions=on`,
//! exactly-once results that go out together with the consumer offset in one
//! Kafka transaction. librdkafka's transaction calls block, so they run on the
//! blocking pool; one transaction at a time per worker.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::ConsumerGroupMetadata;
use rdkafka::error::KafkaError;
use rdkafka::message::OwnedHeaders;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use weft_shared::avro::AvroRecord;
use weft_shared::config::KafkaSettings;
use weft_shared::kafka::{client_config, Role};
use weft_shared::{Topics, WorkflowEvent};

use crate::error::WorkerError;
use crate::events::event_headers;
use crate::offsets::Position;

/// How long a transaction call may block.
const TXN_TIMEOUT: Duration = Duration::from_secs(30);

/// The worker's producers.
pub(crate) struct Publisher {
    topics: Topics,
    producer: FutureProducer,
    transactional: Option<tokio::sync::Mutex<FutureProducer>>,
}

impl Publisher {
    /// The idempotent producer, plus a transactional one (initialised here) when `transactional_id` is given.
    pub async fn new(
        settings: &KafkaSettings,
        transactional_id: Option<String>,
    ) -> Result<Self, WorkerError> {
        let producer: FutureProducer = client_config(settings, Role::Producer)
            .create()
            .map_err(WorkerError::kafka("creating the producer"))?;
        let transactional = match transactional_id {
            None => None,
            Some(id) => {
                let tx: FutureProducer = client_config(settings, Role::Producer)
                    .set("transactional.id", id)
                    .create()
                    .map_err(WorkerError::kafka("creating the transactional producer"))?;
                let init = tx.clone();
                blocking(move || init.init_transactions(TXN_TIMEOUT))
                    .await
                    .map_err(WorkerError::kafka(
                        "initialising kafka transactions (kafka.transactions=on)",
                    ))?;
                Some(tokio::sync::Mutex::new(tx))
            }
        };
        Ok(Self {
            topics: Topics::new(settings.topic_prefix.clone()),
            producer,
            transactional,
        })
    }

    pub fn topics(&self) -> &Topics {
        &self.topics
    }

    /// Produces one record and waits for the broker's ack.
    pub async fn send(
        &self,
        topic: &str,
        key: &[u8],
        payload: &[u8],
        headers: OwnedHeaders,
    ) -> Result<(), KafkaError> {
        let record = FutureRecord::to(topic)
            .key(key)
            .payload(payload)
            .headers(headers);
        self.producer
            .send(record, Duration::from_secs(5))
            .await
            .map(|_| ())
            .map_err(|(e, _)| e)
    }

    /// Appends `event` to its workflow type's events topic, keyed by instance id.
    pub async fn send_event(
        &self,
        event: &WorkflowEvent,
        traceparent: &str,
    ) -> Result<(), KafkaError> {
        let topic = self.topics.events(&event.workflow_type);
        let key = event.instance_id.to_string();
        self.send(
            &topic,
            key.as_bytes(),
            &event.encode(),
            event_headers(event, traceparent),
        )
        .await
    }

    /// Appends `event` in a transaction that also commits `offset` (when given) for the consumer group.
    pub async fn send_event_transactional(
        &self,
        event: &WorkflowEvent,
        traceparent: &str,
        offset: Option<(Position, Arc<ConsumerGroupMetadata>)>,
    ) -> Result<(), KafkaError> {
        let Some(lock) = &self.transactional else {
            return Err(KafkaError::ClientCreation(
                "no transactional producer (kafka.transactions is not on)".into(),
            ));
        };
        let tx = lock.lock().await;
        tx.begin_transaction()?;
        let topic = self.topics.events(&event.workflow_type);
        let key = event.instance_id.to_string();
        let payload = event.encode();
        let record = FutureRecord::to(&topic)
            .key(key.as_bytes())
            .payload(&payload)
            .headers(event_headers(event, traceparent));
        let sent = tx
            .send(record, Duration::from_secs(5))
            .await
            .map(|_| ())
            .map_err(|(e, _)| e);
        let result = match sent {
            Err(e) => Err(e),
            Ok(()) => {
                let producer = tx.clone();
                blocking(move || {
                    if let Some((pos, group)) = offset {
                        let mut tpl = TopicPartitionList::new();
                        tpl.add_partition_offset(
                            &pos.topic,
                            pos.partition,
                            Offset::Offset(pos.offset),
                        )?;
                        producer.send_offsets_to_transaction(&tpl, &group, TXN_TIMEOUT)?;
                    }
                    producer.commit_transaction(TXN_TIMEOUT)
                })
                .await
            }
        };
        if result.is_err() {
            let producer = tx.clone();
            if let Err(e) = blocking(move || producer.abort_transaction(TXN_TIMEOUT)).await {
                tracing::warn!(error = %e, "could not abort kafka transaction");
            }
        }
        result
    }

    /// Waits up to `timeout` for queued records to be delivered.
    pub async fn flush(&self, timeout: Duration) {
        let producer = self.producer.clone();
        if let Err(e) = blocking(move || producer.flush(timeout)).await {
            tracing::warn!(error = %e, "could not flush producer");
        }
    }
}

/// Runs a blocking librdkafka call on the blocking pool.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, KafkaError> + Send + 'static,
) -> Result<T, KafkaError> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or(Err(KafkaError::Canceled))
}
