//! Producing records: events (awaiting the broker's ack), DLQ copies of
//! undecodable dispatches, node records — and, when `kafka.transactions=on`,
//! exactly-once results that go out together with the consumer offset in one
//! Kafka transaction. librdkafka's transaction calls block, so they run on the
//! blocking pool; one transaction at a time per worker. The offset a
//! transaction commits is read, sent and recorded under the commit lane
//! ([`TxnOffset`]), so no plain commit of its partition overtakes it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::consumer::ConsumerGroupMetadata;
use rdkafka::error::KafkaError;
use rdkafka::message::OwnedHeaders;
use rdkafka::producer::future_producer::DeliveryFuture;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use weft_shared::avro::AvroRecord;
use weft_shared::config::KafkaSettings;
use weft_shared::kafka::{client_config, Role};
use weft_shared::{Topics, WorkflowEvent};

use crate::consumer::lock;
use crate::error::WorkerError;
use crate::events::event_headers;
use crate::offsets::{OffsetTracker, Ticket};

/// The offset an exactly-once result's transaction commits: its ticket's
/// partition's done prefix through the ticket, read under `lane` when the
/// transaction commits, and recorded as committed before the lane is let go.
pub(crate) struct TxnOffset {
    pub lane: Arc<Mutex<()>>,
    pub tracker: Arc<Mutex<OffsetTracker>>,
    pub group: Arc<Mutex<Option<Arc<ConsumerGroupMetadata>>>>,
    pub ticket: Ticket,
}

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

    /// Hands `event` to the producer without waiting for the broker: records
    /// handed over later for the same instance (its partition) are delivered
    /// after it. Fails at once when the producer's queue is full.
    pub fn enqueue_event(
        &self,
        event: &WorkflowEvent,
        traceparent: &str,
    ) -> Result<DeliveryFuture, KafkaError> {
        let topic = self.topics.events(&event.workflow_type);
        let key = event.instance_id.to_string();
        let payload = event.encode();
        let record = FutureRecord::to(&topic)
            .key(key.as_bytes())
            .payload(&payload)
            .headers(event_headers(event, traceparent));
        self.producer.send_result(record).map_err(|(e, _)| e)
    }

    /// Appends `event` in a transaction that also commits `offset` (when
    /// given) for the consumer group. `Ok(false)`: the offset's partition is
    /// no longer this worker's (revoked, or the prefix would not reach the
    /// ticket), so the transaction was aborted and nothing was published.
    pub async fn send_event_transactional(
        &self,
        event: &WorkflowEvent,
        traceparent: &str,
        offset: Option<TxnOffset>,
    ) -> Result<bool, KafkaError> {
        let Some(lock_tx) = &self.transactional else {
            return Err(KafkaError::ClientCreation(
                "no transactional producer (kafka.transactions is not on)".into(),
            ));
        };
        let tx = lock_tx.lock().await;
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
                blocking(move || commit(&producer, offset)).await
            }
        };
        if !matches!(result, Ok(true)) {
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

/// Commits the open transaction of `producer`, with `offset` when given (see
/// [`TxnOffset`]); `Ok(false)` without committing when the offset's partition
/// is no longer this worker's.
fn commit(producer: &FutureProducer, offset: Option<TxnOffset>) -> Result<bool, KafkaError> {
    let Some(offset) = offset else {
        producer.commit_transaction(TXN_TIMEOUT)?;
        return Ok(true);
    };
    let _lane = lock(&offset.lane);
    let position = lock(&offset.tracker).position_if_done(&offset.ticket);
    let group = lock(&offset.group).clone();
    let (Some(position), Some(group)) = (position, group) else {
        return Ok(false);
    };
    let t = &offset.ticket;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(&t.topic, t.partition, Offset::Offset(position))?;
    producer.send_offsets_to_transaction(&tpl, &group, TXN_TIMEOUT)?;
    producer.commit_transaction(TXN_TIMEOUT)?;
    if !lock(&offset.tracker).commit_through(t, position) {
        tracing::warn!(topic = %t.topic, partition = t.partition, "partition revoked while its transaction committed");
    }
    Ok(true)
}

/// Runs a blocking librdkafka call on the blocking pool.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, KafkaError> + Send + 'static,
) -> Result<T, KafkaError> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or(Err(KafkaError::Canceled))
}
