//! Exactly-once tasks on librdkafka's mock cluster (which has transactions):
//! with `kafka.transactions=on` the worker runs the task and publishes its
//! result in a Kafka transaction; the worker subscribes by regex here.

mod common;

use anyhow::Context;
use weft_shared::config::TransactionsMode;
use weft_shared::model::ExecutionSemantics;
use weft_shared::{Topics, WorkflowEventType};
use weft_worker::Worker;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_once_runs_in_a_transaction_with_regex_subscription() -> anyhow::Result<()> {
    init_logs();
    let topics = Topics::default();
    let Mock {
        cluster: _cluster,
        bootstrap,
        producer,
    } = mock_cluster(
        3,
        &[
            (topics.tasks("payments"), 1),
            (topics.events("payments"), 1),
            (topics.nodes(), 1),
        ],
    )?;
    let mut d = dispatch("noop", ExecutionSemantics::ExactlyOnce);
    d.workflow_type = "payments".into();
    produce_dispatch(&producer, &topics.tasks("payments"), &d).await?;

    let group = format!("workers-{}", uuid_like());
    let cfg = config(&bootstrap, &group, &[], TransactionsMode::On);
    let worker = Worker::builder(cfg).with_builtins().build()?;
    let (stop_tx, mut running) = spawn_worker(worker);

    let events = while_running(
        &mut running,
        read_until(&bootstrap, &topics.events("payments"), |recs| {
            has(recs, &d, WorkflowEventType::TaskCompleted)
        }),
    )
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
