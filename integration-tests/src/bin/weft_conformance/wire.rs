//! What the kit sees and writes on the broker: whole topics read from the
//! beginning by a consumer outside any group, the committed offsets of the
//! worker's group, and records produced to a chosen partition.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use weft_shared::avro::AvroRecord;
use weft_shared::config::KafkaSettings;
use weft_shared::event::now_ms;
use weft_shared::kafka::{client_config, Role};
use weft_shared::node::{HealthStatus, NodeRecord};
use weft_shared::Topics;

const CALL: Duration = Duration::from_secs(5);

/// One record as read back.
#[derive(Clone, Debug)]
pub struct Rec {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub value: Vec<u8>,
    pub headers: BTreeMap<String, String>,
}

impl Rec {
    pub fn key_str(&self) -> String {
        String::from_utf8_lossy(self.key.as_deref().unwrap_or_default()).into_owned()
    }
}

pub struct Wire {
    pub settings: KafkaSettings,
    pub topics: Topics,
    producer: FutureProducer,
    /// A consumer with the worker's group id, never subscribed: it only asks for the group's offsets.
    group: Arc<Mutex<BaseConsumer>>,
}

impl Wire {
    pub fn new(settings: KafkaSettings, worker_group: String) -> Result<Self> {
        let producer: FutureProducer = client_config(&settings, Role::Producer)
            .create()
            .context("creating the producer")?;
        let group: BaseConsumer = client_config(&settings, Role::Consumer)
            .set("group.id", &worker_group)
            .create()
            .context("creating the offsets consumer")?;
        Ok(Self {
            topics: Topics::new(settings.topic_prefix.clone()),
            settings,
            producer,
            group: Arc::new(Mutex::new(group)),
        })
    }

    /// Every record of `topic`, read from the beginning up to the end it has now.
    pub async fn read(&self, topic: &str) -> Result<Vec<Rec>> {
        let settings = self.settings.clone();
        let topic = topic.to_owned();
        tokio::task::spawn_blocking(move || read_blocking(&settings, &topic)).await?
    }

    /// How many partitions `topic` has.
    pub async fn partitions(&self, topic: &str) -> Result<i32> {
        let group = self.group.clone();
        let topic = topic.to_owned();
        tokio::task::spawn_blocking(move || {
            let consumer = group.lock().expect("offsets consumer");
            let md = consumer.fetch_metadata(Some(&topic), CALL)?;
            let t = md
                .topics()
                .iter()
                .find(|t| t.name() == topic)
                .context("no metadata")?;
            anyhow::ensure!(t.error().is_none(), "{topic}: {:?}", t.error());
            Ok(t.partitions().len() as i32)
        })
        .await?
    }

    /// The worker group's committed offset of `topic`/`partition` (-1: none).
    pub async fn committed(&self, topic: &str, partition: i32) -> Result<i64> {
        let group = self.group.clone();
        let topic = topic.to_owned();
        tokio::task::spawn_blocking(move || {
            let consumer = group.lock().expect("offsets consumer");
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition(&topic, partition);
            let got = consumer.committed_offsets(tpl, CALL)?;
            Ok(
                match got.find_partition(&topic, partition).map(|e| e.offset()) {
                    Some(Offset::Offset(o)) => o,
                    _ => -1,
                },
            )
        })
        .await?
    }

