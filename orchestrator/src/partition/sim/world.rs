//! The simulated world of [`super`]: a seeded random source, the events and
//! tasks topics as in-memory logs (with offset holes, as transaction markers
//! leave), consumer cursors that hand records over the way the engine does,
//! and workers that run dispatches with crashes, duplicates and reordering.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use rdkafka::message::{Message, OwnedHeaders, OwnedMessage, Timestamp};
use weft_shared::avro::AvroRecord;
use weft_shared::data::{DataMap, WorkflowData};
use weft_shared::event::META_SOURCE_KIND;
use weft_shared::fsm::meta;
use weft_shared::ids::EventId;
use weft_shared::kafka::headers as make_headers;
use weft_shared::topics::headers as h;
use weft_shared::{TaskDispatch, WorkflowEvent, WorkflowEventType as T};

use crate::partition::feed::Fed;
use crate::store::OutboxRecord;

/// splitmix64: small, fast, and the same on every machine.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed ^ 0x9E37_79B9_7F4A_7C15)
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    /// True with probability `per_mille / 1000`.
    pub fn chance(&mut self, per_mille: u64) -> bool {
        self.below(1000) < per_mille
    }
}

/// One topic partition: records with increasing offsets, and when each was appended.
#[derive(Default)]
pub struct Log {
    pub records: Vec<OwnedMessage>,
    /// The simulation step each record was appended at.
    pub appended_at: Vec<u64>,
    next_offset: i64,
}

impl Log {
    /// Appends a record; with `marker` a transaction marker's hole comes first.
    pub fn append(&mut self, topic: &str, r: &OutboxRecord, step: u64, marker: bool) -> i64 {
        if marker {
            self.next_offset += 1;
        }
        let offset = self.next_offset;
        self.next_offset += 1;
        let pairs: Vec<(&str, &str)> = r
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let headers: OwnedHeaders = make_headers(&pairs);
        self.records.push(OwnedMessage::new(
            Some(r.payload.clone()),
            Some(r.key.clone()),
            topic.to_owned(),
            Timestamp::NotAvailable,
            0,
            offset,
            Some(headers),
        ));
        self.appended_at.push(step);
        offset
    }

    /// The high watermark.
    pub fn high(&self) -> i64 {
        self.next_offset
    }

    /// The index of the first record at or after `offset`.
    pub fn index_at(&self, offset: i64) -> usize {
        self.records.partition_point(|m| m.offset() < offset)
    }
}

/// How one replica's consumer hands records of the events log over.
#[derive(Clone, Copy, Debug)]
pub struct Cursor {
    /// The index of the next record to hand over.
    pub index: usize,
    /// The offset after the record last handed over (or where it was sought to).
    pub prev_next: i64,
}

impl Cursor {
    /// Assigned or sought to `offset`.
    pub fn at(log: &Log, offset: i64) -> Self {
        Self {
            index: log.index_at(offset),
            prev_next: offset,
        }
    }

    /// Hands over up to `n` records.
    pub fn take(&mut self, log: &Log, n: usize) -> Vec<Fed> {
        let mut out = Vec::new();
        while out.len() < n && self.index < log.records.len() {
            let msg = log.records[self.index].clone();
            let prev_next = std::mem::replace(&mut self.prev_next, msg.offset() + 1);
            out.push(Fed { msg, prev_next });
            self.index += 1;
        }
        out
    }

    /// Records handed over but lost on the way (a processor that died with them).
    pub fn lose(&mut self, log: &Log, n: usize) {
        let _ = self.take(log, n);
    }
}

