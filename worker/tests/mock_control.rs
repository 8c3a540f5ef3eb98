//! Cancel control records on librdkafka's mock cluster: a running attempt on
//! a saturated worker (every slot busy, the cancel queued behind a dispatch)
//! stops and publishes nothing, a handler that ignores the cancel is aborted
//! after the grace period, and a cancel that comes before the dispatch makes
//! the worker skip it. Every wait is a condition with a deadline.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use weft_shared::config::TransactionsMode;
use weft_shared::data::DataMap;
use weft_shared::model::ExecutionSemantics;
use weft_shared::{Topics, WorkflowEventType};
use weft_worker::{TaskContext, TaskError, Worker};

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_stops_a_running_handler_on_a_saturated_worker_and_publishes_nothing(
) -> anyhow::Result<()> {
    init_logs();
    let topics = Topics::default();
    let mock = mock_cluster(1, &control_topics(&topics))?;
    let long = sleep_for(600_000);
    let next = dispatch("noop", ExecutionSemantics::AtLeastOnce);
    let group = format!("workers-{}", uuid_like());
    let mut cfg = config(&mock.bootstrap, &group, &["orders"], TransactionsMode::Off);
    cfg.worker.concurrency = 1; // the long sleep takes the only slot
    let worker = Worker::builder(cfg).with_builtins().build()?;
    let metrics = worker.metrics().clone();
    let (stop_tx, mut running) = spawn_worker(worker);
    let tasks = topics.tasks("orders");
    produce_dispatch(&mock.producer, &tasks, &long).await?;
    while_running(
        &mut running,
        read_until(&mock.bootstrap, &topics.events("orders"), |r| {
            has(r, &long, WorkflowEventType::TaskStarted)
        }),
    )
    .await?;
    // queued behind the running sleep: the cancel comes after a dispatch that waits for the slot
    produce_dispatch(&mock.producer, &tasks, &next).await?;
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
    let mock = mock_cluster(1, &control_topics(&topics))?;
    let cancelled = sleep_for(600_000);
    let marker = dispatch("noop", ExecutionSemantics::AtLeastOnce);
    let tasks = topics.tasks("orders");
    produce_control(&mock.producer, &tasks, &cancelled, 100).await?;
    for d in [&cancelled, &marker] {
        produce_dispatch(&mock.producer, &tasks, d).await?;
    }
    let group = format!("workers-{}", uuid_like());
    let worker = orders_worker(&mock.bootstrap, &group)
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
    let mock = mock_cluster(1, &control_topics(&topics))?;
    let d = dispatch("stubborn", ExecutionSemantics::AtLeastOnce);
    let group = format!("workers-{}", uuid_like());
    let aborted = Arc::new(AtomicUsize::new(0));
    let worker = orders_worker(&mock.bootstrap, &group)
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
    produce_dispatch(&mock.producer, &tasks, &d).await?;
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
