//! Running one handler under supervision: on its own task (so a panic fails
//! the attempt, not the worker), until it returns, its deadline passes (the
//! dispatch's `deadline_ms` or `execution_timeout_ms`, whichever is first:
//! retryable `execution_timeout`), a control record cancels it (nothing is
//! published), or the worker shuts down (the attempt's grace period, then the
//! cancellation signal, then the record is left for another worker), or its
//! partition is revoked (the attempt's grace period, then the record is the
//! partition's new owner's; an output returned within it still counts). A
//! handler asked to stop has a grace period to return before it is aborted.

use std::time::{Duration, UNIX_EPOCH};

use tokio::task::{JoinError, JoinHandle};
use tokio::time::Instant;
use weft_shared::data::DataMap;
use weft_shared::event::now_ms;
use weft_shared::TaskDispatch;

use crate::attempts::AttemptHandle;
use crate::checkpoint::Checkpointer;
use crate::context::{Liveness, TaskContext};
use crate::error::TaskError;
use crate::execute::Shared;
use crate::usage::Reports;

/// Grace period of a handler told to stop at its deadline, when the dispatch sets none.
pub const DEADLINE_GRACE: Duration = Duration::from_secs(1);
/// How long a handler cancelled at the end of a shutdown grace period has to return.
pub const SHUTDOWN_ABORT_AFTER: Duration = Duration::from_secs(2);

/// How a supervised attempt ended.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// The handler returned (an output, an error, a panic or a timeout): publish it.
    Finished(Result<DataMap, TaskError>),
    /// A control record cancelled it: publish nothing.
    Cancelled,
    /// The worker shut down before it finished: leave the record for another worker.
    Abandoned,
    /// Its partition was revoked before it finished: the record is the new owner's.
    Revoked,
}

