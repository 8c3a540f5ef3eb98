//! The worker end to end on librdkafka's in-process mock cluster: dispatches
//! produced to the task topic come back as `task.started` and
//! `task.completed` / `task.failed` on the events topic, undecodable records
//! go to the DLQ, offsets are committed, and exactly-once tasks run in a Kafka
//! transaction when `kafka.transactions=on`. Every wait has a deadline.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{bail, Context};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::mocking::MockCluster;
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
use weft_shared::topics::headers;
use weft_shared::{TaskDispatch, Topics, WorkflowEvent, WorkflowEventType};
use weft_worker::{TaskContext, TaskError, Worker};

const DEADLINE: Duration = Duration::from_secs(60);

fn dispatch(handler: &str, semantics: ExecutionSemantics) -> TaskDispatch {
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

fn config(
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

async fn produce(
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

/// One record as read back: key, headers and value.
struct Rec {
    key: String,
    headers: BTreeMap<String, String>,
    payload: Vec<u8>,
}

/// Reads `topic` from the start until `enough` holds of what was read, or the deadline passes.
async fn read_until(
    bootstrap: &str,
    topic: &str,
    enough: impl Fn(&[Rec]) -> bool,
) -> anyhow::Result<Vec<Rec>> {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", format!("reader-{}", uuid_like()))
        .set("auto.offset.reset", "earliest")
        .set("isolation.level", "read_committed")
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
            key: String::from_utf8_lossy(msg.key().unwrap_or_default()).into_owned(),
            headers: header_map(msg.headers()),
            payload: msg.payload().unwrap_or_default().to_vec(),
        });
    }
    Ok(out)
}

fn uuid_like() -> String {
    InstanceId::random().to_string()
}

fn events_of(recs: &[Rec], instance: InstanceId) -> Vec<WorkflowEvent> {
    recs.iter()
        .filter(|r| r.key == instance.to_string())
        .filter_map(|r| WorkflowEvent::decode(&r.payload).ok())
        .collect()
}

fn has(recs: &[Rec], d: &TaskDispatch, t: WorkflowEventType) -> bool {
    events_of(recs, d.instance_id)
        .iter()
        .any(|e| e.event_type == t)
}

