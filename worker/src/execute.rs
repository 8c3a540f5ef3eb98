//! Running one task record: decode it (or send it to the DLQ), wait for
//! `not_before_ms`, publish `task.started`, run the handler under the
//! execution timeout, publish the result, and mark the offset done when the
//! task's execution semantics say so.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::message::{Header, Headers, Message, OwnedHeaders, OwnedMessage};
use tokio::sync::{Notify, OwnedSemaphorePermit};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use weft_shared::avro::AvroRecord;
use weft_shared::data::DataMap;
use weft_shared::event::now_ms;
use weft_shared::model::ExecutionSemantics;
use weft_shared::topics::{headers, TopicKind};
use weft_shared::TaskDispatch;

use crate::consumer::lock;
use crate::context::TaskContext;
use crate::error::TaskError;
use crate::events::{attempt_event, started_data, AttemptEvent};
use crate::handler::Registry;
use crate::metrics::{Metrics, OUTCOME_ABANDONED, OUTCOME_COMPLETED, OUTCOME_FAILED};
use crate::offsets::{OffsetTracker, Ticket};
use crate::publish::Publisher;

/// What every task of a running worker shares.
pub(crate) struct Shared {
    pub node_id: String,
    pub registry: Registry,
    pub metrics: Metrics,
    pub publisher: Publisher,
    pub tracker: Arc<Mutex<OffsetTracker>>,
    pub group: Arc<Mutex<Option<Arc<rdkafka::consumer::ConsumerGroupMetadata>>>>,
    /// Whether exactly-once tasks can run (kafka.transactions=on).
    pub transactions: bool,
    /// Execution ids running now.
    pub active: Mutex<BTreeSet<String>>,
    /// Woken when an offset was marked done, so the loop commits.
    pub offsets_done: Notify,
    /// Fired when shutdown starts: tasks not yet started give their record back.
    pub stop: CancellationToken,
    /// Fired when the shutdown grace period is over: running handlers stop.
    pub cancel: CancellationToken,
}

impl Shared {
    fn mark_done(&self, ticket: &Ticket) {
        if lock(&self.tracker).done(ticket) {
            self.offsets_done.notify_one();
        }
    }
}

/// Processes one received record; holds `permit` (a concurrency slot) until done.
pub(crate) async fn process(
    shared: Arc<Shared>,
    msg: OwnedMessage,
    ticket: Ticket,
    permit: OwnedSemaphorePermit,
) {
    let decoded = match msg.payload() {
        None => Err("record has no value".to_owned()),
        Some(bytes) => TaskDispatch::decode(bytes).map_err(|e| e.to_string()),
    };
    match decoded {
        Ok(dispatch) => {
            let span = tracing::info_span!(
                "task",
                task = %dispatch.task_name,
                instance_id = %dispatch.instance_id,
                attempt = dispatch.attempt,
                handler = %dispatch.handler,
            );
            run_attempt(&shared, &dispatch, &ticket)
                .instrument(span)
                .await;
        }
        Err(reason) => {
            dead_letter(&shared, &msg, &reason).await;
            shared.mark_done(&ticket);
        }
    }
    drop(permit);
}

/// Copies an undecodable record to its type's DLQ with the reason and source in headers.
async fn dead_letter(shared: &Shared, msg: &OwnedMessage, reason: &str) {
    let source = format!("{}/{}/{}", msg.topic(), msg.partition(), msg.offset());
    tracing::warn!(%source, %reason, "undecodable task record, sending it to the dlq");
    let topics = shared.publisher.topics();
    let Some(dlq) = topics
        .parse(msg.topic())
        .filter(|(_, k)| *k == TopicKind::Tasks)
        .map(|(t, _)| topics.dlq(t))
    else {
        tracing::error!(%source, "record from a topic that is not a task topic; dropped");
        return;
    };
    let mut hdrs = OwnedHeaders::new();
    if let Some(original) = msg.headers() {
        for h in original.iter() {
            hdrs = hdrs.insert(Header {
                key: h.key,
                value: h.value,
            });
        }
    }
    hdrs = hdrs
        .insert(Header {
            key: headers::DLQ_REASON,
            value: Some(reason.as_bytes()),
        })
        .insert(Header {
            key: headers::DLQ_SOURCE,
            value: Some(source.as_bytes()),
        });
    let key = msg.key().unwrap_or_default();
    let payload = msg.payload().unwrap_or_default();
    match shared.publisher.send(&dlq, key, payload, hdrs).await {
        Ok(()) => shared.metrics.dlq_records_total.inc(),
        Err(e) => {
            tracing::error!(%source, error = %e, "could not write the dlq record; the record is skipped")
        }
    }
}

/// Keeps the execution id in the node's active set and the gauge while alive.
struct InFlight<'a> {
    shared: &'a Shared,
    id: String,
}

impl<'a> InFlight<'a> {
    fn enter(shared: &'a Shared, id: String) -> Self {
        lock(&shared.active).insert(id.clone());
        shared.metrics.in_flight_tasks.inc();
        Self { shared, id }
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        lock(&self.shared.active).remove(&self.id);
        self.shared.metrics.in_flight_tasks.dec();
    }
}

