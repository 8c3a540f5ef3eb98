//! In-process tests of the partition processor on librdkafka's mock cluster:
//! the real processor (fold, outbox, publisher, timers) fed by hand, its
//! output read back from the mock topics. Shared with the simulation.

mod inputs;
mod pipeline;
mod publish;
mod timers;

use std::sync::atomic::AtomicI64;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use tokio::sync::mpsc;
use weft_shared::avro::AvroRecord;
use weft_shared::config::WeftConfig;
use weft_shared::definition::parse_definition;
use weft_shared::ids::InstanceId;
use weft_shared::topics::headers as h;
use weft_shared::{Topics, WorkflowEvent, WorkflowEventType as T};

use super::feed::Fed;
use super::{Partition, Placement, ReplayProgress, Seek, Shared};
use crate::store::{OutboxKind, OutboxRecord, Store};

/// A mock cluster, a registry holding some definitions, and a store.
pub(crate) struct Harness {
    pub shared: Shared,
    pub cluster: MockCluster<'static, DefaultProducerContext>,
    pub _dirs: Vec<tempfile::TempDir>,
    pub stores: Vec<Store>,
}

/// Starts a mock cluster with `partitions` per topic, registers `definitions`
/// (YAML) and opens `stores` stores; `properties` go to every client.
pub(crate) async fn harness(
    definitions: &[&str],
    partitions: i32,
    stores: usize,
    properties: &[(&str, &str)],
) -> Harness {
    let mut config = WeftConfig::default();
    if std::env::var(weft_shared::telemetry::LOG_ENV).is_ok() {
        weft_shared::telemetry::init_logging(&config.log);
    }
    let cluster = MockCluster::new(1).expect("mock cluster");
    config.kafka.bootstrap = cluster.bootstrap_servers();
    config.kafka.partitions = partitions;
    for (k, v) in properties {
        config.kafka.properties.insert((*k).into(), (*v).into());
    }
    let producer: rdkafka::producer::FutureProducer =
        weft_shared::kafka::client_config(&config.kafka, weft_shared::kafka::Role::Producer)
            .create()
            .expect("producer");
    let topics = Topics::new("weft");
    cluster
        .create_topic(&topics.definitions(), 1, 1)
        .expect("definitions topic");
    // The mock cluster answers no CreateTopics: the types' topics exist beforehand.
    for d in definitions {
        let ty = parse_definition(d, None).expect("definition").workflow_type;
        for spec in weft_shared::kafka::workflow_type_topics(&topics, &ty, partitions) {
            cluster
                .create_topic(&spec.name, spec.partitions, 1)
                .expect("type topic");
        }
    }
    let registry =
        crate::definitions::Registry::new(config.kafka.clone(), topics.clone(), producer.clone());
    registry.disable_topic_creation();
    let (loaded_tx, loaded) = tokio::sync::oneshot::channel();
    tokio::spawn(registry.clone().follow(loaded_tx));
    let _ = loaded.await;
    for d in definitions {
        let def = parse_definition(d, None).expect("definition");
        registry.register(def).await.expect("register");
    }
    let dirs: Vec<tempfile::TempDir> = (0..stores.max(1))
        .map(|_| tempfile::tempdir().expect("tempdir"))
        .collect();
    let stores: Vec<Store> = dirs
        .iter()
        .map(|d| Store::open(d.path()).expect("store"))
        .collect();
    let (events_tx, _) = tokio::sync::broadcast::channel(16);
    let shared = Shared {
        store: stores[0].clone(),
        registry,
        producer,
        kafka: config.kafka.clone(),
        topics,
        metrics: Arc::new(crate::metrics::Metrics::new()),
        status: Arc::new(crate::status::Status::default()),
        batch_max: 64,
        events_tx,
        heartbeats: Arc::new(crate::heartbeats::HeartbeatTracker::default()),
        traces: None,
        unschedulable: None,
    };
    Harness {
        shared,
        cluster,
        _dirs: dirs,
        stores,
    }
}

impl Harness {
    /// A processor of `ty`'s events partition `partition`, with the given replay end.
    pub fn open(
        &self,
        ty: &str,
        partition: i32,
        replay_end: i64,
    ) -> (Partition, mpsc::UnboundedReceiver<Seek>) {
        let (seeks_tx, seeks) = mpsc::unbounded_channel();
        let topic = self.shared.topics.events(ty);
        let count = self.shared.kafka.partitions;
        let at = placement(&topic, partition, ty, replay_end, count);
        (processor(self.shared.clone(), at, seeks_tx), seeks)
    }

