//! Raw broker round trips, with no Weft code in between: produce N small records
//! to a topic and consume them back in a consumer group. Used by the broker test
//! (does the broker the harness starts work?) and by `weft-bench` as the
//! baseline that Weft's own throughput is compared with.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;
use tokio::sync::oneshot;

use crate::broker::{client_config, create_topic};

/// How long the consumer may take to receive everything.
const CONSUME_TIMEOUT: Duration = Duration::from_secs(120);

/// One consumed record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsumedRecord {
    pub partition: i32,
    pub offset: i64,
    pub key: Vec<u8>,
    pub payload: Vec<u8>,
}

/// What a [`produce_consume`] round trip did.
#[derive(Clone, Debug)]
pub struct RoundTrip {
    /// Every record consumed, in the order received.
    pub records: Vec<ConsumedRecord>,
    /// From the first send to the last record consumed (the group join before it is not counted).
    pub elapsed: Duration,
}

impl RoundTrip {
    /// Records per second over the whole round trip.
    pub fn rate(&self) -> f64 {
        self.records.len() as f64 / self.elapsed.as_secs_f64()
    }

    /// The offsets received per partition, in the order received.
    pub fn offsets_by_partition(&self) -> BTreeMap<i32, Vec<i64>> {
        let mut map: BTreeMap<i32, Vec<i64>> = BTreeMap::new();
        for r in &self.records {
            map.entry(r.partition).or_default().push(r.offset);
        }
        map
    }
}

/// The key of record `i` of a round trip.
pub fn record_key(i: usize) -> String {
    format!("key-{i:08}")
}

/// The payload of record `i` of a round trip (about 32 bytes).
pub fn record_payload(i: usize) -> String {
    format!("payload-{i:08}-abcdefghijklmnop")
}

/// A consumer in group `group` on `topic` that runs on a blocking thread until it
/// has received `n` records (then commits and returns them with the time the last
/// one arrived). The oneshot fires once partitions are assigned.
type Consuming = tokio::task::JoinHandle<Result<(Vec<ConsumedRecord>, Instant)>>;

fn spawn_consumer(
    bootstrap: &str,
    topic: &str,
    group: &str,
    n: usize,
) -> Result<(oneshot::Receiver<()>, Consuming)> {
    let mut consumer_cfg = client_config(bootstrap);
    consumer_cfg
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "10000")
        .set("heartbeat.interval.ms", "1000");
    let consumer: BaseConsumer = consumer_cfg.create().context("creating consumer")?;
    consumer.subscribe(&[topic]).context("subscribing")?;

    let (ready_tx, ready_rx) = oneshot::channel::<()>();
    let consuming =
        tokio::task::spawn_blocking(move || -> Result<(Vec<ConsumedRecord>, Instant)> {
            let deadline = Instant::now() + CONSUME_TIMEOUT;
            let mut ready_tx = Some(ready_tx);
            let mut records = Vec::with_capacity(n);
            while records.len() < n {
                if Instant::now() >= deadline {
                    bail!(
                        "consumed {} of {n} records within {CONSUME_TIMEOUT:?}",
                        records.len()
                    );
                }
                let polled = consumer.poll(Duration::from_millis(100));
                if ready_tx.is_some() && consumer.assignment().is_ok_and(|a| a.count() > 0) {
                    let _ = ready_tx.take().map(|tx| tx.send(()));
                }
                match polled {
                    None => {}
                    Some(Err(KafkaError::PartitionEOF(_))) => {}
                    Some(Err(e)) => bail!("consumer error: {e}"),
                    Some(Ok(m)) => records.push(ConsumedRecord {
                        partition: m.partition(),
                        offset: m.offset(),
                        key: m.key().unwrap_or_default().to_vec(),
                        payload: m.payload().unwrap_or_default().to_vec(),
                    }),
                }
            }
            let done = Instant::now();
            consumer
                .commit_consumer_state(CommitMode::Sync)
                .context("committing offsets")?;
            consumer.unsubscribe();
            Ok((records, done))
        });
    Ok((ready_rx, consuming))
}

/// Consumes `n` records of `topic` (from the start, unless `group` has committed
/// offsets) in consumer group `group`, then commits.
pub async fn consume(
    bootstrap: &str,
    topic: &str,
    group: &str,
    n: usize,
) -> Result<Vec<ConsumedRecord>> {
    let (_ready, consuming) = spawn_consumer(bootstrap, topic, group, n)?;
    Ok(consuming.await??.0)
}

/// Produces `n` records (keys [`record_key`], payloads [`record_payload`]) to the
/// existing `topic` with an idempotent producer, and consumes them in consumer
/// group `group` (joined, with partitions assigned, before the first send); then
/// commits the group's offsets. `fetch.wait.max.ms` is 10 ms.
pub async fn produce_consume(
    bootstrap: &str,
    topic: &str,
    group: &str,
    n: usize,
) -> Result<RoundTrip> {
    let (ready_rx, consuming) = spawn_consumer(bootstrap, topic, group, n)?;

    // Wait for the group join (and partition assignment) before producing.
    if ready_rx.await.is_err() {
        let err = consuming
            .await?
            .err()
            .unwrap_or_else(|| anyhow::anyhow!("consumer stopped"));
        return Err(err.context("consumer did not get a partition assignment"));
    }

    let mut producer_cfg = client_config(bootstrap);
    producer_cfg
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("message.timeout.ms", "30000");
    let producer: FutureProducer = producer_cfg.create().context("creating producer")?;
    let start = Instant::now();
    let mut deliveries = Vec::with_capacity(n);
    for i in 0..n {
        let key = record_key(i);
        let payload = record_payload(i);
        let mut record = FutureRecord::to(topic).key(&key).payload(&payload);
        loop {
            match producer.send_result(record) {
                Ok(delivery) => {
                    deliveries.push(delivery);
                    break;
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                Err((e, _)) => bail!("producing record {i}: {e}"),
            }
        }
    }
    for (i, delivery) in deliveries.into_iter().enumerate() {
        match delivery.await {
            Ok(Ok(_)) => {}
            Ok(Err((e, _))) => bail!("record {i} was not delivered: {e}"),
            Err(_) => bail!("record {i}: the producer was dropped before delivery"),
        }
    }
    producer
        .flush(Duration::from_secs(30))
        .context("flushing producer")?;
    let (records, done) = consuming.await??;
    Ok(RoundTrip {
        records,
        elapsed: done.duration_since(start),
    })
}

/// Produces `n` small records to a new 1-partition topic on `bootstrap` and
/// consumes them in a consumer group: records per second over the whole round
/// trip (first send to last record consumed).
pub async fn raw_produce_consume_rate(bootstrap: &str, n: usize) -> Result<f64> {
    let id = uuid::Uuid::new_v4().simple().to_string();
    let topic = format!("weft-bench-raw-{id}");
    create_topic(bootstrap, &topic, 1).await?;
    let trip = produce_consume(bootstrap, &topic, &format!("weft-bench-raw-{id}"), n).await?;
    Ok(trip.rate())
}
