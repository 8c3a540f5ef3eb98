//! Running one task record: decode it (or send it to the DLQ), drop it when
//! this worker already ran or is running that attempt or a control record
//! cancelled it, wait for `not_before_ms`, publish `task.started`, run the
//! handler under supervision (deadline, cancel, shutdown; see `supervise`)
//! with task heartbeats, publish the result (see `results`), and mark the
//! offset done when the task's execution semantics say so. An attempt whose
//! partition is revoked stops and leaves its record to the new owner.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::message::{Header, Headers, Message, OwnedHeaders, OwnedMessage};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use weft_shared::avro::AvroRecord;
use weft_shared::event::now_ms;
use weft_shared::ids::ExecutionId;
use weft_shared::model::ExecutionSemantics;
use weft_shared::topics::{headers, TopicKind};
use weft_shared::TaskDispatch;

use crate::attempts::{Admission, AdmitOptions, AttemptHandle, Attempts};
use crate::checkpoint::Checkpointer;
use crate::consumer::lock;
use crate::error::TaskError;
use crate::events::{attempt_event, started_data, AttemptEvent};
use crate::handler::Registry;
use crate::metrics::{
    Metrics, OUTCOME_ABANDONED, OUTCOME_CANCELLED, OUTCOME_COMPLETED, OUTCOME_FAILED,
};
use crate::offsets::{OffsetTracker, Ticket};
use crate::publish::Publisher;
use crate::results::{confirm_started, publish, start, wait_for_head, Head, Published};
use crate::supervise::{shutdown_grace, supervise, Outcome};
use crate::task_heartbeat::Beats;
use crate::usage::{Meter, Reports};

/// What every task of a running worker shares.
pub(crate) struct Shared {
    pub node_id: String,
    /// The lanes this worker serves and what it offers.
    pub served: crate::lanes::Served,
    /// Its free slots and resources.
    pub capacity: Arc<crate::capacity::Capacity>,
    pub registry: Registry,
    pub metrics: Metrics,
    pub publisher: Publisher,
    pub tracker: Arc<Mutex<OffsetTracker>>,
    pub group: Arc<Mutex<Option<Arc<rdkafka::consumer::ConsumerGroupMetadata>>>>,
    /// Held while offsets are committed with transactions on: every commit of
    /// a partition, plain or in a transaction, is acknowledged before the next.
    pub commit_lane: Arc<Mutex<()>>,
    /// Counts records marked done: exactly-once results waiting for the head
    /// of their partition watch it.
    pub marked: tokio::sync::watch::Sender<u64>,
    /// The partitions assigned to this worker's consumer, since when (ms).
    pub assignment: Arc<Mutex<std::collections::BTreeMap<(String, i32), i64>>>,
    /// Whether exactly-once tasks can run (kafka.transactions=on).
    pub transactions: bool,
    /// Execution ids running now.
    pub active: Mutex<BTreeSet<String>>,
    /// Attempts admitted, taken and cancelled (duplicates, cancels, revocations).
    pub attempts: Arc<Mutex<Attempts>>,
    /// The shutdown grace period of attempts whose dispatch sets none.
    pub default_grace: Duration,
    /// The longest shutdown grace period of any attempt admitted (ms): bounds the drain.
    pub max_grace_ms: AtomicU64,
    /// Woken when the assignment changed, so the node heartbeat announces it now.
    pub heartbeat_now: Arc<Notify>,
    /// Fired when shutdown starts: tasks not yet started give their record back.
    pub stop: CancellationToken,
    /// Fired when the drain is over: every handler still running stops.
    pub cancel: CancellationToken,
}

impl Shared {
    pub(crate) fn mark_done(&self, ticket: &Ticket) {
        if lock(&self.tracker).done(ticket) {
            self.marked.send_modify(|n| *n += 1);
        }
    }
}

/// Processes one received record; holds `permit` (a concurrency slot) while
/// its handler may run: the slot is free again once the handler returned, while
/// the result is still on its way to the broker (a slot held through two acks
/// bounded a worker to `concurrency` ÷ two round trips tasks a second).
pub(crate) async fn process(
    shared: Arc<Shared>,
    msg: OwnedMessage,
    ticket: Ticket,
    permit: crate::capacity::Permit,
) {
    let decoded = match msg.payload() {
        None => Err("record has no value".to_owned()),
        Some(bytes) => TaskDispatch::decode(bytes).map_err(|e| e.to_string()),
    };
    // A task naming secrets sealed with a key this worker lacks waits in the DLQ.
    let decoded = decoded.and_then(|d| shared.registry.check_secrets(&d).map(|()| d));
    match decoded {
        Ok(dispatch) => {
            let span = tracing::info_span!(
                "task",
                task = %dispatch.task_name,
                instance_id = %dispatch.instance_id,
                attempt = dispatch.attempt,
                handler = %dispatch.handler,
            );
            run_attempt(&shared, &dispatch, &ticket, permit)
                .instrument(span)
                .await;
        }
        Err(reason) => {
            dead_letter(&shared, &msg, &reason).await;
            shared.mark_done(&ticket);
            drop(permit);
        }
    }
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

/// Keeps an admitted attempt in the registry while alive; on drop forgets it
/// and, when its record was marked done, marks its duplicates' records done too.
struct Admitted<'a> {
    shared: &'a Shared,
    execution_id: ExecutionId,
    done: bool,
}

