//! `exactly_once` results and their offsets on librdkafka's mock cluster (it
//! has transactions), when an earlier record of the same partition is still
//! running: the exactly-once result completes first (out of order). Its offset
//! must go in the result's transaction, never in a plain commit afterwards:
//!
//! - a worker that crashes while the earlier record still runs must not leave
//!   a published result whose record runs again after the restart (a second
//!   `task.completed` of the same attempt);
//! - the result's transaction carries the offset: failures injected into
//!   `AddOffsetsToTxn` (the request a transaction sends only when it commits
//!   consumer offsets) abort it, and it is retried until one commits. (The
//!   mock cluster acknowledges transactional offset commits without storing
//!   them, so committed offsets cannot show this.)

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use weft_shared::avro::AvroRecord;
use weft_shared::config::TransactionsMode;
use weft_shared::data::DataMap;
use weft_shared::model::ExecutionSemantics;
use weft_shared::{TaskDispatch, Topics, WorkflowEventType};
use weft_worker::{TaskContext, TaskError, Worker};

use common::*;

/// Handler calls by execution id, and the gate the `gate` handler waits for.
#[derive(Clone, Default)]
struct Probe {
    calls: Arc<Mutex<HashMap<String, usize>>>,
    open: Arc<AtomicBool>,
    opened: Arc<tokio::sync::Notify>,
}

impl Probe {
    fn count(&self, ctx: &TaskContext) {
        *self
            .calls
            .lock()
            .unwrap()
            .entry(ctx.execution_id.to_string())
            .or_default() += 1;
    }

    fn calls(&self, d: &TaskDispatch) -> usize {
        let calls = self.calls.lock().unwrap();
        calls.get(&d.execution_id.to_string()).copied().unwrap_or(0)
    }

    fn open_gate(&self) {
        self.open.store(true, Ordering::SeqCst);
        self.opened.notify_waiters();
    }

    /// A worker whose `gate` handler waits for the gate (or its cancel) and
    /// whose `count` handler returns at once; both count their calls.
    fn worker(&self, bootstrap: &str, group: &str) -> anyhow::Result<Worker> {
        let mut cfg = config(bootstrap, group, &["orders"], TransactionsMode::On);
        cfg.worker.shutdown_grace_ms = 200;
        let (gate, count) = (self.clone(), self.clone());
        Ok(Worker::builder(cfg)
            .handler("gate", move |ctx: TaskContext| {
                let probe = gate.clone();
                async move {
                    probe.count(&ctx);
                    loop {
                        let opened = probe.opened.notified();
                        if probe.open.load(Ordering::SeqCst) {
                            return Ok(DataMap::new());
                        }
                        tokio::select! {
                            () = opened => {}
                            () = ctx.cancel.cancelled() => {
                                return Err(TaskError::retryable("cancelled", "gate cancelled"));
                            }
                        }
                    }
                }
            })
            .handler("count", move |ctx: TaskContext| {
                let probe = count.clone();
                async move {
                    probe.count(&ctx);
                    Ok(DataMap::new())
                }
            })
            .build()?)
    }
}

