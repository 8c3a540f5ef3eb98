//! Publishing an attempt's events. Plain events go out with the idempotent
//! producer and are retried until the broker acks them. An `exactly_once`
//! result goes out in a Kafka transaction that also commits its record's
//! offset for the consumer group (ADR 0013): the result first waits until
//! every earlier record of its partition is done ([`wait_for_head`]), then the
//! transaction commits the contiguous done prefix through its record, under
//! the commit lane so that no plain commit of the partition overtakes it.

use std::time::Duration;

use crate::attempts::AttemptHandle;
use crate::consumer::lock;
use crate::execute::Shared;
use crate::offsets::Ticket;
use crate::publish::TxnOffset;

/// How [`publish`] ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Published {
    /// The broker has the event (and, in a transaction with a ticket, the offset).
    Yes,
    /// Given up: the worker's drain is over.
    GaveUp,
    /// Not published: the record's partition is no longer this worker's, so
    /// the transaction could not commit its offset and was aborted.
    PartitionLost,
}

/// Where an exactly-once result stands after [`wait_for_head`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Head {
    /// Every earlier record of the partition is done: publish now.
    Reached,
    /// A control record cancelled the attempt meanwhile.
    Cancelled,
    /// The partition was revoked, or the worker is stopping: the record runs again.
    Lost,
}

/// Waits until every record before `ticket`'s in its partition is done, so
/// that the result's transaction can commit the ticket's offset.
pub(crate) async fn wait_for_head(
    shared: &Shared,
    ticket: &Ticket,
    attempt: &AttemptHandle,
) -> Head {
    let mut marked = shared.marked.subscribe();
    let mut waiting = false;
    let head = loop {
        match lock(&shared.tracker).earlier_pending(ticket) {
            None => break Head::Lost,
            Some(false) => break Head::Reached,
            Some(true) => {}
        }
        if !waiting {
            waiting = true;
            shared.metrics.results_waiting.inc();
            tracing::info!(
                offset = ticket.offset,
                "exactly_once result waits for earlier records of its partition"
            );
        }
        tokio::select! {
            changed = marked.changed() => {
                if changed.is_err() {
                    break Head::Lost;
                }
            }
            () = attempt.token.cancelled() => {
                break if attempt.cancelled_by_control().is_some() { Head::Cancelled } else { Head::Lost };
            }
        }
    };
    if waiting {
        shared.metrics.results_waiting.dec();
    }
    head
}

/// A `task.started` on its way: handed to the producer, ack not awaited, so
/// the handler runs during the round trip and the result is handed over after
/// it (the idempotent producer keeps a partition's records in order).
pub(crate) struct StartedInFlight(rdkafka::producer::future_producer::DeliveryFuture);

/// Hands `started` to the producer; `None` when the producer refused it at
/// once (its queue is full), and then it was published and acked here.
pub(crate) async fn start(
    shared: &Shared,
    started: &weft_shared::WorkflowEvent,
    traceparent: &str,
) -> Result<Option<StartedInFlight>, Published> {
    match shared.publisher.enqueue_event(started, traceparent) {
        Ok(delivery) => Ok(Some(StartedInFlight(delivery))),
        Err(e) => {
            tracing::debug!(error = %e, "task.started not queued; publishing it and waiting");
            match publish(shared, started, traceparent, false, None).await {
                Published::Yes => Ok(None),
                other => Err(other),
            }
        }
    }
}

/// Waits for the ack of a `task.started` handed over by [`start`]; when the
/// broker did not take it, publishes it again (the result may then be ahead
/// of it, and the decider records the late `task.started` as stale).
pub(crate) async fn confirm_started(
    shared: &Shared,
    in_flight: StartedInFlight,
    started: &weft_shared::WorkflowEvent,
    traceparent: &str,
) -> Published {
    match in_flight.0.await {
        Ok(Ok(_)) => Published::Yes,
        Ok(Err((e, _))) => {
            tracing::warn!(error = %e, "task.started was not delivered; publishing it again");
            publish(shared, started, traceparent, false, None).await
        }
        Err(_) => publish(shared, started, traceparent, false, None).await,
    }
}

/// Publishes `event` until the broker acks it; gives up only when the
/// worker's grace period is over. With `transactional`, the event goes out in
/// a transaction that, given a ticket, also commits the ticket's offset.
pub(crate) async fn publish(
    shared: &Shared,
    event: &weft_shared::WorkflowEvent,
    traceparent: &str,
    transactional: bool,
    ticket: Option<&Ticket>,
) -> Published {
    let mut backoff = Duration::from_millis(250);
    loop {
        let result = if transactional {
            let offset = ticket.map(|t| TxnOffset {
                lane: shared.commit_lane.clone(),
                tracker: shared.tracker.clone(),
                group: shared.group.clone(),
                ticket: t.clone(),
            });
            shared
                .publisher
                .send_event_transactional(event, traceparent, offset)
                .await
        } else {
            shared
                .publisher
                .send_event(event, traceparent)
                .await
                .map(|()| true)
        };
        match result {
            Ok(true) => return Published::Yes,
            Ok(false) => {
                tracing::info!(event_type = %event.event_type, "partition no longer assigned here; transaction aborted");
                return Published::PartitionLost;
            }
            Err(e) => {
                tracing::warn!(error = %e, event_type = %event.event_type, retry_in_ms = backoff.as_millis() as u64, "could not publish event");
            }
        }
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            () = shared.cancel.cancelled() => return Published::GaveUp,
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}
