//! Execution semantics on librdkafka's mock cluster: an `at_most_once` dispatch
//! is committed before its handler runs, so a worker that stops mid-handler
//! never runs it again. An `at_least_once` dispatch stays uncommitted until its
//! result is published, so it runs again (`mock_shutdown.rs` shows that side).

mod common;

use weft_shared::config::TransactionsMode;
use weft_shared::model::ExecutionSemantics;
use weft_shared::{Topics, WorkflowEventType};
use weft_worker::Worker;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_most_once_is_committed_before_it_runs_and_never_runs_again() -> anyhow::Result<()> {
    init_logs();
    let topics = Topics::default();
    let Mock {
        cluster: _cluster,
        bootstrap,
        producer,
    } = mock_cluster(1, &control_topics(&topics))?;
    let tasks = topics.tasks("orders");
    let mut slow = sleep_for(600_000);
    slow.execution_semantics = ExecutionSemantics::AtMostOnce;
    produce_dispatch(&producer, &tasks, &slow).await?;

    let group = format!("workers-{}", uuid_like());
    let worker_config = || {
        let mut cfg = config(&bootstrap, &group, &["orders"], TransactionsMode::Off);
        cfg.worker.shutdown_grace_ms = 200;
        cfg
    };
    let (stop_tx, mut running) =
        spawn_worker(Worker::builder(worker_config()).with_builtins().build()?);
    while_running(
        &mut running,
        read_until(&bootstrap, &topics.events("orders"), |recs| {
            has(recs, &slow, WorkflowEventType::TaskStarted)
        }),
    )
    .await?;
    // The handler sleeps for ten minutes; its dispatch is committed already.
    let committed = committed_until(&bootstrap, &group, &tasks, 1, 1).await?;
    assert_eq!(
        committed, 1,
        "an at_most_once dispatch is committed before it runs"
    );
    stop(stop_tx, running).await?;

    // A new worker of the group starts after the committed offset: the next
    // dispatch runs, the interrupted one does not run again.
    let next = dispatch("noop", ExecutionSemantics::AtLeastOnce);
    produce_dispatch(&producer, &tasks, &next).await?;
    let (stop_tx, mut running) =
        spawn_worker(Worker::builder(worker_config()).with_builtins().build()?);
    let events = while_running(
        &mut running,
        read_until(&bootstrap, &topics.events("orders"), |recs| {
            has(recs, &next, WorkflowEventType::TaskCompleted)
        }),
    )
    .await?;
    stop(stop_tx, running).await?;
    assert_eq!(
        kinds(&events, &slow),
        [WorkflowEventType::TaskStarted],
        "the interrupted at_most_once attempt ran once and reported nothing"
    );
    Ok(())
}
