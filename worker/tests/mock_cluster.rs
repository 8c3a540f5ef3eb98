//! The worker end to end on librdkafka's in-process mock cluster: dispatches
//! produced to the task topic come back as `task.started` and
//! `task.completed` / `task.failed` on the events topic, undecodable records
//! go to the DLQ, heartbeats reach the node registry and offsets are
//! committed. Every wait has a deadline.

mod common;

use anyhow::Context;
use weft_shared::avro::AvroRecord;
use weft_shared::data::{DataMap, WorkflowData};
use weft_shared::model::ExecutionSemantics;
use weft_shared::node::NodeRecord;
use weft_shared::topics::headers;
use weft_shared::{Topics, WorkflowEventType};
use weft_worker::{TaskContext, TaskError};

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn noop_dispatch_round_trip_dlq_and_commits() -> anyhow::Result<()> {
    init_logs();
    let topics = Topics::default();
    let Mock {
        cluster: _cluster,
        bootstrap,
        producer,
    } = mock_cluster(
        1,
        &[
            (topics.tasks("orders"), 2),
            (topics.events("orders"), 2),
            (topics.dlq("orders"), 1),
            (topics.nodes(), 1),
        ],
    )?;

    let ok = dispatch("noop", ExecutionSemantics::AtLeastOnce);
    let eo = dispatch("noop", ExecutionSemantics::ExactlyOnce);
    let failing = dispatch("fail", ExecutionSemantics::AtMostOnce);
    for d in [&ok, &eo, &failing] {
        produce_dispatch(&producer, &topics.tasks("orders"), d).await?;
    }
    produce(
        &producer,
        &topics.tasks("orders"),
        "garbage-key",
        b"not avro",
    )
    .await?;

    let group = format!("workers-{}", uuid_like());
    let worker = orders_worker(&bootstrap, &group)
        .handler("noop", |_ctx: TaskContext| async {
            Ok::<_, TaskError>(DataMap::new())
        })
        .with_builtins()
        .build()?;
    assert!(worker.handler_names().contains(&"noop".to_owned()));
    let (stop_tx, mut running) = spawn_worker(worker);

    let events = while_running(
        &mut running,
        read_until(&bootstrap, &topics.events("orders"), |recs| {
            has(recs, &ok, WorkflowEventType::TaskCompleted)
                && has(recs, &eo, WorkflowEventType::TaskFailed)
                && has(recs, &failing, WorkflowEventType::TaskFailed)
        }),
    )
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
    let dlq = while_running(
        &mut running,
        read_until(&bootstrap, &topics.dlq("orders"), |recs| !recs.is_empty()),
    )
    .await?;
    assert_eq!(dlq[0].key, "garbage-key");
    assert_eq!(dlq[0].payload, b"not avro");
    assert!(dlq[0].headers[headers::DLQ_SOURCE].starts_with("weft.orders.tasks/"));
    assert!(!dlq[0].headers[headers::DLQ_REASON].is_empty());

    // the node registry heard from the worker
    let node_id = format!("{group}-node");
    let nodes = while_running(
        &mut running,
        read_until(&bootstrap, &topics.nodes(), |recs| {
            recs.iter().any(|r| r.key == node_id)
        }),
    )
    .await?;
    let node = nodes
        .iter()
        .find(|r| r.key == node_id)
        .context("node record")?;
    let node = NodeRecord::decode(&node.payload)?;
    assert_eq!(node.role, "worker");
    assert!(node.capabilities.contains(&"fail".to_owned()));
    assert_eq!(node.capacity_limits["concurrency"], 4);

    // all four records are committed
    let committed = committed_until(&bootstrap, &group, &topics.tasks("orders"), 2, 4).await?;
    assert_eq!(committed, 4);

    stop_tx.send(()).ok();
    tokio::time::timeout(DEADLINE, running)
        .await
        .context("worker did not stop")???;
    Ok(())
}
