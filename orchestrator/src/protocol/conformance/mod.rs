//! The conformance suites of the protocol traits: generic async functions that
//! panic (with the reason) when an implementation behaves otherwise than the
//! traits promise. `persistence_suite` runs on an empty persistence;
//! `bus_suite` on a bus whose topics exist or can be created, with a
//! [`TopicProbe`] that reads topics back ([`KafkaProbe`] for Kafka, the
//! in-memory bus is its own probe); `registry_suite` on a node registry whose
//! view is empty (a Kafka one with its follower running).

mod bus;
pub mod history;
mod persistence;
mod registry;
mod registry_liveness;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use weft_shared::config::KafkaSettings;
use weft_shared::kafka::{client_config, Role};

pub use bus::{bus_suite, BusFixture, Collector, TopicProbe, DELIVERY_DEADLINE};
pub use persistence::persistence_suite;
pub use registry::{registry_suite, REGISTRY_DEADLINE};

use super::InMemoryEventBus;

#[async_trait]
impl TopicProbe for InMemoryEventBus {
    async fn read(&self, topic: &str, _at_least: usize) -> Vec<(Vec<u8>, Vec<u8>)> {
        self.records(topic)
            .into_iter()
            .map(|r| (r.key, r.payload))
            .collect()
    }
}

/// Reads Kafka topics from the beginning with an assigned consumer.
pub struct KafkaProbe(pub KafkaSettings);

#[async_trait]
impl TopicProbe for KafkaProbe {
    async fn read(&self, topic: &str, at_least: usize) -> Vec<(Vec<u8>, Vec<u8>)> {
        let settings = self.0.clone();
        let topic = topic.to_owned();
        tokio::task::spawn_blocking(move || read_topic(&settings, &topic, at_least))
            .await
            .expect("probe task")
    }
}

/// Every record of `topic` up to its end, once there are at least `at_least`.
fn read_topic(settings: &KafkaSettings, topic: &str, at_least: usize) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut cfg = client_config(settings, Role::Consumer);
    cfg.set("group.id", "weft-conformance-probe");
    let consumer: BaseConsumer = cfg.create().expect("probe consumer");
    let deadline = Instant::now() + DELIVERY_DEADLINE;
    let timeout = Duration::from_secs(5);
    loop {
        assert!(
            Instant::now() < deadline,
            "{topic}: fewer than {at_least} records"
        );
        let md = consumer
            .fetch_metadata(Some(topic), timeout)
            .expect("metadata");
        let mut ends = HashMap::new();
        let mut tpl = TopicPartitionList::new();
        for p in md.topics().iter().flat_map(|t| t.partitions()) {
            let (low, high) = consumer
                .fetch_watermarks(topic, p.id(), timeout)
                .expect("watermarks");
            if high > low {
                ends.insert(p.id(), high);
                tpl.add_partition_offset(topic, p.id(), Offset::Beginning)
                    .expect("tpl");
            }
        }
        if ends.values().sum::<i64>() < at_least as i64 {
            std::thread::sleep(Duration::from_millis(50));
            continue;
        }
        consumer.assign(&tpl).expect("assign");
        let mut out = Vec::new();
        while !ends.is_empty() {
            assert!(Instant::now() < deadline, "{topic}: not read to its end");
            let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) else {
                continue; // nothing yet, or a transient error librdkafka recovers from
            };
            out.push((
                m.key().unwrap_or_default().to_vec(),
                m.payload().unwrap_or_default().to_vec(),
            ));
            if ends
                .get(&m.partition())
                .is_some_and(|end| m.offset() + 1 >= *end)
            {
                ends.remove(&m.partition());
            }
        }
        return out;
    }
}
