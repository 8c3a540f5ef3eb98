//! Task heartbeats, as the orchestrator sees them: a consumer outside any
//! group reads every partition of every type's heartbeats topic from its end
//! and remembers when each running attempt last reported. The partition owner
//! asks it before firing a heartbeat-timeout timer: an attempt heard from
//! within its timeout gets its timer put off instead. Heartbeats are not
//! history; after a restart the tracker knows nothing, so every attempt gets
//! one full timeout from the moment its partition was taken. Heartbeats are
//! Avro `TaskHeartbeat` records; the JSON form workers wrote up to release 0.1
//! is still read, so workers can be upgraded after the orchestrators.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::{Message, Offset, TopicPartitionList};
use weft_shared::config::KafkaSettings;
use weft_shared::control::TaskHeartbeat;
use weft_shared::ids::ExecutionId;
use weft_shared::kafka::{client_config, Role};
use weft_shared::Topics;

use crate::definitions::Registry;

/// How long a heartbeat is remembered after it arrived.
const FORGET_AFTER: Duration = Duration::from_secs(600);
/// How often the heartbeat topics are looked for: the catalog's types, and
/// sooner while one of them has no partitions yet (just created).
const REFRESH: Duration = Duration::from_secs(5);
const RETRY: Duration = Duration::from_millis(250);

/// When each running attempt last sent a heartbeat (receipt time).
#[derive(Default)]
pub struct HeartbeatTracker {
    last: Mutex<HashMap<ExecutionId, Instant>>,
}

impl HeartbeatTracker {
    /// Records a heartbeat of `execution` now.
    pub fn record(&self, execution: ExecutionId) {
        let mut last = self.last.lock().expect("heartbeat map poisoned");
        let now = Instant::now();
        last.insert(execution, now);
        if last.len() > 100_000 {
            last.retain(|_, at| now.duration_since(*at) < FORGET_AFTER);
        }
    }

    /// When `execution` last sent a heartbeat, if it was heard from.
    pub fn last_seen(&self, execution: ExecutionId) -> Option<Instant> {
        self.last
            .lock()
            .expect("heartbeat map poisoned")
            .get(&execution)
            .copied()
    }

    /// Reads heartbeats until the process stops, following new workflow types.
    pub async fn follow(
        self: Arc<Self>,
        kafka: KafkaSettings,
        topics: Topics,
        registry: Arc<Registry>,
    ) {
        let mut cfg = client_config(&kafka, Role::Consumer);
        cfg.set(
            "group.id",
            format!("weft-heartbeats-{}", uuid::Uuid::new_v4()),
        );
        // Heartbeat timeouts are seconds: long-poll rather than load the broker.
        cfg.set("fetch.wait.max.ms", "500");
        let consumer: StreamConsumer = match cfg.create() {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "cannot create the heartbeat consumer; heartbeat timeouts fire unconditionally");
                return;
            }
        };
        let mut assigned: BTreeSet<String> = BTreeSet::new();
        let mut types_rx = registry.watch_types();
        let mut refresh = Instant::now() - Duration::from_secs(60);
        let mut every = REFRESH;
        loop {
            if refresh.elapsed() > every || types_rx.has_changed().unwrap_or(false) {
                types_rx.borrow_and_update();
                refresh = Instant::now();
                let wanted: BTreeSet<String> = registry
                    .catalog()
                    .types()
                    .map(|t| topics.heartbeats(t))
                    .collect();
                every = REFRESH;
                if wanted != assigned {
                    match assign(&consumer, &wanted, &assigned) {
                        Ok(now) => {
                            // a topic without partitions yet is looked for again soon
                            if now != wanted {
                                every = RETRY;
                            }
                            tracing::debug!(
                                topics = now.len(),
                                wanted = wanted.len(),
                                "heartbeat topics assigned"
                            );
                            assigned = now;
                        }
                        Err(e) => {
                            every = RETRY;
                            tracing::debug!(error = %e, "heartbeat topics not ready yet");
                        }
                    }
                }
            }
            if assigned.is_empty() {
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
            match tokio::time::timeout(Duration::from_millis(500), consumer.recv()).await {
                Ok(Ok(m)) => match m.payload().map(TaskHeartbeat::decode) {
                    Some(Ok(hb)) => {
                        tracing::trace!(execution_id = %hb.execution_id, "task heartbeat");
                        self.record(hb.execution_id)
                    }
                    Some(Err(e)) => {
                        tracing::debug!(topic = m.topic(), error = %e, "ignoring a malformed heartbeat")
                    }
                    None => {
                        tracing::debug!(topic = m.topic(), "ignoring a heartbeat without a value")
                    }
                },
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, "heartbeat consumer error");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(_) => {}
            }
        }
    }
}

/// Assigns every partition of the topics of `wanted` that are not assigned
/// yet and have partitions, from their end (incrementally: the topics already
/// read keep their fetch position), unassigns the topics no longer wanted, and
/// returns the topics now assigned.
fn assign(
    consumer: &StreamConsumer,
    wanted: &BTreeSet<String>,
    current: &BTreeSet<String>,
) -> Result<BTreeSet<String>, rdkafka::error::KafkaError> {
    // One metadata request for every topic: one per topic is slow on a broker
    // with many types, and the heartbeats wait meanwhile.
    let md = tokio::task::block_in_place(|| consumer.fetch_metadata(None, Duration::from_secs(5)))?;
    let mut now: BTreeSet<String> = current.intersection(wanted).cloned().collect();
    let mut add = TopicPartitionList::new();
    let mut remove = TopicPartitionList::new();
    for t in md.topics() {
        let topic = t.name();
        if current.contains(topic) && !wanted.contains(topic) {
            for p in t.partitions() {
                remove.add_partition(topic, p.id());
            }
        }
        if current.contains(topic) || !wanted.contains(topic) {
            continue;
        }
        if t.error().is_some() || t.partitions().is_empty() {
            continue;
        }
        for p in t.partitions() {
            add.add_partition_offset(topic, p.id(), Offset::End)?;
        }
        now.insert(topic.to_owned());
    }
    if remove.count() > 0 {
        consumer.incremental_unassign(&remove)?;
    }
    if add.count() > 0 {
        consumer.incremental_assign(&add)?;
    }
    Ok(now)
}
