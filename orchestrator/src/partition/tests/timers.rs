//! Timers fire while their partition is busy (issue 10, item 6): a partition
//! that receives a record every few milliseconds still fires a `wait` task's
//! timer on time.

use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use weft_shared::ids::InstanceId;
use weft_shared::{DataMap, WorkflowState};

use super::{created, fed, harness, input_record, until};

const WAITER: &str =
    "type: waiter\ntasks:\n  - {name: pause, type: wait, parameters: {duration: 1s}}\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wait_task_ends_on_time_while_records_keep_arriving() {
    let h = harness(&[WAITER], 1, 1, &[]).await;
    let (mut p, _seeks) = h.open("waiter", 0, 0);
    let topic = h.shared.topics.events("waiter");
    let (tx, mut rx) = mpsc::channel(100_000);
    let id = InstanceId::random();
    let started = Instant::now();
    let start = created("waiter", id, weft_shared::event::now_ms(), DataMap::new());
    let record = input_record(&topic, &start);
    tx.send(fed(&topic, 0, 0, 0, &record)).await.expect("send");
    let runner = tokio::spawn(async move {
        let exit = p.run(&mut rx).await;
        (p, rx, exit)
    });
    // About 300 records a second (the same start, redelivered) for 2.5 s.
    let feeder = {
        let (tx, topic) = (tx.clone(), topic.clone());
        tokio::spawn(async move {
            let mut offset = 1;
            while started.elapsed() < Duration::from_millis(2_500) {
                tx.send(fed(&topic, 0, offset, offset, &record))
                    .await
                    .expect("send");
                offset += 1;
                tokio::time::sleep(Duration::from_millis(3)).await;
            }
            offset
        })
    };
    // The wait's timer fire is published within 1.5 s of the start.
    let fired = until(Duration::from_millis(1_500), || {
        h.events(&topic, 0)
            .iter()
            .any(|e| e.instance_id == id && e.idempotency_key.starts_with("timer:"))
    })
    .await;
    let waited = started.elapsed();
    assert!(
        fired,
        "no timer fire published within 1.5 s while the partition took records every 3 ms"
    );
    let next = feeder.await.expect("feeder");
    // Folding the fire ends the wait and the workflow.
    let fire = h
        .events(&topic, 0)
        .into_iter()
        .find(|e| e.idempotency_key.starts_with("timer:"))
        .expect("fire");
    tx.send(fed(&topic, 0, next, next, &input_record(&topic, &fire)))
        .await
        .expect("send");
    let store = h.shared.store.clone();
    let ended = until(Duration::from_secs(5), || {
        store
            .instance("waiter", id)
            .ok()
            .flatten()
            .is_some_and(|s| s.state == WorkflowState::Completed)
    })
    .await;
    drop(tx);
    let (_, _, exit) = runner.await.expect("runner");
    assert!(ended, "the workflow completed once the fire was folded");
    assert_eq!(exit, super::super::Exit::Revoked);
    eprintln!("timer fired {waited:?} after the start, under load");
}
