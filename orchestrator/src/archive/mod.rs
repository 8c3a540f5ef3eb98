//! Archiving ended instances out of the live projection (ADR 0018).
//!
//! An archive request, "instances of `type` that ended before `T`", is a
//! record in the compacted topic `<prefix>.archive` (key `<type>:<T>`, a JSON
//! value). Every replica follows that topic ([`Archiver::run`]) and removes
//! from its own projection each instance of the type that has ended and whose
//! last event is older than the newest `T` of the type: its state, index
//! entries, stored history, idempotency keys and snapshots
//! ([`Store::remove_ended_instance`]). The history stays in the events topic
//! (`GET /v1/archive/{type}/{id}` reads it back from there).
//!
//! Which instances a request covers is a function of their histories (ended,
//! last event before `T`), so a replica that rebuilds its projection from the
//! topics removes the same ones again: it re-reads the requests, and sweeps
//! every [`SWEEP_EVERY`] while its partitions replay.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Message, Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use weft_shared::config::KafkaSettings;
use weft_shared::kafka::{client_config, ensure_topics, Role, TopicSpec};
use weft_shared::state::WorkflowState;
use weft_shared::Topics;

use crate::store::{self, Query, Store};

/// How often every request is applied again (instances folded after it was read).
pub const SWEEP_EVERY: Duration = Duration::from_secs(15);
/// The `kind` of an archive request's value.
pub const KIND: &str = "weft.archive_request";

/// Archive errors.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kafka: {0}")]
    Kafka(String),
    #[error(transparent)]
    Store(#[from] store::Error),
    #[error("{0}")]
    Timeout(String),
}

/// One archive request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    pub kind: String,
    pub workflow_type: String,
    /// Instances whose last event is older than this (epoch ms) are archived.
    pub ended_before_ms: i64,
    pub requested_at_ms: i64,
}

/// The topic of archive requests.
pub fn topic(topics: &Topics) -> String {
    format!("{}.archive", topics.prefix())
}

/// Follows the archive requests and applies them to this replica's projection.
pub struct Archiver {
    store: Store,
    settings: KafkaSettings,
    topics: Topics,
    producer: FutureProducer,
    /// Type -> the newest `ended_before_ms` requested.
    requests: RwLock<BTreeMap<String, i64>>,
    /// The offset of the next request record to read.
    next_offset: watch::Sender<i64>,
}

impl Archiver {
    pub fn new(
        store: Store,
        settings: KafkaSettings,
        topics: Topics,
        producer: FutureProducer,
    ) -> Arc<Self> {
        Arc::new(Self {
            store,
            settings,
            topics,
            producer,
            requests: RwLock::new(BTreeMap::new()),
            next_offset: watch::channel(0).0,
        })
    }

    /// The instances of `ty` this replica holds that `ended_before_ms` covers
    /// (ended, last event older), up to `limit`.
    pub fn covered(
        &self,
        ty: &str,
        ended_before_ms: i64,
        limit: usize,
    ) -> Result<Vec<weft_shared::ids::InstanceId>, Error> {
        let states: Vec<WorkflowState> = WorkflowState::ALL
            .iter()
            .copied()
            .filter(|s| s.is_terminal())
            .collect();
        let mut out = Vec::new();
        let mut cursor = None;
        loop {
            let page = self.store.query_workflows_where(
                &Query {
                    workflow_type: ty.to_owned(),
                    states: states.clone(),
                    created_after_ms: None,
                    limit: 500,
                    cursor: cursor.take(),
                },
                &|s| s.updated_at_ms < ended_before_ms,
            )?;
            out.extend(page.items.iter().map(|s| s.instance_id));
            // Created after the cut-off: nothing later in the index can have ended before it.
            let past = page
                .items
                .last()
                .is_some_and(|s| s.created_at_ms >= ended_before_ms);
            match page.next_cursor {
                Some(c) if !past && out.len() < limit => cursor = Some(c),
                _ => break,
            }
        }
        out.truncate(limit);
        Ok(out)
    }

