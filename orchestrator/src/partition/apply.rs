//! Folding a batch of records into the projection: each input is checked
//! (decodable, of this type, keyed by its instance, on the partition its key
//! hashes to, with a fresh idempotency key), decided against its instance's
//! state, and the decision's events, dispatches, controls and snapshots are
//! written to RocksDB with the stored offset and the outbox in one batch.
//! Every decided input's idempotency key is kept, applied or not, so a
//! redelivered input is a duplicate however it was decided.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use rdkafka::message::{Message, OwnedMessage};
use weft_shared::avro::AvroRecord;
use weft_shared::fsm::{decide, meta, DefinitionLookup, InstanceState, Outcome};
use weft_shared::ids::InstanceId;
use weft_shared::kafka::header_map;
use weft_shared::observe::analytics::TypeStats;
use weft_shared::topics::headers as h;
use weft_shared::{WorkflowEvent, WorkflowEventType as T};

use super::Partition;
use crate::store::{OutboxKind, OutboxRecord, Previous};

/// Per-batch working set.
#[derive(Default)]
pub(super) struct Pending {
    states: HashMap<InstanceId, Option<InstanceState>>,
    /// What the store held for each instance before this batch (indexes, snapshots).
    before: HashMap<InstanceId, Option<Previous>>,
    /// Idempotency keys this batch used, with the event type that used them.
    seen: HashMap<(InstanceId, String), String>,
    /// Keys of inputs decided but not appended (rejected, stale): (instance, key, event type).
    input_keys: Vec<(InstanceId, String, String)>,
    /// The timers of each instance when the batch began (for the timer index).
    timers_before: HashMap<InstanceId, BTreeMap<String, weft_shared::fsm::Timer>>,
    events: Vec<WorkflowEvent>,
    pub(super) added: Vec<u64>,
    removed: Vec<u64>,
    /// The partition's analytics with this batch's changes (`None`: unchanged).
    stats: Option<TypeStats>,
    /// Instances this batch ended.
    ended: Vec<InstanceId>,
}

impl Partition {
    /// Folds a batch into the projection; returns the outbox entries it added
    /// and how many records it folded: it stops before a record the catalog
    /// cannot decide yet (a start pinned to a version this replica has not
    /// read), which later records must not overtake (see ADR 0011).
    pub(super) fn apply_batch(
        &mut self,
        batch: &[OwnedMessage],
    ) -> crate::Result<(Vec<u64>, usize)> {
        let catalog = self.shared.registry.catalog();
        let mut p = Pending::default();
        let mut folded = 0;
        for msg in batch {
            if !self.apply_one(msg, &catalog, &mut p)? {
                break;
            }
            folded += 1;
        }
        let batch = &batch[..folded];
        if batch.is_empty() {
            return Ok((Vec::new(), 0));
        }
        let store = &self.shared.store;
        let mut wb = store.batch();
        for (id, s) in p.states.iter() {
            let Some(s) = s else { continue };
            let previous = p.before.get(id).copied().flatten();
            let definition = catalog.get(&s.workflow_type, s.definition_version);
            if let Some(snap) = wb.put_instance(previous, s, definition)? {
                let topic = self.shared.topics.snapshots(&self.workflow_type);
                let record = OutboxRecord::snapshot(topic, &snap);
                self.outbox.replace(record, &mut p.added, &mut p.removed);
            }
        }
        for (id, s) in p
            .states
            .iter()
            .filter_map(|(id, s)| Some((id, s.as_ref()?)))
        {
            let before = p.timers_before.get(id).cloned().unwrap_or_default();
            wb.sync_timers(&self.topic, self.partition, *id, &before, &s.timers);
        }
        for seq in &p.added {
            if let Some(r) = self.outbox.records.get(seq) {
                wb.put_outbox(&self.topic, self.partition, *seq, r);
            }
        }
        for seq in &p.removed {
            wb.delete_outbox(&self.topic, self.partition, *seq);
        }
        // Rows of entries published since the last write (see `pipeline`).
        let forgotten = std::mem::take(&mut self.flights.forgotten);
        for seq in &forgotten {
            wb.delete_outbox(&self.topic, self.partition, *seq);
        }
        let next = batch.last().map(|last| last.offset() + 1);
        if let Some(next) = next {
            wb.set_offset(&self.topic, self.partition, next);
        }
        if let Some(stats) = &p.stats {
            wb.put_analytics(&self.topic, self.partition, stats);
        }
        for e in &p.events {
            wb.put_event(e);
        }
        for (id, key, event_type) in &p.input_keys {
            wb.put_input_key(&self.workflow_type, *id, key, event_type);
        }
        if let Err(e) = wb.commit() {
            self.flights.forgotten.extend(forgotten);
            return Err(e.into());
        }
        if let Some(next) = next {
            self.expected = next;
        }
        if let Some(stats) = p.stats.take() {
            self.stats = stats;
        }
        if let (true, Some(traces)) = (self.live, &self.shared.traces) {
            for id in &p.ended {
                traces.ended(&self.workflow_type, *id);
            }
        }
        for e in p.events {
            // No receiver (nobody watching) is not an error.
            let _ = self.shared.events_tx.send(Arc::new(e));
        }
        Ok((p.added, folded))
    }

