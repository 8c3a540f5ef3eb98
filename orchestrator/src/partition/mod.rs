//! One source partition of an events topic, owned by this orchestrator: it
//! folds batches of records into the projection with the pure decider and
//! publishes what was decided through the outbox.
//!
//! Two watermarks govern it. The *stored offset* (in RocksDB, written with the
//! projection) says how far the projection has folded; a record is folded only
//! if it follows it ([`feed`]), so no record is skipped or folded twice,
//! whatever happened to the processor before. The *replay end* (the
//! partition's high watermark when this owner took it) says how far earlier
//! owners may already have published decisions. Below the replay end, derived
//! records are held in the outbox and struck off as their copies show up in the
//! topic (or, for dispatches, as their attempt shows progress); at the replay
//! end whatever is left is published. Above it, decisions are published as they
//! are made. A dispatch is published only while its attempt still waits for a
//! worker ([`outbox::dispatch_wanted`]). So a restart, a rebalance and a
//! rebuild from an empty data directory all converge on the same projection
//! without publishing any decision twice or any dispatch after its attempt
//! reported.
//!
//! Submodules: [`apply`] folds a batch, [`pipeline`] publishes a live
//! partition's batches without waiting for each ack, [`publish`] flushes the
//! outbox stop-and-wait (go-live, retries, transactions), [`supervise`] opens
//! and restarts the processor, [`replay`] decides when the replay is over,
//! [`timers`] fires durable timers.

mod apply;
pub mod feed;
pub mod outbox;
mod pipeline;
mod publish;
mod replay;
mod route;
#[cfg(test)]
mod sim;
pub mod supervise;
#[cfg(test)]
mod tests;
mod timers;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::producer::FutureProducer;
use tokio::sync::mpsc;
use weft_shared::config::{KafkaSettings, TransactionsMode};
use weft_shared::observe::analytics::TypeStats;
use weft_shared::{Topics, WorkflowEvent};

use crate::definitions::Registry;
use crate::metrics::Metrics;
use crate::partitioner::Partitioner;
use crate::publisher::Publisher;
use crate::status::Status;
use crate::store::Store;
use feed::{judge, Fed, Verdict};
use outbox::Outbox;
pub use replay::ReplayProgress;

/// How long a processor waits for the records it asked the consumer to seek
/// back to before it asks again.
const SEEK_AGAIN_AFTER: Duration = Duration::from_secs(2);
/// A batch that cannot be written this many times in a row ends the
/// processor; its supervisor opens a new one from the stored state.
const APPLY_ATTEMPTS: u32 = 3;

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
    /// Watches live dispatches of constrained lanes for want of a capable node.
    pub unschedulable: Option<crate::unschedulable::UnschedulableWatch>,
}

/// A request to the events consumer: seek `topic`/`partition` back to `offset`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seek {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
}

/// Where a processor sits and what it knows of its topic when it opens.
#[derive(Clone, Debug)]
pub struct Placement {
    pub topic: String,
    pub partition: i32,
    pub workflow_type: String,
    /// The high watermark when this owner took the partition.
    pub replay_end: i64,
    /// Partitions of the topic, for the wrong-partition check (`None`: unknown, no check).
    pub partition_count: Option<i32>,
}

/// Why a processor stopped.
#[derive(Debug, PartialEq, Eq)]
pub enum Exit {
    /// The channel closed: the partition was revoked or the engine stopped.
    Revoked,
    /// It failed while still assigned; a new processor continues from the stored state.
    Failed(String),
    /// Its producer can never publish again (fenced by a newer owner).
    Fenced(String),
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
    /// Went live before the replay reached the replay end (a safety valve):
    /// dispatches decided below it wait until it does.
    held: bool,
    /// The stored offset: the next offset to fold.
    expected: i64,
    /// Records admitted but not folded yet: from a start the catalog cannot
    /// decide yet on (ADR 0011), in order.
    stash: Vec<rdkafka::message::OwnedMessage>,
    /// When this processor last asked the consumer to seek back.
    seeking: Option<Instant>,
    /// How long it waits for the records it asked for before it asks again.
    seek_again_after: Duration,
    seeks: mpsc::UnboundedSender<Seek>,
    /// What the engine reports of its consumer while this partition replays.
    progress: ReplayProgress,
    timers: timers::Firing,
    /// Analytics of this partition's instances, as of the stored offset.
    stats: TypeStats,
    /// The hash Weft's producers place instance keys with (`None`: no check).
    placement: Option<Partitioner>,
    partition_count: Option<i32>,
    /// Batches on their way to the broker ([`pipeline`]).
    flights: pipeline::Flights,
    /// The lane topic of each task routed so far.
    routes: route::Routes,
}

