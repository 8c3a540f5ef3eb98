//! Shutdown on librdkafka's mock cluster: a task that outlives the grace
//! period is cancelled and its record stays uncommitted (another worker gets
//! it), while a task behind it that finished is published but not committed
//! past the unfinished one.

mod common;

use std::time::Duration;

use anyhow::Context;
use tokio::time::Instant;
use weft_shared::avro::AvroRecord;
use weft_shared::config::TransactionsMode;
use weft_shared::data::{DataMap, WorkflowData};
use weft_shared::model::ExecutionSemantics;
use weft_shared::{Topics, WorkflowEventType};
use weft_worker::Worker;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grace_period_cancels_and_leaves_the_record_uncommitted() -> anyhow::Result<()> {
    init_logs();
    let topics = Topics::default();
    let Mock {
        cluster: _cluster,
        bootstrap,
        producer,
    } = mock_cluster(
        1,
        &[
            (topics.tasks("orders"), 1),
            (topics.events("orders"), 1),
            (topics.nodes(), 1),
        ],
    )?;
    let mut slow = dispatch("sleep", ExecutionSemantics::AtLeastOnce);
    slow.parameters = DataMap::from([("ms".to_owned(), WorkflowData::Int(600_000))]);
    let quick = dispatch("noop", ExecutionSemantics::AtLeastOnce);
    for d in [&slow, &quick] {
        let key = d.instance_id.to_string();
        produce(&producer, &topics.tasks("orders"), &key, &d.encode()).await?;
    }

    let group = format!("workers-{}", uuid_like());
    let mut cfg = config(&bootstrap, &group, &["orders"], TransactionsMode::Off);
    cfg.worker.shutdown_grace_ms = 300;
    let worker = Worker::builder(cfg).with_builtins().build()?;
    let (stop_tx, mut running) = spawn_worker(worker);
    let events = while_running(
        &mut running,
        read_until(&bootstrap, &topics.events("orders"), |recs| {
            has(recs, &quick, WorkflowEventType::TaskCompleted)
                && has(recs, &slow, WorkflowEventType::TaskStarted)
        }),
    )
    .await?;
    assert!(!has(&events, &slow, WorkflowEventType::TaskCompleted));

    let asked = Instant::now();
    stop_tx.send(()).ok();
    tokio::time::timeout(Duration::from_secs(20), running)
        .await
        .context("worker did not stop")???;
    assert!(
        asked.elapsed() < Duration::from_secs(10),
        "stopped in {:?}",
        asked.elapsed()
    );

    // the slow task (offset 0) never finished, so nothing is committed, the quick one included
    let committed = committed_now(&bootstrap, &group, &topics.tasks("orders"), 1)?;
    assert_eq!(committed, 0);
    let events = read_until(&bootstrap, &topics.events("orders"), |recs| recs.len() >= 3).await?;
    let slow_events: Vec<_> = events_of(&events, slow.instance_id)
        .into_iter()
        .map(|e| e.event_type)
        .collect();
    assert_eq!(
        slow_events,
        [WorkflowEventType::TaskStarted],
        "no result for a cancelled task"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dispatch_grace_period_wins_over_the_worker_default() -> anyhow::Result<()> {
    init_logs();
    let topics = Topics::default();
    let Mock {
        cluster: _cluster,
        bootstrap,
        producer,
    } = mock_cluster(
        1,
        &[
            (topics.tasks("orders"), 1),
            (topics.events("orders"), 1),
            (topics.nodes(), 1),
        ],
    )?;
    let mut slow = dispatch("sleep", ExecutionSemantics::AtLeastOnce);
    slow.parameters = DataMap::from([("ms".to_owned(), WorkflowData::Int(600_000))]);
    slow.timeout_config.grace_period_ms = 200;
    produce_dispatch(&producer, &topics.tasks("orders"), &slow).await?;

    let group = format!("workers-{}", uuid_like());
    let mut cfg = config(&bootstrap, &group, &["orders"], TransactionsMode::Off);
    cfg.worker.shutdown_grace_ms = 120_000; // the task's own 200 ms applies
    let worker = Worker::builder(cfg).with_builtins().build()?;
    let (stop_tx, mut running) = spawn_worker(worker);
    while_running(
        &mut running,
        read_until(&bootstrap, &topics.events("orders"), |recs| {
            has(recs, &slow, WorkflowEventType::TaskStarted)
        }),
    )
    .await?;
    let asked = Instant::now();
    stop_tx.send(()).ok();
    tokio::time::timeout(Duration::from_secs(60), running)
        .await
        .context("worker did not stop")???;
    assert!(
        asked.elapsed() < Duration::from_secs(20),
        "stopped in {:?}",
        asked.elapsed()
    );
    assert_eq!(
        committed_now(&bootstrap, &group, &topics.tasks("orders"), 1)?,
        0
    );
    Ok(())
}
