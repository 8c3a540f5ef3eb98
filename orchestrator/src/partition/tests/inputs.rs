//! What the processor does with each kind of input (issue 10, items 1, 3, 5,
//! 10 and 11): offset continuity, rejected inputs redelivered, dispatches of
//! attempts that reported, inputs on the wrong partition, bad idempotency keys,
//! forged decisions, and the finished counters.

use rdkafka::message::Message;
use weft_shared::avro::AvroRecord;
use weft_shared::event::{META_SOURCE_KIND, SOURCE_KIND_DECISION};
use weft_shared::fsm::meta;
use weft_shared::ids::InstanceId;
use weft_shared::kafka::header_map;
use weft_shared::topics::headers as h;
use weft_shared::{TaskDispatch, WorkflowEvent, WorkflowEventType as T};

use super::{fed, harness, id_on, input_record, placement, processor, start};
use crate::partition::Partition;

const DIAMOND: &str = "type: diamond\ntasks:\n  - {name: A, handler: noop}\n  - {name: B, handler: noop, depends_on: [A]}\n  - {name: C, handler: noop, depends_on: [A]}\n  - {name: D, handler: noop, depends_on: [B, C]}\n";
const TIMED: &str = "type: timed\ntimeout: {execution: 1s}\ntasks:\n  - {name: A, handler: noop}\n";

/// Feeds `events` at consecutive offsets from `offset` and publishes what the processor decides.
async fn feed(p: &mut Partition, topic: &str, offset: &mut i64, events: &[WorkflowEvent]) {
    let fed_records = events
        .iter()
        .map(|e| {
            let f = fed(
                topic,
                p.partition,
                *offset,
                *offset,
                &input_record(topic, e),
            );
            *offset += 1;
            f
        })
        .collect();
    let batch = p.admit(fed_records);
    let (added, _) = p.apply_batch(&batch).expect("apply");
    if let Some(seqs) = p.after_apply(added) {
        p.flush(&seqs).await.expect("flush");
    }
}

/// A worker's report on attempt `attempt` of `task`.
fn report(ty: &str, id: InstanceId, what: T, task: &str, attempt: u32) -> WorkflowEvent {
    let exec = weft_shared::ids::ExecutionId::of(weft_shared::ids::TaskId::of(id, task), attempt);
    let kind = what.as_str().trim_start_matches("task.");
    let mut e = WorkflowEvent::new(what, ty, id, format!("{exec}:{kind}"), 2);
    e.metadata.insert(meta::TASK.into(), task.into());
    e.metadata.insert(meta::ATTEMPT.into(), attempt.to_string());
    e.metadata
        .insert(meta::EXECUTION_ID.into(), exec.to_string());
    e.metadata.insert(META_SOURCE_KIND.into(), "input".into());
    e
}