/// The value of an unlabelled metric, or the sum of a labelled one's samples
/// whose labels contain `labels` (0 when the worker has no such metric).
fn metric(worker_metrics: &weft_worker::Metrics, name: &str, labels: &str) -> f64 {
    worker_metrics
        .render()
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(&format!("{name} ")) || l.starts_with(&format!("{name}{{")))
        .filter(|l| l.contains(labels))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Produces the two records (an at_least_once `gate` at offset 0, an
/// exactly_once `count` at offset 1) to the one partition.
async fn two_records(mock: &Mock, tasks: &str) -> anyhow::Result<(TaskDispatch, TaskDispatch)> {
    let earlier = dispatch("gate", ExecutionSemantics::AtLeastOnce);
    let eo = dispatch("count", ExecutionSemantics::ExactlyOnce);
    produce_dispatch(&mock.producer, tasks, &earlier).await?;
    produce_dispatch(&mock.producer, tasks, &eo).await?;
    Ok((earlier, eo))
}

/// Waits until the exactly-once handler has returned and its result was
/// either published or is held back by the worker.
async fn eo_result_ready(
    probe: &Probe,
    metrics: &weft_worker::Metrics,
    eo: &TaskDispatch,
) -> anyhow::Result<()> {
    eventually(
        "the exactly_once handler ran and its result is out or held",
        || {
            probe.calls(eo) >= 1
                && (metric(
                    metrics,
                    "weft_worker_tasks_total",
                    r#"handler="count",outcome="completed""#,
                ) >= 1.0
                    || metric(metrics, "weft_worker_results_waiting", "") >= 1.0)
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_while_an_earlier_record_runs_does_not_publish_the_result_twice(
) -> anyhow::Result<()> {
    init_logs();
    let topics = Topics::default();
    let tasks = topics.tasks("orders");
    let mock = mock_cluster(1, &control_topics(&topics))?;
    let (earlier, eo) = two_records(&mock, &tasks).await?;
    let group = format!("workers-{}", uuid_like());
    let probe = Probe::default();

    let worker = probe.worker(&mock.bootstrap, &group)?;
    let metrics = worker.metrics().clone();
    let (_stop_tx, mut running) = spawn_worker(worker);
    while_running(&mut running, eo_result_ready(&probe, &metrics, &eo)).await?;
    assert_eq!(probe.calls(&earlier), 1, "the earlier record is running");

    // Crash: no drain, no final commit.
    running.abort();
    let _ = running.await;

    probe.open_gate();
    let worker = probe.worker(&mock.bootstrap, &group)?;
    let metrics = worker.metrics().clone();
    let (stop_tx, mut running) = spawn_worker(worker);
    while_running(
        &mut running,
        eventually("the restarted worker published both results", || {
            ["gate", "count"].iter().all(|h| {
                let labels = format!(r#"handler="{h}",outcome="completed""#);
                metric(&metrics, "weft_worker_tasks_total", &labels) >= 1.0
            })
        }),
    )
    .await?;
    stop(stop_tx, running).await?;
    let events = read_all(&mock.bootstrap, &topics.events("orders"), 1).await?;
    assert!(has(&events, &earlier, WorkflowEventType::TaskCompleted));
    let completed = kinds(&events, &eo)
        .into_iter()
        .filter(|k| *k == WorkflowEventType::TaskCompleted)
        .count();
    assert_eq!(
        completed,
        1,
        "the exactly_once attempt's result is in the events topic once (handler calls: {})",
        probe.calls(&eo)
    );
    Ok(())
}

/// The `task.completed` records of `d` in `topic`, aborted transactions included.
async fn completions_uncommitted(
    bootstrap: &str,
    topic: &str,
    d: &TaskDispatch,
) -> anyhow::Result<usize> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::Message;
    let consumer: BaseConsumer = rdkafka::config::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", format!("reader-{}", uuid_like()))
        .set("isolation.level", "read_uncommitted")
        .set("enable.auto.commit", "false")
        .create()?;
    let (_, high) = consumer.fetch_watermarks(topic, 0, std::time::Duration::from_secs(5))?;
    let mut tpl = rdkafka::TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, rdkafka::Offset::Beginning)?;
    consumer.assign(&tpl)?;
    let deadline = std::time::Instant::now() + DEADLINE;
    let mut count = 0;
    loop {
        let position = consumer.position()?.elements().first().map(|e| e.offset());
        if matches!(position, Some(rdkafka::Offset::Offset(o)) if o >= high) {
            return Ok(count);
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "timed out reading {topic}"
        );
        if let Some(msg) = consumer.poll(std::time::Duration::from_millis(100)) {
            let msg = msg?;
            let event = msg.payload().map(weft_shared::WorkflowEvent::decode);
            if let Some(Ok(e)) = event {
                if e.instance_id == d.instance_id
                    && e.event_type == WorkflowEventType::TaskCompleted
                {
                    count += 1;
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_offset_of_an_out_of_order_result_goes_in_its_transaction() -> anyhow::Result<()> {
    init_logs();
    let topics = Topics::default();
    let tasks = topics.tasks("orders");
    let mock = mock_cluster(1, &control_topics(&topics))?;
    let (earlier, eo) = two_records(&mock, &tasks).await?;
    let group = format!("workers-{}", uuid_like());
    let probe = Probe::default();

    // The first two transactions that commit consumer offsets fail and are aborted.
    let failures = [RDKafkaRespErr::RD_KAFKA_RESP_ERR_GROUP_AUTHORIZATION_FAILED; 2];
    mock.cluster
        .request_errors(RDKafkaApiKey::AddOffsetsToTxn, &failures);
    let worker = probe.worker(&mock.bootstrap, &group)?;
    let metrics = worker.metrics().clone();
    let (stop_tx, mut running) = spawn_worker(worker);
    while_running(&mut running, eo_result_ready(&probe, &metrics, &eo)).await?;
    probe.open_gate();
    while_running(
        &mut running,
        read_until(&mock.bootstrap, &topics.events("orders"), |recs| {
            has(recs, &earlier, WorkflowEventType::TaskCompleted)
                && has(recs, &eo, WorkflowEventType::TaskCompleted)
        }),
    )
    .await?;
    stop(stop_tx, running).await?;
    let written = completions_uncommitted(&mock.bootstrap, &topics.events("orders"), &eo).await?;
    assert_eq!(
        written, 3,
        "the result went out in transactions that commit offsets: two aborted by the injected failures, then one committed"
    );
    Ok(())
}
