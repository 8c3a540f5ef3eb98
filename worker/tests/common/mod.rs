//! Helpers of the mock-cluster tests: dispatches, worker configuration,
//! producing, reading topics back with deadlines, committed offsets.
#![allow(dead_code)] // each test binary uses a subset

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::bail;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use tokio::time::Instant;
use weft_shared::avro::AvroRecord;
use weft_shared::config::{TransactionsMode, WeftConfig};
use weft_shared::data::{DataMap, WorkflowData};
use weft_shared::event::now_ms;
use weft_shared::ids::{EventId, ExecutionId, InstanceId, TaskId};
use weft_shared::kafka::header_map;
use weft_shared::model::{ExecutionSemantics, TaskPriority, TaskType, TimeoutConfiguration};
use weft_shared::{TaskDispatch, Topics, WorkflowEvent, WorkflowEventType};

pub const DEADLINE: Duration = Duration::from_secs(60);

pub fn dispatch(handler: &str, semantics: ExecutionSemantics) -> TaskDispatch {
    let instance_id = InstanceId::random();
    let task_id = TaskId::of(instance_id, "step");
    TaskDispatch {
        workflow_type: "orders".into(),
        instance_id,
        definition_version: 1,
        task_id,
        task_name: "step".into(),
        task_type: TaskType::Compute,
        handler: handler.into(),
        attempt: 1,
        execution_id: ExecutionId::of(task_id, 1),
        input: DataMap::from([("order".to_owned(), WorkflowData::Str("o-1".into()))]),
        parameters: DataMap::new(),
        upstream: BTreeMap::new(),
        execution_semantics: semantics,
        priority: TaskPriority::Normal,
        timeout_config: TimeoutConfiguration::default(),
        idempotency_key: format!("{instance_id}:step"),
        scheduled_event_id: EventId::random(),
        correlation_chain: vec![EventId::random()],
        scheduled_at_ms: now_ms(),
        not_before_ms: 0,
        deadline_ms: 0,
        traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into(),
    }
}

pub fn init_logs() {
    weft_shared::telemetry::init_logging(&WeftConfig::default().log);
}

pub fn config(
    bootstrap: &str,
    group: &str,
    types: &[&str],
    transactions: TransactionsMode,
) -> WeftConfig {
    let mut c = WeftConfig::default();
    c.kafka.bootstrap = bootstrap.to_owned();
    c.kafka.transactions = transactions;
    c.worker.group_id = group.to_owned();
    c.worker.node_id = format!("{group}-node");
    c.worker.types = types.iter().map(|t| (*t).to_owned()).collect();
    c.worker.concurrency = 4;
    c.worker.http_addr = "127.0.0.1:0".into();
    c.worker.shutdown_grace_ms = 2_000;
    c
}

pub async fn produce(
    producer: &FutureProducer,
    topic: &str,
    key: &str,
    payload: &[u8],
) -> anyhow::Result<()> {
    let record = FutureRecord::to(topic).key(key).payload(payload);
    producer
        .send(record, Duration::from_secs(10))
        .await
        .map_err(|(e, _)| e)?;
    Ok(())
}

/// Produces dispatch `d` to `topic`, keyed by its instance id as the orchestrator does.
pub async fn produce_dispatch(
    producer: &FutureProducer,
    topic: &str,
    d: &TaskDispatch,
) -> anyhow::Result<()> {
    produce(producer, topic, &d.instance_id.to_string(), &d.encode()).await
}

/// A worker of `group` for the `orders` type, without transactions.
pub fn orders_worker(bootstrap: &str, group: &str) -> weft_worker::WorkerBuilder {
    weft_worker::Worker::builder(config(bootstrap, group, &["orders"], TransactionsMode::Off))
}

/// One record as read back: partition, offset, key, headers and value.
pub struct Rec {
    pub partition: i32,
    pub offset: i64,
    pub key: String,
    pub headers: BTreeMap<String, String>,
    pub payload: Vec<u8>,
}