/// The committed offset of every partition of `topic` for `group`, waiting until `expect` holds.
async fn committed_until(
    bootstrap: &str,
    group: &str,
    topic: &str,
    partitions: i32,
    expect: i64,
) -> anyhow::Result<i64> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .create()?;
    let deadline = Instant::now() + DEADLINE;
    loop {
        let mut tpl = TopicPartitionList::new();
        for p in 0..partitions {
            tpl.add_partition(topic, p);
        }
        let committed = consumer.committed_offsets(tpl, Duration::from_secs(5))?;
        let total: i64 = committed
            .elements()
            .iter()
            .map(|e| {
                if let Offset::Offset(o) = e.offset() {
                    o
                } else {
                    0
                }
            })
            .sum();
        if total >= expect || Instant::now() > deadline {
            return Ok(total);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn noop_dispatch_round_trip_dlq_and_commits() -> anyhow::Result<()> {
    let cluster = MockCluster::new(1)?;
    let bootstrap = cluster.bootstrap_servers();
    let topics = Topics::default();
    for (name, partitions) in [
        (topics.tasks("orders"), 2),
        (topics.events("orders"), 2),
        (topics.dlq("orders"), 1),
        (topics.nodes(), 1),
    ] {
        cluster.create_topic(&name, partitions, 1)?;
    }
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .create()?;

    let ok = dispatch("noop", ExecutionSemantics::AtLeastOnce);
    let eo = dispatch("noop", ExecutionSemantics::ExactlyOnce);
    let failing = dispatch("fail", ExecutionSemantics::AtMostOnce);
    for d in [&ok, &eo, &failing] {
        produce(
            &producer,
            &topics.tasks("orders"),
            &d.instance_id.to_string(),
            &d.encode(),
        )
        .await?;
    }
    produce(
        &producer,
        &topics.tasks("orders"),
        "garbage-key",
        b"not avro",
    )
    .await?;

    let group = format!("workers-{}", uuid_like());
    let worker = Worker::builder(config(
        &bootstrap,
        &group,
        &["orders"],
        TransactionsMode::Off,
    ))
    .handler("noop", |_ctx: TaskContext| async {
        Ok::<_, TaskError>(DataMap::new())
    })
    .with_builtins()
    .build()?;
    assert!(worker.handler_names().contains(&"noop".to_owned()));
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(worker.run(async move {
        let _ = stop_rx.await;
    }));

    let events = read_until(&bootstrap, &topics.events("orders"), |recs| {
        has(recs, &ok, WorkflowEventType::TaskCompleted)
            && has(recs, &eo, WorkflowEventType::TaskFailed)
            && has(recs, &failing, WorkflowEventType::TaskFailed)
    })
    .await?;

    // the at-least-once noop: started, then completed, chained to the scheduled event
    let evs = events_of(&events, ok.instance_id);
    let kinds: Vec<_> = evs.iter().map(|e| e.event_type).collect();
    assert_eq!(
        kinds,
        [
            WorkflowEventType::TaskStarted,
            WorkflowEventType::TaskCompleted
        ]
    );
    for (e, suffix) in evs.iter().zip(["started", "completed"]) {
        assert_eq!(e.idempotency_key, format!("{}:{suffix}", ok.execution_id));
        assert_eq!(e.causation_id, Some(ok.scheduled_event_id));
        assert_eq!(
            e.correlation_chain,
            [ok.correlation_chain[0], ok.scheduled_event_id]
        );
        assert_eq!(e.sequence_number, 0);
        assert_eq!(e.metadata["weft.task"], "step");
        assert_eq!(e.source_node_id, format!("{group}-node"));
    }
    let rec = events
        .iter()
        .find(|r| r.key == ok.instance_id.to_string())
        .context("record")?;
    assert_eq!(rec.headers[headers::EVENT_TYPE], "task.started");
    assert_eq!(
        rec.headers[headers::IDEMPOTENCY_KEY],
        format!("{}:started", ok.execution_id)
    );
    assert_eq!(rec.headers[headers::TRACEPARENT], ok.traceparent);

    // exactly_once without transactions fails loudly, never runs degraded
    let failed = events_of(&events, eo.instance_id)
        .into_iter()
        .find(|e| e.event_type == WorkflowEventType::TaskFailed);
    let failed = failed.context("exactly_once failure")?;
    assert_eq!(
        failed.data_str("error_type"),
        Some("exactly_once_unsupported")
    );
    assert_eq!(failed.data["retryable"], WorkflowData::Bool(false));
    let failed = events_of(&events, failing.instance_id)
        .into_iter()
        .find(|e| e.event_type == WorkflowEventType::TaskFailed);
    assert_eq!(
        failed.context("fail handler")?.data_str("error_type"),
        Some("injected")
    );

    // the undecodable record went to the DLQ with its reason and source
    let dlq = read_until(&bootstrap, &topics.dlq("orders"), |recs| !recs.is_empty()).await?;
    assert_eq!(dlq[0].key, "garbage-key");
    assert_eq!(dlq[0].payload, b"not avro");
    assert!(dlq[0].headers[headers::DLQ_SOURCE].starts_with("weft.orders.tasks/"));
    assert!(!dlq[0].headers[headers::DLQ_REASON].is_empty());

    // all four records are committed
    let committed = committed_until(&bootstrap, &group, &topics.tasks("orders"), 2, 4).await?;
    assert_eq!(committed, 4);

    stop_tx.send(()).ok();
    tokio::time::timeout(DEADLINE, running)
        .await
        .context("worker did not stop")???;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_once_runs_in_a_transaction_with_regex_subscription() -> anyhow::Result<()> {
    let cluster = MockCluster::new(3)?;
    let bootstrap = cluster.bootstrap_servers();
    let topics = Topics::default();
    for name in [
        topics.tasks("payments"),
        topics.events("payments"),
        topics.nodes(),
    ] {
        cluster.create_topic(&name, 1, 3)?;
    }
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .create()?;
    let mut d = dispatch("noop", ExecutionSemantics::ExactlyOnce);
    d.workflow_type = "payments".into();
    produce(
        &producer,
        &topics.tasks("payments"),
        &d.instance_id.to_string(),
        &d.encode(),
    )
    .await?;

    let group = format!("workers-{}", uuid_like());
    let mut cfg = config(&bootstrap, &group, &[], TransactionsMode::On);
    cfg.kafka
        .properties
        .insert("transaction.timeout.ms".into(), "10000".into());
    let worker = Worker::builder(cfg).with_builtins().build()?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(worker.run(async move {
        let _ = stop_rx.await;
    }));

    let events = read_until(&bootstrap, &topics.events("payments"), |recs| {
        has(recs, &d, WorkflowEventType::TaskCompleted)
    })
    .await?;
    let kinds: Vec<_> = events_of(&events, d.instance_id)
        .iter()
        .map(|e| e.event_type)
        .collect();
    assert_eq!(
        kinds,
        [
            WorkflowEventType::TaskStarted,
            WorkflowEventType::TaskCompleted
        ]
    );
    let committed = committed_until(&bootstrap, &group, &topics.tasks("payments"), 1, 1).await?;
    assert_eq!(committed, 1);

    stop_tx.send(()).ok();
    tokio::time::timeout(DEADLINE, running)
        .await
        .context("worker did not stop")???;
    Ok(())
}