    fn apply_one(
        &mut self,
        msg: &OwnedMessage,
        catalog: &crate::definitions::Catalog,
        p: &mut Pending,
    ) -> crate::Result<bool> {
        let m = self.shared.metrics.clone();
        let Some(payload) = msg.payload() else {
            self.dead_letter(msg, "record has no value".into(), p);
            return Ok(true);
        };
        let event = match WorkflowEvent::decode(payload) {
            Ok(e) => e,
            Err(e) => {
                self.dead_letter(msg, format!("undecodable event: {e}"), p);
                return Ok(true);
            }
        };
        if event.workflow_type != self.workflow_type {
            let reason = format!(
                "event of workflow type '{}' on the topic of '{}'",
                event.workflow_type, self.workflow_type
            );
            self.dead_letter(msg, reason, p);
            return Ok(true);
        }
        let key_ok = msg
            .key()
            .map(|k| k == event.instance_id.to_string().as_bytes())
            .unwrap_or(false);
        if !key_ok {
            self.dead_letter(
                msg,
                format!("record key must be the instance id {}", event.instance_id),
                p,
            );
            return Ok(true);
        }
        if event.idempotency_key.trim().is_empty() {
            self.dead_letter(msg, "the input has an empty idempotency key".into(), p);
            return Ok(true);
        }
        if let Some(right) = self.misplaced(msg) {
            self.forward(msg, right, p);
            return Ok(true);
        }
        let id = event.instance_id;
        let dedup = (id, event.idempotency_key.clone());
        let earlier = if let Some(t) = p.seen.get(&dedup) {
            Some(t.clone())
        } else {
            self.shared
                .store
                .seen_as(&self.workflow_type, id, &event.idempotency_key)?
        };
        if let Some(earlier) = earlier {
            if !earlier.is_empty() && earlier != event.event_type.as_str() {
                let reason = format!(
                    "idempotency key '{}' was already used by a {earlier} of this instance",
                    event.idempotency_key
                );
                self.dead_letter(msg, reason, p);
                return Ok(true);
            }
            m.duplicates.inc();
            if !self.live {
                if let Some(seq) = self.outbox.remove(&event.idempotency_key) {
                    p.removed.push(seq);
                }
            }
            return Ok(true);
        }
        if event.is_decision() {
            // A decision this decider did not make (another engine version, or a
            // producer claiming to be the orchestrator): it is not an input.
            m.orphans.inc();
            let reason = format!(
                "{} claims to be an orchestrator decision, but this orchestrator derived no event with idempotency key '{}'",
                event.event_type, event.idempotency_key
            );
            self.dead_letter(msg, reason, p);
            return Ok(true);
        }
        if !catalog.decidable(&event) {
            tracing::info!(instance_id = %id, key = %event.idempotency_key, "start waits for the definition catalog to catch up");
            return Ok(false);
        }
        let state = match p.states.get(&id) {
            Some(s) => s.clone(),
            None => {
                let s = self.shared.store.instance(&self.workflow_type, id)?;
                p.before.entry(id).or_insert(s.as_ref().map(Previous::of));
                p.timers_before
                    .entry(id)
                    .or_insert_with(|| s.as_ref().map(|s| s.timers.clone()).unwrap_or_default());
                s
            }
        };
        let decision = decide(state.as_ref(), &catalog.lookup_for(&event), &event);
        if decision.outcome != Outcome::Applied {
            p.input_keys.push((
                id,
                event.idempotency_key.clone(),
                event.event_type.as_str().to_owned(),
            ));
            p.seen.insert(dedup, event.event_type.as_str().to_owned());
        }
        match &decision.outcome {
            Outcome::Applied => m.applied.inc(),
            Outcome::Stale { reason } => {
                m.stale.inc();
                tracing::debug!(instance_id = %id, event_type = %event.event_type, %reason, "stale event ignored");
            }
            Outcome::Rejected(why) => {
                m.rejected.inc();
                tracing::warn!(instance_id = %id, event_type = %event.event_type, reason = %why, "event rejected");
                if decision.appended.is_empty() {
                    self.dead_letter(msg, why.to_string(), p);
                }
            }
        }
        if decision.appended.is_empty() {
            return Ok(true);
        }
        if let (Some(next), Some(last)) = (&decision.state, decision.appended.last()) {
            let def = catalog.get(&next.workflow_type, next.definition_version);
            p.stats.get_or_insert_with(|| self.stats.clone()).record(
                state.as_ref(),
                next,
                last.timestamp_ms,
                def,
            );
            if next.state.is_terminal() && !state.as_ref().is_some_and(|s| s.state.is_terminal()) {
                p.ended.push(id);
            }
            // Counted once, live: a replay after a restart does not count history again.
            if self.live {
                for e in &decision.appended {
                    m.workflow_ended(&self.workflow_type, e, Some(next));
                }
            }
        }
        let events_topic = self.shared.topics.events(&self.workflow_type);
        let def = decision
            .state
            .as_ref()
            .and_then(|s| catalog.get(&s.workflow_type, s.definition_version));
        let key = id.to_string().into_bytes();
        for e in &decision.appended {
            p.seen.insert(
                (id, e.idempotency_key.clone()),
                e.event_type.as_str().to_owned(),
            );
            if e.is_decision() {
                m.decisions.inc();
                let seq = self.outbox.push(OutboxRecord {
                    kind: OutboxKind::Event,
                    ident: e.idempotency_key.clone(),
                    topic: events_topic.clone(),
                    key: key.clone(),
                    payload: e.encode(),
                    headers: vec![
                        (h::EVENT_TYPE.into(), e.event_type.as_str().into()),
                        (h::IDEMPOTENCY_KEY.into(), e.idempotency_key.clone()),
                    ],
                });
                p.added.push(seq);
            }
        }
        for d in &decision.dispatches {
            let (topic, req) =
                self.routes
                    .of(&self.shared.topics, &self.workflow_type, def, &d.task_name);
            if let Some(watch) = self.shared.unschedulable.as_ref() {
                if req.is_constrained() {
                    let waiting = crate::unschedulable::Waiting {
                        workflow_type: self.workflow_type.clone(),
                        instance_id: id,
                        task: d.task_name.clone(),
                        attempt: d.attempt,
                        requirements: req.clone(),
                        scheduled_at_ms: d.scheduled_at_ms,
                    };
                    watch.watch(waiting, self.live);
                }
            }
            let seq = self.outbox.push(OutboxRecord {
                kind: OutboxKind::Dispatch,
                ident: d.attempt_key(),
                topic: topic.clone(),
                key: key.clone(),
                payload: d.encode(),
                headers: vec![
                    (h::TRACEPARENT.into(), d.traceparent.clone()),
                    (h::IDEMPOTENCY_KEY.into(), d.attempt_key()),
                ],
            });
            p.added.push(seq);
            m.dispatches.inc();
        }
        for c in &decision.controls {
            let seq = self.outbox.push(OutboxRecord {
                kind: OutboxKind::Control,
                ident: format!("control:{}:{}:{}", id, c.task_name, c.attempt),
                topic: self
                    .routes
                    .of(&self.shared.topics, &self.workflow_type, def, &c.task_name)
                    .0
                    .clone(),
                key: key.clone(),
                payload: c.encode(),
                headers: vec![(h::CONTROL.into(), "cancel".into())],
            });
            p.added.push(seq);
        }
        if !self.live {
            self.strike_obsolete_dispatches(&event, decision.state.as_ref(), p);
        }
        p.events.extend(decision.appended);
        p.states.insert(id, decision.state);
        Ok(true)
    }

