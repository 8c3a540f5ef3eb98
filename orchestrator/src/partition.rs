//! One source partition of an events topic, owned by this orchestrator: it
//! folds batches of records into the projection with the pure decider and
//! publishes what was decided through the outbox.
//!
//! Two watermarks govern it. The *stored offset* (in RocksDB, written with the
//! projection) says how far the projection has folded. The *replay end* (the
//! partition's high watermark when this owner took it) says how far earlier
//! owners may already have published decisions. Below the replay end, derived
//! records are held in the outbox and struck off as their copies show up in the
//! topic (or, for dispatches, as their attempt shows progress); at the replay
//! end whatever is left is published. Above it, decisions are published as they
//! are made. So a restart, a rebalance and a rebuild from an empty data directory
//! all converge on the same projection without publishing any decision twice.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::message::{Message, OwnedMessage};
use rdkafka::producer::FutureProducer;
use tokio::sync::mpsc;
use weft_shared::avro::AvroRecord;
use weft_shared::config::{KafkaSettings, TransactionsMode};
use weft_shared::fsm::{decide, meta, DefinitionLookup, Outcome};
use weft_shared::ids::InstanceId;
use weft_shared::kafka::header_map;
use weft_shared::topics::headers as h;
use weft_shared::{Topics, WorkflowEvent, WorkflowEventType as T};

use crate::definitions::Registry;
use crate::metrics::Metrics;
use crate::publisher::Publisher;
use crate::status::Status;
#[path = "partition_replay.rs"]
mod replay;
#[path = "partition_timers.rs"]
mod timers;

pub use replay::ReplayProgress;

use weft_shared::observe::analytics::TypeStats;

use crate::store::{OutboxKind, OutboxRecord, Previous, Store};

/// Everything a partition processor needs.
#[derive(Clone)]
pub struct Shared {
    pub store: Store,
    pub registry: Arc<Registry>,
    pub producer: FutureProducer,
    pub kafka: KafkaSettings,
    pub topics: Topics,
    pub metrics: Arc<Metrics>,
    pub status: Arc<Status>,
    pub batch_max: usize,
    /// Every applied history event, sent after its batch is committed (for `/watch`).
    pub events_tx: tokio::sync::broadcast::Sender<Arc<WorkflowEvent>>,
    /// Task heartbeats seen, for heartbeat-timeout timers.
    pub heartbeats: Arc<crate::heartbeats::HeartbeatTracker>,
    /// Pushes the traces of instances that end (when a collector is configured).
    pub traces: Option<crate::trace_export::TraceExporter>,
}

/// The outbox of one partition, mirrored in memory.
#[derive(Default)]
struct Outbox {
    records: BTreeMap<u64, OutboxRecord>,
    by_ident: HashMap<String, u64>,
    next_seq: u64,
}

impl Outbox {
    fn push(&mut self, r: OutboxRecord) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.by_ident.insert(r.ident.clone(), seq);
        self.records.insert(seq, r);
        seq
    }

    fn remove(&mut self, ident: &str) -> Option<u64> {
        let seq = self.by_ident.remove(ident)?;
        self.records.remove(&seq);
        Some(seq)
    }

    /// Pushes `r` in place of a pending record with the same ident (a newer
    /// snapshot of an instance supersedes one not yet published).
    fn replace(&mut self, r: OutboxRecord, added: &mut Vec<u64>, removed: &mut Vec<u64>) {
        removed.extend(self.remove(&r.ident));
        added.push(self.push(r));
    }
}

/// A partition processor.
pub struct Partition {
    shared: Shared,
    topic: String,
    partition: i32,
    workflow_type: String,
    outbox: Outbox,
    publisher: Publisher,
    live: bool,
    replay_end: i64,
    /// What the engine reports of its consumer while this partition replays.
    progress: ReplayProgress,
    timers: timers::Firing,
    /// Analytics of this partition's instances, as of the stored offset.
    stats: TypeStats,
}

/// Per-batch working set.
#[derive(Default)]
struct Pending {
    states: HashMap<InstanceId, Option<weft_shared::fsm::InstanceState>>,
    /// What the store held for each instance before this batch (indexes, snapshots).
    before: HashMap<InstanceId, Option<Previous>>,
    seen: HashSet<(InstanceId, String)>,
    /// The timers of each instance when the batch began (for the timer index).
    timers_before: HashMap<InstanceId, BTreeMap<String, weft_shared::fsm::Timer>>,
    events: Vec<WorkflowEvent>,
    added: Vec<u64>,
    removed: Vec<u64>,
    /// The partition's analytics with this batch's changes (`None`: unchanged).
    stats: Option<TypeStats>,
    /// Instances this batch ended.
    ended: Vec<InstanceId>,
}