/// Reads `topic` from the start until `enough` holds of what was read, or the deadline passes.
pub async fn read_until(
    bootstrap: &str,
    topic: &str,
    enough: impl Fn(&[Rec]) -> bool,
) -> anyhow::Result<Vec<Rec>> {
    read_until_isolated(bootstrap, topic, "read_committed", enough).await
}

/// [`read_until`] with the given `isolation.level` (`read_committed` or `read_uncommitted`).
pub async fn read_until_isolated(
    bootstrap: &str,
    topic: &str,
    isolation: &str,
    enough: impl Fn(&[Rec]) -> bool,
) -> anyhow::Result<Vec<Rec>> {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", format!("reader-{}", uuid_like()))
        .set("auto.offset.reset", "earliest")
        .set("isolation.level", isolation)
        .create()?;
    consumer.subscribe(&[topic])?;
    let deadline = Instant::now() + DEADLINE;
    let mut out = Vec::new();
    while !enough(&out) {
        let msg = match tokio::time::timeout_at(deadline, consumer.recv()).await {
            Ok(m) => m?,
            Err(_) => bail!("timed out reading {topic}; got {} records", out.len()),
        };
        out.push(Rec {
            partition: msg.partition(),
            offset: msg.offset(),
            key: String::from_utf8_lossy(msg.key().unwrap_or_default()).into_owned(),
            headers: header_map(msg.headers()),
            payload: msg.payload().unwrap_or_default().to_vec(),
        });
    }
    Ok(out)
}

/// A running worker: its task, and the sender that stops it.
pub type Running = tokio::task::JoinHandle<Result<(), weft_worker::WorkerError>>;

/// Awaits `fut` unless the worker stops first (which is then the error).
pub async fn while_running<T>(
    running: &mut Running,
    fut: impl std::future::Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    tokio::select! {
        out = fut => out,
        ended = running => bail!("worker stopped early: {ended:?}"),
    }
}

pub fn uuid_like() -> String {
    InstanceId::random().to_string()
}

pub fn events_of(recs: &[Rec], instance: InstanceId) -> Vec<WorkflowEvent> {
    recs.iter()
        .filter(|r| r.key == instance.to_string())
        .filter_map(|r| WorkflowEvent::decode(&r.payload).ok())
        .collect()
}

pub fn has(recs: &[Rec], d: &TaskDispatch, t: WorkflowEventType) -> bool {
    events_of(recs, d.instance_id)
        .iter()
        .any(|e| e.event_type == t)
}

/// The committed offsets of `topic`'s partitions for `group`, summed (unset counts 0).
pub fn committed_now(
    bootstrap: &str,
    group: &str,
    topic: &str,
    partitions: i32,
) -> anyhow::Result<i64> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .create()?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    let committed = consumer.committed_offsets(tpl, Duration::from_secs(5))?;
    let offset = |o: Offset| if let Offset::Offset(o) = o { o } else { 0 };
    Ok(committed
        .elements()
        .iter()
        .map(|e| offset(e.offset()))
        .sum())
}

