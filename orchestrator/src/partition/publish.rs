//! Flushing a partition's outbox: the entries to publish (dispatches only
//! while their attempt still waits for a worker, and none while an early
//! go-live holds them), published until the broker took them, then deleted.
//! A record the broker refuses for good never wedges the partition: it goes to
//! the DLQ with the reason, and a refused dispatch fails its attempt (a
//! terminal `task.failed` input, so the workflow's own failure handling runs
//! and a rebuild decides the same). A fenced producer ends the processor.

use std::time::Duration;

use weft_shared::avro::AvroRecord;
use weft_shared::data::{DataMap, WorkflowData};
use weft_shared::event::META_SOURCE_KIND;
use weft_shared::fsm::meta;
use weft_shared::ids::EventId;
use weft_shared::topics::headers as h;
use weft_shared::{TaskDispatch, WorkflowEvent, WorkflowEventType};

use super::outbox::{dispatch_attempt, dispatch_wanted, is_dispatch};
use super::{Exit, Partition};
use crate::publisher::Failure;
use crate::store::{OutboxKind, OutboxRecord};

/// The `error_type` of the failure of an attempt whose dispatch the broker refused.
pub const UNPUBLISHABLE: &str = "dispatch_unpublishable";
/// Source kind of inputs an orchestrator writes on a worker's behalf.
const SOURCE_KIND_ORCHESTRATOR_INPUT: &str = "orchestrator";

impl Partition {
    pub(super) async fn flush_all(&mut self) -> Result<(), Exit> {
        let seqs: Vec<u64> = self.outbox.records.keys().copied().collect();
        self.flush(&seqs).await
    }

    /// Splits `seqs` into records to publish and dispatches to drop.
    pub(super) fn publishable(&self, seqs: &[u64]) -> (Vec<(u64, OutboxRecord)>, Vec<u64>) {
        let (mut publish, mut withheld) = (Vec::new(), Vec::new());
        for seq in seqs {
            let Some(r) = self.outbox.records.get(seq) else {
                continue;
            };
            if self.flights.seqs.contains(seq) {
                continue; // on its way already (see `pipeline`)
            }
            if is_dispatch(r) {
                if self.held {
                    continue; // stays in the outbox until the replay reaches its end
                }
                let wanted = dispatch_attempt(&r.ident).is_some_and(|(id, task, attempt)| {
                    let state = self.shared.store.instance(&self.workflow_type, id);
                    dispatch_wanted(state.ok().flatten().as_ref(), task, attempt)
                });
                if !wanted {
                    self.shared.metrics.dispatches_withheld.inc();
                    tracing::debug!(attempt = %r.ident, "dispatch not published: its attempt reported or its instance ended");
                    withheld.push(*seq);
                    continue;
                }
            }
            publish.push((*seq, r.clone()));
        }
        (publish, withheld)
    }