    /// Every record of `topic`'s partition `partition` in the mock cluster so far.
    pub fn read(&self, topic: &str, partition: i32) -> Vec<OwnedMessage> {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", self.cluster.bootstrap_servers())
            .set("group.id", "reader")
            .set("enable.partition.eof", "true")
            .create()
            .expect("consumer");
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, partition, Offset::Beginning)
            .expect("tpl");
        consumer.assign(&tpl).expect("assign");
        let mut out = Vec::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::time::Instant::now() < deadline {
            match consumer.poll(Duration::from_millis(100)) {
                Some(Ok(m)) => out.push(m.detach()),
                Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) => break,
                Some(Err(e)) => panic!("consume {topic}: {e}"),
                None => {}
            }
        }
        out
    }

    /// The events of every record of a topic partition that decodes as one.
    pub fn events(&self, topic: &str, partition: i32) -> Vec<WorkflowEvent> {
        self.read(topic, partition)
            .iter()
            .filter_map(|m| WorkflowEvent::decode(m.payload()?).ok())
            .collect()
    }
}

/// An input record for `event`, as a client or worker writes it.
pub fn input_record(topic: &str, event: &WorkflowEvent) -> OutboxRecord {
    OutboxRecord {
        kind: OutboxKind::Event,
        ident: event.idempotency_key.clone(),
        topic: topic.to_owned(),
        key: event.instance_id.to_string().into_bytes(),
        payload: event.encode(),
        headers: vec![
            (h::EVENT_TYPE.into(), event.event_type.as_str().into()),
            (h::IDEMPOTENCY_KEY.into(), event.idempotency_key.clone()),
        ],
    }
}

/// Where a test processor sits.
pub(crate) fn placement(
    topic: &str,
    partition: i32,
    ty: &str,
    replay_end: i64,
    count: i32,
) -> Placement {
    Placement {
        topic: topic.to_owned(),
        partition,
        workflow_type: ty.into(),
        replay_end,
        partition_count: Some(count),
    }
}

/// Opens a processor over `shared` (its store) at `at`.
pub(crate) fn processor(
    shared: Shared,
    at: Placement,
    seeks: mpsc::UnboundedSender<Seek>,
) -> Partition {
    let progress = ReplayProgress::new(Arc::new(AtomicI64::new(0)));
    Partition::open(shared, at, progress, seeks).expect("open partition")
}

/// A `workflow.created` input for a new instance of `ty`, now, with no input.
pub(crate) fn start(ty: &str, id: InstanceId) -> WorkflowEvent {
    created(
        ty,
        id,
        weft_shared::event::now_ms(),
        weft_shared::DataMap::new(),
    )
}

/// A record as the consumer hands it over: at `offset`, after `prev_next`.
pub(crate) fn fed(
    topic: &str,
    partition: i32,
    offset: i64,
    prev_next: i64,
    r: &OutboxRecord,
) -> Fed {
    let pairs: Vec<(&str, &str)> = r
        .headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    Fed {
        msg: OwnedMessage::new(
            Some(r.payload.clone()),
            Some(r.key.clone()),
            topic.to_owned(),
            rdkafka::message::Timestamp::NotAvailable,
            partition,
            offset,
            Some(weft_shared::kafka::headers(&pairs)),
        ),
        prev_next,
    }
}

/// A `workflow.created` input for a new instance of version 1 of `ty`.
pub(crate) fn created(
    ty: &str,
    id: InstanceId,
    at_ms: i64,
    input: weft_shared::DataMap,
) -> WorkflowEvent {
    let mut e = WorkflowEvent::new(T::WorkflowCreated, ty, id, format!("start-{id}"), at_ms);
    e.event_id = weft_shared::ids::EventId::derived(&[id.as_bytes(), b"created"]);
    e.data = input;
    e.metadata
        .insert("weft.definition_version".into(), "1".into());
    e.metadata.insert("weft.source_kind".into(), "input".into());
    e
}

/// An instance id whose key the murmur2 partitioner puts on `partition` of `count`.
pub(crate) fn id_on(partition: i32, count: i32) -> InstanceId {
    loop {
        let id = InstanceId::random();
        let p =
            crate::partitioner::Partitioner::Murmur2.partition(id.to_string().as_bytes(), count);
        if p == partition {
            return id;
        }
    }
}

/// Waits until `check` holds, up to `timeout`.
pub(crate) async fn until(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    while tokio::time::Instant::now() < deadline {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    check()
}