/// [`committed_now`], polled until it reaches `expect` or the deadline passes.
pub async fn committed_until(
    bootstrap: &str,
    group: &str,
    topic: &str,
    partitions: i32,
    expect: i64,
) -> anyhow::Result<i64> {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let total = committed_now(bootstrap, group, topic, partitions)?;
        if total >= expect || Instant::now() > deadline {
            return Ok(total);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A mock cluster with `topics` (name, partitions) created, and a producer for it.
pub struct Mock {
    pub cluster: rdkafka::mocking::MockCluster<'static, rdkafka::producer::DefaultProducerContext>,
    pub bootstrap: String,
    pub producer: FutureProducer,
}

pub fn mock_cluster(brokers: i32, topics: &[(String, i32)]) -> anyhow::Result<Mock> {
    let cluster = rdkafka::mocking::MockCluster::new(brokers)?;
    let bootstrap = cluster.bootstrap_servers();
    for (name, partitions) in topics {
        cluster.create_topic(name, *partitions, brokers)?;
    }
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .create()?;
    Ok(Mock {
        cluster,
        bootstrap,
        producer,
    })
}

/// Runs `worker` in a task until the returned sender fires (or is dropped).
pub fn spawn_worker(worker: weft_worker::Worker) -> (tokio::sync::oneshot::Sender<()>, Running) {
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let running: Running = tokio::spawn(worker.run(async move {
        let _ = stop_rx.await;
    }));
    (stop_tx, running)
}

/// Produces a control record (`weft-control` header) for `d`'s attempt.
pub async fn produce_control(
    producer: &FutureProducer,
    topic: &str,
    d: &TaskDispatch,
    grace_period_ms: u64,
) -> anyhow::Result<()> {
    let control = weft_shared::control::TaskControl {
        action: weft_shared::control::ControlAction::Cancel,
        workflow_type: d.workflow_type.clone(),
        instance_id: d.instance_id,
        task_name: d.task_name.clone(),
        attempt: d.attempt,
        execution_id: d.execution_id,
        grace_period_ms,
        reason: "test cancel".into(),
    };
    let key = d.instance_id.to_string();
    let payload = control.encode();
    let headers = weft_shared::kafka::headers(&[(weft_shared::topics::headers::CONTROL, "cancel")]);
    let record = FutureRecord::to(topic)
        .key(&key)
        .payload(&payload)
        .headers(headers);
    producer
        .send(record, Duration::from_secs(10))
        .await
        .map_err(|(e, _)| e)?;
    Ok(())
}

/// Polls `cond` until it holds, or fails after [`DEADLINE`] naming `what`.
pub async fn eventually(what: &str, mut cond: impl FnMut() -> bool) -> anyhow::Result<()> {
    let deadline = Instant::now() + DEADLINE;
    while !cond() {
        if Instant::now() > deadline {
            bail!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// Every record `topic` holds now (its high watermarks, over `partitions` partitions).
pub async fn read_all(bootstrap: &str, topic: &str, partitions: i32) -> anyhow::Result<Vec<Rec>> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()?;
    let mut total = 0;
    for p in 0..partitions {
        let (low, high) = consumer.fetch_watermarks(topic, p, Duration::from_secs(5))?;
        total += high - low;
    }
    let total = usize::try_from(total)?;
    read_until(bootstrap, topic, |recs| recs.len() >= total).await
}

/// The high watermark of `topic`'s partition `partition` (the next offset).
pub fn high_watermark(bootstrap: &str, topic: &str, partition: i32) -> anyhow::Result<i64> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()?;
    Ok(consumer
        .fetch_watermarks(topic, partition, Duration::from_secs(5))?
        .1)
}

/// The topics of the `orders` type (one partition each) with heartbeats and nodes.
pub fn control_topics(t: &Topics) -> Vec<(String, i32)> {
    vec![
        (t.tasks("orders"), 1),
        (t.events("orders"), 1),
        (t.heartbeats("orders"), 1),
        (t.nodes(), 1),
    ]
}

/// A `sleep` dispatch of `ms` milliseconds.
pub fn sleep_for(ms: i64) -> TaskDispatch {
    let mut d = dispatch("sleep", ExecutionSemantics::AtLeastOnce);
    d.parameters = DataMap::from([("ms".to_owned(), WorkflowData::Int(ms))]);
    d
}

/// The event types `recs` hold for `d`'s instance, in order.
pub fn kinds(recs: &[Rec], d: &TaskDispatch) -> Vec<WorkflowEventType> {
    events_of(recs, d.instance_id)
        .iter()
        .map(|e| e.event_type)
        .collect()
}

/// Stops a running worker and waits for it.
pub async fn stop(
    stop_tx: tokio::sync::oneshot::Sender<()>,
    running: Running,
) -> anyhow::Result<()> {
    stop_tx.send(()).ok();
    tokio::time::timeout(DEADLINE, running)
        .await
        .map_err(|_| anyhow::anyhow!("worker did not stop"))???;
    Ok(())
}
