//! Pipelined publishing (ADR 0010) through the real run loop on the mock
//! cluster: every decision published exactly once with many batches in the
//! air, no outbox row left behind, and a producer that can never publish
//! again (fenced) ends its processor instead of retrying for ever.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::message::Message;
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use tokio::sync::mpsc;
use weft_shared::kafka::header_map;
use weft_shared::topics::headers as h;

use super::{fed, harness, id_on, input_record, start};
use crate::partition::Exit;

const ONE: &str = "type: one\ntasks:\n  - {name: A, handler: noop}\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_batches_publish_each_decision_once_and_leave_no_outbox_rows() {
    let h = harness(&[ONE], 1, 1, &[]).await;
    let (mut p, _seeks) = h.open("one", 0, 0);
    let topic = h.shared.topics.events("one");
    let (tx, mut rx) = mpsc::channel(10_000);
    let runner = tokio::spawn(async move { p.run(&mut rx).await });
    // 300 starts, handed over in bursts so that batches overlap in the air.
    const STARTS: i64 = 300;
    for offset in 0..STARTS {
        let record = input_record(&topic, &start("one", id_on(0, 1)));
        tx.send(fed(&topic, 0, offset, offset, &record))
            .await
            .expect("send");
        if offset % 25 == 0 {
            tokio::task::yield_now().await;
        }
    }
    let store = h.shared.store.clone();
    let folded = super::until(Duration::from_secs(30), || {
        store.offset(&topic, 0).ok().flatten() == Some(STARTS)
    })
    .await;
    assert!(folded, "every start folded");
    drop(tx);
    let exit = tokio::time::timeout(Duration::from_secs(30), runner)
        .await
        .expect("the processor stops once its channel closes")
        .expect("runner");
    assert_eq!(exit, Exit::Revoked);

    // Each attempt dispatched exactly once.
    let mut dispatches: BTreeMap<String, usize> = BTreeMap::new();
    for m in h.read(&h.shared.topics.tasks("one"), 0) {
        let key = header_map(m.headers())
            .get(h::IDEMPOTENCY_KEY)
            .cloned()
            .expect("a dispatch's idempotency key");
        *dispatches.entry(key).or_default() += 1;
    }
    assert_eq!(dispatches.len(), STARTS as usize, "one dispatch per start");
    assert!(
        dispatches.values().all(|n| *n == 1),
        "a dispatch published twice"
    );
    // Each decision once (the events topic holds only what the processor published).
    let mut decisions: BTreeMap<String, usize> = BTreeMap::new();
    for e in h.events(&topic, 0) {
        *decisions.entry(e.idempotency_key).or_default() += 1;
    }
    assert!(
        decisions.len() >= 2 * STARTS as usize,
        "{}",
        decisions.len()
    );
    assert!(
        decisions.values().all(|n| *n == 1),
        "a decision published twice"
    );
    // Nothing left to publish after a restart, and nothing counted in the air.
    assert!(
        h.shared.store.outbox(&topic, 0).expect("outbox").is_empty(),
        "outbox rows of published records were deleted"
    );
    assert_eq!(h.shared.metrics.flights.get(), 0);
    let batches = h.shared.metrics.batch_records.get_sample_count();
    assert!(batches >= 1 && batches <= STARTS as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fenced_producer_ends_its_processor() {
    let h = harness(&[ONE], 1, 1, &[]).await;
    let (mut p, _seeks) = h.open("one", 0, 0);
    let topic = h.shared.topics.events("one");
    // Every produce from now on is answered as a newer producer of the same
    // identity would cause it: the producer can never publish again.
    h.cluster.request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_PRODUCER_FENCED; 64],
    );
    let (tx, mut rx) = mpsc::channel(16);
    let record = input_record(&topic, &start("one", id_on(0, 1)));
    tx.send(fed(&topic, 0, 0, 0, &record)).await.expect("send");
    let exit = tokio::time::timeout(Duration::from_secs(60), p.run(&mut rx))
        .await
        .expect("a fenced processor stops instead of retrying for ever");
    assert!(
        matches!(exit, Exit::Fenced(_)),
        "the processor ends as fenced: {exit:?}"
    );
    // The start was folded; its decisions wait in the outbox for the next owner.
    assert_eq!(h.shared.store.offset(&topic, 0).expect("offset"), Some(1));
    assert!(!h.shared.store.outbox(&topic, 0).expect("outbox").is_empty());
    drop(tx);
}
