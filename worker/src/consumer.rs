//! The worker's Kafka consumer: created with a context that keeps the offset
//! tracker in step with rebalances and remembers the group metadata
//! exactly-once transactions need; subscription to the task topics; offset
//! commits.
//!
//! On revocation the context first stops the attempts running for records of
//! the revoked partitions and waits (within their grace periods) until they
//! have stopped or published, then commits the done prefix of each revoked
//! partition and forgets it. The group cannot finish the rebalance before
//! this member rejoins, so the partition's next owner starts only after the
//! attempt here stopped: no attempt runs on two workers at once.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, ConsumerGroupMetadata, Rebalance,
    StreamConsumer,
};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};
use weft_shared::config::WeftConfig;
use weft_shared::event::now_ms;
use weft_shared::kafka::{client_config, Role};

use crate::attempts::Attempts;
use crate::error::WorkerError;
use crate::lanes::Served;
use crate::metrics::Metrics;
use crate::offsets::{OffsetTracker, Position};
use crate::supervise::SHUTDOWN_ABORT_AFTER;

/// The consumer this worker uses.
pub(crate) type TaskConsumer = StreamConsumer<WorkerContext>;

/// State shared between the consumer's callbacks and the tasks.
#[derive(Default)]
pub(crate) struct WorkerContext {
    pub tracker: Arc<Mutex<OffsetTracker>>,
    pub group: Arc<Mutex<Option<Arc<ConsumerGroupMetadata>>>>,
    /// The attempts running here (stopped when their partition is revoked).
    pub attempts: Arc<Mutex<Attempts>>,
    /// Held while offsets are committed with transactions on (see `Shared`).
    pub commit_lane: Arc<Mutex<()>>,
    /// The partitions assigned now, and since when (epoch ms).
    pub assignment: Arc<Mutex<BTreeMap<(String, i32), i64>>>,
    /// Set when partitions were assigned, so the new ones are paused or
    /// resumed as the rest (see `pause_lanes`).
    pub assignment_changed: AtomicBool,
    /// Set when a rebalance that this member joined ended with an assignment
    /// (empty for an idle member); cleared when it subscribes again.
    pub joined: AtomicBool,
    /// Counts rebalance callbacks (revocations and assignments): records
    /// received before one may belong to an assignment that is over.
    pub rebalances: AtomicU64,
    /// Woken when partitions were assigned or revoked: the node heartbeat
    /// announces the change at once.
    pub heartbeat_now: Arc<tokio::sync::Notify>,
    pub metrics: Metrics,
}

impl ClientContext for WorkerContext {
    fn error(&self, error: KafkaError, reason: &str) {
        match error.rdkafka_error_code() {
            Some(RDKafkaErrorCode::UnknownTopicOrPartition | RDKafkaErrorCode::UnknownTopic) => {
                tracing::warn!(%reason, "task topics not found yet; they are picked up once they exist");
            }
            _ => tracing::error!(error = %error, %reason, "kafka client error"),
        }
    }
}

impl ConsumerContext for WorkerContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        self.rebalances.fetch_add(1, Ordering::SeqCst);
        match rebalance {
            Rebalance::Revoke(tpl) => {
                let revoked: BTreeSet<(String, i32)> = tpl
                    .elements()
                    .iter()
                    .map(|e| (e.topic().to_owned(), e.partition()))
                    .collect();
                self.metrics
                    .rebalances_total
                    .with_label_values(&["revoke"])
                    .inc();
                stop_attempts(&self.attempts, &revoked, &self.metrics);
                let _lane = lock(&self.commit_lane);
                let positions: Vec<Position> = {
                    let mut tracker = lock(&self.tracker);
                    revoked
                        .iter()
                        .filter_map(|(topic, partition)| tracker.revoke(topic, *partition))
                        .collect()
                };
                {
                    let mut assignment = lock(&self.assignment);
                    assignment.retain(|p, _| !revoked.contains(p));
                }
                self.heartbeat_now.notify_one();
                tracing::info!(partitions = tpl.count(), "partitions revoked");
                if !positions.is_empty() {
                    if let Err(e) = consumer.commit(&to_tpl(&positions), CommitMode::Sync) {
                        tracing::warn!(error = %e, "could not commit offsets of revoked partitions");
                    }
                }
            }
            Rebalance::Assign(tpl) => {
                // a fresh assignment starts from the committed offset: forget any stale state
                let mut tracker = lock(&self.tracker);
                for e in tpl.elements() {
                    tracker.revoke(e.topic(), e.partition());
                }
            }
            Rebalance::Error(e) => tracing::warn!(error = %e, "rebalance error"),
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            let now = now_ms();
            {
                let mut assignment = lock(&self.assignment);
                for e in tpl.elements() {
                    assignment.insert((e.topic().to_owned(), e.partition()), now);
                }
            }
            tracing::info!(partitions = tpl.count(), "partitions assigned");
            self.metrics
                .rebalances_total
                .with_label_values(&["assign"])
                .inc();
            self.joined.store(true, Ordering::SeqCst);
            *lock(&self.group) = consumer.group_metadata().map(Arc::new);
            self.assignment_changed.store(true, Ordering::SeqCst);
            self.heartbeat_now.notify_one();
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, offsets: &TopicPartitionList) {
        match result {
            Ok(()) => tracing::debug!(partitions = offsets.count(), "offsets committed"),
            Err(e) => tracing::warn!(error = %e, "offset commit failed"),
        }
    }
}

