//! The control plane on librdkafka's mock cluster: task heartbeats while a
//! handler runs (and none after, none in the events topic), cancel control
//! records (of a running attempt on a saturated worker, and before the
//! dispatch comes), duplicate dispatches, and the execution deadline. Every
//! wait is a condition with a deadline.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::time::Instant;
use weft_shared::avro::AvroRecord;
use weft_shared::config::TransactionsMode;
use weft_shared::control::TaskHeartbeat;
use weft_shared::data::{DataMap, WorkflowData};
use weft_shared::model::ExecutionSemantics;
use weft_shared::{Topics, WorkflowEventType};
use weft_worker::{TaskContext, TaskError, Worker};

use common::*;

fn topics_of(t: &Topics) -> Vec<(String, i32)> {
    vec![
        (t.tasks("orders"), 1),
        (t.events("orders"), 1),
        (t.heartbeats("orders"), 1),
        (t.nodes(), 1),
    ]
}

fn sleep_for(ms: i64) -> weft_shared::TaskDispatch {
    let mut d = dispatch("sleep", ExecutionSemantics::AtLeastOnce);
    d.parameters = DataMap::from([("ms".to_owned(), WorkflowData::Int(ms))]);
    d
}

fn kinds(recs: &[Rec], d: &weft_shared::TaskDispatch) -> Vec<WorkflowEventType> {
    events_of(recs, d.instance_id)
        .iter()
        .map(|e| e.event_type)
        .collect()
}

