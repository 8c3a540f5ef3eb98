//! Reads a topic (a DLQ is small) from the start of each partition to the
//! high watermark it had when the read began, with a consumer of its own
//! (assigned, no group offsets).

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use weft_shared::config::KafkaSettings;
use weft_shared::ids::InstanceId;
use weft_shared::kafka::{client_config, header_map, Role};

use super::Error;

/// How long a read may take.
const READ_TIMEOUT: Duration = Duration::from_secs(20);
const META_TIMEOUT: Duration = Duration::from_secs(5);

/// One record as read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Raw {
    pub partition: i32,
    pub offset: i64,
    pub timestamp_ms: i64,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: BTreeMap<String, String>,
}

/// Every record of `topic` (of `partition` only, when given), in offset
/// order per partition; empty when the topic does not exist. Blocking.
pub fn read_topic(
    settings: &KafkaSettings,
    topic: &str,
    partition: Option<i32>,
) -> Result<Vec<Raw>, Error> {
    let mut cfg = client_config(settings, Role::Consumer);
    cfg.set("group.id", format!("weft-dlq-{}", InstanceId::random()));
    let consumer: BaseConsumer = cfg.create()?;
    let md = consumer.fetch_metadata(Some(topic), META_TIMEOUT)?;
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
        if partition.is_some_and(|want| want != p.id()) {
            continue;
        }
        let (low, high) = consumer.fetch_watermarks(topic, p.id(), META_TIMEOUT)?;
        if high > low {
            tpl.add_partition_offset(topic, p.id(), Offset::Beginning)?;
            ends.insert(p.id(), high);
        }
    }
    if ends.is_empty() {
        return Ok(Vec::new());
    }
    consumer.assign(&tpl)?;
    let deadline = Instant::now() + READ_TIMEOUT;
    let mut out = Vec::new();
    while !ends.is_empty() {
        if Instant::now() > deadline {
            return Err(Error::Timeout {
                topic: topic.to_owned(),
                secs: READ_TIMEOUT.as_secs(),
            });
        }
        let m = match consumer.poll(Duration::from_millis(100)) {
            None => {
                // A trailing transaction marker is never handed over: the position passes it.
                if let Ok(pos) = consumer.position() {
                    for e in pos.elements() {
                        if let Offset::Offset(o) = e.offset() {
                            if ends.get(&e.partition()).is_some_and(|end| o >= *end) {
                                ends.remove(&e.partition());
                            }
                        }
                    }
                }
                continue;
            }
            Some(Ok(m)) => m,
            Some(Err(e)) => {
                tracing::debug!(%topic, error = %e, "dlq read: consumer error; continuing");
                continue;
            }
        };
        out.push(Raw {
            partition: m.partition(),
            offset: m.offset(),
            timestamp_ms: m.timestamp().to_millis().unwrap_or(0),
            key: m.key().map(<[u8]>::to_vec),
            value: m.payload().map(<[u8]>::to_vec),
            headers: header_map(m.headers()),
        });
        if ends
            .get(&m.partition())
            .is_some_and(|end| m.offset() + 1 >= *end)
        {
            ends.remove(&m.partition());
        }
    }
    out.sort_by_key(|r| (r.partition, r.offset));
    Ok(out)
}

/// [`read_topic`] off the async runtime.
pub async fn read_topic_async(
    settings: &KafkaSettings,
    topic: &str,
    partition: Option<i32>,
) -> Result<Vec<Raw>, Error> {
    let (s, t) = (settings.clone(), topic.to_owned());
    tokio::task::spawn_blocking(move || read_topic(&s, &t, partition))
        .await
        .map_err(|e| Error::Unavailable(format!("dlq read failed: {e}")))?
}
