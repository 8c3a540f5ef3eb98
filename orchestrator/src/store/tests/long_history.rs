//! No history cap: one instance with 100,000 events, decided by the real
//! decider (pause and resume, over and over) and written in batches of 500 as a
//! partition does. Its state, a page of its events anywhere in the history and
//! its state at an old sequence number read back exactly; only correctness is
//! asserted, the timings are printed (run with `--nocapture`; speed belongs to
//! `make bench`, not to timed tests on a shared machine).

use std::time::{Duration, Instant};

use weft_shared::ids::InstanceId;
use weft_shared::WorkflowState;

use super::history::{diamond, fold, Driver};
use crate::store::{Query, Store};

const EVENTS: usize = 100_000;
const PAGE: usize = 100;
const ROUNDS: u32 = 20;

/// Runs `f` `ROUNDS` times; the mean time of one run.
fn mean<T>(mut f: impl FnMut() -> T) -> (Duration, T) {
    let started = Instant::now();
    let mut out = f();
    for _ in 1..ROUNDS {
        out = f();
    }
    (started.elapsed() / ROUNDS, out)
}

#[test]
fn an_instance_with_100k_events_reads_back_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let defs = diamond(&["long"]);
    let mut d = Driver::new("long", InstanceId::random(), 1_000);
    let started = Instant::now();
    d.create(&defs);
    while d.history.len() < EVENTS {
        d.op(&defs, 5, 0); // workflow.paused
        d.op(&defs, 6, 0); // workflow.resumed
        if d.history.len() - d.stored >= 500 {
            d.persist(&store, &defs);
        }
    }
    d.persist(&store, &defs);
    let written = started.elapsed();
    let n = d.history.len();
    let id = d.id;
    assert!(n >= EVENTS);

    let (state_t, state) = mean(|| store.instance("long", id).unwrap());
    assert_eq!(state.as_ref(), d.state.as_ref());
    assert_eq!(state.unwrap().last_seq, n as u64);

    let mut pages = Vec::new();
    for from in [1, n / 2, n - PAGE + 1] {
        let (t, events) = mean(|| store.events("long", id, from as u64, None, PAGE).unwrap());
        assert_eq!(
            events,
            d.history[from - 1..from - 1 + PAGE],
            "page from {from}"
        );
        pages.push(format!("from {from}: {t:?}"));
    }
    let (to_t, events) = mean(|| {
        store
            .events("long", id, 70_001, Some(70_050), 1_000)
            .unwrap()
    });
    assert_eq!(events, d.history[70_000..70_050]);
    pages.push(format!("70001..=70050: {to_t:?}"));

    // An old sequence number: a ladder snapshot below it and a short tail.
    let at = 77_777;
    let (rec_t, rec) = mean(|| store.reconstruct("long", id, at).unwrap());
    let folded = Instant::now();
    let want = fold(&d.history[..at as usize]);
    let fold_t = folded.elapsed();
    assert_eq!(rec, want);

    let q = Query {
        states: vec![WorkflowState::Running],
        ..Query::new("long")
    };
    let (query_t, page) = mean(|| store.query_workflows(&q).unwrap());
    assert_eq!(page.items.len(), 1);

    eprintln!(
        "100k-event instance: {n} events decided and written in {written:?}; \
         get state {state_t:?}; page of {PAGE} events {}; \
         state at seq {at}: {rec_t:?} (fold from scratch {fold_t:?}); query {query_t:?} \
         (means of {ROUNDS} runs, debug build of weft crates)",
        pages.join(", ")
    );
}