impl Drop for Partition {
    fn drop(&mut self) {
        // Flights of a processor that failed still land; they are no longer counted here.
        self.shared.metrics.flights.sub(self.flights.len() as i64);
    }
}

impl Partition {
    /// Loads the partition's stored offset, outbox and analytics.
    pub fn open(
        shared: Shared,
        at: Placement,
        progress: ReplayProgress,
        seeks: mpsc::UnboundedSender<Seek>,
    ) -> crate::Result<Self> {
        let (topic, partition) = (at.topic, at.partition);
        let outbox = Outbox::load(shared.store.outbox(&topic, partition)?);
        let expected = shared.store.offset(&topic, partition)?.unwrap_or(0);
        let stats = shared.store.analytics(&topic, partition)?;
        let publisher = if shared.kafka.transactions == TransactionsMode::On {
            Publisher::transactional(
                &shared.kafka,
                &format!("weft-orchestrator-{topic}-{partition}"),
            )
            .map_err(|e| crate::Error::Publish(e.to_string()))?
        } else {
            Publisher::Plain(shared.producer.clone())
        };
        let placement = Partitioner::from_settings(&shared.kafka);
        Ok(Self {
            shared,
            topic,
            partition,
            workflow_type: at.workflow_type,
            outbox,
            publisher,
            live: expected >= at.replay_end,
            replay_end: at.replay_end,
            held: false,
            expected,
            stash: Vec::new(),
            seeking: None,
            seek_again_after: SEEK_AGAIN_AFTER,
            seeks,
            progress,
            timers: timers::Firing::default(),
            stats,
            placement,
            partition_count: at.partition_count,
            flights: pipeline::Flights::default(),
            routes: route::Routes::default(),
        })
    }

    fn scope(&self) -> String {
        crate::status::scope(&self.topic, self.partition)
    }

