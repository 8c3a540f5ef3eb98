//! A record the broker refuses never wedges its partition (issue 10, item 7):
//! a dispatch too large to publish goes to the DLQ with the reason and fails
//! its attempt; a fenced transactional producer ends its processor.

use std::time::Duration;

use rdkafka::message::Message;
use tokio::sync::mpsc;
use weft_shared::ids::InstanceId;
use weft_shared::kafka::header_map;
use weft_shared::topics::headers as h;
use weft_shared::{DataMap, WorkflowData, WorkflowEventType as T, WorkflowState};

use super::{created, fed, harness, input_record};
use crate::partition::publish::UNPUBLISHABLE;
use crate::partition::Exit;
use crate::publisher::Publisher;

const ONE: &str = "type: one\ntasks:\n  - {name: A, handler: noop}\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dispatch_the_broker_refuses_fails_its_attempt() {
    // Records over 6,000 bytes are refused (librdkafka checks message.max.bytes itself).
    let h = harness(&[ONE], 1, 1, &[("message.max.bytes", "6000")]).await;
    let topic = h.shared.topics.events("one");
    let (mut p, _seeks) = h.open("one", 0, 0);
    let id = InstanceId::random();
    let big = DataMap::from([("blob".to_owned(), WorkflowData::Str("x".repeat(8_000)))]);
    let start = input_record(&topic, &created("one", id, weft_shared::event::now_ms(), big));
    let batch = p.admit(vec![fed(&topic, 0, 0, 0, &start)]);
    let (added, _) = p.apply_batch(&batch).expect("apply");
    let seqs = p.after_apply(added).expect("live");
    tokio::time::timeout(Duration::from_secs(30), p.flush(&seqs))
        .await
        .expect("the flush ends instead of retrying for ever")
        .expect("not fenced");
    assert!(p.outbox.records.is_empty(), "nothing left to retry");
    let dlq = h.read(&h.shared.topics.dlq("one"), 0);
    let reasons: Vec<String> = dlq
        .iter()
        .filter_map(|m| header_map(m.headers()).get(h::DLQ_REASON).cloned())
        .collect();
    assert!(
        reasons.iter().any(|r| r.contains(&h.shared.topics.tasks("one")) && r.contains("bytes")),
        "{reasons:?}"
    );
    // The attempt's failure is an input on the events topic: folded, it fails the workflow.
    let failure = h
        .events(&topic, 0)
        .into_iter()
        .find(|e| e.event_type == T::TaskFailed)
        .expect("a task.failed for the refused dispatch");
    assert_eq!(failure.data_str("error_type"), Some(UNPUBLISHABLE));
    let batch = p.admit(vec![fed(&topic, 0, 1, 1, &input_record(&topic, &failure))]);
    p.apply_batch(&batch).expect("apply");
    let state = h.shared.store.instance("one", id).expect("read").expect("instance");
    assert_eq!(state.state, WorkflowState::Failed);
    assert!(h.shared.metrics.unpublishable.get() >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fenced_producer_ends_its_processor() {
    let h = harness(&[ONE], 1, 1, &[]).await;
    let mut shared = h.shared.clone();
    shared.kafka.transactions = weft_shared::config::TransactionsMode::On;
    let topic = shared.topics.events("one");
    let (seeks_tx, _seeks) = mpsc::unbounded_channel();
    let at = crate::partition::Placement {
        topic: topic.clone(),
        partition: 0,
        workflow_type: "one".into(),
        replay_end: 0,
        partition_count: Some(1),
    };
    let progress = crate::partition::ReplayProgress::new(std::sync::Arc::new(std::sync::atomic::AtomicI64::new(0)));
    let mut p = crate::partition::Partition::open(shared.clone(), at, progress, seeks_tx).expect("open");
    // A newer owner of the same partition takes its transactional id.
    let _newer = Publisher::transactional(&shared.kafka, &format!("weft-orchestrator-{topic}-0"))
        .expect("newer owner");
    let (tx, mut rx) = mpsc::channel(16);
    let start = input_record(&topic, &created("one", InstanceId::random(), 1, DataMap::new()));
    tx.send(fed(&topic, 0, 0, 0, &start)).await.expect("send");
    let exit = tokio::time::timeout(Duration::from_secs(60), p.run(&mut rx))
        .await
        .expect("the processor stops instead of retrying for ever");
    assert!(matches!(exit, Exit::Fenced(_)), "{exit:?}");
}