    /// Removes what the request for `ty` covers; how many instances it removed.
    fn sweep(&self, ty: &str, ended_before_ms: i64) -> Result<usize, Error> {
        let mut removed = 0;
        for id in self.covered(ty, ended_before_ms, usize::MAX)? {
            if self.store.remove_ended_instance(ty, id)? {
                removed += 1;
            }
        }
        if removed > 0 {
            tracing::info!(workflow_type = %ty, ended_before_ms, removed, "ended instances archived out of the projection");
        }
        Ok(removed)
    }

    fn sweep_all(&self) {
        let requests = self.requests.read().expect("archive lock").clone();
        for (ty, before) in requests {
            if let Err(e) = self.sweep(&ty, before) {
                tracing::warn!(workflow_type = %ty, error = %e, "archive sweep failed; trying again later");
            }
        }
    }

    /// Appends a request and waits (bounded) until this replica has applied it;
    /// returns how many instances it removed here.
    pub async fn request(&self, ty: &str, ended_before_ms: i64) -> Result<usize, Error> {
        let req = Request {
            kind: KIND.into(),
            workflow_type: ty.into(),
            ended_before_ms,
            requested_at_ms: weft_shared::event::now_ms(),
        };
        let payload = serde_json::to_vec(&req).expect("a request serialises");
        let (topic, key) = (topic(&self.topics), format!("{ty}:{ended_before_ms}"));
        let d = self
            .producer
            .send(
                FutureRecord::to(&topic).key(&key).payload(&payload),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| Error::Kafka(e.to_string()))?;
        let mut rx = self.next_offset.subscribe();
        tokio::time::timeout(Duration::from_secs(10), rx.wait_for(|n| *n > d.offset))
            .await
            .map_err(|_| {
                Error::Timeout(format!(
                    "the archive request at offset {} was not read back in time",
                    d.offset
                ))
            })?
            .map_err(|_| Error::Timeout("the archiver stopped".into()))?;
        self.sweep(ty, ended_before_ms)
    }

    fn fold(&self, payload: Option<&[u8]>, offset: i64) {
        let Some(bytes) = payload else { return };
        match serde_json::from_slice::<Request>(bytes) {
            Ok(r) if r.kind == KIND => {
                let newer = {
                    let mut reqs = self.requests.write().expect("archive lock");
                    let at = reqs.entry(r.workflow_type.clone()).or_insert(i64::MIN);
                    let newer = r.ended_before_ms > *at;
                    *at = (*at).max(r.ended_before_ms);
                    newer
                };
                if newer {
                    if let Err(e) = self.sweep(&r.workflow_type, r.ended_before_ms) {
                        tracing::warn!(workflow_type = %r.workflow_type, error = %e, "archive sweep failed; trying again later");
                    }
                }
            }
            Ok(r) => {
                tracing::warn!(offset, kind = %r.kind, "skipping a record of another kind in the archive topic")
            }
            Err(e) => tracing::warn!(offset, error = %e, "skipping an unreadable archive request"),
        }
    }

    /// Follows the archive topic from its start until `stop`.
    pub async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let topic = topic(&self.topics);
        let spec = TopicSpec {
            name: topic.clone(),
            partitions: 1,
            compacted: true,
        };
        if let Err(e) = ensure_topics(&self.settings, &[spec]).await {
            tracing::error!(%topic, error = %e, "cannot create the archive topic; archiving is off");
            return;
        }
        let mut cfg = client_config(&self.settings, Role::Consumer);
        cfg.set("group.id", format!("weft-archive-{}", uuid::Uuid::new_v4()));
        let consumer: StreamConsumer = match cfg.create() {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "cannot create the archive consumer; archiving is off");
                return;
            }
        };
        let mut tpl = TopicPartitionList::new();
        if tpl
            .add_partition_offset(&topic, 0, Offset::Beginning)
            .is_err()
            || consumer.assign(&tpl).is_err()
        {
            tracing::error!(%topic, "cannot follow the archive topic; archiving is off");
            return;
        }
        let mut sweep = tokio::time::interval(SWEEP_EVERY);
        loop {
            tokio::select! {
                m = consumer.recv() => match m {
                    Ok(m) => {
                        self.fold(m.payload(), m.offset());
                        self.next_offset.send_replace(m.offset() + 1);
                    }
                    Err(e) => tracing::debug!(error = %e, "archive consumer error"),
                },
                _ = sweep.tick() => self.sweep_all(),
                _ = stop.wait_for(|s| *s) => return,
            }
        }
    }
}
