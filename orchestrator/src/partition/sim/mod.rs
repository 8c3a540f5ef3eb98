//! A seeded, deterministic simulation of partition processors and workers,
//! hunting for the ways "the log is the truth" could break.
//!
//! Each schedule runs a few diamond workflows through the real processor
//! (fold, outbox, dispatch rule, offset continuity, go-live, timers' index)
//! over in-memory topics, with two replicas that each keep their own RocksDB
//! projection, and injects at random: processor crashes after a batch was
//! written and before or after it was published, records lost between the
//! consumer and a processor, rebalances to the other replica (with a zombie
//! flush from the old owner), re-assignments that read the stored offset too
//! early, early go-lives, worker crashes, redelivered and reordered worker
//! reports, offset holes (transaction markers), and pipelined publishes that
//! land several batches later (or after their processor crashed) with their
//! outbox rows deleted only by a later write. Then it lets the system settle
//! and checks:
//!
//! - every instance ended;
//! - a projection folded from the whole log from scratch equals the live one
//!   (instance states, histories, analytics, every input's idempotency mark);
//! - no idempotency key twice in any history;
//! - every input of the log was folded (no record skipped);
//! - no attempt was dispatched by a processor that opened after the attempt
//!   had reported.
//!
//! A failing schedule prints its seed; `WEFT_SIM_SEED=<seed>` replays exactly
//! that one, `WEFT_SIM_SCHEDULES=<n>` runs more (`make soak`). Seeds that ever
//! failed are kept in [`REGRESSIONS`].

mod world;

use std::collections::{BTreeMap, BTreeSet};

use tokio::sync::mpsc;
use weft_shared::ids::InstanceId;
use weft_shared::{WorkflowEvent, WorkflowEventType as T};

use super::tests::{input_record, placement, processor};
use super::{Partition, Seek, Shared};
use crate::store::{OutboxKind, OutboxRecord, Store};
use world::{inputs, Cursor, Log, Rng, Workers};

const TYPE: &str = "sim";
const DEFINITION: &str = r#"
type: sim
retry: {max_attempts: 4, backoff: fixed, base_delay: 100ms}
tasks:
  - {name: A, handler: noop, timeout: {execution: 2s, response: 1s}}
  - {name: B, handler: noop, depends_on: [A], timeout: {execution: 2s, response: 1s}}
  - {name: C, handler: noop, depends_on: [A], timeout: {execution: 2s, response: 1s}}
  - {name: D, handler: noop, depends_on: [B, C], timeout: {execution: 2s, response: 1s}}
"#;
/// Seeds that once failed: run first, every time.
const REGRESSIONS: &[u64] = &[];
/// Schedules `make test` runs.
const SCHEDULES: u64 = 1_000;
/// Steps with faults, then steps to settle.
const FAULT_STEPS: u64 = 300;
const SETTLE_STEPS: u64 = 20_000;

/// What every schedule shares: the processors' dependencies and three stores
/// (two replicas and the rebuild), kept across schedules (each schedule has
/// its own topic name and instance ids, so they never meet).
struct Env {
    base: Shared,
    stores: Vec<Store>,
}

struct Replica {
    shared: Shared,
    proc: Option<Partition>,
    cursor: Cursor,
    seeks: mpsc::UnboundedReceiver<Seek>,
    seeks_tx: mpsc::UnboundedSender<Seek>,
    /// The step its processor opened at (its replay end covers reports appended before).
    opened_at: u64,
}

/// Flights that landed, and of those, how many after their processor was gone.
static LANDED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
static LANDED_ORPHANED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// A pipelined publish still on its way to the broker.
struct Flight {
    replica: usize,
    /// The step the publishing processor opened at (which processor it was).
    opened_at: u64,
    seqs: Vec<u64>,
    records: Vec<OutboxRecord>,
}

struct Schedule {
    seed: u64,
    rng: Rng,
    topic: String,
    events: Log,
    tasks: Log,
    replicas: Vec<Replica>,
    owner: usize,
    workers: Workers,
    step: u64,
    clock_ms: i64,
    instances: Vec<InstanceId>,
    /// The step each attempt first reported at.
    reported: BTreeMap<String, u64>,
    violations: Vec<String>,
    /// Publishes in the air, in the order they were handed to the producer.
    flights: Vec<Flight>,
}

