//! Timers fire while their partition is busy (issue 10, item 6): a partition
//! whose channel never runs dry still fires a `wait` task's timer on time.

use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use weft_shared::ids::InstanceId;
use weft_shared::{DataMap, WorkflowState};

use super::{created, fed, harness, input_record, until};

const WAITER: &str =
    "type: waiter\ntasks:\n  - {name: pause, type: wait, parameters: {duration: 1s}}\n";

// Four runtime threads: the test's own checks read the mock topic with a
// blocking consumer, which must not stall the processor.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_wait_task_ends_on_time_while_records_keep_arriving() {
    let h = harness(&[WAITER], 1, 1, &[]).await;
    let (mut p, _seeks) = h.open("waiter", 0, 0);
    let topic = h.shared.topics.events("waiter");
    let (tx, mut rx) = mpsc::channel(1_000);
    let id = InstanceId::random();
    let started = Instant::now();
    let start = created("waiter", id, weft_shared::event::now_ms(), DataMap::new());
    let record = input_record(&topic, &start);
    tx.send(fed(&topic, 0, 0, 0, &record)).await.expect("send");
    let runner = tokio::spawn(async move {
        let exit = p.run(&mut rx).await;
        (p, rx, exit)
    });
    // The same start, redelivered without pause for 2.5 s from a thread of its
    // own: the processor's channel is never empty, so a loop that waits for a
    // quiet moment to fire timers never fires them.
    let feeder = {
        let (tx, topic) = (tx.clone(), topic.clone());
        std::thread::spawn(move || {
            let mut offset = 1;
            while started.elapsed() < Duration::from_millis(2_500) {
                tx.blocking_send(fed(&topic, 0, offset, offset, &record))
                    .expect("send");
                offset += 1;
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
        "no timer fire published within 1.5 s while records kept arriving"
    );
    let next = feeder.join().expect("feeder");
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
    eprintln!(
        "timer fired {waited:?} after the start, while {} records arrived in 2.5 s",
        next - 1
    );
}
