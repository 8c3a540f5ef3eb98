//! Per-partition analytics in the store: written in a batch, read back per
//! partition and per topic (never another topic's), part of the digest.

use weft_shared::observe::analytics::TypeStats;

use crate::store::Store;

fn stats(started: u64) -> TypeStats {
    let mut s = TypeStats {
        started,
        ..TypeStats::default()
    };
    s.duration_ms.record(started * 10);
    s.finished.insert("completed".into(), started);
    s
}

#[test]
fn analytics_are_stored_per_partition_and_listed_per_topic() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(
        store.analytics("weft.a.events", 0).unwrap(),
        TypeStats::default()
    );
    let before = store.digest().unwrap();

    let mut wb = store.batch();
    wb.put_analytics("weft.a.events", 0, &stats(3));
    wb.put_analytics("weft.a.events", 5, &stats(7));
    // A type whose topic name starts with the other's.
    wb.put_analytics("weft.a.events2", 1, &stats(100));
    wb.set_offset("weft.a.events", 0, 42);
    wb.commit().unwrap();

    assert_eq!(store.analytics("weft.a.events", 5).unwrap(), stats(7));
    let listed = store.analytics_of_topic("weft.a.events").unwrap();
    assert_eq!(listed, vec![(0, stats(3)), (5, stats(7))]);
    assert_eq!(store.analytics_of_topic("weft.b.events").unwrap(), vec![]);
    let after = store.digest().unwrap();
    assert_eq!(
        after.0,
        before.0 + 3,
        "analytics count in the digest, offsets do not"
    );
    assert_ne!(after.1, before.1);
}
