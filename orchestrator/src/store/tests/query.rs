//! `Store::query_workflows`: filters by state and creation time through the
//! secondary indexes, orders by (created_at, id) and pages with a cursor that
//! neither repeats nor skips an instance, also while instances change state
//! between pages.

use std::collections::BTreeSet;
use std::sync::Arc;

use proptest::prelude::*;
use tempfile::TempDir;
use weft_shared::fsm::InstanceState;
use weft_shared::ids::InstanceId;
use weft_shared::WorkflowState as W;

use super::history::{diamond, Defs, Driver};
use crate::store::{keys, Error, Query, Store};

fn open() -> (TempDir, Store) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open(dir.path()).expect("open store");
    (dir, store)
}

/// Moves an instance on: 0 stays, 1 completes, 2 fails, 3 pauses, 4 resumes.
fn change(d: &mut Driver, defs: &Defs, how: u8) {
    match how % 5 {
        1 => d.complete_all(defs),
        2 => d.op(defs, 4, 0),
        3 => d.op(defs, 5, 0),
        4 => d.op(defs, 6, 0),
        _ => {}
    }
}

fn key(s: &InstanceState) -> (i64, InstanceId) {
    (s.created_at_ms, s.instance_id)
}

/// What a query must return, computed from the drivers.
fn expected(drivers: &[Driver], q: &Query) -> Vec<(i64, InstanceId)> {
    let mut out: Vec<_> = drivers
        .iter()
        .filter_map(|d| d.state.as_ref())
        .filter(|s| s.workflow_type == q.workflow_type)
        .filter(|s| q.states.is_empty() || q.states.contains(&s.state))
        .filter(|s| q.created_after_ms.is_none_or(|t| s.created_at_ms > t))
        .map(key)
        .collect();
    out.sort();
    out
}

fn all_pages(store: &Store, q: &Query) -> Vec<(i64, InstanceId)> {
    let mut q = q.clone();
    let mut out = Vec::new();
    loop {
        let page = store.query_workflows(&q).expect("query");
        assert!(page.items.len() <= q.limit);
        out.extend(page.items.iter().map(key));
        match page.next_cursor {
            Some(c) => q.cursor = Some(c),
            None => return out,
        }
    }
}

#[test]
fn queries_filter_order_and_page() {
    let (_dir, store) = open();
    let defs = diamond(&["orders", "other"]);
    let mut drivers = Vec::new();
    for i in 0..40u8 {
        let ty = if i % 5 == 4 { "other" } else { "orders" };
        let mut d = Driver::new(ty, InstanceId::random(), 1_000 + i64::from(i % 7) * 10);
        d.create(&defs);
        d.persist(&store, &defs);
        change(&mut d, &defs, i % 4);
        d.persist(&store, &defs);
        drivers.push(d);
    }
    let states = [W::Running, W::Completed, W::Failed, W::Paused];
    for s in states {
        assert!(
            drivers.iter().any(|d| d.state.as_ref().unwrap().state == s),
            "{s}"
        );
    }
    let mut queries = vec![
        Query::new("orders"),
        Query::new("other"),
        Query::new("none"),
    ];
    for s in states {
        queries.push(Query {
            states: vec![s],
            ..Query::new("orders")
        });
    }
    queries.push(Query {
        states: vec![W::Failed, W::Running, W::Failed],
        created_after_ms: Some(1_020),
        ..Query::new("orders")
    });
    for q in &queries {
        for limit in [1, 3, 7, 100] {
            let q = Query { limit, ..q.clone() };
            assert_eq!(all_pages(&store, &q), expected(&drivers, &q), "{q:?}");
        }
    }
    // The last page says so; an empty limit returns nothing.
    let page = store
        .query_workflows(&Query {
            limit: 1000,
            ..Query::new("orders")
        })
        .unwrap();
    assert!(page.next_cursor.is_none());
    let page = store
        .query_workflows(&Query {
            limit: 0,
            ..Query::new("orders")
        })
        .unwrap();
    assert!(page.items.is_empty() && page.next_cursor.is_none());
    let bad = Query {
        cursor: Some("page-2".into()),
        ..Query::new("orders")
    };
    assert!(matches!(
        store.query_workflows(&bad),
        Err(Error::BadCursor(_))
    ));
    assert_eq!(store.workflow_types().unwrap(), vec!["orders", "other"]);
    // Every state moved out of is out of its index: one entry per instance.
    let by_state = store
        .db
        .iterator_cf(store.cf(keys::CF_BY_STATE), rocksdb::IteratorMode::Start);
    assert_eq!(by_state.count(), drivers.len());
}

