//! Tests of checkpoints in the decider: recorded for the running attempt,
//! handed to the next attempt's dispatch, stale for older attempts and ended
//! tasks, rejected for unknown tasks and over the size limit, and a fold of
//! the history gives the same checkpoint as the decided state.

use crate::checkpoint::{MAX_CHECKPOINT_BYTES, UPSTREAM_KEY};
use crate::data::{DataMap, WorkflowData};
use crate::event::WorkflowEventType as T;
use crate::fsm::tests::{diamond, fold, Driver};
use crate::fsm::{Outcome, Rejection};

fn at(step: i64) -> DataMap {
    DataMap::from([("next_step".to_owned(), WorkflowData::Int(step))])
}

#[test]
fn the_retry_of_a_checkpointed_attempt_starts_from_its_last_checkpoint() {
    let mut d = Driver::new(diamond(3));
    d.input(T::WorkflowCreated, None, DataMap::new());
    assert!(!d.dispatches[0].upstream.contains_key(UPSTREAM_KEY));
    // a checkpoint while scheduled (task.started still travelling) counts
    assert_eq!(
        d.input(T::TaskCheckpointed, Some(("a", 1)), at(1)),
        Outcome::Applied
    );
    d.input(T::TaskStarted, Some(("a", 1)), DataMap::new());
    assert_eq!(
        d.input(T::TaskCheckpointed, Some(("a", 1)), at(2)),
        Outcome::Applied
    );
    assert_eq!(d.wf().task("a").checkpoint, Some(at(2)));
    assert_eq!(d.wf().task("a").checkpoints, 2);
    d.fail_task("a", 1);
    d.fire_due();
    let retry = d.dispatches.last().unwrap();
    assert_eq!(retry.attempt, 2);
    assert_eq!(retry.upstream[UPSTREAM_KEY], at(2));
    // attempt 1 is over: its late checkpoint is stale, not recorded
    let n = d.history.len();
    assert!(matches!(
        d.input(T::TaskCheckpointed, Some(("a", 1)), at(9)),
        Outcome::Stale { .. }
    ));
    assert_eq!(d.history.len(), n);
    assert_eq!(d.wf().task("a").checkpoint, Some(at(2)));
    d.run_task("a", 2);
    // an ended task takes none
    assert!(matches!(
        d.input(T::TaskCheckpointed, Some(("a", 2)), at(5)),
        Outcome::Stale { .. }
    ));
    assert_eq!(
        fold(&d.history),
        *d.wf(),
        "the fold equals the decided state"
    );
}

#[test]
fn unknown_tasks_and_oversized_checkpoints_are_rejected() {
    let mut d = Driver::new(diamond(3));
    d.input(T::WorkflowCreated, None, DataMap::new());
    assert!(matches!(
        d.input(T::TaskCheckpointed, Some(("nope", 1)), at(1)),
        Outcome::Rejected(Rejection::UnknownTask(_))
    ));
    let big = DataMap::from([(
        "blob".to_owned(),
        WorkflowData::Str("x".repeat(MAX_CHECKPOINT_BYTES)),
    )]);
    match d.input(T::TaskCheckpointed, Some(("a", 1)), big) {
        Outcome::Rejected(Rejection::IllegalTransition { what }) => {
            assert!(what.contains("over the limit"), "{what}")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(d.wf().task("a").checkpoint, None);
    assert_eq!(
        d.history.last().unwrap().event_type,
        T::ErrorOccurred,
        "a rejection is in the history"
    );
}

#[test]
fn checkpoints_are_events_of_their_task_span() {
    let mut d = Driver::new(diamond(3));
    d.input(T::WorkflowCreated, None, DataMap::new());
    d.input(T::TaskStarted, Some(("a", 1)), DataMap::new());
    d.input_with(
        T::TaskCheckpointed,
        Some(("a", 1)),
        at(1),
        &[(crate::checkpoint::META_SEQ, "1")],
    );
    d.input(T::TaskCompleted, Some(("a", 1)), DataMap::new());
    let trace = crate::observe::trace::build(&d.history, Some(&diamond(3).0[0])).unwrap();
    let span = trace.spans.iter().find(|s| s.name == "task a").unwrap();
    let cp: Vec<_> = span
        .events
        .iter()
        .filter(|e| e.name == "checkpoint")
        .collect();
    assert_eq!(cp.len(), 1, "{span:?}");
    assert_eq!(cp[0].attributes["checkpoint.seq"], "1");
    assert_eq!(span.attributes["task.checkpoints"], "1");
}