    /// During replay: a dispatch whose attempt has started, ended, or whose
    /// workflow ended needs no publishing.
    fn strike_obsolete_dispatches(
        &mut self,
        input: &WorkflowEvent,
        state: Option<&weft_shared::fsm::InstanceState>,
        p: &mut Pending,
    ) {
        // Only a worker's report proves an attempt was received (a timer fire
        // names the attempt it is about to schedule).
        let from_worker = matches!(
            input.event_type,
            T::TaskStarted | T::TaskCompleted | T::TaskFailed | T::TaskCheckpointed
        );
        if let (true, Some(task), Some(attempt)) = (
            from_worker,
            input.metadata.get(meta::TASK),
            input.metadata.get(meta::ATTEMPT),
        ) {
            if let Some(seq) = self
                .outbox
                .remove(&format!("{}:{task}:{attempt}", input.instance_id))
            {
                p.removed.push(seq);
            }
        }
        if let Some(s) = state.filter(|s| s.state.is_terminal()) {
            let prefix = format!("{}:", s.instance_id);
            let idents: Vec<String> = self
                .outbox
                .records
                .values()
                .filter(|r| r.kind == OutboxKind::Dispatch && r.ident.starts_with(&prefix))
                .map(|r| r.ident.clone())
                .collect();
            for ident in idents {
                if let Some(seq) = self.outbox.remove(&ident) {
                    p.removed.push(seq);
                }
            }
        }
    }

