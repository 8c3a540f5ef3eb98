//! Fetching paused while every task slot is busy, across rebalances, on
//! librdkafka's mock cluster. librdkafka keeps a partition the application
//! paused paused through its revocation and a later assignment; a worker that
//! was saturated when it lost a partition must still fetch it when the
//! partition comes back, or its records wait there for good.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use weft_shared::config::TransactionsMode;
use weft_shared::data::{DataMap, WorkflowData};
use weft_shared::model::ExecutionSemantics;
use weft_shared::{TaskDispatch, Topics, WorkflowEventType};
use weft_worker::{Metrics, TaskContext, TaskError, Worker};

use common::*;

/// A worker of `group` with one task slot whose `long` handler counts its
/// calls in `calls`; the first call of all sleeps `ms` (or until cancelled).
fn worker(
    bootstrap: &str,
    group: &str,
    node: &str,
    calls: Arc<AtomicUsize>,
) -> anyhow::Result<Worker> {
    let mut cfg = config(bootstrap, group, &["orders"], TransactionsMode::Off);
    cfg.worker.node_id = node.to_owned();
    cfg.worker.concurrency = 1;
    cfg.worker.shutdown_grace_ms = 300;
    Ok(Worker::builder(cfg)
        .handler("long", move |ctx: TaskContext| {
            let calls = calls.clone();
            async move {
                // only the first call of the test is long
                let first = calls.fetch_add(1, Ordering::SeqCst) == 0;
                let ms = if first {
                    ctx.param_i64("ms")?.unwrap_or(0).unsigned_abs()
                } else {
                    0
                };
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_millis(ms)) => Ok(DataMap::new()),
                    () = ctx.cancel.cancelled() => Err(TaskError::retryable("cancelled", "long cancelled")),
                }
            }
        })
        .build()?)
}

/// A `long` dispatch of `ms` produced to `partition` of the tasks topic.
async fn long_on(mock: &Mock, partition: i32, ms: i64) -> anyhow::Result<TaskDispatch> {
    let mut d = dispatch("long", ExecutionSemantics::AtLeastOnce);
    d.parameters = DataMap::from([("ms".to_owned(), WorkflowData::Int(ms))]);
    let key = d.instance_id.to_string();
    let payload = weft_shared::avro::AvroRecord::encode(&d);
    let topic = Topics::default().tasks("orders");
    let record = rdkafka::producer::FutureRecord::to(&topic)
        .key(&key)
        .payload(&payload)
        .partition(partition);
    mock.producer
        .send(record, Duration::from_secs(10))
        .await
        .map_err(|(e, _)| e)?;
    Ok(d)
}

fn assigns(m: &Metrics) -> u64 {
    m.rebalances_total.with_label_values(&["assign"]).get()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_partition_lost_while_paused_is_fetched_when_it_comes_back() -> anyhow::Result<()> {
    init_logs();
    let topics = Topics::default();
    let mock = mock_cluster(
        1,
        &[
            (topics.tasks("orders"), 2),
            (topics.events("orders"), 1),
            (topics.heartbeats("orders"), 1),
            (topics.nodes(), 1),
        ],
    )?;
    let group = format!("workers-{}", uuid_like());
    let calls = Arc::new(AtomicUsize::new(0));

    // A alone holds both partitions; one long task fills its only slot, so
    // it pauses fetching from both.
    let a = worker(&mock.bootstrap, &group, "a", calls.clone())?;
    let a_metrics = a.metrics().clone();
    let (stop_a, mut a) = spawn_worker(a);
    let _long = long_on(&mock, 0, 60_000).await?;
    while_running(
        &mut a,
        eventually("the long task runs on A", || {
            calls.load(Ordering::SeqCst) == 1
        }),
    )
    .await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let a_before = assigns(&a_metrics);

    // B joins: A loses a partition (its long task stops) while it was paused.
    let b = worker(&mock.bootstrap, &group, "b", calls.clone())?;
    let b_metrics = b.metrics().clone();
    let (stop_b, mut b) = spawn_worker(b);
    while_running(
        &mut a,
        while_running(
            &mut b,
            eventually("the group rebalanced with B", || {
                assigns(&b_metrics) >= 1 && assigns(&a_metrics) > a_before
            }),
        ),
    )
    .await?;

    // B leaves: A gets both partitions back.
    let a_with_b = assigns(&a_metrics);
    stop(stop_b, b).await?;
    while_running(
        &mut a,
        eventually("A holds both partitions again", || {
            assigns(&a_metrics) > a_with_b
        }),
    )
    .await?;

    // A short task on each partition: A runs both.
    let quick = [long_on(&mock, 0, 0).await?, long_on(&mock, 1, 0).await?];
    let events = while_running(
        &mut a,
        read_until(&mock.bootstrap, &topics.events("orders"), |recs| {
            quick
                .iter()
                .all(|d| has(recs, d, WorkflowEventType::TaskCompleted))
        }),
    )
    .await;
    stop(stop_a, a).await?;
    events.map_err(|e| e.context("a partition A had paused stayed paused after it came back"))?;
    Ok(())
}
