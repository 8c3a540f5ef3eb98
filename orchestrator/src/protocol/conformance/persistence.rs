//! The [`WorkflowPersistence`] conformance suite: histories made by the real
//! decider are stored event by event, then every method is checked against
//! what the histories imply (folds from scratch, filters and sorts).

use weft_shared::ids::InstanceId;
use weft_shared::{WorkflowEvent, WorkflowSnapshot, WorkflowState as W};

use super::history::{diamond, fold, Defs, Driver};
use crate::protocol::{Error, WorkflowPersistence};
use crate::store::to_snapshot;

const TY: &str = "conformance";

/// `(from, to, limit, expected)` of a `get_workflow_events` check.
type EventsCase<'a> = (u64, Option<u64>, Option<usize>, &'a [WorkflowEvent]);
/// `(type, states, created after, limit, expected instances)` of a query check.
type QueryCase<'a> = (Option<&'a str>, Vec<W>, Option<i64>, usize, Vec<&'a Driver>);
const OTHER: &str = "conformance_other";

fn snapshot_of(events: &[WorkflowEvent]) -> Option<WorkflowSnapshot> {
    fold(events).map(|s| to_snapshot(&s, None))
}

fn final_snapshot(d: &Driver) -> WorkflowSnapshot {
    snapshot_of(&d.history).expect("a history")
}

/// The four instances of the suite: A completes, B pauses and resumes until
/// it has `min_events` events, C fails, D (another type) only started.
fn instances(defs: &Defs, min_events: usize) -> [Driver; 4] {
    let mut a = Driver::new(TY, InstanceId::random(), 1_000);
    a.create(defs);
    a.complete_all(defs);
    let mut b = Driver::new(TY, InstanceId::random(), 2_000);
    b.create(defs);
    while b.history.len() < min_events {
        b.op(defs, 5, 0);
        b.op(defs, 6, 0);
    }
    b.op(defs, 5, 0);
    let mut c = Driver::new(TY, InstanceId::random(), 3_000);
    c.create(defs);
    c.op(defs, 4, 0);
    let mut d = Driver::new(OTHER, InstanceId::random(), 1_500);
    d.create(defs);
    [a, b, c, d]
}

/// Runs the suite on an empty `p` that takes a snapshot every `snapshot_every` events.
pub async fn persistence_suite<P: WorkflowPersistence + ?Sized>(p: &P, snapshot_every: u64) {
    let defs = diamond(&[TY, OTHER]);
    let [a, b, c, d] = instances(&defs, (2 * snapshot_every as usize + 3).max(12));
    let all = [&a, &b, &c, &d];
    for i in all {
        for e in &i.history {
            assert!(
                p.store_workflow_event(e).await.expect("store"),
                "event {} stored",
                e.sequence_number
            );
        }
    }
    stores_once_in_order(p, &b).await;
    reads_events(p, &b).await;
    for i in all {
        reconstructs(p, i).await;
    }
    snapshots(p, &b, &d, snapshot_every).await;
    queries(p, [&a, &b, &c, &d]).await;
}

async fn stores_once_in_order<P: WorkflowPersistence + ?Sized>(p: &P, b: &Driver) {
    let again = &b.history[1];
    assert!(
        !p.store_workflow_event(again).await.expect("duplicate"),
        "a duplicate is not stored twice"
    );
    let mut other = again.clone();
    other.event_id = weft_shared::ids::EventId::random();
    assert!(
        matches!(
            p.store_workflow_event(&other).await,
            Err(Error::Conflict { seq: 2, .. })
        ),
        "other content at a stored sequence number is a conflict"
    );
    let mut key_again = b.history.last().unwrap().clone();
    key_again.sequence_number += 1;
    assert!(
        !p.store_workflow_event(&key_again)
            .await
            .expect("applied key"),
        "an applied key is dropped"
    );
    let mut gap = b.history.last().unwrap().clone();
    gap.sequence_number += 5;
    gap.idempotency_key = "gap".into();
    assert!(
        p.store_workflow_event(&gap).await.is_err(),
        "a gap is refused"
    );
    let mut unsequenced = gap.clone();
    unsequenced.sequence_number = 0;
    assert!(matches!(
        p.store_workflow_event(&unsequenced).await,
        Err(Error::InvalidEvent(_))
    ));
}

