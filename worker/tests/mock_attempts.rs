//! Attempts on librdkafka's mock cluster: task heartbeats while a handler
//! runs (and none after it returned, none in the events topic, one at once on
//! `ctx.heartbeat()`), a duplicate dispatch of one attempt runs once, and an
//! attempt past its deadline fails with `execution_timeout`. Every wait is a
//! condition with a deadline.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use anyhow::Context;
use weft_shared::avro::AvroRecord;
use weft_shared::control::TaskHeartbeat;
use weft_shared::data::{DataMap, WorkflowData};
use weft_shared::model::ExecutionSemantics;
use weft_shared::{Topics, WorkflowEventType};
use weft_worker::{TaskContext, TaskError};

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_flow_while_a_handler_runs_and_stop_when_it_returns() -> anyhow::Result<()> {
    init_logs();
    let topics = Topics::default();
    let mock = mock_cluster(1, &control_topics(&topics))?;
    let mut beating = sleep_for(1_200);
    beating.timeout_config.heartbeat_timeout_ms = 300; // every 100 ms
    let quiet = sleep_for(200); // no heartbeat timeout: no heartbeats
    let group = format!("workers-{}", uuid_like());
    let worker = orders_worker(&mock.bootstrap, &group)
        .with_builtins()
        .build()?;
    let (stop_tx, mut running) = spawn_worker(worker);
    let tasks = topics.tasks("orders");
    produce_dispatch(&mock.producer, &tasks, &beating).await?;
    let events = while_running(
        &mut running,
        read_until(&mock.bootstrap, &topics.events("orders"), |r| {
            has(r, &beating, WorkflowEventType::TaskCompleted)
        }),
    )
    .await?;
    let completed_at = events_of(&events, beating.instance_id)
        .iter()
        .find(|e| e.event_type == WorkflowEventType::TaskCompleted)
        .context("completed")?
        .timestamp_ms;
    // time passes (another task runs to its end) before the heartbeats are read back
    produce_dispatch(&mock.producer, &tasks, &quiet).await?;
    let events = while_running(
        &mut running,
        read_until(&mock.bootstrap, &topics.events("orders"), |r| {
            has(r, &quiet, WorkflowEventType::TaskCompleted)
        }),
    )
    .await?;
    let quiet_done = events_of(&events, quiet.instance_id)
        .iter()
        .map(|e| e.timestamp_ms)
        .max()
        .unwrap_or_default();
    let beats: Vec<TaskHeartbeat> = while_running(
        &mut running,
        read_all(&mock.bootstrap, &topics.heartbeats("orders"), 1),
    )
    .await?
    .iter()
    .map(|r| {
        assert_eq!(
            r.key,
            beating.instance_id.to_string(),
            "keyed by instance id"
        );
        TaskHeartbeat::decode(&r.payload).expect("heartbeat json")
    })
    .collect();
    assert!(completed_at < quiet_done);
    // 1.2 s at one every 100 ms, give or take scheduling
    assert!(beats.len() >= 5, "{} heartbeats", beats.len());
    for b in &beats {
        assert_eq!(
            b.execution_id, beating.execution_id,
            "only the task that asked for them"
        );
        assert_eq!((b.attempt, b.task_name.as_str()), (1, "step"));
        assert_eq!(b.node_id, format!("{group}-node"));
        assert!(
            b.at_ms <= completed_at,
            "heartbeat {} after the handler returned at {completed_at}",
            b.at_ms
        );
    }
    // the events topic holds the attempt events only
    assert_eq!(
        kinds(&events, &beating),
        [
            WorkflowEventType::TaskStarted,
            WorkflowEventType::TaskCompleted
        ]
    );
    stop(stop_tx, running).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_dispatch_runs_once() -> anyhow::Result<()> {
    init_logs();
    let topics = Topics::default();
    let mock = mock_cluster(1, &control_topics(&topics))?;
    let d = dispatch("count", ExecutionSemantics::AtLeastOnce);
    let group = format!("workers-{}", uuid_like());
    let calls = Arc::new(AtomicUsize::new(0));
    let release = Arc::new(tokio::sync::Semaphore::new(0));
    let worker = orders_worker(&mock.bootstrap, &group)
        .handler("count", {
            let (calls, release) = (calls.clone(), release.clone());
            move |_ctx: TaskContext| {
                let (calls, release) = (calls.clone(), release.clone());
                async move {
                    calls.fetch_add(1, Ordering::SeqCst);
                    let _held = release.acquire().await;
                    Ok::<_, TaskError>(DataMap::new())
                }
            }
        })
        .build()?;
    let metrics = worker.metrics().clone();
    let (stop_tx, mut running) = spawn_worker(worker);
    let tasks = topics.tasks("orders");
    let key = d.instance_id.to_string();
    // the same attempt twice while it runs, then once more after it finished
    produce(&mock.producer, &tasks, &key, &d.encode()).await?;
    produce(&mock.producer, &tasks, &key, &d.encode()).await?;
    while_running(
        &mut running,
        eventually("the running duplicate", || {
            metrics.duplicate_dispatches_total.get() == 1
        }),
    )
    .await?;
    release.add_permits(10);
    while_running(
        &mut running,
        read_until(&mock.bootstrap, &topics.events("orders"), |r| {
            has(r, &d, WorkflowEventType::TaskCompleted)
        }),
    )
    .await?;
    produce(&mock.producer, &tasks, &key, &d.encode()).await?;
    while_running(
        &mut running,
        eventually("the late duplicate", || {
            metrics.duplicate_dispatches_total.get() == 2
        }),
    )
    .await?;
    let committed = committed_until(&mock.bootstrap, &group, &tasks, 1, 3).await?;
    assert_eq!(committed, 3);
    assert_eq!(calls.load(Ordering::SeqCst), 1, "the handler ran once");
    let events = read_until(&mock.bootstrap, &topics.events("orders"), |r| r.len() >= 2).await?;
    assert_eq!(
        kinds(&events, &d),
        [
            WorkflowEventType::TaskStarted,
            WorkflowEventType::TaskCompleted
        ]
    );
    stop(stop_tx, running).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_its_deadline_an_attempt_fails_with_execution_timeout() -> anyhow::Result<()> {
    init_logs();
    let topics = Topics::default();
    let mock = mock_cluster(1, &control_topics(&topics))?;
    let mut by_deadline = sleep_for(600_000);
    by_deadline.deadline_ms = weft_shared::event::now_ms() + 1_500;
    let mut by_timeout = sleep_for(600_000);
    by_timeout.timeout_config.execution_timeout_ms = 300;
    let group = format!("workers-{}", uuid_like());
    let worker = orders_worker(&mock.bootstrap, &group)
        .with_builtins()
        .build()?;
    let (stop_tx, mut running) = spawn_worker(worker);
    let tasks = topics.tasks("orders");
    for d in [&by_deadline, &by_timeout] {
        produce_dispatch(&mock.producer, &tasks, d).await?;
    }
    let events = while_running(
        &mut running,
        read_until(&mock.bootstrap, &topics.events("orders"), |r| {
            has(r, &by_deadline, WorkflowEventType::TaskFailed)
                && has(r, &by_timeout, WorkflowEventType::TaskFailed)
        }),
    )
    .await?;
    for d in [&by_deadline, &by_timeout] {
        let failed = events_of(&events, d.instance_id)
            .into_iter()
            .find(|e| e.event_type == WorkflowEventType::TaskFailed)
            .context("failed")?;
        assert_eq!(failed.data_str("error_type"), Some("execution_timeout"));
        assert_eq!(failed.data["retryable"], WorkflowData::Bool(true));
        assert!(!has(&events, d, WorkflowEventType::TaskCompleted));
    }
    stop(stop_tx, running).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctx_heartbeat_sends_one_at_once() -> anyhow::Result<()> {
    init_logs();
    let topics = Topics::default();
    let mock = mock_cluster(1, &control_topics(&topics))?;
    let mut d = dispatch("beat", ExecutionSemantics::AtLeastOnce);
    d.timeout_config.heartbeat_timeout_ms = 600_000; // scheduled every 200 s: only the first comes by itself
    let group = format!("workers-{}", uuid_like());
    let release = Arc::new(tokio::sync::Semaphore::new(0));
    let worker = orders_worker(&mock.bootstrap, &group)
        .handler("beat", {
            let release = release.clone();
            move |ctx: TaskContext| {
                let release = release.clone();
                async move {
                    let _go = release.acquire().await;
                    ctx.heartbeat();
                    let _done = release.acquire().await;
                    Ok::<_, TaskError>(DataMap::new())
                }
            }
        })
        .build()?;
    let (stop_tx, mut running) = spawn_worker(worker);
    let tasks = topics.tasks("orders");
    produce_dispatch(&mock.producer, &tasks, &d).await?;
    let hb = topics.heartbeats("orders");
    while_running(
        &mut running,
        read_until(&mock.bootstrap, &hb, |r| !r.is_empty()),
    )
    .await?;
    release.add_permits(1);
    let beats = while_running(
        &mut running,
        read_until(&mock.bootstrap, &hb, |r| r.len() >= 2),
    )
    .await?;
    assert!(beats.iter().all(|r| r.key == d.instance_id.to_string()));
    release.add_permits(1);
    while_running(
        &mut running,
        read_until(&mock.bootstrap, &topics.events("orders"), |r| {
            has(r, &d, WorkflowEventType::TaskCompleted)
        }),
    )
    .await?;
    stop(stop_tx, running).await
}