#[test]
fn a_stale_index_entry_is_skipped() {
    let (_dir, store) = open();
    let defs = diamond(&["orders"]);
    let mut d = Driver::new("orders", InstanceId::random(), 5);
    d.create(&defs);
    d.persist(&store, &defs);
    d.op(&defs, 5, 0);
    d.previous = None; // a writer that lost track: the running entry stays behind
    d.persist(&store, &defs);
    let running = Query {
        states: vec![W::Running],
        ..Query::new("orders")
    };
    assert!(store.query_workflows(&running).unwrap().items.is_empty());
    let any = Query {
        states: vec![W::Running, W::Paused],
        ..Query::new("orders")
    };
    assert_eq!(store.query_workflows(&any).unwrap().items.len(), 1);
}

#[test]
fn missing_indexes_are_rebuilt_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let defs = diamond(&["orders"]);
    let mut drivers = Vec::new();
    {
        let mut store = Store::open(dir.path()).unwrap();
        for i in 0..10 {
            let mut d = Driver::new("orders", InstanceId::random(), i);
            d.create(&defs);
            change(&mut d, &defs, (i % 3) as u8);
            d.persist(&store, &defs);
            drivers.push(d);
        }
        let db = Arc::get_mut(&mut store.db).expect("only handle");
        db.drop_cf(keys::CF_BY_STATE).unwrap();
        db.drop_cf(keys::CF_BY_CREATED).unwrap();
    }
    let store = Store::open(dir.path()).unwrap();
    let q = Query {
        states: vec![W::Running, W::Completed],
        ..Query::new("orders")
    };
    assert_eq!(all_pages(&store, &q), expected(&drivers, &q));
    assert_eq!(all_pages(&store, &Query::new("orders")).len(), 10);
}

const QUERY_STATES: [W; 4] = [W::Running, W::Paused, W::Completed, W::Failed];

proptest! {
    // Each case opens a RocksDB store.
    #![proptest_config(ProptestConfig { cases: 80, ..ProptestConfig::default() })]

    /// Paging while instances change state between pages: positions only go
    /// forward, nothing repeats, and every instance that matched and did not
    /// change is returned; without changes the pages are exactly the answer.
    #[test]
    fn pages_never_repeat_or_skip(
        instances in prop::collection::vec((0i64..6, 0u8..5), 1..30),
        mask in 0u8..16,
        after in prop::option::of(0i64..6),
        limit in 1usize..6,
        changes in prop::collection::vec((any::<prop::sample::Index>(), 0u8..5), 0..12),
    ) {
        let (_dir, store) = open();
        let defs = diamond(&["t"]);
        let mut drivers: Vec<Driver> = instances.iter().map(|(slot, how)| {
            let mut d = Driver::new("t", InstanceId::random(), slot * 100);
            d.create(&defs);
            change(&mut d, &defs, *how);
            d.persist(&store, &defs);
            d
        }).collect();
        let states: Vec<W> = (0..4).filter(|b| mask & (1 << b) != 0).map(|b| QUERY_STATES[b]).collect();
        let q = Query { states, created_after_ms: after.map(|a| a * 100), limit, ..Query::new("t") };
        let before = expected(&drivers, &q);
        let mut changed = BTreeSet::new();
        let mut changes = changes.into_iter();
        let mut seen = Vec::new();
        let mut page_q = q.clone();
        loop {
            let page = store.query_workflows(&page_q).unwrap();
            prop_assert!(page.items.len() <= limit);
            for s in &page.items {
                prop_assert!(q.states.is_empty() || q.states.contains(&s.state));
                prop_assert!(seen.last().is_none_or(|l| *l < key(s)), "out of order or repeated");
                seen.push(key(s));
            }
            let Some(c) = page.next_cursor else { break };
            page_q.cursor = Some(c);
            if let Some((i, how)) = changes.next() {
                let d = &mut drivers[i.index(instances.len())];
                let was = d.state.as_ref().map(|s| s.state);
                change(d, &defs, how);
                d.persist(&store, &defs);
                if d.state.as_ref().map(|s| s.state) != was {
                    changed.insert(d.id);
                }
            }
        }
        let seen_set: BTreeSet<_> = seen.iter().copied().collect();
        for k in &before {
            prop_assert!(changed.contains(&k.1) || seen_set.contains(k), "skipped {k:?}");
        }
        if changed.is_empty() {
            prop_assert_eq!(seen, before);
        }
    }
}