impl Partition {
    /// Loads the partition's outbox; `replay_end` is the high watermark at
    /// takeover; the engine keeps `progress` current.
    pub fn open(
        shared: Shared,
        topic: String,
        partition: i32,
        workflow_type: String,
        replay_end: i64,
        progress: ReplayProgress,
    ) -> crate::Result<Self> {
        let mut outbox = Outbox::default();
        for (seq, r) in shared.store.outbox(&topic, partition)? {
            outbox.by_ident.insert(r.ident.clone(), seq);
            outbox.records.insert(seq, r);
            outbox.next_seq = seq + 1;
        }
        let start = shared.store.offset(&topic, partition)?.unwrap_or(0);
        let stats = shared.store.analytics(&topic, partition)?;
        let live = start >= replay_end;
        let publisher = if shared.kafka.transactions == TransactionsMode::On {
            Publisher::transactional(
                &shared.kafka,
                &format!("weft-orchestrator-{topic}-{partition}"),
            )
            .map_err(|e| crate::Error::Publish(e.to_string()))?
        } else {
            Publisher::Plain(shared.producer.clone())
        };
        Ok(Self {
            shared,
            topic,
            partition,
            workflow_type,
            outbox,
            publisher,
            live,
            replay_end,
            progress,
            timers: timers::Firing::default(),
            stats,
        })
    }