async fn reads_events<P: WorkflowPersistence + ?Sized>(p: &P, b: &Driver) {
    let h = &b.history;
    let n = h.len() as u64;
    let cases: [EventsCase<'_>; 6] = [
        (1, None, None, h),
        (0, Some(2), None, &h[..2]),
        (2, Some(5), None, &h[1..5]),
        (3, None, Some(4), &h[2..6]),
        (n, Some(n + 10), Some(10), &h[h.len() - 1..]),
        (n + 1, None, None, &[]),
    ];
    for (from, to, limit, want) in cases {
        let got = p
            .get_workflow_events(TY, b.id, from, to, limit)
            .await
            .expect("events");
        assert_eq!(got, want, "events from {from} to {to:?} limit {limit:?}");
    }
    let none = p
        .get_workflow_events(TY, InstanceId::random(), 1, None, None)
        .await;
    assert!(none.expect("events of an unknown instance").is_empty());
}

async fn reconstructs<P: WorkflowPersistence + ?Sized>(p: &P, i: &Driver) {
    let n = i.history.len();
    for up_to in 0..=n + 1 {
        let got = p
            .reconstruct_workflow_state(&i.ty, i.id, Some(up_to as u64))
            .await
            .expect("reconstruct");
        assert_eq!(
            got,
            snapshot_of(&i.history[..up_to.min(n)]),
            "{} up to {up_to}",
            i.id
        );
    }
    let latest = p
        .reconstruct_workflow_state(&i.ty, i.id, None)
        .await
        .expect("reconstruct");
    assert_eq!(latest, Some(final_snapshot(i)));
    let unknown = p
        .reconstruct_workflow_state(&i.ty, InstanceId::random(), None)
        .await;
    assert_eq!(unknown.expect("reconstruct an unknown instance"), None);
}

async fn snapshots<P: WorkflowPersistence + ?Sized>(p: &P, b: &Driver, d: &Driver, every: u64) {
    let n = b.history.len() as u64;
    let auto = p.load_workflow_snapshot(TY, b.id).await.expect("load");
    let want = (every > 0).then(|| (n / every) * every);
    assert_eq!(
        auto.as_ref().map(|s| s.sequence_number),
        want,
        "snapshot every {every} events"
    );
    if let (Some(auto), Some(seq)) = (&auto, want) {
        assert_eq!(Some(auto), snapshot_of(&b.history[..seq as usize]).as_ref());
    }

    // A saved snapshot is the latest one and reconstruction starts from it.
    let at = 2;
    let saved = snapshot_of(&d.history[..at]).unwrap();
    assert!(p.save_workflow_snapshot(&saved).await.expect("save"));
    let loaded = p.load_workflow_snapshot(OTHER, d.id).await.expect("load");
    let auto_d = (every > 0 && d.history.len() as u64 >= every).then_some(());
    if auto_d.is_none() {
        assert_eq!(loaded.as_ref(), Some(&saved));
    }
    reconstructs(p, d).await;
    assert!(p
        .delete_workflow_snapshot(OTHER, d.id)
        .await
        .expect("delete"));
    assert_eq!(
        p.load_workflow_snapshot(OTHER, d.id).await.expect("load"),
        None
    );
    assert!(!p
        .delete_workflow_snapshot(OTHER, d.id)
        .await
        .expect("delete again"));
    reconstructs(p, d).await;

    let mut bad = saved.clone();
    bad.checkpoint_data
        .insert("weft.state".into(), "[1]".into());
    assert!(
        p.save_workflow_snapshot(&bad).await.is_err(),
        "an invalid snapshot is refused"
    );
}

async fn queries<P: WorkflowPersistence + ?Sized>(p: &P, [a, b, c, d]: [&Driver; 4]) {
    let snap = |i: &Driver| final_snapshot(i);
    let b_state = snap(b).state;
    let cases: Vec<QueryCase<'_>> = vec![
        (Some(TY), vec![], None, 100, vec![a, b, c]),
        (
            Some(TY),
            vec![W::Completed, W::Failed],
            None,
            100,
            vec![a, c],
        ),
        (Some(TY), vec![], Some(1_000), 100, vec![b, c]),
        (Some(TY), vec![b_state], None, 100, vec![b]),
        (Some(TY), vec![W::Cancelled], None, 100, vec![]),
        (Some(TY), vec![], None, 2, vec![a, b]),
        (None, vec![], None, 2, vec![a, d]),
        (None, vec![W::Running, W::Completed], None, 100, vec![a, d]),
        (Some("no_such_type"), vec![], None, 100, vec![]),
    ];
    for (ty, states, after, limit, want) in cases {
        let got = p
            .query_workflows(ty, &states, after, limit)
            .await
            .expect("query");
        let want: Vec<WorkflowSnapshot> = want.into_iter().map(snap).collect();
        assert_eq!(
            got, want,
            "query {ty:?} {states:?} after {after:?} limit {limit}"
        );
    }
}
