//! Publishing outbox records. The records of a flush are handed to the
//! idempotent producer one after another, in order, before anything waits for
//! the broker ([`enqueue`]; the producer keeps that order within a
//! partition), and the flush completes only when the broker acknowledged all
//! of them. Against a broker with transactions (`kafka.transactions = on`) a flush
//! is one Kafka transaction, so `read_committed` consumers see all of a batch's
//! decisions or none. A failed flush is retried by the caller; duplicates a
//! retry may write carry the same idempotency keys and are dropped on apply.

use std::time::Duration;

use rdkafka::error::KafkaError;
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;
use weft_shared::config::KafkaSettings;
use weft_shared::kafka::{client_config, headers, Role};

use crate::store::OutboxRecord;

/// A publish that did not complete.
#[derive(Debug, thiserror::Error)]
#[error("publishing to {topic} failed: {reason}")]
pub struct PublishError {
    pub topic: String,
    pub reason: String,
    pub failure: Failure,
}

/// What a failed publish means for the caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// Try again (broker down, timeout, aborted transaction).
    Transient,
    /// The broker or the client refuses this record for good (too large,
    /// invalid, not authorised): retrying it can never succeed.
    Refused { index: usize },
    /// The producer can never publish again (fenced by a newer owner of the
    /// same transactional id, or a fatal error).
    Fatal,
}

/// Classifies a producer error for record `index` of a publish.
pub fn classify(e: &KafkaError, index: usize) -> Failure {
    use RDKafkaErrorCode as C;
    if let KafkaError::Transaction(t) = e {
        if t.is_fatal() {
            return Failure::Fatal;
        }
    }
    match e.rdkafka_error_code() {
        Some(C::ProducerFenced | C::InvalidProducerEpoch | C::Fatal) => Failure::Fatal,
        Some(
            C::MessageSizeTooLarge
            | C::InvalidMessageSize
            | C::InvalidMessage
            | C::InvalidRecord
            | C::TopicAuthorizationFailed
            | C::InvalidTopic,
        ) => Failure::Refused { index },
        _ => Failure::Transient,
    }
}

/// Publishes outbox records, plainly or in transactions.
#[derive(Clone)]
pub enum Publisher {
    /// Idempotent producer, no transactions (any broker, Tansu included).
    Plain(FutureProducer),
    /// One Kafka transaction per flush; the producer is this partition's own
    /// (its `transactional.id` fences a zombie owner of the same partition).
    Transactional(FutureProducer),
}

impl Publisher {
    /// A transactional publisher for one source partition.
    pub fn transactional(
        settings: &KafkaSettings,
        transactional_id: &str,
    ) -> Result<Self, PublishError> {
        let err = |e: KafkaError| PublishError {
            topic: String::new(),
            failure: classify(&e, 0),
            reason: e.to_string(),
        };
        let producer: FutureProducer = client_config(settings, Role::Producer)
            .set("transactional.id", transactional_id)
            .create()
            .map_err(err)?;
        producer
            .init_transactions(Duration::from_secs(30))
            .map_err(err)?;
        Ok(Publisher::Transactional(producer))
    }

    /// The producer records go through.
    pub fn producer(&self) -> &FutureProducer {
        match self {
            Publisher::Plain(p) | Publisher::Transactional(p) => p,
        }
    }

    /// Sends `records` and waits until the broker acknowledged every one.
    pub async fn publish(&self, records: &[OutboxRecord]) -> Result<(), PublishError> {
        match self {
            Publisher::Plain(p) => send_all(p, records).await,
            Publisher::Transactional(p) => {
                let fail = |e: KafkaError| PublishError {
                    topic: "(transaction)".into(),
                    failure: match classify(&e, 0) {
                        Failure::Fatal => Failure::Fatal,
                        _ => Failure::Transient,
                    },
                    reason: e.to_string(),
                };
                p.begin_transaction().map_err(fail)?;
                if let Err(e) = send_all(p, records).await {
                    let _ = p.abort_transaction(Duration::from_secs(30));
                    return Err(e);
                }
                if let Err(e) = p.commit_transaction(Duration::from_secs(30)) {
                    let _ = p.abort_transaction(Duration::from_secs(30));
                    return Err(fail(e));
                }
                Ok(())
            }
        }
    }
}

async fn send_all(producer: &FutureProducer, records: &[OutboxRecord]) -> Result<(), PublishError> {
    enqueue(producer, records).await.acknowledged().await
}

/// How long a record waits for room in the producer's queue before it fails.
const QUEUE_TIMEOUT: Duration = Duration::from_secs(30);

