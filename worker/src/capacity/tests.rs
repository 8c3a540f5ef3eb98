//! Capacity accounting and the start order of received records.

use super::*;
use crate::offsets::OffsetTracker;
use rdkafka::message::Timestamp;
use rdkafka::Message;

fn waiting(tracker: &mut OffsetTracker, offset: i64, urgent: bool, cpu: i64) -> Waiting {
    waiting_on("weft.t.tasks", tracker, offset, urgent, cpu)
}

fn waiting_on(
    topic: &str,
    tracker: &mut OffsetTracker,
    offset: i64,
    urgent: bool,
    cpu: i64,
) -> Waiting {
    let mut need = Requirements {
        urgent,
        ..Default::default()
    };
    if cpu > 0 {
        need.resources.insert("cpu".into(), cpu);
    }
    Waiting {
        msg: OwnedMessage::new(
            None,
            None,
            topic.into(),
            Timestamp::NotAvailable,
            0,
            offset,
            None,
        ),
        ticket: tracker.track(topic, 0, offset),
        need,
        since: Instant::now(),
    }
}

fn capacity(slots: i64, cpu: i64) -> Arc<Capacity> {
    Capacity::new(BTreeMap::from([
        (SLOTS.to_owned(), slots),
        ("cpu".to_owned(), cpu),
    ]))
}

#[test]
fn permits_never_take_more_than_the_worker_has() {
    let cap = capacity(8, 4);
    let two = Requirements {
        resources: BTreeMap::from([("cpu".to_owned(), 2)]),
        ..Default::default()
    };
    let a = cap.try_take(&two).expect("2 of 4 cpu");
    let b = cap.try_take(&two).expect("4 of 4 cpu");
    assert!(cap.try_take(&two).is_none(), "a third would need 6 cpu");
    assert_eq!(cap.in_use()["cpu"], 4);
    assert_eq!(cap.free_slots(), 6);
    drop(a);
    assert_eq!(cap.in_use()["cpu"], 2);
    let c = cap.try_take(&two).expect("freed");
    drop((b, c));
    assert_eq!(cap.in_use()["cpu"], 0);
    assert_eq!(cap.free_slots(), 8);
}

#[test]
fn urgent_records_start_first_but_others_keep_a_turn() {
    let mut tracker = OffsetTracker::new();
    let cap = capacity(100, 100);
    let mut ready = Ready::default();
    for i in 0..10 {
        ready.push(waiting(&mut tracker, i, false, 0));
    }
    for i in 10..30 {
        ready.push(waiting(&mut tracker, i, true, 0));
    }
    let mut order = Vec::new();
    let mut permits = Vec::new();
    while let Some((w, p)) = ready.next(&cap) {
        order.push((w.need.urgent, w.msg.offset()));
        permits.push(p);
    }
    assert_eq!(order.len(), 30);
    // Four urgent starts, then one normal, while both wait; arrival order within each.
    let first: Vec<bool> = order.iter().take(10).map(|(u, _)| *u).collect();
    assert_eq!(
        first,
        [true, true, true, true, false, true, true, true, true, false]
    );
    let normals: Vec<i64> = order.iter().filter(|(u, _)| !u).map(|(_, o)| *o).collect();
    assert_eq!(normals, (0..10).collect::<Vec<_>>());
    let urgent_last = order.iter().rposition(|(u, _)| *u).unwrap();
    assert!(
        urgent_last < 25,
        "urgent work finished before the rest: {order:?}"
    );
}

#[test]
fn a_record_that_does_not_fit_is_passed_until_it_has_waited_long() {
    let mut tracker = OffsetTracker::new();
    let cap = capacity(8, 4);
    let held = cap
        .try_take(&Requirements {
            resources: BTreeMap::from([("cpu".to_owned(), 3)]),
            ..Default::default()
        })
        .unwrap();
    let mut ready = Ready::default();
    ready.push(waiting(&mut tracker, 0, false, 2)); // needs 2 cpu, 1 free
    ready.push(waiting(&mut tracker, 1, false, 0)); // needs none
    let (w, _p) = ready.next(&cap).expect("the small one passes");
    assert_eq!(w.msg.offset(), 1);
    assert!(ready.next(&cap).is_none());
    // Once the big one waited long enough, nothing passes it.
    ready.normal.queues[0].1[0].since = Instant::now() - RESERVE_AFTER;
    ready.push(waiting(&mut tracker, 2, false, 0));
    assert!(
        ready.next(&cap).is_none(),
        "reserved for the waiting record"
    );
    drop(held);
    let (w, _p2) = ready.next(&cap).expect("fits now");
    assert_eq!(w.msg.offset(), 0);
}

#[test]
fn the_topics_of_a_class_take_turns() {
    let mut tracker = OffsetTracker::new();
    let cap = capacity(100, 100);
    let mut ready = Ready::default();
    // One type's backlog arrives in one batch, then another type's.
    for i in 0..6 {
        ready.push(waiting_on("weft.a.tasks", &mut tracker, i, false, 0));
    }
    for i in 0..2 {
        ready.push(waiting_on("weft.b.tasks", &mut tracker, i, false, 0));
    }
    assert_eq!(ready.normal_len(), 8);
    let mut order = Vec::new();
    let mut permits = Vec::new();
    while let Some((w, p)) = ready.next(&cap) {
        order.push(format!("{}{}", &w.msg.topic()[5..6], w.msg.offset()));
        permits.push(p);
    }
    assert_eq!(order, ["a0", "b0", "a1", "b1", "a2", "a3", "a4", "a5"]);
    assert_eq!(ready.len(), 0);
}