/// Stops the attempts running for records of `revoked` partitions and waits
/// until they have stopped (or published what they returned in time), at
/// most their longest grace period plus [`SHUTDOWN_ABORT_AFTER`]. Runs in the
/// rebalance callback: the group waits for this member meanwhile.
fn stop_attempts(attempts: &Mutex<Attempts>, revoked: &BTreeSet<(String, i32)>, metrics: &Metrics) {
    let (stopping, grace) = {
        let mut attempts = lock(attempts);
        (attempts.running_in(revoked), attempts.revoke(revoked))
    };
    let Some(grace) = grace else {
        return;
    };
    metrics.revoked_attempts_total.inc_by(stopping as u64);
    tracing::info!(
        attempts = stopping,
        grace_ms = grace.as_millis() as u64,
        "partitions revoked; stopping their running attempts before letting go"
    );
    let deadline = Instant::now() + grace + SHUTDOWN_ABORT_AFTER;
    let wait = || loop {
        let left = lock(attempts).running_in(revoked);
        if left == 0 {
            tracing::info!("attempts of the revoked partitions stopped");
            return;
        }
        if Instant::now() >= deadline {
            tracing::warn!(
                attempts = left,
                "attempts of revoked partitions did not stop in time"
            );
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(wait),
        Ok(_) => tracing::warn!(
            "revoked attempts were told to stop; a current-thread runtime cannot wait for them here"
        ),
        Err(_) => wait(),
    }
}

/// Locks a mutex, recovering the data if a panicking thread poisoned it.
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Creates the consumer and subscribes it to the lanes `served` has (see
/// [`crate::lanes`]). Topics that do not exist yet are not an error: the
/// subscription picks them up when they appear.
pub(crate) fn subscribe(
    config: &WeftConfig,
    context: WorkerContext,
    served: &Served,
) -> Result<TaskConsumer, WorkerError> {
    let consumer: TaskConsumer = client_config(&config.kafka, Role::Consumer)
        .set("group.id", &config.worker.group_id)
        .create_with_context(context)
        .map_err(WorkerError::kafka("creating the consumer"))?;
    let topics = served.subscription(existing_topics(&consumer).iter().map(String::as_str));
    let names: Vec<&str> = topics.iter().map(String::as_str).collect();
    consumer
        .subscribe(&names)
        .map_err(WorkerError::kafka("subscribing to the task topics"))?;
    tracing::info!(topics = ?names, group = %config.worker.group_id, "subscribed");
    Ok(consumer)
}

/// Subscribes again when a lane the worker serves appeared (or went); true if it did.
pub(crate) fn follow_lanes(consumer: &TaskConsumer, served: &Served) -> bool {
    let existing = existing_topics(consumer);
    if existing.is_empty() {
        return false;
    }
    let wanted = served.subscription(existing.iter().map(String::as_str));
    let Ok(current) = consumer.subscription() else {
        return false;
    };
    let mut now: Vec<String> = current
        .elements()
        .iter()
        .map(|e| e.topic().to_owned())
        .collect();
    now.sort();
    let mut sorted = wanted.clone();
    sorted.sort();
    if now == sorted {
        return false;
    }
    let names: Vec<&str> = wanted.iter().map(String::as_str).collect();
    match consumer.subscribe(&names) {
        Ok(()) => {
            consumer.context().joined.store(false, Ordering::SeqCst);
            tracing::info!(topics = ?names, "lanes changed; subscribed again");
            true
        }
        Err(e) => {
            tracing::warn!(error = %e, "could not subscribe to the new lanes");
            false
        }
    }
}

/// The names of the broker's topics (empty when the metadata cannot be read).
fn existing_topics(consumer: &TaskConsumer) -> Vec<String> {
    let fetch = || consumer.fetch_metadata(None, Duration::from_secs(5));
    let md = match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(fetch),
        _ => fetch(),
    };
    match md {
        Ok(md) => md.topics().iter().map(|t| t.name().to_owned()).collect(),
        Err(e) => {
            tracing::debug!(error = %e, "cannot read the topic list; lanes not refreshed");
            Vec::new()
        }
    }
}

/// Commits `positions` (asynchronously unless `mode` says otherwise).
pub(crate) fn commit(
    consumer: &impl Consumer<WorkerContext>,
    positions: &[Position],
    mode: CommitMode,
) {
    if positions.is_empty() {
        return;
    }
    if let Err(e) = consumer.commit(&to_tpl(positions), mode) {
        tracing::warn!(error = %e, "could not commit offsets");
    }
}

fn to_tpl(positions: &[Position]) -> TopicPartitionList {
    let mut tpl = TopicPartitionList::with_capacity(positions.len());
    for p in positions {
        if let Err(e) = tpl.add_partition_offset(&p.topic, p.partition, Offset::Offset(p.offset)) {
            tracing::warn!(error = %e, topic = %p.topic, partition = p.partition, "bad offset");
        }
    }
    tpl
}

/// Which lanes' partitions are paused.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Paused {
    /// The default and constrained lanes (not urgent).
    pub normal: bool,
    /// The urgent lanes.
    pub urgent: bool,
}