/// Records handed to the producer, in order, and their acknowledgements to come.
pub struct Enqueued {
    deliveries: Vec<Result<DeliveryFuture, KafkaError>>,
    topics: Vec<String>,
}

/// Hands `records` to the producer one after another, in their order, before
/// it returns: while the producer's queue is full it waits and tries the same
/// record again, so a later record (of this call, or of a later call) never
/// goes ahead of an earlier one. The idempotent producer then keeps that
/// order within each partition.
pub async fn enqueue(producer: &FutureProducer, records: &[OutboxRecord]) -> Enqueued {
    let mut deliveries = Vec::with_capacity(records.len());
    for r in records {
        let pairs: Vec<(&str, &str)> = r
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let mut record = FutureRecord::to(&r.topic)
            .key(&r.key)
            .payload(&r.payload)
            .headers(headers(&pairs));
        let deadline = tokio::time::Instant::now() + QUEUE_TIMEOUT;
        loop {
            match producer.send_result(record) {
                Ok(delivery) => {
                    deliveries.push(Ok(delivery));
                    break;
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back))
                    if tokio::time::Instant::now() < deadline =>
                {
                    record = back;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err((e, _)) => {
                    deliveries.push(Err(e));
                    break;
                }
            }
        }
    }
    Enqueued {
        deliveries,
        topics: records.iter().map(|r| r.topic.clone()).collect(),
    }
}

impl Enqueued {
    /// Waits until the broker acknowledged every record. A refused record is
    /// reported before a transient failure of another, so the caller can set
    /// it aside instead of retrying the batch for ever.
    pub async fn acknowledged(self) -> Result<(), PublishError> {
        let mut first: Option<PublishError> = None;
        for (index, (delivery, topic)) in self.deliveries.into_iter().zip(self.topics).enumerate() {
            let result = match delivery {
                Ok(fut) => match fut.await {
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err((e, _))) => Err(e),
                    Err(_) => Err(KafkaError::Canceled),
                },
                Err(e) => Err(e),
            };
            if let Err(e) = result {
                let failure = classify(&e, index);
                let worse = match (&first, failure) {
                    (None, _) => true,
                    (Some(f), Failure::Fatal) => f.failure != Failure::Fatal,
                    (Some(f), Failure::Refused { .. }) => f.failure == Failure::Transient,
                    (Some(_), Failure::Transient) => false,
                };
                if worse {
                    first = Some(PublishError {
                        topic,
                        reason: e.to_string(),
                        failure,
                    });
                }
            }
        }
        first.map_or(Ok(()), Err)
    }
}

#[cfg(test)]
mod tests {
    //! The transactional path on librdkafka's mock cluster (Tansu has no transactions).