    /// Processes records until the channel closes (the partition was revoked)
    /// or the processor fails.
    pub async fn run(&mut self, rx: &mut mpsc::Receiver<Fed>) -> Exit {
        let scope = self.scope();
        self.shared.status.set_live(&scope, self.live);
        if self.live {
            if let Err(exit) = self.flush_all().await {
                return exit;
            }
        }
        tracing::info!(topic = %self.topic, partition = self.partition, replay_end = self.replay_end, stored_offset = self.expected, live = self.live, "partition processor started");
        let mut idle = (
            Instant::now(),
            self.progress.position.load(Ordering::Acquire),
        );
        // One interval for the whole run: a partition that receives records more
        // often than the period still fires its timers (and checks its replay end).
        let mut tick = tokio::time::interval(timers::CHECK_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut catalog = self.shared.registry.watch();
        loop {
            let first = tokio::select! {
                m = rx.recv() => m,
                landed = async { self.flights.front().expect("a flight").await }, if !self.flights.is_empty() => {
                    if let Err(exit) = self.land_front(landed).await {
                        return exit;
                    }
                    continue;
                }
                changed = catalog.changed(), if !self.stash.is_empty() => {
                    if changed.is_ok() {
                        if let Err(exit) = self.fold(Vec::new()).await {
                            return exit;
                        }
                    }
                    continue;
                }
                _ = tick.tick() => {
                    if let Err(exit) = self.on_tick(rx, &mut idle).await {
                        return exit;
                    }
                    continue;
                }
            };
            let Some(first) = first else {
                // What is in the air lands before the hand-off (the next owner
                // on this replica then finds its rows gone).
                if let Err(exit) = self.drain().await {
                    return exit;
                }
                tracing::info!(topic = %self.topic, partition = self.partition, "partition released");
                return Exit::Revoked;
            };
            idle.0 = Instant::now();
            let mut fed = vec![first];
            while fed.len() < self.shared.batch_max {
                match rx.try_recv() {
                    Ok(m) => fed.push(m),
                    Err(_) => break,
                }
            }
            let batch = self.admit(fed);
            if let Err(exit) = self.fold(batch).await {
                return exit;
            }
        }
    }

    /// Every [`timers::CHECK_EVERY`]: tries the stash again, releases what an
    /// early go-live held once the replay caught up, fires due timers (live)
    /// or checks whether the replay is over.
    async fn on_tick(
        &mut self,
        rx: &mpsc::Receiver<Fed>,
        idle: &mut (Instant, i64),
    ) -> Result<(), Exit> {
        if !self.stash.is_empty() {
            self.fold(Vec::new()).await?;
        }
        if rx.is_empty() {
            self.delete_forgotten();
        }
        let settled = rx.is_empty() && self.seeking.is_none() && self.stash.is_empty();
        let caught_up = self.progress.position.load(Ordering::Acquire) >= self.replay_end;
        if self.live && self.held && settled && caught_up {
            // The replay caught up after an early go-live: release what it held.
            self.held = false;
            self.flush_all().await?;
        }
        if self.live {
            self.fire_due_timers().await;
        } else if settled {
            self.check_replay_end(idle).await?;
        }
        Ok(())
    }

    /// Folds the stash and then `batch`, and publishes what that decided;
    /// what the catalog cannot decide yet stays in the stash.
    async fn fold(&mut self, batch: Vec<rdkafka::message::OwnedMessage>) -> Result<(), Exit> {
        let mut records = std::mem::take(&mut self.stash);
        records.extend(batch);
        if records.is_empty() {
            return Ok(());
        }
        let started = Instant::now();
        let mut attempts = 0;
        let (added, folded) = loop {
            match self.apply_batch(&records) {
                Ok(done) => break done,
                Err(e) => {
                    attempts += 1;
                    tracing::error!(topic = %self.topic, partition = self.partition, attempts, error = %e, "applying batch failed");
                    if attempts >= APPLY_ATTEMPTS {
                        return Err(Exit::Failed(format!("applying a batch failed: {e}")));
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        };
        self.stash = records.split_off(folded);
        self.shared.metrics.batch_records.observe(folded as f64);
        if let Some(seqs) = self.after_apply(added) {
            self.launch(&seqs).await?;
        }
        self.shared
            .metrics
            .batch_seconds
            .observe(started.elapsed().as_secs_f64());
        Ok(())
    }

    /// Keeps the records of `fed` that follow the stored offset; on a gap
    /// asks the consumer to seek back to it.
    fn admit(&mut self, fed: Vec<Fed>) -> Vec<rdkafka::message::OwnedMessage> {
        let mut next = self
            .stash
            .last()
            .map_or(self.expected, |m| rdkafka::Message::offset(m) + 1);
        let mut out = Vec::with_capacity(fed.len());
        for f in fed {
            match judge(next, f.offset(), f.prev_next) {
                Verdict::Apply => {
                    next = f.offset() + 1;
                    self.seeking = None;
                    out.push(f.msg);
                }
                Verdict::Behind => {
                    tracing::debug!(topic = %self.topic, partition = self.partition, offset = f.offset(), stored_offset = next, "record already folded; dropped");
                }
                Verdict::Gap => {
                    let again = self
                        .seeking
                        .is_none_or(|at| at.elapsed() >= self.seek_again_after);
                    if again {
                        self.shared.metrics.offset_gaps.inc();
                        tracing::warn!(topic = %self.topic, partition = self.partition, offset = f.offset(), prev_next = f.prev_next, stored_offset = next, "record does not follow the stored offset; seeking back");
                        let _ = self.seeks.send(Seek {
                            topic: self.topic.clone(),
                            partition: self.partition,
                            offset: next,
                        });
                        self.seeking = Some(Instant::now());
                    }
                }
            }
        }
        out
    }

    /// The outbox entries to publish after a batch that added `added` was
    /// applied: those, once live; everything, when this batch ended the
    /// replay (or caught up after an early go-live); nothing while replaying.
    fn after_apply(&mut self, added: Vec<u64>) -> Option<Vec<u64>> {
        if self.live && self.held && self.expected >= self.replay_end {
            self.held = false;
            Some(self.outbox.records.keys().copied().collect())
        } else if self.live {
            Some(added)
        } else if self.expected >= self.replay_end {
            self.set_live(false);
            Some(self.outbox.records.keys().copied().collect())
        } else {
            None
        }
    }

    /// Marks the partition live; `early` when a safety valve ends the replay
    /// before the consumer handed over everything below the replay end
    /// (dispatches decided so far are then held until it has).
    fn set_live(&mut self, early: bool) {
        if self.live {
            return;
        }
        self.live = true;
        self.held = early;
        tracing::info!(topic = %self.topic, partition = self.partition, pending = self.outbox.records.len(), held = self.held, "replay complete; partition live");
        self.shared.status.set_live(&self.scope(), true);
    }

    /// Goes live (see [`Self::set_live`]) and publishes what the replay left.
    async fn go_live(&mut self, early: bool) -> Result<(), Exit> {
        if self.live {
            return Ok(());
        }
        self.set_live(early);
        self.flush_all().await
    }
}