/// Pauses or resumes the assigned partitions of each class of lane as `want`
/// says (the consumer keeps serving rebalances without fetching them). After
/// an assignment the new partitions are set either way: librdkafka keeps a
/// partition this worker paused paused through its revocation and a later
/// assignment, so one lost while paused would come back paused and never be
/// fetched again.
pub(crate) fn pause_lanes(
    consumer: &TaskConsumer,
    served: &Served,
    want: Paused,
    paused: &mut Paused,
) {
    let changed = consumer
        .context()
        .assignment_changed
        .swap(false, Ordering::SeqCst);
    if want == *paused && !changed {
        return;
    }
    let assignment = match consumer.assignment() {
        Ok(a) => a,
        Err(e) => {
            tracing::warn!(error = %e, "could not read the assignment");
            return;
        }
    };
    let (mut pause, mut resume) = (TopicPartitionList::new(), TopicPartitionList::new());
    for e in assignment.elements() {
        let urgent = served.lane(e.topic()).is_some_and(|r| r.urgent);
        let stop = if urgent { want.urgent } else { want.normal };
        let list = if stop { &mut pause } else { &mut resume };
        let _ = list.add_partition(e.topic(), e.partition());
    }
    let mut result = Ok(());
    if pause.count() > 0 {
        result = consumer.pause(&pause);
    }
    if resume.count() > 0 && result.is_ok() {
        result = consumer.resume(&resume);
    }
    match result {
        Ok(()) => {
            if *paused != want {
                tracing::debug!(
                    normal = want.normal,
                    urgent = want.urgent,
                    "fetching paused or resumed"
                );
            }
            *paused = want;
        }
        Err(e) => tracing::warn!(error = %e, "could not pause or resume fetching"),
    }
}

/// Leaves the group and joins it again as a new member when no rebalance has
/// ended for it since it subscribed: some brokers (Tansu 0.6) never finish a
/// rebalance that this worker joined while a crashed predecessor's session was
/// still open. A member that was assigned nothing (more workers than
/// partitions) did finish its rebalance and stays; the idle watch
/// ([`crate::unowned`]) rejoins it only while a partition has no live owner.
/// Returns whether it rejoined.
pub(crate) fn rejoin_if_never_assigned(consumer: &TaskConsumer) -> bool {
    if consumer.context().joined.load(Ordering::SeqCst) {
        return false;
    }
    let Ok(subscription) = consumer.subscription() else {
        return false;
    };
    let topics: Vec<String> = subscription
        .elements()
        .iter()
        .map(|e| e.topic().to_owned())
        .collect();
    if topics.is_empty() {
        return false;
    }
    tracing::warn!(topics = ?topics, "the group has not finished a rebalance with this member; rejoining it");
    rejoin(consumer)
}

/// Leaves the group and subscribes again to the same topics; true if it did.
pub(crate) fn rejoin(consumer: &TaskConsumer) -> bool {
    let Ok(subscription) = consumer.subscription() else {
        return false;
    };
    let topics: Vec<String> = subscription
        .elements()
        .iter()
        .map(|e| e.topic().to_owned())
        .collect();
    if topics.is_empty() {
        return false;
    }
    consumer.unsubscribe();
    consumer.context().joined.store(false, Ordering::SeqCst);
    let names: Vec<&str> = topics.iter().map(String::as_str).collect();
    if let Err(e) = consumer.subscribe(&names) {
        tracing::error!(error = %e, "could not subscribe again");
    }
    true
}