    /// Processes records until the channel closes (the partition was revoked).
    pub async fn run(mut self, mut rx: mpsc::Receiver<OwnedMessage>) {
        let scope = format!("{}/{}", self.topic, self.partition);
        self.shared.status.set_live(&scope, self.live);
        if self.live {
            self.flush_all().await;
        }
        tracing::info!(topic = %self.topic, partition = self.partition, replay_end = self.replay_end, live = self.live, "partition assigned");
        let mut idle = (
            Instant::now(),
            self.progress.position.load(Ordering::Acquire),
        );
        loop {
            let first = if self.live {
                tokio::select! {
                    m = rx.recv() => m,
                    () = tokio::time::sleep(timers::CHECK_EVERY) => {
                        self.fire_due_timers().await;
                        continue;
                    }
                }
            } else {
                match tokio::time::timeout(replay::IDLE_CHECK, rx.recv()).await {
                    Ok(m) => {
                        idle.0 = Instant::now();
                        m
                    }
                    Err(_) => {
                        self.check_replay_end(&scope, &mut idle).await;
                        continue;
                    }
                }
            };
            let Some(first) = first else { break };
            let mut batch = vec![first];
            while batch.len() < self.shared.batch_max {
                match rx.try_recv() {
                    Ok(m) => batch.push(m),
                    Err(_) => break,
                }
            }
            let last_offset = batch.last().map(|m| m.offset()).unwrap_or(0);
            let started = Instant::now();
            let added = loop {
                match self.apply_batch(&batch) {
                    Ok(added) => break added,
                    Err(e) => {
                        tracing::error!(topic = %self.topic, partition = self.partition, error = %e, "applying batch failed; retrying");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            };
            if self.live {
                self.flush(&added).await;
            } else if last_offset + 1 >= self.replay_end {
                self.go_live(&scope).await;
            }
            self.shared
                .metrics
                .batch_seconds
                .observe(started.elapsed().as_secs_f64());
        }
        // The engine released the partition in the status when it was revoked.
        tracing::info!(topic = %self.topic, partition = self.partition, "partition released");
    }

    async fn go_live(&mut self, scope: &str) {
        if self.live {
            return;
        }
        self.live = true;
        tracing::info!(topic = %self.topic, partition = self.partition, pending = self.outbox.records.len(), "replay complete; partition live");
        self.flush_all().await;
        self.shared.status.set_live(scope, true);
    }

    /// Folds a batch into the projection; returns the outbox entries it added.
    fn apply_batch(&mut self, batch: &[OwnedMessage]) -> crate::Result<Vec<u64>> {
        let catalog = self.shared.registry.catalog();
        let mut p = Pending::default();
        for msg in batch {
            self.apply_one(msg, &catalog, &mut p)?;
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
        if let Some(last) = batch.last() {
            wb.set_offset(&self.topic, self.partition, last.offset() + 1);
        }
        if let Some(stats) = &p.stats {
            wb.put_analytics(&self.topic, self.partition, stats);
        }
        for e in &p.events {
            wb.put_event(e);
        }
        wb.commit()?;
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
        Ok(p.added)
    }

    fn apply_one(
        &mut self,
        msg: &OwnedMessage,
        catalog: &crate::definitions::Catalog,
        p: &mut Pending,
    ) -> crate::Result<()> {
        let m = self.shared.metrics.clone();
        let Some(payload) = msg.payload() else {
            self.dead_letter(msg, "record has no value".into(), p);
            return Ok(());
        };
        let event = match WorkflowEvent::decode(payload) {
            Ok(e) => e,
            Err(e) => {
                self.dead_letter(msg, format!("undecodable event: {e}"), p);
                return Ok(());
            }
        };
        if event.workflow_type != self.workflow_type {
            let reason = format!(
                "event of workflow type '{}' on the topic of '{}'",
                event.workflow_type, self.workflow_type
            );
            self.dead_letter(msg, reason, p);
            return Ok(());
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
            return Ok(());
        }
        let id = event.instance_id;
        let dedup = (id, event.idempotency_key.clone());
        if p.seen.contains(&dedup)
            || self
                .shared
                .store
                .seen(&self.workflow_type, id, &event.idempotency_key)?
        {
            m.duplicates.inc();
            if !self.live {
                if let Some(seq) = self.outbox.remove(&event.idempotency_key) {
                    p.removed.push(seq);
                }
            }
            return Ok(());
        }
        if event.is_decision() {
            // A decision this decider did not make (another engine version): it is not an input.
            m.orphans.inc();
            tracing::warn!(instance_id = %id, event_type = %event.event_type, key = %event.idempotency_key, "ignoring a decision record this orchestrator did not derive");
            return Ok(());
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
        let decision = decide(state.as_ref(), catalog, &event);
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
            return Ok(());
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
        }
        let events_topic = self.shared.topics.events(&self.workflow_type);
        let tasks_topic = self.shared.topics.tasks(&self.workflow_type);
        let key = id.to_string().into_bytes();
        for e in &decision.appended {
            p.seen.insert((id, e.idempotency_key.clone()));
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
                if matches!(
                    e.event_type,
                    T::WorkflowCompleted | T::WorkflowFailed | T::WorkflowCancelled
                ) {
                    m.finished(
                        &self.workflow_type,
                        e.event_type.as_str(),
                        e.timestamp_ms,
                        decision.state.as_ref(),
                    );
                }
            }
        }
        for d in &decision.dispatches {
            let seq = self.outbox.push(OutboxRecord {
                kind: OutboxKind::Dispatch,
                ident: d.attempt_key(),
                topic: tasks_topic.clone(),
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
                topic: tasks_topic.clone(),
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
        Ok(())
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
            T::TaskStarted | T::TaskCompleted | T::TaskFailed
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
    fn dead_letter(&mut self, msg: &OwnedMessage, reason: String, p: &mut Pending) {
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

    async fn flush_all(&mut self) {
        let seqs: Vec<u64> = self.outbox.records.keys().copied().collect();
        self.flush(&seqs).await;
    }

    /// Publishes the given outbox entries, retrying until the broker took them
    /// all, then deletes them from the outbox.
    async fn flush(&mut self, seqs: &[u64]) {
        let records: Vec<OutboxRecord> = seqs
            .iter()
            .filter_map(|s| self.outbox.records.get(s).cloned())
            .collect();
        if records.is_empty() {
            return;
        }
        let mut backoff = Duration::from_millis(100);
        while let Err(e) = self.publisher.publish(&records).await {
            tracing::warn!(topic = %self.topic, partition = self.partition, error = %e, "publishing decisions failed; retrying");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
        let mut wb = self.shared.store.batch();
        for seq in seqs {
            if let Some(r) = self.outbox.records.remove(seq) {
                self.outbox.by_ident.remove(&r.ident);
                wb.delete_outbox(&self.topic, self.partition, *seq);
            }
        }
        if let Err(e) = wb.commit() {
            // The records stay in RocksDB and are published again after a restart: duplicates are dropped on apply.
            tracing::error!(error = %e, "could not clear published outbox records");
        }
    }
}
