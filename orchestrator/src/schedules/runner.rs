//! Follows `<prefix>.schedules`, changes schedules for the API, and fires the
//! ticks of the schedules this replica drives.
//!
//! A replica drives a schedule while it owns the partition of the target
//! type's events topic that the schedule's name hashes to, so one replica
//! fires each schedule, and another takes over when that partition moves (a
//! kill, a rebalance). A tick fired twice around a handover, or again after a
//! crash before its progress was recorded, starts nothing more: its instance
//! id, event id and key are derived from the schedule and the tick (see the
//! parent module). Progress records fold by the newest tick, so two drivers
//! cannot move a schedule back.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{Message, Offset, TopicPartitionList};
use serde_json::{json, Value};
use tokio::sync::watch;
use weft_shared::avro::AvroRecord;
use weft_shared::config::KafkaSettings;
use weft_shared::data::{data_map_from_json, WorkflowData};
use weft_shared::event::{now_ms, META_DEFINITION_VERSION, META_SOURCE_KIND};
use weft_shared::ids::{EventId, InstanceId};
use weft_shared::kafka::{client_config, ensure_topics, headers, Role, TopicSpec};
use weft_shared::topics::headers as h;
use weft_shared::{Topics, WorkflowEvent, WorkflowEventType};

use super::{plan, Overlap, Progress, Spec};
use crate::api::forward::Forwarder;
use crate::definitions::Registry;
use crate::status::scope;
use crate::store::Store;

/// How often due ticks are looked for.
const POLL: Duration = Duration::from_millis(250);
const SEND_TIMEOUT: Duration = Duration::from_secs(10);

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
    http: reqwest::Client,
}