impl Schedule {
    fn new(env: &Env, seed: u64) -> Self {
        let replicas = (0..2)
            .map(|i| {
                let (seeks_tx, seeks) = mpsc::unbounded_channel();
                Replica {
                    shared: Shared {
                        store: env.stores[i].clone(),
                        ..env.base.clone()
                    },
                    proc: None,
                    cursor: Cursor {
                        index: 0,
                        prev_next: 0,
                    },
                    seeks,
                    seeks_tx,
                    opened_at: 0,
                }
            })
            .collect();
        Self {
            seed,
            rng: Rng::new(seed),
            topic: format!("weft.sim.events.{seed}"),
            events: Log::default(),
            tasks: Log::default(),
            replicas,
            owner: 0,
            workers: Workers::default(),
            step: 0,
            // Far in the future: every registered definition is visible to every start.
            clock_ms: 4_000_000_000_000,
            instances: Vec::new(),
            reported: BTreeMap::new(),
            violations: Vec::new(),
            flights: Vec::new(),
        }
    }

    fn fail(&self, what: impl std::fmt::Display) -> String {
        format!(
            "simulation seed {} failed at step {}: {what}\n  replay: WEFT_SIM_SEED={} cargo nextest run -p weft-orchestrator partition::sim",
            self.seed, self.step, self.seed
        )
    }

    /// What the world looks like, for a failure message.
    fn describe(&self) -> String {
        let r = &self.replicas[self.owner];
        let mut out = format!(
            "owner {} cursor {:?} events {} (high {}) tasks {} worker at {} delayed {}\n",
            self.owner,
            r.cursor,
            self.events.records.len(),
            self.events.high(),
            self.tasks.records.len(),
            self.workers.index,
            self.workers.delayed.len()
        );
        if let Some(p) = &r.proc {
            out += &format!(
                "processor live {} held {} expected {} replay_end {} outbox {} stash {}\n",
                p.live,
                p.held,
                p.expected,
                p.replay_end,
                p.outbox.records.len(),
                p.stash.len()
            );
        }
        for id in &self.instances {
            let s = r.shared.store.instance(TYPE, *id).ok().flatten();
            if !s.as_ref().is_some_and(|s| s.state.is_terminal()) {
                let history = r
                    .shared
                    .store
                    .events(TYPE, *id, 1, None, 10_000)
                    .unwrap_or_default();
                for e in history {
                    out += &format!(
                        "  #{} {} {} {}\n",
                        e.sequence_number,
                        e.event_type,
                        e.metadata
                            .get("weft.task")
                            .map(String::as_str)
                            .unwrap_or(""),
                        e.metadata
                            .get("weft.attempt")
                            .map(String::as_str)
                            .unwrap_or("")
                    );
                }
            }
            out += &format!(
                "{id}: {:?} {:?}\n",
                s.as_ref().map(|s| s.state),
                s.as_ref().map(|s| s
                    .tasks
                    .iter()
                    .map(|(n, t)| format!("{n}={}#{}", t.state, t.attempt))
                    .collect::<Vec<_>>())
            );
        }
        out
    }

    /// Appends an input (a client's start, a worker's report, a timer fire).
    fn append_input(&mut self, e: &WorkflowEvent) {
        if matches!(
            e.event_type,
            T::TaskStarted | T::TaskCompleted | T::TaskFailed
        ) {
            if let (Some(task), Some(attempt)) =
                (e.metadata.get("weft.task"), e.metadata.get("weft.attempt"))
            {
                self.reported
                    .entry(format!("{}:{task}:{attempt}", e.instance_id))
                    .or_insert(self.step);
            }
        }
        let marker = self.rng.chance(100);
        self.events.append(
            &self.topic,
            &input_record(&self.topic, e),
            self.step,
            marker,
        );
    }

