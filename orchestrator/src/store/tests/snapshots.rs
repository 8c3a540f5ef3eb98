//! Snapshots and `Store::reconstruct`: the snapshot conversion is lossless
//! (through Avro), snapshots are taken when `last_seq` crosses a multiple of
//! the interval, and reconstructing at any sequence number equals folding the
//! history from scratch up to it.

use proptest::prelude::*;
use weft_shared::avro::AvroRecord;
use weft_shared::fsm::DefinitionLookup;
use weft_shared::ids::InstanceId;
use weft_shared::WorkflowSnapshot;

use super::history::{diamond, fold, Driver};
use crate::store::{from_snapshot, to_snapshot, Store, SNAPSHOTS_KEPT, SNAPSHOT_LADDER};

fn ops() -> impl Strategy<Value = Vec<(usize, usize, usize)>> {
    // (input, task, inputs before the next batch is written)
    prop::collection::vec((0usize..8, 0usize..4, 0usize..4), 0..60)
}

proptest! {
    // Pure conversions: cheap, so many cases.
    #![proptest_config(ProptestConfig { cases: 160, ..ProptestConfig::default() })]

    #[test]
    fn snapshots_convert_losslessly(ops in ops()) {
        let defs = diamond(&["t"]);
        let mut d = Driver::new("t", InstanceId::random(), 1_000);
        d.create(&defs);
        for (op, task, _) in ops {
            d.op(&defs, op, task);
        }
        for n in 1..=d.history.len() {
            let s = fold(&d.history[..n]).unwrap();
            let def = defs.get("t", s.definition_version);
            for definition in [None, def] {
                let snap = to_snapshot(&s, definition);
                let back = WorkflowSnapshot::decode(&snap.encode()).unwrap();
                prop_assert_eq!(&back, &snap);
                prop_assert_eq!(from_snapshot(&back).unwrap(), s.clone());
            }
        }
    }
}

proptest! {
    // Each case opens a RocksDB store.
    #![proptest_config(ProptestConfig { cases: 80, ..ProptestConfig::default() })]

    #[test]
    fn reconstruct_equals_the_fold_from_scratch(ops in ops(), every in 1u64..8) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap().with_snapshot_every(every);
        let defs = diamond(&["t"]);
        let mut d = Driver::new("t", InstanceId::random(), 1_000);
        d.create(&defs);
        d.persist(&store, &defs);
        for (op, task, wait) in ops {
            d.op(&defs, op, task);
            if wait == 0 {
                d.persist(&store, &defs);
            }
        }
        d.persist(&store, &defs);
        let len = d.history.len();
        let latest = store.load_snapshot("t", d.id).unwrap();
        if len as u64 >= every {
            let seq = latest.as_ref().map(|s| s.sequence_number).unwrap_or(0);
            prop_assert!(seq >= every && seq <= len as u64, "latest snapshot at {seq} of {len}");
        }
        for up_to in 0..=len + 2 {
            let want = fold(&d.history[..up_to.min(len)]);
            prop_assert_eq!(store.reconstruct("t", d.id, up_to as u64).unwrap(), want, "up to {}", up_to);
        }
        prop_assert_eq!(store.reconstruct("t", InstanceId::random(), 5).unwrap(), None);
    }
}