impl Scheduler {
    pub fn new(
        settings: KafkaSettings,
        topics: Topics,
        producer: FutureProducer,
        store: Store,
        registry: Arc<Registry>,
        forwarder: Arc<Forwarder>,
        node_id: String,
    ) -> Arc<Self> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(5))
            .no_proxy()
            .build()
            .expect("an HTTP client without TLS builds");
        Arc::new(Self {
            settings,
            topics,
            producer,
            store,
            registry,
            forwarder,
            node_id,
            entries: RwLock::new(BTreeMap::new()),
            next_offset: watch::channel(0).0,
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

    /// Whether this replica drives `spec`: it owns, live, the events partition
    /// the schedule's name hashes to (every replica, when placement is unknown).
    async fn drives(&self, spec: &Spec) -> bool {
        let topic = self.topics.events(&spec.workflow_type);
        let (Some(p), Some(n)) = (
            self.forwarder.partitioner,
            self.forwarder.counts.get(&topic).await,
        ) else {
            return true;
        };
        let partition = p.partition(spec.name.as_bytes(), n);
        self.forwarder
            .status
            .owns(&scope(&topic, partition))
            .is_some_and(|o| o.live)
    }

    /// Whether the instance has not ended: from the local projection when this
    /// replica owns it, else from its owner; `None` when nobody can say.
    async fn running(&self, ty: &str, id: InstanceId) -> Option<bool> {
        if let Ok(Some(s)) = self.store.instance(ty, id) {
            return Some(!s.state.is_terminal());
        }
        let topic = self.topics.events(ty);
        let (p, n) = (
            self.forwarder.partitioner?,
            self.forwarder.counts.get(&topic).await?,
        );
        let part = scope(&topic, p.partition(id.to_string().as_bytes(), n));
        let owner = self
            .forwarder
            .replicas
            .owner(&part, now_ms(), &self.node_id)?;
        let url = format!(
            "{}/v1/workflows/{ty}/{id}",
            owner.api_url.trim_end_matches('/')
        );
        let resp = self.http.get(&url).send().await.ok()?;
        if !resp.status().is_success() {
            tracing::warn!(%url, status = resp.status().as_u16(), "cannot read the previous run of a schedule");
            return None;
        }
        let v: Value = resp.json().await.ok()?;
        let state: weft_shared::state::WorkflowState = v["state"].as_str()?.parse().ok()?;
        Some(!state.is_terminal())
    }

    /// The version a tick starts.
    fn version(&self, spec: &Spec) -> Option<u32> {
        if spec.version.is_some() {
            return spec.version;
        }
        let catalog = self.registry.catalog();
        let latest = catalog.latest(&spec.workflow_type)?.version;
        let life = self.registry.lifecycle();
        (1..=latest).rev().find(|v| {
            life.deprecation(&spec.workflow_type, *v).is_none()
                && !life.deleted(&spec.workflow_type, *v)
        })
    }

    async fn publish(&self, e: &WorkflowEvent) -> Result<(), Error> {
        let topic = self.topics.events(&e.workflow_type);
        let (key, payload) = (e.instance_id.to_string(), e.encode());
        let hdrs = headers(&[
            (h::EVENT_TYPE, e.event_type.as_str()),
            (h::IDEMPOTENCY_KEY, &e.idempotency_key),
        ]);
        self.producer
            .send(
                FutureRecord::to(&topic)
                    .key(&key)
                    .payload(&payload)
                    .headers(hdrs),
                SEND_TIMEOUT,
            )
            .await
            .map_err(|(err, _)| {
                Error::Unavailable(format!("could not append {}: {err}", e.event_type))
            })?;
        Ok(())
    }

    /// Starts the instance of tick `t`; its id.
    async fn start(&self, spec: &Spec, version: u32, t: i64) -> Result<InstanceId, Error> {
        let id = InstanceId::for_idempotency_key(
            &spec.workflow_type,
            &format!("schedule:{}:{t}", spec.name),
        );
        let mut input = spec.input.clone();
        input.insert(
            "weft_schedule".into(),
            json!({ "name": spec.name, "tick_ms": t }),
        );
        let data = data_map_from_json(&Value::Object(input), "input")
            .map_err(|e| Error::Invalid(format!("schedule input: {e}")))?;
        let mut e = WorkflowEvent::new(
            WorkflowEventType::WorkflowCreated,
            spec.workflow_type.clone(),
            id,
            format!("create:{id}"),
            now_ms(),
        );
        e.event_id = EventId::derived(&[b"created", id.as_bytes()]);
        e.data = data;
        e.source_node_id = self.node_id.clone();
        e.metadata
            .insert(META_DEFINITION_VERSION.into(), version.to_string());
        e.metadata.insert(META_SOURCE_KIND.into(), "input".into());
        e.metadata.insert("weft.schedule".into(), spec.name.clone());
        e.metadata
            .insert("weft.schedule_tick_ms".into(), t.to_string());
        self.publish(&e).await?;
        Ok(id)
    }

    async fn cancel(&self, ty: &str, id: InstanceId, name: &str) -> Result<(), Error> {
        let key = format!("schedule-overlap:{name}:{id}");
        let mut e = WorkflowEvent::new(
            WorkflowEventType::WorkflowCancelled,
            ty,
            id,
            key.clone(),
            now_ms(),
        );
        e.event_id = EventId::derived(&[b"input", ty.as_bytes(), id.as_bytes(), key.as_bytes()]);
        e.data.insert(
            "reason".into(),
            WorkflowData::Str(format!("schedule {name}: overlap policy cancel_previous")),
        );
        e.source_node_id = self.node_id.clone();
        e.metadata.insert(META_SOURCE_KIND.into(), "input".into());
        self.publish(&e).await
    }

    /// Fires what is due of one schedule; records progress.
    async fn fire(&self, entry: Entry) -> Result<(), Error> {
        let Entry { spec, mut progress } = entry;
        let timing = spec.timing().map_err(|e| Error::Invalid(e.0))?;
        let last = progress.last_tick_ms.max(spec.start_after_ms);
        let (ticks, newest) = plan(&spec, &timing, last, now_ms());
        let Some(newest) = newest else { return Ok(()) };
        let Some(version) = self.version(&spec) else {
            tracing::warn!(schedule = %spec.name, workflow_type = %spec.workflow_type, "no startable version; the tick is skipped");
            progress.skipped += 1;
            progress.last_tick_ms = newest;
            return self.record(&spec.name, &progress).await;
        };
        for t in ticks {
            let previous = progress
                .last_instance_id
                .as_deref()
                .and_then(|p| p.parse::<InstanceId>().ok());
            if let (Some(prev), Overlap::Skip | Overlap::CancelPrevious) = (previous, spec.overlap)
            {
                if self.running(&spec.workflow_type, prev).await == Some(true) {
                    if spec.overlap == Overlap::Skip {
                        tracing::info!(schedule = %spec.name, tick_ms = t, previous = %prev, "previous run still running; tick skipped");
                        progress.skipped += 1;
                        continue;
                    }
                    self.cancel(&spec.workflow_type, prev, &spec.name).await?;
                    tracing::info!(schedule = %spec.name, tick_ms = t, previous = %prev, "previous run cancelled");
                }
            }
            let id = self.start(&spec, version, t).await?;
            tracing::info!(schedule = %spec.name, tick_ms = t, instance_id = %id, "schedule fired");
            progress.last_instance_id = Some(id.to_string());
            progress.started += 1;
        }
        progress.last_tick_ms = newest;
        self.record(&spec.name, &progress).await
    }

    /// Appends the progress and folds it here at once (the follower runs in
    /// the same task as the firing: it must not wait for its own read-back).
    async fn record(&self, name: &str, p: &Progress) -> Result<(), Error> {
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
                if entry.spec.paused || !self.drives(&entry.spec).await {
                    continue;
                }
                let name = entry.spec.name.clone();
                if let Err(e) = self.fire(entry).await {
                    tracing::warn!(schedule = %name, error = %e, "schedule not fired; trying again");
                }
            }
        }
    }
}