impl Admitted<'_> {
    fn mark_done(&mut self, ticket: &Ticket) {
        self.shared.mark_done(ticket);
        self.done = true;
    }
}

impl Drop for Admitted<'_> {
    fn drop(&mut self) {
        let duplicates = lock(&self.shared.attempts).finish(self.execution_id, self.done);
        if self.done {
            for t in &duplicates {
                self.shared.mark_done(t);
            }
        }
    }
}

/// Admits `d` (or drops it as a duplicate or cancelled attempt, marking its record done).
fn admit<'a>(
    shared: &'a Shared,
    d: &TaskDispatch,
    ticket: &Ticket,
    label: &str,
) -> Option<(AttemptHandle, Admitted<'a>)> {
    let attach = d.execution_semantics != ExecutionSemantics::AtMostOnce;
    let options = AdmitOptions {
        attach,
        revocable: attach,
        grace: shutdown_grace(d, shared.default_grace),
    };
    let admission = lock(&shared.attempts).admit(
        &d.attempt_key(),
        d.execution_id,
        ticket,
        options,
        &shared.cancel,
    );
    match admission {
        Admission::Run(handle) => {
            let admitted = Admitted {
                shared,
                execution_id: d.execution_id,
                done: false,
            };
            return Some((handle, admitted));
        }
        Admission::DuplicateOfRunning => {
            shared.metrics.duplicate_dispatches_total.inc();
            tracing::info!(attempt_key = %d.attempt_key(), "duplicate dispatch of an attempt running here; dropped");
            if !attach {
                shared.mark_done(ticket);
            }
        }
        Admission::DuplicateOfFinished => {
            shared.metrics.duplicate_dispatches_total.inc();
            tracing::info!(attempt_key = %d.attempt_key(), "duplicate dispatch of an attempt that ran here; dropped");
            shared.mark_done(ticket);
        }
        Admission::Cancelled => {
            tracing::info!("dispatch of a cancelled attempt; skipped");
            shared.metrics.finished(label, OUTCOME_CANCELLED);
            shared.mark_done(ticket);
        }
    }
    None
}