    /// Sends a record that cannot be applied to the type's DLQ, with the reason.
    pub(super) fn dead_letter(&mut self, msg: &OwnedMessage, reason: String, p: &mut Pending) {
        self.shared.metrics.dlq.inc();
        let source = format!("{}/{}/{}", msg.topic(), msg.partition(), msg.offset());
        tracing::warn!(source = %source, %reason, "record sent to the dlq");
        let mut headers: Vec<(String, String)> = header_map(msg.headers()).into_iter().collect();
        headers.push((h::DLQ_REASON.into(), reason));
        headers.push((h::DLQ_SOURCE.into(), source.clone()));
        let seq = self.outbox.push(OutboxRecord {
            kind: OutboxKind::Dlq,
            ident: format!("dlq:{source}"),
            topic: self.shared.topics.dlq(&self.workflow_type),
            key: msg.key().map(|k| k.to_vec()).unwrap_or_default(),
            payload: msg.payload().map(|v| v.to_vec()).unwrap_or_default(),
            headers,
        });
        p.added.push(seq);
    }

    /// The partition `msg`'s key hashes to, when it is not this one.
    fn misplaced(&self, msg: &OwnedMessage) -> Option<i32> {
        let (partitioner, count) = (self.placement?, self.partition_count?);
        let right = partitioner.partition(msg.key()?, count);
        (right != self.partition).then_some(right)
    }

    /// Forwards an input that arrived on the wrong partition to the topic again,
    /// where the producer's partitioner puts it on the partition its key hashes
    /// to. The copy keeps its idempotency key: forwarded twice, it is applied once.
    fn forward(&mut self, msg: &OwnedMessage, right: i32, p: &mut Pending) {
        self.shared.metrics.forwarded.inc();
        let source = format!("{}/{}/{}", msg.topic(), msg.partition(), msg.offset());
        tracing::warn!(source = %source, to_partition = right, "input on the wrong partition for its key; forwarding it");
        let mut headers: Vec<(String, String)> = header_map(msg.headers()).into_iter().collect();
        headers.push((h::FORWARDED_FROM.into(), source.clone()));
        let seq = self.outbox.push(OutboxRecord {
            kind: OutboxKind::Forward,
            ident: format!("forward:{source}"),
            topic: self.topic.clone(),
            key: msg.key().map(|k| k.to_vec()).unwrap_or_default(),
            payload: msg.payload().map(|v| v.to_vec()).unwrap_or_default(),
            headers,
        });
        p.added.push(seq);
    }
}