/// A worker's report on a dispatched attempt, as the worker SDK writes it.
pub fn report(d: &TaskDispatch, what: T, at_ms: i64, data: DataMap) -> WorkflowEvent {
    let kind = match what {
        T::TaskStarted => "started",
        T::TaskCompleted => "completed",
        _ => "failed",
    };
    let exec = d.execution_id;
    let mut e = WorkflowEvent::new(
        what,
        &d.workflow_type,
        d.instance_id,
        format!("{exec}:{kind}"),
        at_ms,
    );
    e.event_id = EventId::derived(&[b"worker", exec.as_bytes(), kind.as_bytes()]);
    e.causation_id = Some(d.scheduled_event_id);
    e.data = data;
    for (k, v) in [
        (meta::TASK, d.task_name.clone()),
        (meta::ATTEMPT, d.attempt.to_string()),
        (meta::EXECUTION_ID, exec.to_string()),
        (META_SOURCE_KIND, "input".to_owned()),
    ] {
        e.metadata.insert(k.to_owned(), v);
    }
    e
}

/// Workers: read dispatches from the tasks log and report on them, with
/// crashes (a dispatch forgotten), duplicate and reordered reports.
#[derive(Default)]
pub struct Workers {
    /// The index of the next tasks-log record to read.
    pub index: usize,
    /// The worker group's committed position: a crashed worker reads again from here.
    committed: usize,
    /// Attempts this worker process has taken (forgotten on a crash).
    taken: HashSet<String>,
    /// Reports written but not yet visible, released in random order.
    pub delayed: Vec<WorkflowEvent>,
}

impl Workers {
    /// Takes the next record of the tasks log, if any, and reports on it.
    pub fn work(&mut self, tasks: &Log, rng: &mut Rng, now_ms: i64, faults: bool) -> bool {
        let Some(m) = tasks.records.get(self.index) else {
            return false;
        };
        self.index += 1;
        if !faults || rng.chance(300) {
            self.committed = self.index;
        }
        let control = weft_shared::kafka::header_map(m.headers()).contains_key(h::CONTROL);
        if control {
            return true;
        }
        let d = TaskDispatch::decode(m.payload().unwrap_or_default()).expect("dispatch decodes");
        let fresh = self.taken.insert(d.attempt_key());
        let again = faults && rng.chance(300);
        if !fresh && !again {
            return true; // the worker drops a dispatch it already took
        }
        if faults && rng.chance(80) {
            return true; // crashed before reporting: the execution timeout recovers it
        }
        let started = report(&d, T::TaskStarted, now_ms, DataMap::new());
        let outcome = if faults && rng.chance(120) {
            let mut data = DataMap::new();
            data.insert("error_type".into(), WorkflowData::Str("flaky".into()));
            data.insert("message".into(), WorkflowData::Str("simulated".into()));
            data.insert("retryable".into(), WorkflowData::Bool(true));
            report(&d, T::TaskFailed, now_ms + 1, data)
        } else {
            report(&d, T::TaskCompleted, now_ms + 1, DataMap::new())
        };
        self.delayed.push(started);
        self.delayed.push(outcome.clone());
        if faults && rng.chance(100) {
            self.delayed.push(outcome); // a redelivered result
        }
        true
    }

    /// Releases delayed reports: in order without faults, else any of them.
    pub fn release(&mut self, rng: &mut Rng, faults: bool) -> Option<WorkflowEvent> {
        if self.delayed.is_empty() {
            return None;
        }
        let i = if faults && rng.chance(300) {
            rng.below(self.delayed.len() as u64) as usize
        } else {
            0
        };
        Some(self.delayed.remove(i))
    }

    /// A worker process crash: it forgets what it took (reports already
    /// written stay written) and reads again from the committed position.
    pub fn crash(&mut self) {
        self.taken.clear();
        self.index = self.committed;
    }
}

/// The inputs of `events` (not decisions), by instance: their idempotency keys.
pub fn inputs(events: &Log) -> BTreeMap<weft_shared::ids::InstanceId, BTreeSet<String>> {
    let mut out: BTreeMap<_, BTreeSet<String>> = BTreeMap::new();
    for m in &events.records {
        if let Ok(e) = WorkflowEvent::decode(m.payload().unwrap_or_default()) {
            if !e.is_decision() {
                out.entry(e.instance_id)
                    .or_default()
                    .insert(e.idempotency_key);
            }
        }
    }
    out
}