    /// Appends what a processor of replica `from` published.
    fn append_published(&mut self, from: usize, r: &OutboxRecord) {
        match r.kind {
            OutboxKind::Event | OutboxKind::Forward => {
                let marker = self.rng.chance(100);
                self.events.append(&self.topic, r, self.step, marker);
            }
            OutboxKind::Dispatch => {
                if let Some(at) = self.reported.get(&r.ident) {
                    if *at < self.replicas[from].opened_at {
                        self.violations.push(format!(
                            "step {}: attempt {} dispatched by a processor opened at step {} after it reported at step {at}",
                            self.step, r.ident, self.replicas[from].opened_at
                        ));
                    }
                }
                self.tasks.append("tasks", r, self.step, false);
            }
            OutboxKind::Control => {
                self.tasks.append("tasks", r, self.step, false);
            }
            OutboxKind::Dlq => self.violations.push(format!(
                "step {}: a record went to the DLQ: {:?}",
                self.step, r.headers
            )),
            OutboxKind::Snapshot => {}
        }
    }

    fn open(&mut self, i: usize) {
        if self.replicas[i].proc.is_some() {
            return;
        }
        let r = &mut self.replicas[i];
        let at = placement(&self.topic, 0, TYPE, self.events.high(), 1);
        let mut p = processor(r.shared.clone(), at, r.seeks_tx.clone());
        // The simulated consumer serves a seek at once and has no stale
        // records in flight: a gap after a seek means another one is needed.
        p.seek_again_after = std::time::Duration::ZERO;
        r.proc = Some(p);
        r.opened_at = self.step;
    }

    /// Publishes outbox entries `seqs` of replica `i`; may crash before
    /// forgetting them, or leave them in the air to land later (pipelining).
    fn publish(&mut self, i: usize, seqs: &[u64], faults: bool) {
        let Some(p) = self.replicas[i].proc.as_mut() else {
            return;
        };
        let (records, withheld) = p.publishable(seqs);
        if faults && !records.is_empty() && self.rng.chance(300) {
            // In the air: the processor goes on deciding; the records land later.
            p.forget_later(&withheld);
            let seqs: Vec<u64> = records.iter().map(|(s, _)| *s).collect();
            p.flights.seqs.extend(seqs.iter().copied());
            self.flights.push(Flight {
                replica: i,
                opened_at: self.replicas[i].opened_at,
                seqs,
                records: records.into_iter().map(|(_, r)| r).collect(),
            });
            return;
        }
        for (_, r) in &records {
            self.append_published(i, r);
        }
        if faults && self.rng.chance(30) && i == self.owner {
            self.crash(); // after publishing, before clearing the outbox
            return;
        }
        let done: Vec<u64> = records.iter().map(|(s, _)| *s).chain(withheld).collect();
        let later = faults && self.rng.chance(500);
        if let Some(p) = self.replicas[i].proc.as_mut() {
            if later {
                p.forget_later(&done); // rows deleted by the next batch's write
            } else {
                p.forget(&done);
            }
        }
    }