#[test]
fn old_snapshots_are_pruned_and_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap().with_snapshot_every(2);
    let defs = diamond(&["t"]);
    let mut d = Driver::new("t", InstanceId::random(), 1_000);
    d.create(&defs);
    d.persist(&store, &defs);
    for i in 0..30 {
        d.op(&defs, 5 + i % 2, 0); // pause, resume, ...
        d.persist(&store, &defs);
    }
    // Newest three, and of the older ones only the first of each ladder step (20 events).
    let seqs = store.snapshot_seqs("t", d.id).unwrap();
    let (older, newest) = seqs.split_at(seqs.len() - SNAPSHOTS_KEPT);
    assert!(newest.windows(2).all(|w| w[1] - w[0] <= 2), "{seqs:?}");
    let steps: Vec<u64> = older.iter().map(|s| s / (2 * SNAPSHOT_LADDER)).collect();
    assert!(
        !older.is_empty() && steps.windows(2).all(|w| w[0] < w[1]),
        "{seqs:?}"
    );
    let last = d.state.as_ref().unwrap().last_seq;
    let newest = store
        .load_snapshot("t", d.id)
        .unwrap()
        .unwrap()
        .sequence_number;
    assert!(newest <= last && last - newest < 2, "{newest} of {last}");
    assert!(store
        .snapshot_at_or_below("t", d.id, seqs[0] - 1)
        .unwrap()
        .is_none());
    // Below the oldest kept snapshot the fold starts from scratch.
    assert_eq!(
        store.reconstruct("t", d.id, 4).unwrap(),
        fold(&d.history[..4])
    );
    assert!(store.delete_snapshot("t", d.id).unwrap());
    assert!(!store.delete_snapshot("t", d.id).unwrap());
    assert!(store.load_snapshot("t", d.id).unwrap().is_none());
    let n = d.history.len() - 1;
    assert_eq!(
        store.reconstruct("t", d.id, n as u64).unwrap(),
        fold(&d.history[..n])
    );
}

#[test]
fn a_snapshot_saved_from_outside_is_used() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap().with_snapshot_every(0);
    let defs = diamond(&["t"]);
    let mut d = Driver::new("t", InstanceId::random(), 1_000);
    d.create(&defs);
    d.complete_all(&defs);
    d.persist(&store, &defs);
    assert!(
        store.load_snapshot("t", d.id).unwrap().is_none(),
        "snapshots disabled"
    );
    let at = 6;
    let s = fold(&d.history[..at]).unwrap();
    store.save_snapshot(&to_snapshot(&s, None)).unwrap();
    assert_eq!(
        store
            .load_snapshot("t", d.id)
            .unwrap()
            .unwrap()
            .sequence_number,
        at as u64
    );
    for up_to in at..d.history.len() {
        assert_eq!(
            store.reconstruct("t", d.id, up_to as u64).unwrap(),
            fold(&d.history[..up_to])
        );
    }
    // A snapshot that does not convert to a state is refused.
    let mut bad = to_snapshot(&s, None);
    bad.checkpoint_data
        .insert("weft.state".into(), "[1, 2]".into());
    assert!(store.save_snapshot(&bad).is_err());
}

#[test]
fn the_context_carries_the_isolation_level_and_only_the_sealed_secrets() {
    use weft_shared::event::WorkflowEventType as T;
    use weft_shared::model::IsolationLevel;
    use weft_shared::secrets::SECRETS_KEY;
    use weft_shared::{DataMap, WorkflowData};

    let mut defs = diamond(&["t"]);
    defs.0[0]
        .metadata
        .insert("isolation_level".into(), "serializable".into());
    let sealed = "wsec1.k1.d3JhcHBlZC1rZXktYnl0ZXMtZm9yLXRoZS10ZXN0.Y2lwaGVydGV4dC1ieXRlcw";
    let mut input = DataMap::new();
    input.insert("n".into(), WorkflowData::Int(7));
    input.insert(SECRETS_KEY.into(), WorkflowData::Str(sealed.into()));
    let mut d = Driver::new("t", InstanceId::random(), 1_000);
    d.input(&defs, T::WorkflowCreated, None, input);
    let s = fold(&d.history).unwrap();

    let snap = to_snapshot(&s, defs.get("t", s.definition_version));
    assert_eq!(snap.context.isolation_level, IsolationLevel::Serializable);
    assert_eq!(
        snap.context.secrets,
        [(SECRETS_KEY.to_owned(), sealed.to_owned())].into()
    );
    let back = WorkflowSnapshot::decode(&snap.encode()).unwrap();
    assert_eq!(from_snapshot(&back).unwrap(), s);

    // Without a definition the level is the default; without secrets, none.
    let plain = to_snapshot(&fold(&d.history).unwrap(), None);
    assert_eq!(plain.context.isolation_level, IsolationLevel::default());
    let mut d = Driver::new("t", InstanceId::random(), 1_000);
    d.create(&defs);
    let none = to_snapshot(&fold(&d.history).unwrap(), defs.get("t", 1));
    assert!(none.context.secrets.is_empty());
}