    /// Waits until the worker group has committed past `offset` of `topic`/`partition`.
    pub async fn wait_committed_past(
        &self,
        topic: &str,
        partition: i32,
        offset: i64,
        within: Duration,
        what: &str,
    ) -> Result<Duration> {
        let began = Instant::now();
        loop {
            if self.committed(topic, partition).await.unwrap_or(-1) > offset {
                return Ok(began.elapsed());
            }
            if began.elapsed() > within {
                bail!("{what}: the worker's group did not commit past {topic}/{partition}/{offset} within {within:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until live workers' node records (labels
    /// `weft.partition.<topic>/<partition>`) claim every partition of `topics`.
    pub async fn wait_workers_hold(&self, topics: &[String], within: Duration) -> Result<Duration> {
        let began = Instant::now();
        let mut wanted = BTreeSet::new();
        for t in topics {
            for p in 0..self.partitions(t).await? {
                wanted.insert(format!("{t}/{p}"));
            }
        }
        loop {
            let mut latest: BTreeMap<String, NodeRecord> = BTreeMap::new();
            for r in self.read(&self.topics.nodes()).await? {
                if let Ok(n) = NodeRecord::decode(&r.value) {
                    latest.insert(n.node_id.clone(), n);
                }
            }
            let fresh = now_ms() - 20_000;
            let held: BTreeSet<&str> = latest
                .values()
                .filter(|n| {
                    n.role == "worker"
                        && n.health != HealthStatus::Draining
                        && n.heartbeat_at_ms > fresh
                })
                .flat_map(|n| n.labels.iter())
                .filter(|(_, v)| v.starts_with("assigned@"))
                .filter_map(|(k, _)| k.strip_prefix("weft.partition."))
                .collect();
            let missing = wanted.iter().filter(|w| !held.contains(w.as_str())).count();
            if missing == 0 {
                return Ok(began.elapsed());
            }
            if began.elapsed() > within {
                bail!("after {within:?}, {missing} of {} case partitions are held by no worker (as the node records say)", wanted.len());
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Produces a record (to `partition`, else where the partitioner puts the
    /// key); returns its partition and offset.
    pub async fn produce(
        &self,
        topic: &str,
        partition: Option<i32>,
        key: &[u8],
        value: &[u8],
        headers: &BTreeMap<String, String>,
    ) -> Result<(i32, i64)> {
        let mut h = OwnedHeaders::new();
        for (k, v) in headers {
            h = h.insert(Header {
                key: k,
                value: Some(v.as_bytes()),
            });
        }
        let mut record = FutureRecord::to(topic).key(key).payload(value).headers(h);
        if let Some(p) = partition {
            record = record.partition(p);
        }
        let delivered = self
            .producer
            .send(record, Duration::from_secs(10))
            .await
            .map_err(|(e, _)| e)?;
        Ok((delivered.partition, delivered.offset))
    }
}

fn read_blocking(settings: &KafkaSettings, topic: &str) -> Result<Vec<Rec>> {
    let consumer: BaseConsumer = client_config(settings, Role::Consumer)
        .set(
            "group.id",
            format!("weft-conformance-{}", uuid::Uuid::new_v4()),
        )
        .set("enable.partition.eof", "false")
        .create()?;
    let md = consumer.fetch_metadata(Some(topic), CALL)?;
    let Some(t) = md.topics().iter().find(|t| t.name() == topic) else {
        return Ok(Vec::new());
    };
    let mut ends = BTreeMap::new();
    let mut tpl = TopicPartitionList::new();
    for p in t.partitions() {
        let (low, high) = consumer.fetch_watermarks(topic, p.id(), CALL)?;
        if high > low {
            ends.insert(p.id(), high);
            tpl.add_partition_offset(topic, p.id(), Offset::Offset(low))?;
        }
    }
    let mut out = Vec::new();
    if ends.is_empty() {
        return Ok(out);
    }
    consumer.assign(&tpl)?;
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut pending = ends.clone();
    while !pending.is_empty() {
        if Instant::now() > deadline {
            bail!(
                "reading {topic}: partitions {:?} did not reach their end",
                pending.keys()
            );
        }
        let Some(msg) = consumer.poll(Duration::from_millis(200)) else {
            // offsets may have gaps (control batches): the position says where it is
            if let Ok(position) = consumer.position() {
                pending.retain(|p, end| {
                    !matches!(
                        position.find_partition(topic, *p).map(|e| e.offset()),
                        Some(Offset::Offset(o)) if o >= *end
                    )
                });
            }
            continue;
        };
        let msg = msg?;
        let mut headers = BTreeMap::new();
        if let Some(h) = msg.headers() {
            for header in h.iter() {
                let v = header
                    .value
                    .map(String::from_utf8_lossy)
                    .unwrap_or_default();
                headers.insert(header.key.to_owned(), v.into_owned());
            }
        }
        out.push(Rec {
            partition: msg.partition(),
            offset: msg.offset(),
            key: msg.key().map(<[u8]>::to_vec),
            value: msg.payload().map(<[u8]>::to_vec).unwrap_or_default(),
            headers,
        });
        if pending
            .get(&msg.partition())
            .is_some_and(|end| msg.offset() + 1 >= *end)
        {
            pending.remove(&msg.partition());
        }
    }
    out.sort_by_key(|r| (r.partition, r.offset));
    Ok(out)
}