    use std::collections::BTreeMap;

    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::mocking::MockCluster;
    use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
    use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};

    use super::*;
    use crate::store::OutboxKind;

    fn settings(bootstrap: String) -> KafkaSettings {
        KafkaSettings {
            bootstrap,
            topic_prefix: "weft".into(),
            partitions: 1,
            replication_factor: 1,
            transactions: weft_shared::config::TransactionsMode::On,
            fetch_wait_max_ms: 10,
            broker_workarounds: weft_shared::config::BrokerWorkarounds::Auto,
            properties: BTreeMap::new(),
        }
    }

    fn record(i: usize) -> OutboxRecord {
        OutboxRecord {
            kind: OutboxKind::Event,
            ident: format!("k{i}"),
            topic: "weft.t.events".into(),
            key: b"instance".to_vec(),
            payload: format!("decision {i}").into_bytes(),
            headers: vec![("weft-event-type".into(), "task.scheduled".into())],
        }
    }

    fn read_committed(bootstrap: &str) -> Vec<String> {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("group.id", "reader")
            .set("isolation.level", "read_committed")
            .create()
            .expect("consumer");
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset("weft.t.events", 0, Offset::Beginning)
            .expect("tpl");
        consumer.assign(&tpl).expect("assign");
        let mut out = Vec::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::time::Instant::now() < deadline {
            match consumer.poll(Duration::from_millis(100)) {
                Some(Ok(m)) => {
                    out.push(String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned())
                }
                Some(Err(e)) => panic!("consume: {e}"),
                None if !out.is_empty() => break,
                None => {}
            }
        }
        out
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn flights_keep_their_order_through_a_full_producer_queue() {
        let cluster = MockCluster::new(1).expect("mock cluster");
        cluster.create_topic("weft.t.events", 1, 1).expect("topic");
        let bootstrap = cluster.bootstrap_servers();
        // Room for 3 records: most of each flight waits for the queue.
        let producer: FutureProducer = client_config(&settings(bootstrap.clone()), Role::Producer)
            .set("queue.buffering.max.messages", "3")
            .set("linger.ms", "20")
            .create()
            .expect("producer");
        let flights: Vec<Vec<OutboxRecord>> = (0..4)
            .map(|f| (f * 50..(f + 1) * 50).map(record).collect())
            .collect();
        // As the pipeline does: each flight handed over in turn, its
        // acknowledgements awaited by a task of its own.
        let mut landing = Vec::new();
        for flight in &flights {
            let enqueued = enqueue(&producer, flight).await;
            landing.push(tokio::spawn(enqueued.acknowledged()));
        }
        for l in landing {
            l.await.expect("task").expect("acknowledged");
        }
        let expected: Vec<String> = (0..200).map(|i| format!("decision {i}")).collect();
        assert_eq!(read_committed(&bootstrap), expected);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_flush_is_one_transaction_and_a_failed_one_is_invisible() {
        let cluster = MockCluster::new(1).expect("mock cluster");
        cluster.create_topic("weft.t.events", 1, 1).expect("topic");
        let bootstrap = cluster.bootstrap_servers();
        let publisher = Publisher::transactional(&settings(bootstrap.clone()), "weft-test-0")
            .expect("init transactions");

        // A flush whose transaction cannot commit is aborted: none of its records become visible.
        cluster.request_errors(
            RDKafkaApiKey::EndTxn,
            &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_COORDINATOR],
        );
        let failed: Vec<OutboxRecord> = (100..103).map(record).collect();
        let first = publisher.publish(&failed).await;

        let ok: Vec<OutboxRecord> = (0..5).map(record).collect();
        publisher.publish(&ok).await.expect("transactional flush");
        let seen = read_committed(&bootstrap);
        let expected_ok: Vec<String> = (0..5).map(|i| format!("decision {i}")).collect();
        if first.is_ok() {
            // librdkafka retried the EndTxn internally and committed: all or nothing still holds.
            let all: Vec<String> = (100..103)
                .chain(0..5)
                .map(|i| format!("decision {i}"))
                .collect();
            assert_eq!(seen, all);
        } else {
            assert_eq!(
                seen, expected_ok,
                "records of the aborted transaction are invisible"
            );
        }
    }

    /// The partition's flush loop (publish, retry until the broker took it)
    /// across a broker outage in the middle of a transaction and a failed
    /// commit: every decision is visible to `read_committed` readers, none
    /// twice (by idempotency key — what the orchestrator deduplicates on).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_broker_outage_mid_transaction_loses_and_repeats_no_decision() {
        let cluster = MockCluster::new(1).expect("mock cluster");
        cluster.create_topic("weft.t.events", 1, 1).expect("topic");
        let bootstrap = cluster.bootstrap_servers();
        let publisher = Publisher::transactional(&settings(bootstrap.clone()), "weft-test-1")
            .expect("init transactions");
        let records: Vec<OutboxRecord> = (0..40).map(record).collect();
        let batches: Vec<Vec<OutboxRecord>> = records.chunks(10).map(<[_]>::to_vec).collect();
        cluster.request_errors(
            RDKafkaApiKey::EndTxn,
            &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_COORDINATOR],
        );
        let mut failures = 0;
        for (i, batch) in batches.iter().enumerate() {
            if i == 1 {
                // The broker goes away while this transaction is open.
                cluster.broker_down(1).expect("broker down");
            }
            let mut attempts = 0;
            loop {
                attempts += 1;
                let publish =
                    tokio::time::timeout(Duration::from_secs(20), publisher.publish(batch));
                if i == 1 && attempts == 1 {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    cluster.broker_up(1).expect("broker up");
                }
                match publish.await {
                    Ok(Ok(())) => break,
                    _ => {
                        failures += 1;
                        assert!(attempts < 10, "batch {i} never published");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
            }
        }
        let seen = read_committed(&bootstrap);
        let distinct: std::collections::BTreeSet<&String> = seen.iter().collect();
        let expected: std::collections::BTreeSet<String> =
            (0..40).map(|i| format!("decision {i}")).collect();
        assert_eq!(
            distinct
                .into_iter()
                .cloned()
                .collect::<std::collections::BTreeSet<_>>(),
            expected,
            "every decision visible ({failures} failed flushes retried)"
        );
        assert_eq!(
            seen.len(),
            40,
            "an aborted transaction's records are never visible, so none twice"
        );
    }
}