async fn stop(stop_tx: tokio::sync::oneshot::Sender<()>, running: Running) -> anyhow::Result<()> {
    stop_tx.send(()).ok();
    tokio::time::timeout(DEADLINE, running)
        .await
        .context("worker did not stop")???;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_flow_while_a_handler_runs_and_stop_when_it_returns() -> anyhow::Result<()> {
    init_logs();
    let topics = Topics::default();
    let mock = mock_cluster(1, &topics_of(&topics))?;
    let mut beating = sleep_for(1_200);
    beating.timeout_config.heartbeat_timeout_ms = 300; // every 100 ms
    let quiet = sleep_for(200); // no heartbeat timeout: no heartbeats
    let group = format!("workers-{}", uuid_like());
    let worker = Worker::builder(config(
        &mock.bootstrap,
        &group,
        &["orders"],
        TransactionsMode::Off,
    ))
    .with_builtins()
    .build()?;
    let (stop_tx, mut running) = spawn_worker(worker);
    let tasks = topics.tasks("orders");
    produce(
        &mock.producer,
        &tasks,
        &beating.instance_id.to_string(),
        &beating.encode(),
    )
    .await?;
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
    produce(
        &mock.producer,
        &tasks,
        &quiet.instance_id.to_string(),
        &quiet.encode(),
    )
    .await?;
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
async fn cancel_stops_a_running_handler_on_a_saturated_worker_and_publishes_nothing(
) -> anyhow::Result<()> {
    init_logs();
    let topics = Topics::default();
    let mock = mock_cluster(1, &topics_of(&topics))?;
    let long = sleep_for(600_000);
    let next = dispatch("noop", ExecutionSemantics::AtLeastOnce);
    let group = format!("workers-{}", uuid_like());
    let mut cfg = config(&mock.bootstrap, &group, &["orders"], TransactionsMode::Off);
    cfg.worker.concurrency = 1; // the long sleep takes the only slot
    let worker = Worker::builder(cfg).with_builtins().build()?;
    let metrics = worker.metrics().clone();
    let (stop_tx, mut running) = spawn_worker(worker);
    let tasks = topics.tasks("orders");
    produce(
        &mock.producer,
        &tasks,
        &long.instance_id.to_string(),
        &long.encode(),
    )
    .await?;
    while_running(
        &mut running,
        read_until(&mock.bootstrap, &topics.events("orders"), |r| {
            has(r, &long, WorkflowEventType::TaskStarted)
        }),
    )
    .await?;
    // queued behind the running sleep: the cancel comes after a dispatch that waits for the slot
    produce(
        &mock.producer,
        &tasks,
        &next.instance_id.to_string(),
        &next.encode(),
    )
    .await?;
    let asked = Instant::now();
    produce_control(&mock.producer, &tasks, &long, 5_000).await?;
    let events = while_running(
        &mut running,
        read_until(&mock.bootstrap, &topics.events("orders"), |r| {
            has(r, &next, WorkflowEventType::TaskCompleted)
        }),
    )
    .await?;
    assert!(
        asked.elapsed() < Duration::from_secs(20),
        "cancel took {:?}",
        asked.elapsed()
    );
    assert_eq!(
        kinds(&events, &long),
        [WorkflowEventType::TaskStarted],
        "no result for a cancelled attempt"
    );
    let cancelled = metrics
        .tasks_total
        .with_label_values(&["sleep", "cancelled"]);
    assert_eq!(cancelled.get(), 1);
    // the cancelled dispatch, the noop and the control record are all committed
    let committed = committed_until(&mock.bootstrap, &group, &tasks, 1, 3).await?;
    assert_eq!(committed, 3);
    stop(stop_tx, running).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_that_comes_first_skips_the_dispatch() -> anyhow::Result<()> {
    init_logs();
    let topics = Topics::default();
    let mock = mock_cluster(1, &topics_of(&topics))?;
    let cancelled = sleep_for(600_000);
    let marker = dispatch("noop", ExecutionSemantics::AtLeastOnce);
    let tasks = topics.tasks("orders");
    produce_control(&mock.producer, &tasks, &cancelled, 100).await?;
    for d in [&cancelled, &marker] {
        produce(
            &mock.producer,
            &tasks,
            &d.instance_id.to_string(),
            &d.encode(),
        )
        .await?;
    }
    let group = format!("workers-{}", uuid_like());
    let worker = Worker::builder(config(
        &mock.bootstrap,
        &group,
        &["orders"],
        TransactionsMode::Off,
    ))
    .with_builtins()
    .build()?;
    let (stop_tx, mut running) = spawn_worker(worker);
    let events = while_running(
        &mut running,
        read_until(&mock.bootstrap, &topics.events("orders"), |r| {
            has(r, &marker, WorkflowEventType::TaskCompleted)
        }),
    )
    .await?;
    assert!(
        kinds(&events, &cancelled).is_empty(),
        "the cancelled dispatch never started"
    );
    let committed = committed_until(&mock.bootstrap, &group, &tasks, 1, 3).await?;
    assert_eq!(committed, 3);
    stop(stop_tx, running).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_dispatch_runs_once() -> anyhow::Result<()> {
    init_logs();
    let topics = Topics::default();
    let mock = mock_cluster(1, &topics_of(&topics))?;
    let d = dispatch("count", ExecutionSemantics::AtLeastOnce);
    let group = format!("workers-{}", uuid_like());
    let calls = Arc::new(AtomicUsize::new(0));
    let release = Arc::new(tokio::sync::Semaphore::new(0));
    let worker = Worker::builder(config(
        &mock.bootstrap,
        &group,
        &["orders"],
        TransactionsMode::Off,
    ))
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
    let mock = mock_cluster(1, &topics_of(&topics))?;
    let mut by_deadline = sleep_for(600_000);
    by_deadline.deadline_ms = weft_shared::event::now_ms() + 1_500;
    let mut by_timeout = sleep_for(600_000);
    by_timeout.timeout_config.execution_timeout_ms = 300;
    let group = format!("workers-{}", uuid_like());
    let worker = Worker::builder(config(
        &mock.bootstrap,
        &group,
        &["orders"],
        TransactionsMode::Off,
    ))
    .with_builtins()
    .build()?;
    let (stop_tx, mut running) = spawn_worker(worker);
    let tasks = topics.tasks("orders");
    for d in [&by_deadline, &by_timeout] {
        produce(
            &mock.producer,
            &tasks,
            &d.instance_id.to_string(),
            &d.encode(),
        )
        .await?;
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

/// Dropped when the handler's future is: tells the test the handler was aborted.
struct DropFlag(Arc<AtomicUsize>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_that_ignores_the_cancel_is_aborted_after_its_grace_period() -> anyhow::Result<()>
{
    init_logs();
    let topics = Topics::default();
    let mock = mock_cluster(1, &topics_of(&topics))?;
    let d = dispatch("stubborn", ExecutionSemantics::AtLeastOnce);
    let group = format!("workers-{}", uuid_like());
    let aborted = Arc::new(AtomicUsize::new(0));
    let worker = Worker::builder(config(
        &mock.bootstrap,
        &group,
        &["orders"],
        TransactionsMode::Off,
    ))
    .handler("stubborn", {
        let aborted = aborted.clone();
        move |_ctx: TaskContext| {
            let flag = DropFlag(aborted.clone());
            async move {
                let _flag = flag;
                std::future::pending::<()>().await; // never looks at ctx.cancel
                Ok::<_, TaskError>(DataMap::new())
            }
        }
    })
    .build()?;
    let (stop_tx, mut running) = spawn_worker(worker);
    let tasks = topics.tasks("orders");
    produce(
        &mock.producer,
        &tasks,
        &d.instance_id.to_string(),
        &d.encode(),
    )
    .await?;
    while_running(
        &mut running,
        read_until(&mock.bootstrap, &topics.events("orders"), |r| {
            has(r, &d, WorkflowEventType::TaskStarted)
        }),
    )
    .await?;
    let asked = Instant::now();
    produce_control(&mock.producer, &tasks, &d, 300).await?;
    while_running(
        &mut running,
        eventually("the abort", || aborted.load(Ordering::SeqCst) == 1),
    )
    .await?;
    assert!(
        asked.elapsed() >= Duration::from_millis(300),
        "aborted before the grace period: {:?}",
        asked.elapsed()
    );
    let committed = committed_until(&mock.bootstrap, &group, &tasks, 1, 2).await?;
    assert_eq!(committed, 2);
    let events = read_all(&mock.bootstrap, &topics.events("orders"), 1).await?;
    assert_eq!(kinds(&events, &d), [WorkflowEventType::TaskStarted]);
    stop(stop_tx, running).await
}