/// The epoch-ms deadline of an attempt started at `started_ms`, if it has one.
pub fn deadline_ms(d: &TaskDispatch, started_ms: i64) -> Option<i64> {
    let by_timeout = (d.timeout_config.execution_timeout_ms > 0).then(|| {
        started_ms.saturating_add(
            i64::try_from(d.timeout_config.execution_timeout_ms).unwrap_or(i64::MAX),
        )
    });
    let by_dispatch = (d.deadline_ms > 0).then_some(d.deadline_ms);
    match (by_timeout, by_dispatch) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The grace period of `d` on shutdown: its own, else the worker's.
pub fn shutdown_grace(d: &TaskDispatch, default: Duration) -> Duration {
    match d.timeout_config.grace_period_ms {
        0 => default,
        ms => Duration::from_millis(ms),
    }
}

/// Runs `d`'s handler for `attempt` and decides how the attempt ended.
pub(crate) async fn supervise(
    shared: &Shared,
    d: &TaskDispatch,
    attempt: &AttemptHandle,
    liveness: Liveness,
    reports: Reports,
    checkpointer: Checkpointer,
) -> Outcome {
    let handler = match shared.registry.resolve(&d.handler) {
        Ok(h) => h,
        Err(e) => return Outcome::Finished(Err(e)),
    };
    let token = attempt.token.clone();
    let deadline_at = deadline_ms(d, now_ms());
    let mut ctx =
        TaskContext::from_dispatch(d, &shared.node_id, token.clone()).with_liveness(liveness);
    ctx.reports = reports;
    ctx.checkpointer = checkpointer;
    // the handler sees the effective deadline (execution timeout included)
    ctx.deadline = deadline_at
        .and_then(|ms| u64::try_from(ms).ok())
        .map(|ms| UNIX_EPOCH + Duration::from_millis(ms));
    let mut join = tokio::spawn(handler.call(ctx));
    let deadline = deadline_at.map(|ms| {
        let left = ms.saturating_sub(now_ms()).max(0).unsigned_abs();
        Instant::now() + Duration::from_millis(left)
    });
    let grace = shutdown_grace(d, shared.default_grace);
    let shutdown = async {
        shared.stop.cancelled().await;
        tokio::time::sleep(grace).await;
    };
    tokio::select! {
        joined = &mut join => match (attempt.cancelled_by_control(), attempt.revoked()) {
            // it returned as it saw the cancel: whatever it returned is not a result
            (Some(_), _) => Outcome::Cancelled,
            (None, Some(_)) => revoked(Some(flatten(joined, d))),
            (None, None) => Outcome::Finished(flatten(joined, d)),
        },
        () = token.cancelled() => match (attempt.cancelled_by_control(), attempt.revoked()) {
            (Some(grace), _) => {
                tracing::info!(grace_ms = grace.as_millis() as u64, "attempt cancelled; waiting for the handler to stop");
                stop(&mut join, grace).await;
                Outcome::Cancelled
            }
            (None, Some(grace)) => {
                tracing::info!(grace_ms = grace.as_millis() as u64, "partition revoked; waiting for the handler to stop");
                revoked(stop(&mut join, grace).await)
            }
            // the hard stop at the end of the drain
            (None, None) => abandoned(stop(&mut join, SHUTDOWN_ABORT_AFTER).await),
        },
        () = sleep_until(deadline) => {
            tracing::info!(handler = %d.handler, "deadline passed; cancelling the handler");
            token.cancel();
            let grace = match d.timeout_config.grace_period_ms {
                0 => DEADLINE_GRACE,
                ms => Duration::from_millis(ms),
            };
            stop(&mut join, grace).await;
            Outcome::Finished(Err(TaskError::retryable(
                "execution_timeout",
                format!(
                    "handler '{}' did not finish by its deadline (execution timeout {} ms, deadline {} ms)",
                    d.handler, d.timeout_config.execution_timeout_ms, d.deadline_ms
                ),
            )))
        }
        () = shutdown => {
            tracing::info!(grace_ms = grace.as_millis() as u64, "shutdown grace period over; cancelling the handler");
            token.cancel();
            abandoned(stop(&mut join, SHUTDOWN_ABORT_AFTER).await)
        }
    }
}

/// A handler that returned an output after the shutdown signal still
/// completed; anything else leaves the record for another worker.
fn abandoned(returned: Option<Result<DataMap, TaskError>>) -> Outcome {
    match returned {
        Some(Ok(output)) => Outcome::Finished(Ok(output)),
        _ => Outcome::Abandoned,
    }
}

/// An output returned after the revocation still counts (the revocation
/// waits for it to be published and committed); anything else leaves the
/// record to the partition's new owner.
fn revoked(returned: Option<Result<DataMap, TaskError>>) -> Outcome {
    match returned {
        Some(Ok(output)) => Outcome::Finished(Ok(output)),
        _ => Outcome::Revoked,
    }
}

/// Waits up to `grace` for a handler told to stop, then aborts it; what it
/// returned, if it did.
async fn stop(
    join: &mut JoinHandle<Result<DataMap, TaskError>>,
    grace: Duration,
) -> Option<Result<DataMap, TaskError>> {
    match tokio::time::timeout(grace, &mut *join).await {
        Ok(Ok(result)) => Some(result),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "handler panicked while stopping");
            None
        }
        Err(_) => {
            tracing::warn!(
                grace_ms = grace.as_millis() as u64,
                "handler did not stop within its grace period; aborting it"
            );
            join.abort();
            None
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn flatten(
    joined: Result<Result<DataMap, TaskError>, JoinError>,
    d: &TaskDispatch,
) -> Result<DataMap, TaskError> {
    joined.unwrap_or_else(|e| {
        tracing::error!(error = %e, "handler panicked");
        Err(TaskError::retryable(
            "handler_panic",
            format!("handler '{}' panicked", d.handler),
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::tests::dispatch;

    #[test]
    fn the_earlier_of_deadline_and_execution_timeout() {
        let mut d = dispatch("noop");
        assert_eq!(deadline_ms(&d, 1_000), None);
        d.timeout_config.execution_timeout_ms = 500;
        assert_eq!(deadline_ms(&d, 1_000), Some(1_500));
        d.deadline_ms = 1_200;
        assert_eq!(deadline_ms(&d, 1_000), Some(1_200));
        d.timeout_config.execution_timeout_ms = 0;
        assert_eq!(deadline_ms(&d, 1_000), Some(1_200));
    }

    #[test]
    fn grace_is_the_dispatch_s_else_the_worker_s() {
        let mut d = dispatch("noop");
        let default = Duration::from_secs(30);
        assert_eq!(shutdown_grace(&d, default), default);
        d.timeout_config.grace_period_ms = 250;
        assert_eq!(shutdown_grace(&d, default), Duration::from_millis(250));
    }
}