fn history_len(p: &Partition, id: InstanceId) -> usize {
    p.shared
        .store
        .events(&p.workflow_type, id, 1, None, 100_000)
        .expect("events")
        .len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_fold_only_after_the_stored_offset() {
    let h = harness(&[DIAMOND], 1, 1, &[]).await;
    let topic = h.shared.topics.events("diamond");
    let (mut p, mut seeks) = h.open("diamond", 0, 0);
    let (a, b) = (InstanceId::random(), InstanceId::random());
    let ra = input_record(&topic, &start("diamond", a));
    let rb = input_record(&topic, &start("diamond", b));
    let batch = p.admit(vec![fed(&topic, 0, 0, 0, &ra)]);
    p.apply_batch(&batch).expect("apply");
    // Records 1..=4 were lost on the way (a processor died holding them): 5 is a gap.
    let batch = p.admit(vec![fed(&topic, 0, 5, 5, &rb)]);
    assert!(batch.is_empty(), "a record after a gap is not folded");
    assert_eq!(seeks.try_recv().expect("a seek").offset, 1);
    assert!(p
        .shared
        .store
        .instance("diamond", b)
        .expect("read")
        .is_none());
    // A restarted processor starts from the stored offset; a record behind it is dropped.
    drop(p);
    let (mut p, _seeks) = h.open("diamond", 0, 0);
    assert!(p.admit(vec![fed(&topic, 0, 0, 0, &ra)]).is_empty());
    // After the seek: 1 (and a transaction marker's hole at 2) then 3.
    let batch = p.admit(vec![fed(&topic, 0, 1, 1, &rb), fed(&topic, 0, 3, 2, &rb)]);
    assert_eq!(batch.len(), 2, "the sought records follow, holes included");
    p.apply_batch(&batch).expect("apply");
    assert_eq!(p.shared.store.offset(&topic, 0).expect("offset"), Some(4));
    assert!(p
        .shared
        .store
        .instance("diamond", b)
        .expect("read")
        .is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_input_redelivered_is_a_duplicate() {
    let h = harness(&[DIAMOND], 1, 1, &[]).await;
    let topic = h.shared.topics.events("diamond");
    let (mut p, _seeks) = h.open("diamond", 0, 0);
    let id = InstanceId::random();
    let mut offset = 0;
    feed(&mut p, &topic, &mut offset, &[start("diamond", id)]).await;
    // A report about a task the workflow does not have: rejected, error.occurred appended.
    let bad = report("diamond", id, T::TaskCompleted, "nope", 1);
    feed(&mut p, &topic, &mut offset, std::slice::from_ref(&bad)).await;
    let after_first = history_len(&p, id);
    let dlq_before = h.shared.metrics.dlq.get();
    // The worker crashed before committing: the same report again.
    feed(&mut p, &topic, &mut offset, &[bad]).await;
    assert_eq!(history_len(&p, id), after_first, "no second error.occurred");
    assert_eq!(
        h.shared.metrics.dlq.get(),
        dlq_before,
        "no second DLQ record"
    );
    assert!(h.shared.metrics.duplicates.get() >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_early_go_live_never_dispatches_an_attempt_that_reported() {
    let h = harness(&[DIAMOND], 1, 1, &[]).await;
    let topic = h.shared.topics.events("diamond");
    let id = InstanceId::random();
    // The log holds the start and A's completion; this owner replays it.
    let (mut p, _seeks) = h.open("diamond", 0, 2);
    let batch = p.admit(vec![fed(
        &topic,
        0,
        0,
        0,
        &input_record(&topic, &start("diamond", id)),
    )]);
    p.apply_batch(&batch).expect("apply");
    // A safety valve takes the partition live before the replay reached its end.
    p.set_live(true);
    p.flush_all().await.expect("flush");
    let mut offset = 1;
    feed(
        &mut p,
        &topic,
        &mut offset,
        &[report("diamond", id, T::TaskCompleted, "A", 1)],
    )
    .await;
    let dispatched: Vec<String> = h
        .read(&h.shared.topics.tasks("diamond"), 0)
        .iter()
        .filter_map(|m| TaskDispatch::decode(m.payload()?).ok())
        .map(|d| d.task_name)
        .collect();
    assert!(
        !dispatched.contains(&"A".to_string()),
        "A reported before it was published: {dispatched:?}"
    );
    assert!(
        dispatched.contains(&"B".to_string()) && dispatched.contains(&"C".to_string()),
        "{dispatched:?}"
    );
    assert!(h.shared.metrics.dispatches_withheld.get() >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inputs_on_the_wrong_partition_are_forwarded_to_theirs() {
    let h = harness(&[DIAMOND], 4, 1, &[]).await;
    let topic = h.shared.topics.events("diamond");
    let (mut p, _seeks) = h.open("diamond", 0, 0);
    let id = id_on(2, 4);
    let mut offset = 0;
    feed(&mut p, &topic, &mut offset, &[start("diamond", id)]).await;
    assert!(
        p.shared
            .store
            .instance("diamond", id)
            .expect("read")
            .is_none(),
        "not folded here"
    );
    let there = h.read(&topic, 2);
    assert_eq!(
        there.len(),
        1,
        "forwarded once, to the partition its key hashes to"
    );
    let headers = header_map(there[0].headers());
    assert_eq!(
        headers.get(h::FORWARDED_FROM).map(String::as_str),
        Some(format!("{topic}/0/0").as_str())
    );
    assert_eq!(h.shared.metrics.forwarded.get(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_inputs_go_to_the_dlq_with_a_reason() {
    let h = harness(&[DIAMOND], 1, 1, &[]).await;
    let topic = h.shared.topics.events("diamond");
    let (mut p, _seeks) = h.open("diamond", 0, 0);
    let id = InstanceId::random();
    let mut offset = 0;
    let start = start("diamond", id);
    let mut empty_key = report("diamond", id, T::TaskStarted, "A", 1);
    empty_key.idempotency_key = " ".into();
    let mut forged = report("diamond", id, T::TaskScheduled, "B", 1);
    forged
        .metadata
        .insert(META_SOURCE_KIND.into(), SOURCE_KIND_DECISION.into());
    let mut reused = report("diamond", id, T::TaskStarted, "A", 1);
    reused.idempotency_key = start.idempotency_key.clone();
    feed(
        &mut p,
        &topic,
        &mut offset,
        &[start, empty_key, forged, reused],
    )
    .await;
    let reasons: Vec<String> = h
        .read(&h.shared.topics.dlq("diamond"), 0)
        .iter()
        .filter_map(|m| header_map(m.headers()).get(h::DLQ_REASON).cloned())
        .collect();
    assert_eq!(reasons.len(), 3, "{reasons:?}");
    assert!(
        reasons[0].contains("empty idempotency key"),
        "{}",
        reasons[0]
    );
    assert!(
        reasons[1].contains("claims to be an orchestrator decision"),
        "{}",
        reasons[1]
    );
    assert!(
        reasons[2].contains("already used by a workflow.created"),
        "{}",
        reasons[2]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finished_counts_every_end_once_and_not_on_replay() {
    let h = harness(&[TIMED], 1, 2, &[]).await;
    let topic = h.shared.topics.events("timed");
    let id = InstanceId::random();
    let start = start("timed", id);
    let (mut p, _seeks) = h.open("timed", 0, 0);
    let mut offset = 0;
    feed(&mut p, &topic, &mut offset, std::slice::from_ref(&start)).await;
    let due = h
        .shared
        .store
        .due_timers(&topic, 0, i64::MAX, 10)
        .expect("timers");
    let fire = due
        .iter()
        .find(|(_, t)| t.task.is_none())
        .map(|(i, t)| t.fire_event("timed", *i))
        .expect("the workflow's execution timer");
    feed(&mut p, &topic, &mut offset, std::slice::from_ref(&fire)).await;
    let count = |state: &str| {
        h.shared
            .metrics
            .finished_total
            .with_label_values(&["timed", state])
            .get()
    };
    assert_eq!(count("timeout"), 1, "a workflow that timed out is counted");
    // Another replica replays the same log (its replay end covers it): counted again nowhere.
    let replica = crate::partition::Shared {
        store: h.stores[1].clone(),
        ..h.shared.clone()
    };
    let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
    let mut q = processor(replica, placement(&topic, 0, "timed", 100, 1), tx);
    let mut offset = 0;
    feed(&mut q, &topic, &mut offset, &[start, fire]).await;
    assert_eq!(count("timeout"), 1, "a replay does not count history again");
}