    /// Publishes the given outbox entries, retrying until the broker took them
    /// all, then deletes them from the outbox.
    pub(super) async fn flush(&mut self, seqs: &[u64]) -> Result<(), Exit> {
        let (mut pending, withheld) = self.publishable(seqs);
        let mut done: Vec<u64> = withheld;
        let mut backoff = Duration::from_millis(100);
        while !pending.is_empty() {
            let records: Vec<OutboxRecord> = pending.iter().map(|(_, r)| r.clone()).collect();
            let Err(e) = self.publisher.publish(&records).await else {
                done.extend(pending.iter().map(|(seq, _)| *seq));
                break;
            };
            match e.failure {
                Failure::Fatal => {
                    tracing::error!(topic = %self.topic, partition = self.partition, error = %e, "the producer can no longer publish; stopping the partition processor");
                    return Err(Exit::Fenced(e.to_string()));
                }
                Failure::Refused { index } if index < pending.len() => {
                    let (seq, refused) = pending.remove(index);
                    self.shared.metrics.unpublishable.inc();
                    tracing::error!(topic = %refused.topic, ident = %refused.ident, bytes = refused.payload.len(), error = %e, "the broker refuses a derived record for good; dead-lettering it");
                    pending.extend(self.set_aside(&refused, &e.reason));
                    done.push(seq);
                }
                _ => {
                    tracing::warn!(topic = %self.topic, partition = self.partition, error = %e, "publishing decisions failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
        self.forget(&done);
        Ok(())
    }

    /// Deletes published (or withheld) entries from the outbox.
    pub(super) fn forget(&mut self, done: &[u64]) {
        let mut wb = self.shared.store.batch();
        for seq in done {
            if self.outbox.take(*seq).is_some() {
                wb.delete_outbox(&self.topic, self.partition, *seq);
            }
        }
        if let Err(e) = wb.commit() {
            // The records stay in RocksDB and are published again after a restart: duplicates are dropped on apply.
            tracing::error!(error = %e, "could not clear published outbox records");
        }
    }

    /// What replaces a refused record: its DLQ copy (without the payload when
    /// the payload is what the broker refused), and for a dispatch the failure
    /// of its attempt. Neither goes through the outbox again: published with
    /// the rest of this flush (a crash before that publishes the refused record
    /// again from the outbox, which is refused again and set aside the same way).
    fn set_aside(&self, refused: &OutboxRecord, reason: &str) -> Vec<(u64, OutboxRecord)> {
        let source = format!("outbox:{}/{}:{}", self.topic, self.partition, refused.ident);
        let mut headers = refused.headers.clone();
        headers.push((
            h::DLQ_REASON.into(),
            format!(
                "could not be published to {} ({} bytes): {reason}",
                refused.topic,
                refused.payload.len()
            ),
        ));
        headers.push((h::DLQ_SOURCE.into(), source.clone()));
        let mut out = vec![(
            u64::MAX,
            OutboxRecord {
                kind: OutboxKind::Dlq,
                ident: format!("dlq:{source}"),
                topic: self.shared.topics.dlq(&self.workflow_type),
                key: refused.key.clone(),
                // The payload is what was refused (too large, invalid): the DLQ keeps the reason.
                payload: Vec::new(),
                headers,
            },
        )];
        if refused.kind == OutboxKind::Dispatch {
            if let Ok(d) = TaskDispatch::decode(&refused.payload) {
                let event = unpublishable_failure(&d, reason);
                out.push((
                    u64::MAX,
                    OutboxRecord {
                        kind: OutboxKind::Forward,
                        ident: format!("refused:{}", refused.ident),
                        topic: self.topic.clone(),
                        key: refused.key.clone(),
                        headers: vec![
                            (h::EVENT_TYPE.into(), event.event_type.as_str().into()),
                            (h::IDEMPOTENCY_KEY.into(), event.idempotency_key.clone()),
                        ],
                        payload: event.encode(),
                    },
                ));
            }
        }
        out
    }
}

/// The terminal `task.failed` input for an attempt whose dispatch the broker
/// refused: derived from the dispatch alone, so writing it twice is one input.
pub fn unpublishable_failure(d: &TaskDispatch, reason: &str) -> WorkflowEvent {
    let key = format!("{}:failed", d.execution_id);
    let mut correlation_chain = d.correlation_chain.clone();
    correlation_chain.push(d.scheduled_event_id);
    WorkflowEvent {
        event_id: EventId::derived(&[b"orchestrator", d.execution_id.as_bytes(), b"unpublishable"]),
        event_type: WorkflowEventType::TaskFailed,
        workflow_type: d.workflow_type.clone(),
        instance_id: d.instance_id,
        sequence_number: 0,
        causation_id: Some(d.scheduled_event_id),
        correlation_chain,
        timestamp_ms: d.scheduled_at_ms,
        data: DataMap::from([
            (
                "error_type".to_owned(),
                WorkflowData::Str(UNPUBLISHABLE.to_owned()),
            ),
            (
                "message".to_owned(),
                WorkflowData::Str(format!("the broker refused the dispatch: {reason}")),
            ),
            ("retryable".to_owned(), WorkflowData::Bool(false)),
        ]),
        metadata: [
            (meta::TASK, d.task_name.clone()),
            (meta::ATTEMPT, d.attempt.to_string()),
            (meta::EXECUTION_ID, d.execution_id.to_string()),
            (META_SOURCE_KIND, SOURCE_KIND_ORCHESTRATOR_INPUT.to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect(),
        idempotency_key: key,
        source_node_id: weft_shared::fsm::DECIDER_NODE_ID.to_owned(),
    }
}
