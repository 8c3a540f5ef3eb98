//! A record the broker refuses never wedges its partition (issue 10, item 7):
//! a dispatch too large to publish goes to the DLQ with the reason and fails
//! its attempt. (A fenced transactional producer ending its processor is not
//! proven here: librdkafka's mock cluster leaves a fenced producer's sends
//! hanging instead of failing them.)

use std::time::Duration;

use rdkafka::message::Message;
use weft_shared::ids::InstanceId;
use weft_shared::kafka::header_map;
use weft_shared::topics::headers as h;
use weft_shared::{DataMap, WorkflowData, WorkflowEventType as T, WorkflowState};

use super::{created, fed, harness, input_record};
use crate::partition::publish::UNPUBLISHABLE;

const ONE: &str = "type: one\ntasks:\n  - {name: A, handler: noop}\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dispatch_the_broker_refuses_fails_its_attempt() {
    // Records over 6,000 bytes are refused (librdkafka checks message.max.bytes itself).
    let h = harness(&[ONE], 1, 1, &[("message.max.bytes", "6000")]).await;
    let topic = h.shared.topics.events("one");
    let (mut p, _seeks) = h.open("one", 0, 0);
    let id = InstanceId::random();
    let big = DataMap::from([("blob".to_owned(), WorkflowData::Str("x".repeat(8_000)))]);
    let start = input_record(
        &topic,
        &created("one", id, weft_shared::event::now_ms(), big),
    );
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
        reasons
            .iter()
            .any(|r| r.contains(&h.shared.topics.tasks("one")) && r.contains("bytes")),
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
    let state = h
        .shared
        .store
        .instance("one", id)
        .expect("read")
        .expect("instance");
    assert_eq!(state.state, WorkflowState::Failed);
    assert!(h.shared.metrics.unpublishable.get() >= 1);
}