async fn run_attempt(
    shared: &Arc<Shared>,
    d: &TaskDispatch,
    ticket: &Ticket,
    slot: crate::capacity::Permit,
) {
    let label = if shared.registry.get(&d.handler).is_some() {
        d.handler.as_str()
    } else {
        "unknown"
    };
    let Some((attempt, mut admitted)) = admit(shared, d, ticket, label) else {
        return;
    };
    let grace = shutdown_grace(d, shared.default_grace);
    shared
        .max_grace_ms
        .fetch_max(grace.as_millis() as u64, Ordering::SeqCst);
    let wait = d.not_before_ms.saturating_sub(now_ms());
    if wait > 0 {
        tracing::debug!(wait_ms = wait, "waiting for not_before");
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(wait.unsigned_abs())) => {}
            () = shared.stop.cancelled() => {
                tracing::info!("shutting down before the task started; leaving it for another worker");
                return;
            }
            () = attempt.token.cancelled() => {}
        }
    }
    if attempt.token.is_cancelled() {
        if attempt.cancelled_by_control().is_some() {
            tracing::info!("attempt cancelled before it started; skipped");
            shared.metrics.finished(label, OUTCOME_CANCELLED);
            admitted.mark_done(ticket);
        } else if attempt.revoked().is_some() {
            tracing::info!("partition revoked before the task started; its new owner runs it");
        }
        return;
    }
    let semantics = d.execution_semantics;
    let transactional = semantics == ExecutionSemantics::ExactlyOnce && shared.transactions;
    if semantics == ExecutionSemantics::AtMostOnce {
        admitted.mark_done(ticket);
    }
    let _in_flight = InFlight::enter(shared, d.execution_id.to_string());

    let started = attempt_event(
        d,
        AttemptEvent::Started,
        started_data(d, &shared.node_id),
        &shared.node_id,
    );
    // The handler runs while `task.started` travels, and the result follows
    // it without waiting for its ack (exactly-once: `task.started` commits in
    // its own transaction first).
    let started_in_flight = if transactional {
        if publish(shared, &started, &d.traceparent, true, None).await != Published::Yes {
            shared.metrics.finished(label, OUTCOME_ABANDONED);
            return;
        }
        None
    } else {
        match start(shared, &started, &d.traceparent).await {
            Ok(in_flight) => in_flight,
            Err(_) => {
                shared.metrics.finished(label, OUTCOME_ABANDONED);
                return;
            }
        }
    };
    tracing::info!("task started");

    let begun = Instant::now();
    let meter = Meter::start();
    let reports = Reports::default();
    let mut beats = None;
    let outcome = if semantics == ExecutionSemantics::ExactlyOnce && !shared.transactions {
        Outcome::Finished(Err(TaskError::terminal(
            "exactly_once_unsupported",
            "exactly_once needs a broker with transactions; set kafka.transactions=on against Apache Kafka",
        )))
    } else {
        let b = beats.insert(Beats::start(shared, d));
        let checkpoints = Checkpointer::kafka(shared.clone(), d);
        supervise(
            shared,
            d,
            &attempt,
            b.liveness(),
            reports.clone(),
            checkpoints,
        )
        .await
    };
    let usage = meter.finish(&reports);
    // The handler is done: its slot takes the next record while the result travels.
    drop(slot);
    shared
        .metrics
        .task_duration_seconds
        .with_label_values(&[label])
        .observe(begun.elapsed().as_secs_f64());
    shared
        .metrics
        .observe_usage(&d.workflow_type, &d.task_name, label, &usage);
    let outcome = match outcome {
        Outcome::Finished(Err(_)) if shared.cancel.is_cancelled() => Outcome::Abandoned,
        other => other,
    };
    let result = match outcome {
        Outcome::Finished(result) => result,
        Outcome::Cancelled => {
            tracing::info!("task cancelled; no result is published");
            shared.metrics.finished(label, OUTCOME_CANCELLED);
            if semantics != ExecutionSemantics::AtMostOnce {
                admitted.mark_done(ticket);
            }
            return;
        }
        Outcome::Abandoned => {
            tracing::info!("task cancelled by shutdown; leaving it for another worker");
            shared.metrics.finished(label, OUTCOME_ABANDONED);
            return;
        }
        Outcome::Revoked => {
            tracing::info!("task stopped: its partition was revoked; the new owner runs it");
            shared.metrics.finished(label, OUTCOME_ABANDONED);
            return;
        }
    };
    if transactional {
        // The result commits its record's offset in its transaction, so it
        // waits for every earlier record of the partition (heartbeats go on).
        match wait_for_head(shared, ticket, &attempt).await {
            Head::Reached => {}
            Head::Cancelled => {
                tracing::info!("task cancelled while its result waited; no result is published");
                shared.metrics.finished(label, OUTCOME_CANCELLED);
                admitted.mark_done(ticket);
                return;
            }
            Head::Lost => {
                tracing::info!("result not published: the partition was revoked or the worker stopped; the record runs again");
                shared.metrics.finished(label, OUTCOME_ABANDONED);
                return;
            }
        }
    }

    let (mut event, outcome_label) = match result {
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
    usage.write(&mut event.metadata);
    let result_out = publish(shared, &event, &d.traceparent, transactional, Some(ticket));
    let published = match started_in_flight {
        // The result is handed to the producer without waiting for the ack of
        // `task.started`: the idempotent producer keeps the partition's order,
        // so `task.started` lands first (one produce round trip less per task
        // on the critical path). Should `task.started` fail and go out again
        // after the result, the decider records it as stale: a task may
        // complete from `scheduled`.
        Some(in_flight) => {
            let (started_out, published) = tokio::join!(
                confirm_started(shared, in_flight, &started, &d.traceparent),
                result_out
            );
            if started_out != Published::Yes {
                tracing::warn!(outcome = ?started_out, "task.started was not published; the result was");
            }
            published
        }
        None => result_out.await,
    };
    drop(beats);
    if published != Published::Yes {
        shared.metrics.finished(label, OUTCOME_ABANDONED);
        return;
    }
    if semantics != ExecutionSemantics::AtMostOnce {
        admitted.mark_done(ticket);
    }
    shared.metrics.finished(label, outcome_label);
    if outcome_label == OUTCOME_COMPLETED {
        tracing::info!(
            duration_ms = begun.elapsed().as_millis() as u64,
            cpu_ms = usage.resources.get(weft_shared::usage::CPU_MS).copied().unwrap_or(0),
            usage_scope = %usage.scope,
            "task completed"
        );
    }
}