    /// The oldest flight (or, after a failed publish, any) lands: its records
    /// reach the topics whatever became of the processor that sent them.
    fn land(&mut self, any: bool) -> bool {
        if self.flights.is_empty() {
            return false;
        }
        let at = if any {
            self.rng.below(self.flights.len() as u64) as usize
        } else {
            0
        };
        let f = self.flights.remove(at);
        let opened_at = self.replicas[f.replica].opened_at;
        let alive = self.replicas[f.replica].proc.is_some() && opened_at == f.opened_at;
        LANDED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if !alive {
            LANDED_ORPHANED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        for r in &f.records {
            // Judged against the processor that sent it.
            let now = std::mem::replace(&mut self.replicas[f.replica].opened_at, f.opened_at);
            self.append_published(f.replica, r);
            self.replicas[f.replica].opened_at = now;
        }
        if let Some(p) = self.replicas[f.replica].proc.as_mut().filter(|_| alive) {
            for seq in &f.seqs {
                p.flights.seqs.remove(seq);
            }
            p.forget_later(&f.seqs);
        }
        true
    }

    /// The owner folds up to `n` records; returns whether it folded any.
    fn deliver(&mut self, n: usize, faults: bool) -> bool {
        let i = self.owner;
        self.open(i);
        let fed = self.replicas[i].cursor.take(&self.events, n);
        if fed.is_empty() {
            return false;
        }
        let r = &mut self.replicas[i];
        let p = r.proc.as_mut().expect("opened");
        let batch = p.admit(fed);
        while let Ok(seek) = r.seeks.try_recv() {
            r.cursor = Cursor::at(&self.events, seek.offset);
        }
        if batch.is_empty() {
            return true;
        }
        let (added, folded) = p.apply_batch(&batch).expect("apply batch");
        assert_eq!(folded, batch.len(), "the catalog decides every start");
        if faults && self.rng.chance(30) {
            // Crashed after writing the batch, before publishing it.
            self.crash();
            return true;
        }
        if let Some(seqs) = p.after_apply(added) {
            self.publish(i, &seqs, faults);
        }
        true
    }

    /// The owner, if live, fires its due timers.
    fn fire_timers(&mut self) -> bool {
        let i = self.owner;
        let live = self.replicas[i].proc.as_ref().is_some_and(|p| p.live);
        if !live {
            return false;
        }
        let due = self.replicas[i]
            .shared
            .store
            .due_timers(&self.topic, 0, self.clock_ms, 1_000)
            .expect("due timers");
        let fired = !due.is_empty();
        for (id, timer) in due {
            self.append_input(&timer.fire_event(TYPE, id));
        }
        fired
    }

    /// The owner's processor fails; its supervisor opens a new one and seeks
    /// the consumer back to the stored offset.
    fn crash(&mut self) {
        let r = &mut self.replicas[self.owner];
        r.proc = None;
        let stored = r
            .shared
            .store
            .offset(&self.topic, 0)
            .expect("offset")
            .unwrap_or(0);
        r.cursor = Cursor::at(&self.events, stored);
        while r.seeks.try_recv().is_ok() {}
    }

    fn rebalance(&mut self) {
        let old = self.owner;
        if self.rng.chance(500) {
            // The old owner's last flush lands after the hand-off (a zombie;
            // only a live processor flushes).
            if let Some(p) = self.replicas[old]
                .proc
                .as_ref()
                .filter(|p| p.live && !p.held)
            {
                let all: Vec<u64> = p.outbox.records.keys().copied().collect();
                let (records, _) = p.publishable(&all);
                for (_, r) in &records {
                    self.append_published(old, r);
                }
            }
        }
        self.replicas[old].proc = None;
        self.owner = 1 - old;
        self.reassign(0);
    }

    /// The owner's partition is assigned anew; the consumer starts `early`
    /// records before the stored offset (read while the old processor drained).
    fn reassign(&mut self, early: i64) {
        let r = &mut self.replicas[self.owner];
        r.proc = None;
        let stored = r
            .shared
            .store
            .offset(&self.topic, 0)
            .expect("offset")
            .unwrap_or(0);
        r.cursor = Cursor::at(&self.events, (stored - early).max(0));
        while r.seeks.try_recv().is_ok() {}
    }

    fn start_workflow(&mut self) {
        let n = self.instances.len() as u64;
        let id = InstanceId::derived(&[&self.seed.to_be_bytes(), &n.to_be_bytes()]);
        let mut e = WorkflowEvent::new(
            T::WorkflowCreated,
            TYPE,
            id,
            format!("start-{n}"),
            self.clock_ms,
        );
        e.event_id = weft_shared::ids::EventId::derived(&[id.as_bytes(), b"created"]);
        e.metadata
            .insert("weft.definition_version".into(), "1".into());
        e.metadata.insert("weft.source_kind".into(), "input".into());
        self.append_input(&e);
        self.instances.push(id);
    }

    fn all_ended(&self) -> bool {
        let store = &self.replicas[self.owner].shared.store;
        self.instances.iter().all(|id| {
            store
                .instance(TYPE, *id)
                .ok()
                .flatten()
                .is_some_and(|s| s.state.is_terminal())
        })
    }

    fn fault_step(&mut self) {
        if self.instances.len() < 3 && self.rng.chance(60) {
            self.start_workflow();
        }
        match self.rng.below(100) {
            0..=39 => {
                let n = 1 + self.rng.below(6) as usize;
                self.deliver(n, true);
            }
            40..=59 => {
                let now = self.clock_ms;
                self.workers.work(&self.tasks, &mut self.rng, now, true);
            }
            60..=71 => {
                if let Some(e) = self.workers.release(&mut self.rng, true) {
                    self.append_input(&e);
                }
            }
            72..=75 => {
                self.clock_ms += 500;
                self.fire_timers();
            }
            76..=78 => self.crash(),
            79..=81 => {
                // Records handed over never reach the processor, and a later
                // one does: it must see the gap and seek back.
                let i = self.owner;
                let n = 1 + self.rng.below(3) as usize;
                if self.replicas[i].cursor.index + n < self.events.records.len() {
                    self.replicas[i].cursor.lose(&self.events, n);
                }
            }
            82..=84 => self.rebalance(),
            85..=86 => {
                let early = self.rng.below(5) as i64;
                self.reassign(early);
            }
            87..=88 => {
                let i = self.owner;
                self.open(i);
                if let Some(p) = self.replicas[i].proc.as_mut() {
                    if !p.live {
                        p.set_live(true);
                        let all: Vec<u64> = p.outbox.records.keys().copied().collect();
                        self.publish(i, &all, true);
                    }
                }
            }
            89..=90 => self.workers.crash(),
            91..=95 => {
                let any = self.rng.chance(100);
                self.land(any);
            }
            _ => {
                self.deliver(1, true);
            }
        }
    }

    /// Lets everything settle without faults; time moves on when nothing else does.
    fn settle(&mut self) -> Result<(), String> {
        for _ in 0..SETTLE_STEPS {
            self.step += 1;
            let mut busy = self.land(false);
            busy |= self.deliver(64, false);
            let now = self.clock_ms;
            busy |= self.workers.work(&self.tasks, &mut self.rng, now, false);
            while let Some(e) = self.workers.release(&mut self.rng, false) {
                self.append_input(&e);
                busy = true;
            }
            if !busy {
                if self.all_ended() && self.instances.len() >= 3 {
                    return Ok(());
                }
                if self.instances.len() < 3 {
                    self.start_workflow();
                    continue;
                }
                self.clock_ms += 1_000;
                self.fire_timers();
            }
        }
        Err(self.fail(format!(
            "the instances did not all end\n{}",
            self.describe()
        )))
    }

    fn run(&mut self) -> Result<(), String> {
        for _ in 0..FAULT_STEPS {
            self.step += 1;
            self.clock_ms += self.rng.below(40) as i64;
            self.fault_step();
        }
        self.settle()?;
        if let Some(v) = self.violations.first() {
            return Err(self.fail(v));
        }
        Ok(())
    }

    /// Folds the whole log from scratch into `store` (no faults) and compares.
    fn check_rebuild(&mut self, store: &Store) -> Result<(), String> {
        let (seeks_tx, _seeks) = mpsc::unbounded_channel();
        let shared = Shared {
            store: store.clone(),
            ..self.replicas[0].shared.clone()
        };
        let at = placement(&self.topic, 0, TYPE, self.events.high(), 1);
        let mut p = processor(shared, at, seeks_tx);
        let mut cursor = Cursor::at(&self.events, 0);
        loop {
            let fed = cursor.take(&self.events, 256);
            if fed.is_empty() {
                break;
            }
            let batch = p.admit(fed);
            p.apply_batch(&batch).map_err(|e| e.to_string())?;
        }
        let live = &self.replicas[self.owner].shared.store;
        for id in &self.instances {
            let (a, b) = (live.instance(TYPE, *id), store.instance(TYPE, *id));
            let (a, b) = (a.map_err(|e| e.to_string())?, b.map_err(|e| e.to_string())?);
            if a != b {
                return Err(self.fail(format!("instance {id}: rebuilt {b:?}\n live {a:?}")));
            }
            let ha = live
                .events(TYPE, *id, 1, None, 1_000_000)
                .map_err(|e| e.to_string())?;
            let hb = store
                .events(TYPE, *id, 1, None, 1_000_000)
                .map_err(|e| e.to_string())?;
            if ha != hb {
                return Err(self.fail(format!(
                    "history of {id} differs: live {} events, rebuilt {}",
                    ha.len(),
                    hb.len()
                )));
            }
            let keys: BTreeSet<&str> = ha.iter().map(|e| e.idempotency_key.as_str()).collect();
            if keys.len() != ha.len() {
                return Err(self.fail(format!("an idempotency key twice in the history of {id}")));
            }
        }
        for (id, keys) in inputs(&self.events) {
            for key in keys {
                let a = live.seen_as(TYPE, id, &key).map_err(|e| e.to_string())?;
                let b = store.seen_as(TYPE, id, &key).map_err(|e| e.to_string())?;
                if a.is_none() {
                    return Err(self.fail(format!("input {key} of {id} was never folded")));
                }
                if a != b {
                    return Err(
                        self.fail(format!("input {key} of {id}: live {a:?}, rebuilt {b:?}"))
                    );
                }
            }
        }
        let (sa, sb) = (
            live.analytics(&self.topic, 0),
            store.analytics(&self.topic, 0),
        );
        if sa.map_err(|e| e.to_string())? != sb.map_err(|e| e.to_string())? {
            return Err(self.fail("analytics differ between live and rebuilt"));
        }
        Ok(())
    }
}

fn seeds() -> Vec<u64> {
    if let Ok(seed) = std::env::var("WEFT_SIM_SEED") {
        return vec![seed.parse().expect("WEFT_SIM_SEED is a number")];
    }
    let n: u64 = std::env::var("WEFT_SIM_SCHEDULES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(SCHEDULES);
    REGRESSIONS.iter().copied().chain(1..=n).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedules_keep_the_log_the_truth() {
    let h = super::tests::harness(&[DEFINITION], 1, 3, &[]).await;
    let env = Env {
        base: h.shared.clone(),
        stores: h.stores.clone(),
    };
    let mut stats = (0u64, 0u64, 0u64);
    let (mut completed, mut instances, mut steps) = (0u64, 0u64, 0u64);
    for seed in seeds() {
        let mut s = Schedule::new(&env, seed);
        let result = s.run().and_then(|()| {
            let rebuild = env.stores[2].clone();
            s.check_rebuild(&rebuild)
        });
        if let Err(e) = result {
            panic!("{e}");
        }
        stats.0 += 1;
        stats.1 += s.events.records.len() as u64;
        stats.2 += s.tasks.records.len() as u64;
        let store = &s.replicas[s.owner].shared.store;
        completed += s
            .instances
            .iter()
            .filter(|id| {
                store.instance(TYPE, **id).ok().flatten().map(|i| i.state)
                    == Some(weft_shared::WorkflowState::Completed)
            })
            .count() as u64;
        instances += s.instances.len() as u64;
        steps += s.step;
    }
    let m = &env.base.metrics;
    let landed = LANDED.load(std::sync::atomic::Ordering::Relaxed);
    let orphaned = LANDED_ORPHANED.load(std::sync::atomic::Ordering::Relaxed);
    eprintln!(
        "{} schedules ({steps} steps), {completed} of {instances} instances completed, {} event records, {} task records; offset gaps sought back {}, dispatches withheld {}, duplicates dropped {}, pipelined publishes landed late {landed} (after their processor was gone {orphaned})",
        stats.0,
        stats.1,
        stats.2,
        m.offset_gaps.get(),
        m.dispatches_withheld.get(),
        m.duplicates.get()
    );
    assert!(
        orphaned > 0 && landed > orphaned,
        "publishes in the air were not simulated"
    );
    // Many workflows complete (the others exhausted their retries under the
    // injected failures and timeouts): the schedules exercised the whole engine.
    assert!(
        completed * 4 > instances,
        "{completed} of {instances} completed"
    );
    // The faults were really injected: the checks above had something to catch.
    assert!(
        m.offset_gaps.get() > 0,
        "no schedule lost records on the way"
    );
    assert!(
        m.dispatches_withheld.get() > 0,
        "no schedule withheld a dispatch"
    );
    assert!(m.duplicates.get() > 0, "no schedule redelivered anything");
}
