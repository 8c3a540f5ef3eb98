//! Follows `<prefix>.schedules`, changes schedules for the API, and fires the
//! ticks of the schedules this replica drives.
//!
//! A replica drives a schedule while it owns the partition of the target
//! type's events topic that the schedule's name hashes to, so one replica
//! fires each schedule, and another takes over when that partition moves (a
//! kill, a rebalance). A tick fired twice around a handover, or again after a
//! crash before its progress was recorded, starts nothing more: its instance
//! id, event id and key are derived from the schedule and the tick (see the
//! parent module), the id chosen to land on the schedule's own partition
//! ([`super::placement`]), so the overlap policy finds the previous run here
//! ([`super::overlap`]). Progress records fold by the newest tick, so two
//! drivers cannot move a schedule back.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{Message, Offset, TopicPartitionList};
use tokio::sync::watch;
use weft_shared::config::KafkaSettings;
use weft_shared::event::now_ms;
use weft_shared::kafka::{client_config, ensure_topics, Role, TopicSpec};
use weft_shared::Topics;

use super::placement::Placement;
use super::{Progress, Spec};
use crate::api::forward::Forwarder;
use crate::api::AppState;
use crate::definitions::Registry;
use crate::status::scope;
use crate::store::Store;

/// How often due ticks are looked for.
const POLL: Duration = Duration::from_millis(250);
pub(super) const SEND_TIMEOUT: Duration = Duration::from_secs(10);

/// Schedule errors.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Invalid(String),
    #[error("no schedule '{0}'")]
    NotFound(String),
    #[error("{0}")]
    Unavailable(String),
}

/// A schedule and how far it fired.
#[derive(Clone, Debug)]
pub struct Entry {
    pub spec: Spec,
    pub progress: Progress,
}

/// The topic of schedules.
pub fn topic(topics: &Topics) -> String {
    format!("{}.schedules", topics.prefix())
}

/// What the scheduler needs.
pub struct Scheduler {
    pub settings: KafkaSettings,
    pub topics: Topics,
    pub producer: FutureProducer,
    pub store: Store,
    pub registry: Arc<Registry>,
    pub forwarder: Arc<Forwarder>,
    pub node_id: String,
    entries: RwLock<BTreeMap<String, Entry>>,
    next_offset: watch::Sender<i64>,
    /// What the API handlers share (the overlap policy waits on partitions with it).
    pub(super) api: AppState,
    /// Plain HTTP to a peer, for a previous run on a partition this replica does not own.
    pub(super) http: reqwest::Client,
}

