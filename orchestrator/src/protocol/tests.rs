//! The conformance suites against every implementation: persistence in memory
//! and on RocksDB, the event bus and the node registry in memory and on
//! librdkafka's mock cluster.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::mocking::MockCluster;
use weft_shared::config::{KafkaSettings, TransactionsMode};
use weft_shared::Topics;

use super::conformance::{bus_suite, persistence_suite, registry_suite, BusFixture, KafkaProbe};
use super::{
    InMemoryEventBus, InMemoryNodeRegistry, InMemoryPersistence, KafkaEventBus, KafkaNodeRegistry,
    Liveness, RocksPersistence,
};
use crate::store::Store;

#[tokio::test]
async fn in_memory_persistence_conforms() {
    for every in [5, 0] {
        persistence_suite(&InMemoryPersistence::new(every), every).await;
    }
}

#[tokio::test]
async fn rocksdb_persistence_conforms() {
    for every in [5, 0] {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap().with_snapshot_every(every);
        persistence_suite(&RocksPersistence::new(store), every).await;
    }
}

fn fixture(topics: &Topics) -> BusFixture<'static> {
    BusFixture {
        topics: topics.clone(),
        workflow_type: "conf",
        other_type: "conf_other",
        queue_topic: "weft.q.gpu.tasks",
    }
}

#[tokio::test]
async fn in_memory_event_bus_conforms() {
    let topics = Topics::default();
    let bus = InMemoryEventBus::new(topics.clone());
    bus_suite(&bus, &fixture(&topics), &bus).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_event_bus_conforms_on_the_mock_cluster() {
    let cluster = MockCluster::new(1).expect("mock cluster");
    let topics = Topics::default();
    let f = fixture(&topics);
    for (topic, partitions) in [
        (topics.events(f.workflow_type), 2),
        (topics.tasks(f.workflow_type), 1),
        (topics.events(f.other_type), 1),
        (f.queue_topic.to_owned(), 1),
    ] {
        cluster.create_topic(&topic, partitions, 1).expect("topic");
    }
    let settings = mock_settings(&cluster);
    let bus = KafkaEventBus::new(settings.clone(), topics.clone())
        .expect("bus")
        .without_topic_creation();
    bus_suite(&bus, &f, &KafkaProbe(settings)).await;
}

fn mock_settings(
    cluster: &MockCluster<'_, rdkafka::producer::DefaultProducerContext>,
) -> KafkaSettings {
    KafkaSettings {
        bootstrap: cluster.bootstrap_servers(),
        topic_prefix: "weft".into(),
        partitions: 1,
        replication_factor: 1,
        transactions: TransactionsMode::Off,
        fetch_wait_max_ms: 10,
        broker_workarounds: weft_shared::config::BrokerWorkarounds::Auto,
        properties: BTreeMap::new(),
    }
}

/// Short enough for a quick suite, long enough for a read-back on the mock cluster.
fn short_liveness() -> Liveness {
    Liveness::new(Duration::from_secs(2), Duration::from_secs(4))
}

#[tokio::test]
async fn in_memory_node_registry_conforms() {
    registry_suite(&InMemoryNodeRegistry::new(short_liveness())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_node_registry_conforms_on_the_mock_cluster() {
    let cluster = MockCluster::new(1).expect("mock cluster");
    let topics = Topics::default();
    cluster.create_topic(&topics.nodes(), 1, 1).expect("topic");
    let registry = KafkaNodeRegistry::new(mock_settings(&cluster), topics)
        .expect("registry")
        .with_liveness(short_liveness());
    let registry = Arc::new(registry);
    let follower = registry.spawn_follower();
    registry_suite(registry.as_ref()).await;
    follower.abort();
}