async fn run_attempt(shared: &Shared, d: &TaskDispatch, ticket: &Ticket) {
    let label = if shared.registry.get(&d.handler).is_some() {
        d.handler.as_str()
    } else {
        "unknown"
    };
    let wait = d.not_before_ms.saturating_sub(now_ms());
    if wait > 0 {
        tracing::debug!(wait_ms = wait, "waiting for not_before");
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(wait.unsigned_abs())) => {}
            () = shared.stop.cancelled() => {
                tracing::info!("shutting down before the task started; leaving it for another worker");
                return;
            }
        }
    }
    let semantics = d.execution_semantics;
    let transactional = semantics == ExecutionSemantics::ExactlyOnce && shared.transactions;
    if semantics == ExecutionSemantics::AtMostOnce {
        shared.mark_done(ticket);
    }
    let _in_flight = InFlight::enter(shared, d.execution_id.to_string());

    let started = attempt_event(
        d,
        AttemptEvent::Started,
        started_data(d, &shared.node_id),
        &shared.node_id,
    );
    if !publish(shared, &started, &d.traceparent, transactional, None).await {
        shared.metrics.finished(label, OUTCOME_ABANDONED);
        return;
    }
    tracing::info!("task started");

    let begun = Instant::now();
    let outcome = if semantics == ExecutionSemantics::ExactlyOnce && !shared.transactions {
        Err(TaskError::terminal(
            "exactly_once_unsupported",
            "exactly_once needs a broker with transactions; set kafka.transactions=on against Apache Kafka",
        ))
    } else {
        run_handler(shared, d).await
    };
    shared
        .metrics
        .task_duration_seconds
        .with_label_values(&[label])
        .observe(begun.elapsed().as_secs_f64());
    if outcome.is_err() && shared.cancel.is_cancelled() {
        tracing::info!("task cancelled by shutdown; leaving it for another worker");
        shared.metrics.finished(label, OUTCOME_ABANDONED);
        return;
    }

    let (event, outcome_label) = match outcome {
        Ok(output) => (
            attempt_event(d, AttemptEvent::Completed, output, &shared.node_id),
            OUTCOME_COMPLETED,
        ),
        Err(e) => {
            tracing::info!(error_type = %e.error_type, retryable = e.retryable, reason = %e.message, "task failed");
            (
                attempt_event(d, AttemptEvent::Failed, e.to_event_data(), &shared.node_id),
                OUTCOME_FAILED,
            )
        }
    };
    if !publish(shared, &event, &d.traceparent, transactional, Some(ticket)).await {
        shared.metrics.finished(label, OUTCOME_ABANDONED);
        return;
    }
    if semantics != ExecutionSemantics::AtMostOnce {
        shared.mark_done(ticket);
    }
    shared.metrics.finished(label, outcome_label);
    if outcome_label == OUTCOME_COMPLETED {
        tracing::info!(
            duration_ms = begun.elapsed().as_millis() as u64,
            "task completed"
        );
    }
}

/// Runs the handler on its own task (so a panic fails the attempt, not the
/// worker), under the execution timeout.
async fn run_handler(shared: &Shared, d: &TaskDispatch) -> Result<DataMap, TaskError> {
    let handler = shared.registry.resolve(&d.handler)?;
    let ctx = TaskContext::from_dispatch(d, &shared.node_id, shared.cancel.child_token());
    let mut join = tokio::spawn(handler.call(ctx));
    let timeout_ms = d.timeout_config.execution_timeout_ms;
    let joined = if timeout_ms > 0 {
        match tokio::time::timeout(Duration::from_millis(timeout_ms), &mut join).await {
            Ok(joined) => joined,
            Err(_) => {
                join.abort();
                return Err(TaskError::retryable(
                    "timeout",
                    format!(
                        "handler '{}' did not finish within {timeout_ms} ms",
                        d.handler
                    ),
                ));
            }
        }
    } else {
        (&mut join).await
    };
    joined.unwrap_or_else(|e| {
        tracing::error!(error = %e, "handler panicked");
        Err(TaskError::retryable(
            "handler_panic",
            format!("handler '{}' panicked", d.handler),
        ))
    })
}

/// Publishes `event` until the broker acks it; gives up (false) only when the
/// worker's grace period is over. With `transactional`, the result goes out in
/// a transaction together with the ticket's offset.
async fn publish(
    shared: &Shared,
    event: &weft_shared::WorkflowEvent,
    traceparent: &str,
    transactional: bool,
    ticket: Option<&Ticket>,
) -> bool {
    let mut backoff = Duration::from_millis(250);
    loop {
        let result = if transactional {
            let offset = ticket.and_then(|t| {
                let position = lock(&shared.tracker).position_if_done(t)?;
                let group = lock(&shared.group).clone()?;
                let pos = crate::offsets::Position {
                    topic: t.topic.clone(),
                    partition: t.partition,
                    offset: position,
                };
                Some((pos, group))
            });
            shared
                .publisher
                .send_event_transactional(event, traceparent, offset)
                .await
        } else {
            shared.publisher.send_event(event, traceparent).await
        };
        match result {
            Ok(()) => return true,
            Err(e) => {
                tracing::warn!(error = %e, event_type = %event.event_type, retry_in_ms = backoff.as_millis() as u64, "could not publish event");
            }
        }
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            () = shared.cancel.cancelled() => return false,
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}