impl Scheduler {
    /// The scheduler of the replica whose API shares `api`.
    pub fn new(settings: KafkaSettings, api: AppState, forwarder: Arc<Forwarder>) -> Arc<Self> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(5))
            .no_proxy()
            .build()
            .expect("an HTTP client without TLS builds");
        Arc::new(Self {
            settings,
            topics: api.topics.clone(),
            producer: api.producer.clone(),
            store: api.store.clone(),
            registry: api.registry.clone(),
            forwarder,
            node_id: api.node_id.clone(),
            entries: RwLock::new(BTreeMap::new()),
            next_offset: watch::channel(0).0,
            api,
            http,
        })
    }

    /// Waits (bounded) until this replica has read the schedules topic up to
    /// its end as of now, so a read after a change made through another
    /// replica sees it.
    pub async fn caught_up(&self) {
        let (producer, t) = (self.producer.clone(), topic(&self.topics));
        let high = tokio::task::spawn_blocking(move || {
            producer
                .client()
                .fetch_watermarks(&t, 0, Duration::from_secs(2))
                .map(|w| w.1)
        })
        .await;
        let Ok(Ok(high)) = high else { return };
        let mut rx = self.next_offset.subscribe();
        let _ = tokio::time::timeout(Duration::from_secs(5), rx.wait_for(|n| *n >= high)).await;
    }

    /// Every schedule.
    pub fn list(&self) -> Vec<Entry> {
        self.entries
            .read()
            .expect("schedules lock")
            .values()
            .cloned()
            .collect()
    }

    pub fn get(&self, name: &str) -> Option<Entry> {
        self.entries
            .read()
            .expect("schedules lock")
            .get(name)
            .cloned()
    }

    /// Appends a record and waits until this replica has folded it.
    async fn append(&self, key: &str, value: Option<Vec<u8>>) -> Result<(), Error> {
        let offset = self.append_only(key, value).await?;
        let mut rx = self.next_offset.subscribe();
        tokio::time::timeout(Duration::from_secs(10), rx.wait_for(|n| *n > offset))
            .await
            .map_err(|_| {
                Error::Unavailable("the schedules topic was not read back in time".into())
            })?
            .map_err(|_| Error::Unavailable("the scheduler stopped".into()))?;
        Ok(())
    }

    /// Appends a record; its offset.
    async fn append_only(&self, key: &str, value: Option<Vec<u8>>) -> Result<i64, Error> {
        let topic = topic(&self.topics);
        let mut rec: FutureRecord<'_, str, [u8]> = FutureRecord::to(&topic).key(key);
        if let Some(v) = value.as_deref() {
            rec = rec.payload(v);
        }
        let d = self
            .producer
            .send(rec, SEND_TIMEOUT)
            .await
            .map_err(|(e, _)| Error::Unavailable(format!("could not append to {topic}: {e}")))?;
        Ok(d.offset)
    }

    /// Creates or replaces a schedule.
    pub async fn put(&self, spec: Spec) -> Result<(), Error> {
        spec.timing().map_err(|e| Error::Invalid(e.0))?;
        let bytes = serde_json::to_vec(&spec).expect("a spec serialises");
        self.append(&format!("schedule:{}", spec.name), Some(bytes))
            .await
    }

    /// Deletes a schedule (its progress goes with it).
    pub async fn delete(&self, name: &str) -> Result<(), Error> {
        self.get(name).ok_or_else(|| Error::NotFound(name.into()))?;
        self.append(&format!("progress:{name}"), None).await?;
        self.append(&format!("schedule:{name}"), None).await
    }

    /// Pauses or resumes; a resumed schedule fires the ticks after the resume
    /// (what came due while paused is not caught up).
    pub async fn set_paused(&self, name: &str, paused: bool) -> Result<Entry, Error> {
        let mut spec = self
            .get(name)
            .ok_or_else(|| Error::NotFound(name.into()))?
            .spec;
        spec.paused = paused;
        spec.updated_at_ms = now_ms();
        if !paused {
            spec.start_after_ms = spec.updated_at_ms;
        }
        self.put(spec).await?;
        self.get(name).ok_or_else(|| Error::NotFound(name.into()))
    }

    fn fold(&self, key: Option<&[u8]>, payload: Option<&[u8]>, offset: i64) {
        let key = key.map(String::from_utf8_lossy).unwrap_or_default();
        let mut entries = self.entries.write().expect("schedules lock");
        if let Some(name) = key.strip_prefix("schedule:") {
            match payload.map(serde_json::from_slice::<Spec>) {
                None => {
                    entries.remove(name);
                }
                Some(Ok(spec)) => {
                    let progress = entries.remove(name).map(|e| e.progress).unwrap_or_default();
                    entries.insert(name.to_owned(), Entry { spec, progress });
                }
                Some(Err(e)) => {
                    tracing::warn!(offset, error = %e, "skipping an unreadable schedule")
                }
            }
        } else if let Some(name) = key.strip_prefix("progress:") {
            let Some(bytes) = payload else { return };
            match serde_json::from_slice::<Progress>(bytes) {
                Ok(p) => {
                    if let Some(e) = entries.get_mut(name) {
                        if p.last_tick_ms >= e.progress.last_tick_ms {
                            e.progress = p;
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(offset, error = %e, "skipping unreadable schedule progress")
                }
            }
        }
    }

    /// Where the runs of `spec` go, if this replica drives it now: it owns,
    /// live, the events partition the schedule's name hashes to. `None` when
    /// another replica does, and when the placement is unknown this round
    /// (the partition count, or a partitioner that does not hash keys): no
    /// replica fires then, rather than start ids the others would not derive.
    async fn drive(&self, spec: &Spec) -> Option<Placement> {
        let topic = self.topics.events(&spec.workflow_type);
        let partitioner = self.forwarder.partitioner?;
        let Some(n) = self.forwarder.counts.get(&topic).await else {
            tracing::debug!(schedule = %spec.name, %topic, "partition count unknown; the schedule waits");
            return None;
        };
        let at = Placement::of(partitioner, &spec.name, n);
        self.forwarder
            .status
            .owns(&scope(&topic, at.partition))
            .is_some_and(|o| o.live)
            .then_some(at)
    }

    /// Appends the progress and folds it here at once (the follower runs in
    /// the same task as the firing: it must not wait for its own read-back).
    pub(super) async fn record(&self, name: &str, p: &Progress) -> Result<(), Error> {
        let bytes = serde_json::to_vec(p).expect("progress serialises");
        let key = format!("progress:{name}");
        self.append_only(&key, Some(bytes.clone())).await?;
        self.fold(Some(key.as_bytes()), Some(&bytes), -1);
        Ok(())
    }

    /// Follows the topic and fires due ticks until `stop`.
    pub async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let topic = topic(&self.topics);
        let spec = TopicSpec {
            name: topic.clone(),
            partitions: 1,
            compacted: true,
        };
        if let Err(e) = ensure_topics(&self.settings, &[spec]).await {
            tracing::error!(%topic, error = %e, "cannot create the schedules topic; schedules are off");
            return;
        }
        let mut cfg = client_config(&self.settings, Role::Consumer);
        cfg.set(
            "group.id",
            format!("weft-schedules-{}", uuid::Uuid::new_v4()),
        );
        let consumer: StreamConsumer = match cfg.create() {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "cannot create the schedules consumer; schedules are off");
                return;
            }
        };
        let mut tpl = TopicPartitionList::new();
        if tpl
            .add_partition_offset(&topic, 0, Offset::Beginning)
            .is_err()
            || consumer.assign(&tpl).is_err()
        {
            tracing::error!(%topic, "cannot follow the schedules topic; schedules are off");
            return;
        }
        // Fire nothing before the topic is read to where it was at start (progress included).
        let (producer, t) = (self.producer.clone(), topic.clone());
        let loaded_at = tokio::task::spawn_blocking(move || {
            producer
                .client()
                .fetch_watermarks(&t, 0, Duration::from_secs(10))
                .map(|w| w.1)
        })
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or(0);
        if self.forwarder.partitioner.is_none() {
            tracing::warn!("the Kafka partitioner does not hash record keys (kafka.properties.partitioner): schedules do not fire");
        }
        let mut poll = tokio::time::interval(POLL);
        loop {
            let tick = tokio::select! {
                m = consumer.recv() => {
                    match m {
                        Ok(m) => {
                            self.fold(m.key(), m.payload(), m.offset());
                            self.next_offset.send_replace(m.offset() + 1);
                        }
                        Err(e) => tracing::debug!(error = %e, "schedules consumer error"),
                    }
                    false
                }
                _ = poll.tick() => true,
                _ = stop.wait_for(|s| *s) => return,
            };
            if !tick {
                continue;
            }
            // Offsets that hold no record (compacted away) still count as read.
            let position = consumer
                .position()
                .ok()
                .and_then(|l| l.find_partition(&topic, 0).map(|e| e.offset()));
            if let Some(Offset::Offset(p)) = position {
                self.next_offset.send_if_modified(|n| {
                    let moved = p > *n;
                    *n = (*n).max(p);
                    moved
                });
            }
            if *self.next_offset.borrow() < loaded_at {
                continue;
            }
            for entry in self.list() {
                if entry.spec.paused {
                    continue;
                }
                let Some(at) = self.drive(&entry.spec).await else {
                    continue;
                };
                let name = entry.spec.name.clone();
                if let Err(e) = self.fire(entry, at).await {
                    tracing::warn!(schedule = %name, error = %e, "schedule not fired; trying again");
                }
            }
        }
    }
}
