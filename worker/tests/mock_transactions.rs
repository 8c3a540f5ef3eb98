//! Exactly-once tasks on librdkafka's mock cluster (which has transactions):
//! with `kafka.transactions=on` the worker runs the task and publishes its
//! result in a Kafka transaction; the worker subscribes by regex here.
//!
//! A `read_committed` reader seeing the result proves little: it sees plain
//! writes too, and on the mock cluster it even returns records of aborted
//! transactions (the mock writes no commit or abort markers; a probe during
//! this work read an aborted result back with `read_committed`). So the second
//! test proves the transaction by its effect: the broker refuses the result's
//! commit (EndTxn answers UNKNOWN_PRODUCER_ID, as when the coordinator lost the
//! producer before the commit landed). A plain write would not notice; the
//! worker's transactional result fails, is aborted and is published again in a
//! new transaction: the partition holds the result twice.

mod common;

use anyhow::Context;
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_whose_commit_is_refused_is_published_again_in_a_new_transaction(
) -> anyhow::Result<()> {
    init_logs();
    let topics = Topics::default();
    let Mock {
        cluster,
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
    // The first EndTxn commits task.started; the second, the result's commit, fails.
    cluster.request_errors(
        RDKafkaApiKey::EndTxn,
        &[
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR,
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_UNKNOWN_PRODUCER_ID,
        ],
    );
    let mut d = dispatch("noop", ExecutionSemantics::ExactlyOnce);
    d.workflow_type = "payments".into();
    produce_dispatch(&producer, &topics.tasks("payments"), &d).await?;

    let group = format!("workers-{}", uuid_like());
    let cfg = config(&bootstrap, &group, &[], TransactionsMode::On);
    let worker = Worker::builder(cfg).with_builtins().build()?;
    let (stop_tx, mut running) = spawn_worker(worker);

    let events = topics.events("payments");
    let raw = while_running(
        &mut running,
        read_until_isolated(&bootstrap, &events, "read_uncommitted", |recs| {
            has(recs, &d, WorkflowEventType::TaskCompleted)
        }),
    )
    .await?;
    let completed = |recs: &[Rec]| {
        events_of(recs, d.instance_id)
            .iter()
            .filter(|e| e.event_type == WorkflowEventType::TaskCompleted)
            .count()
    };
    assert!(completed(&raw) >= 1);
    // The refused commit is redone in a new transaction: a second copy of the result.
    let raw = while_running(
        &mut running,
        read_until_isolated(&bootstrap, &events, "read_uncommitted", |recs| {
            completed(recs) >= 2
        }),
    )
    .await
    .context("the result whose commit was refused was not published again: no transaction?")?;
    assert_eq!(completed(&raw), 2, "one aborted, one committed");
    stop(stop_tx, running).await
}
