//! The definition registry: every version of every workflow definition, folded
//! from the compacted `weft.definitions` topic (ADR 0011). **The log decides**:
//! each registration is a record with a key of its own
//! (`<type>:<version>:<content hash>:<nonce>`, so compaction never merges two
//! registrations), the follower folds the topic in log order, and the *first*
//! record for a `(type, version)` is that version; later records for the same
//! `(type, version)` lost a race and are ignored. Every replica, live or
//! rebuilding, folds the same catalog. [`Registry::register`] proposes the next
//! version, publishes once, reads the topic past its own record and returns the
//! version its content really got (retrying with the next version when it lost).
//!
//! Deciders read an immutable [`Catalog`] snapshot, so a batch sees one
//! consistent set of definitions; the snapshot also says how complete it is
//! ([`Catalog::complete_as_of_ms`]), which is what a partition needs to decide a
//! `workflow.created` the way a rebuild will ([`Catalog::decidable`]).

pub mod lifecycle;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::FutureExt;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{Message, Offset, TopicPartitionList};
use tokio::sync::watch;
use tokio::time::Instant;
use weft_shared::avro::AvroRecord;
use weft_shared::config::{KafkaSettings, TransactionsMode};
use weft_shared::definition::{validate, DefinitionError};
use weft_shared::event::now_ms;
use weft_shared::fsm::{meta, DefinitionLookup};
use weft_shared::kafka::{self, client_config, Role};
use weft_shared::model::ExecutionSemantics;
use weft_shared::{Topics, WorkflowDefinition, WorkflowEvent, WorkflowEventType};

/// The most two Weft hosts' clocks (registrant, start producer, deciding
/// replica) may differ. A definition is visible to a start whose timestamp is
/// up to this much *before* its `registered_at_ms`.
pub const MAX_CLOCK_SKEW_MS: i64 = 5_000;
/// How long a registration record may take to reach the log: the registry's
/// producer gives up after this (`message.timeout.ms`), and
/// [`APPEND_SLACK_MS`] more covers a request the broker was still processing.
pub const PUBLISH_TIMEOUT_MS: i64 = 5_000;
/// See [`PUBLISH_TIMEOUT_MS`].
pub const APPEND_SLACK_MS: i64 = 1_000;
/// A `workflow.created` with timestamp `T` can be decided without its version
/// in the catalog once the catalog is complete as of `T + START_SETTLE_MS`: every
/// definition visible to it (`registered_at_ms <= T + MAX_CLOCK_SKEW_MS`) was
/// appended by then (publish bound plus skew between the registrant's and the
/// follower's clocks).
pub const START_SETTLE_MS: i64 = PUBLISH_TIMEOUT_MS + APPEND_SLACK_MS + 2 * MAX_CLOCK_SKEW_MS;
/// How long [`Registry::register`] may take in all (catching up, publishing,
/// reading its own record back, retries after lost races).
pub const REGISTER_TIMEOUT: Duration = Duration::from_secs(30);
/// How often the follower fetches the topic's high watermark to advance
/// [`Catalog::complete_as_of_ms`].
const PROBE_EVERY: Duration = Duration::from_millis(250);
/// How often the follower tries to create a new type's topics.
const TOPIC_CREATION_ATTEMPTS: u32 = 3;
/// How long one try to create a new type's topics may take.
const TOPIC_CREATION_TIMEOUT: Duration = Duration::from_secs(5);
/// Timeout of one high-watermark fetch.
const WATERMARK_TIMEOUT: Duration = Duration::from_secs(10);

/// Registry errors.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid definition: {0}")]
    Invalid(#[from] DefinitionError),
    #[error("task '{task}' asks for exactly_once, which needs Kafka transactions; this cluster runs with kafka.transactions={mode:?} (use at_least_once, or set kafka.transactions=on against a broker with transactions)")]
    ExactlyOnceUnsupported {
        task: String,
        mode: TransactionsMode,
    },
    #[error(transparent)]
    Kafka(#[from] kafka::Error),
    #[error("could not publish the definition: {0}")]
    Publish(String),
    #[error("the definition catalog is not available: {0}")]
    Unavailable(String),
}

/// Whether `def` may serve a `workflow.created` whose timestamp is `at_ms`:
/// it was registered at most [`MAX_CLOCK_SKEW_MS`] after it. A pure function
/// of the definition and the event, so a live replica and a rebuild agree.
pub fn visible_to_start(def: &WorkflowDefinition, at_ms: i64) -> bool {
    def.registered_at_ms <= at_ms.saturating_add(MAX_CLOCK_SKEW_MS)
}

/// What a `workflow.created` asks of the catalog.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartPin {
    /// `weft.definition_version` names this version (every start made through
    /// the API pins the latest version the API's replica knows).
    Version(u32),
    /// No (parsable) version: the newest version visible at the event's timestamp.
    Latest,
}

impl StartPin {
    /// What `event` needs, parsed exactly as the decider parses it; `None` when
    /// it is not a `workflow.created` (other inputs need no catalog wait: their
    /// instance's version was in the catalog when it started).
    pub fn of(event: &WorkflowEvent) -> Option<Self> {
        if event.event_type != WorkflowEventType::WorkflowCreated {
            return None;
        }
        Some(
            match event
                .metadata
                .get(meta::DEFINITION_VERSION)
                .map(|v| v.parse::<u32>())
            {
                Some(Ok(v)) => StartPin::Version(v),
                _ => StartPin::Latest,
            },
        )
    }
}

/// One version: the first registration record for it in the log.
#[derive(Debug)]
struct Entry {
    def: Arc<WorkflowDefinition>,
    /// The record key of the registration that won the version.
    registration: String,
}

type Versions = BTreeMap<String, BTreeMap<u32, Arc<Entry>>>;

/// An immutable view of every registered definition, and how complete it is.
#[derive(Debug)]
pub struct Catalog {
    by_type: Arc<Versions>,
    complete_as_of_ms: i64,
}

impl Default for Catalog {
    fn default() -> Self {
        Self {
            by_type: Arc::default(),
            complete_as_of_ms: i64::MIN,
        }
    }
}

impl Catalog {
    pub fn types(&self) -> impl Iterator<Item = &str> {
        self.by_type.keys().map(String::as_str)
    }

    pub fn latest(&self, ty: &str) -> Option<&WorkflowDefinition> {
        self.by_type
            .get(ty)?
            .values()
            .next_back()
            .map(|e| e.def.as_ref())
    }

    /// Every version of `ty`, oldest first.
    pub fn versions(&self, ty: &str) -> impl Iterator<Item = &WorkflowDefinition> {
        self.by_type
            .get(ty)
            .into_iter()
            .flat_map(|v| v.values().map(|e| e.def.as_ref()))
    }

    pub fn contains_type(&self, ty: &str) -> bool {
        self.by_type.contains_key(ty)
    }

    /// Whether version `version` of `ty` is in this catalog. Once it is, it
    /// never changes: it is the first record for the version in the log.
    pub fn covers(&self, ty: &str, version: u32) -> bool {
        self.by_type
            .get(ty)
            .is_some_and(|v| v.contains_key(&version))
    }

    /// Wall time (ms, this host's clock) `W` such that every definition record
    /// appended to `weft.definitions` before `W` is in this catalog: the
    /// follower had read up to a high watermark it fetched at `W`. `i64::MIN`
    /// before the follower first caught up.
    pub fn complete_as_of_ms(&self) -> i64 {
        self.complete_as_of_ms
    }

    /// The definition a `workflow.created` of `ty` with timestamp `at_ms` and
    /// pin `pin` runs, by the rule of ADR 0011 (`None`: rejected, with
    /// `unknown_definition` when pinned, `unknown_workflow_type` when not):
    /// - `Version(v)`: version `v` if it is in the catalog and
    ///   [`visible_to_start`] at `at_ms`;
    /// - `Latest`: the newest version visible at `at_ms`.
    ///
    /// The answer is final — what any replica and any rebuild compute — only
    /// when [`decidable`](Self::decidable) says so.
    pub fn resolve_start(
        &self,
        ty: &str,
        pin: StartPin,
        at_ms: i64,
    ) -> Option<&WorkflowDefinition> {
        let versions = self.by_type.get(ty)?;
        match pin {
            StartPin::Version(v) => versions
                .get(&v)
                .map(|e| e.def.as_ref())
                .filter(|d| visible_to_start(d, at_ms)),
            StartPin::Latest => versions
                .values()
                .rev()
                .map(|e| e.def.as_ref())
                .find(|d| visible_to_start(d, at_ms)),
        }
    }

    /// Whether [`resolve_start`](Self::resolve_start) of `(ty, pin, at_ms)` on
    /// this catalog is final: the version is pinned and covered (its winner
    /// never changes), or the catalog is complete as of `at_ms +`
    /// [`START_SETTLE_MS`] (no definition visible at `at_ms` can still arrive).
    pub fn start_decidable(&self, ty: &str, pin: StartPin, at_ms: i64) -> bool {
        match pin {
            StartPin::Version(v) if self.covers(ty, v) => true,
            _ => self.complete_as_of_ms >= at_ms.saturating_add(START_SETTLE_MS),
        }
    }

    /// Whether deciding `event` with this catalog gives the decision a rebuild
    /// gives: always for events other than `workflow.created`; for a
    /// `workflow.created`, [`start_decidable`](Self::start_decidable) of its
    /// type, pin ([`StartPin::of`]) and `timestamp_ms`. When it says `false`,
    /// wait for [`Registry::watch`] to change and take a new
    /// [`Registry::catalog`]; it becomes `true` within about
    /// [`START_SETTLE_MS`] of the event's timestamp while the follower runs.
    pub fn decidable(&self, event: &WorkflowEvent) -> bool {
        match StartPin::of(event) {
            None => true,
            Some(pin) => self.start_decidable(&event.workflow_type, pin, event.timestamp_ms),
        }
    }

    /// The lookup to hand the decider for `event`: for a `workflow.created`, a
    /// view whose `get` and `latest_at` follow [`resolve_start`](Self::resolve_start)
    /// at the event's timestamp; for any other event, the catalog itself.
    pub fn lookup_for(&self, event: &WorkflowEvent) -> CatalogView<'_> {
        CatalogView {
            catalog: self,
            start_at_ms: StartPin::of(event).map(|_| event.timestamp_ms),
        }
    }

    fn entry(&self, ty: &str, version: u32) -> Option<&Arc<Entry>> {
        self.by_type.get(ty)?.get(&version)
    }
}

impl DefinitionLookup for Catalog {
    /// Version `version` of `ty`, whenever it was registered (running instances
    /// keep their version).
    fn get(&self, ty: &str, version: u32) -> Option<&WorkflowDefinition> {
        self.entry(ty, version).map(|e| e.def.as_ref())
    }

    /// The newest version [`visible_to_start`] at `at_ms`; none when every
    /// version was registered later (no fallback to the first version: that
    /// would depend on what the catalog holds when the start is decided).
    fn latest_at(&self, ty: &str, at_ms: i64) -> Option<&WorkflowDefinition> {
        self.resolve_start(ty, StartPin::Latest, at_ms)
    }
}

/// The catalog as the decider must see it for one event ([`Catalog::lookup_for`]).
#[derive(Clone, Copy, Debug)]
pub struct CatalogView<'a> {
    catalog: &'a Catalog,
    start_at_ms: Option<i64>,
}

impl DefinitionLookup for CatalogView<'_> {
    fn get(&self, ty: &str, version: u32) -> Option<&WorkflowDefinition> {
        match self.start_at_ms {
            Some(at) => self
                .catalog
                .resolve_start(ty, StartPin::Version(version), at),
            None => self.catalog.get(ty, version),
        }
    }

    fn latest_at(&self, ty: &str, at_ms: i64) -> Option<&WorkflowDefinition> {
        self.catalog.latest_at(ty, at_ms)
    }
}

/// How far the follower has read, for [`Registry::watch`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CatalogProgress {
    /// The offset of the next `weft.definitions` record to fold.
    pub next_offset: i64,
    /// [`Catalog::complete_as_of_ms`] of the current catalog.
    pub complete_as_of_ms: i64,
    /// Versions in the catalog.
    pub versions: usize,
}

/// The record key of a registration: `<type>:<version>:<content hash>:<nonce>`.
fn registration_key(def: &WorkflowDefinition) -> String {
    format!(
        "{}:{}:{:016x}:{}",
        def.workflow_type,
        def.version,
        content_hash(def),
        uuid::Uuid::new_v4().simple()
    )
}

/// The definition without what the registry assigns (version, registration time).
fn content(def: &WorkflowDefinition) -> WorkflowDefinition {
    let mut c = def.clone();
    c.version = 0;
    c.registered_at_ms = 0;
    c
}

fn same_content(a: &WorkflowDefinition, b: &WorkflowDefinition) -> bool {
    content(a) == content(b)
}

/// FNV-1a of the encoded content (informative: the nonce makes keys unique).
fn content_hash(def: &WorkflowDefinition) -> u64 {
    content(def)
        .encode()
        .iter()
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
        })
}

/// Whether a record's key agrees with its definition: a new-format key names
/// the same type and version; an old-format key (`<type>@<version>`, before
/// ADR 0011) is accepted as it is.
fn key_matches(key: &str, def: &WorkflowDefinition) -> bool {
    let mut parts = key.split(':');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(_), None, ..) => true,
        (Some(ty), Some(v), Some(_), Some(_)) => {
            ty == def.workflow_type && v.parse::<u32>().ok() == Some(def.version)
        }
        _ => false,
    }
}

/// The registry shared by the API and the partition processors.
pub struct Registry {
    catalog: RwLock<Arc<Catalog>>,
    /// Bumped whenever a new workflow type appears (the consumer re-subscribes).
    types_tx: watch::Sender<usize>,
    /// Bumped on every change of the catalog or its completeness.
    progress_tx: watch::Sender<CatalogProgress>,
    kafka: KafkaSettings,
    topics: Topics,
    /// Publishes registrations; gives up after [`PUBLISH_TIMEOUT_MS`].
    publisher: FutureProducer,
    /// For metadata (high watermarks).
    producer: FutureProducer,
    /// Whether the topics of a new type are created (off on brokers that cannot).
    create_topics: AtomicBool,
    /// Deprecations and deletions, folded from the same topic.
    lifecycle: RwLock<lifecycle::Lifecycle>,
}

impl Registry {
    /// A registry with an empty catalog; [`follow`](Self::follow) fills it.
    /// `producer` is used for metadata; registrations go through a producer of
    /// its own whose delivery timeout is [`PUBLISH_TIMEOUT_MS`].
    ///
    /// Panics if that producer cannot be created ([`try_new`](Self::try_new)
    /// returns the error).
    pub fn new(kafka: KafkaSettings, topics: Topics, producer: FutureProducer) -> Arc<Self> {
        Self::try_new(kafka, topics, producer).expect("creating the definitions producer")
    }

    /// [`new`](Self::new), returning an error instead of panicking.
    pub fn try_new(
        kafka: KafkaSettings,
        topics: Topics,
        producer: FutureProducer,
    ) -> Result<Arc<Self>, Error> {
        let mut cfg = client_config(&kafka, Role::Producer);
        // One bound on how late a registration can land (START_SETTLE_MS rests on it).
        cfg.remove("delivery.timeout.ms");
        cfg.set("message.timeout.ms", PUBLISH_TIMEOUT_MS.to_string());
        let publisher: FutureProducer = cfg.create().map_err(kafka::Error::from)?;
        let (types_tx, _) = watch::channel(0);
        let catalog = Catalog::default();
        let (progress_tx, _) = watch::channel(CatalogProgress {
            next_offset: 0,
            complete_as_of_ms: catalog.complete_as_of_ms,
            versions: 0,
        });
        Ok(Arc::new(Self {
            catalog: RwLock::new(Arc::new(catalog)),
            types_tx,
            progress_tx,
            kafka,
            topics,
            publisher,
            producer,
            create_topics: AtomicBool::new(true),
            lifecycle: RwLock::new(lifecycle::Lifecycle::default()),
        }))
    }

    /// Stops creating the topics of new types (for tests on librdkafka's mock
    /// cluster, which cannot create topics; they create them up front).
    pub fn disable_topic_creation(&self) {
        self.create_topics.store(false, Ordering::SeqCst);
    }

    /// The Kafka settings the registry was made with (for tools that read topics).
    pub fn kafka(&self) -> &KafkaSettings {
        &self.kafka
    }

    /// The folded lifecycle of every type (a copy).
    pub fn lifecycle(&self) -> lifecycle::Lifecycle {
        self.lifecycle.read().expect("lifecycle lock").clone()
    }

    /// Appends a lifecycle change and waits until this replica has folded it.
    pub async fn change_lifecycle(&self, change: lifecycle::Change) -> Result<(), Error> {
        let deadline = Instant::now() + REGISTER_TIMEOUT;
        let payload = serde_json::to_vec(&change).map_err(|e| Error::Publish(e.to_string()))?;
        let (key, topic) = (change.key(), self.topics.definitions());
        let record = FutureRecord::to(&topic).key(&key).payload(&payload);
        let delivery = self
            .publisher
            .send(record, Duration::from_millis(PUBLISH_TIMEOUT_MS as u64))
            .await
            .map_err(|(e, _)| Error::Publish(e.to_string()))?;
        self.read_to(delivery.offset + 1, deadline).await
    }

    /// The current catalog (an immutable snapshot).
    pub fn catalog(&self) -> Arc<Catalog> {
        self.catalog.read().expect("catalog lock").clone()
    }

    /// Notifies when the set of types changes.
    pub fn watch_types(&self) -> watch::Receiver<usize> {
        self.types_tx.subscribe()
    }

    /// Notifies on every change of the catalog: a version added, the follower's
    /// position, [`Catalog::complete_as_of_ms`] advancing (about every
    /// 250 ms while the follower runs and the broker answers). A waiter takes
    /// [`catalog`](Self::catalog) again after each change.
    pub fn watch(&self) -> watch::Receiver<CatalogProgress> {
        self.progress_tx.subscribe()
    }

    /// [`Catalog::covers`] of the current catalog.
    pub fn covers(&self, ty: &str, version: u32) -> bool {
        self.catalog().covers(ty, version)
    }

    /// [`Catalog::complete_as_of_ms`] of the current catalog.
    pub fn complete_as_of_ms(&self) -> i64 {
        self.catalog().complete_as_of_ms()
    }

    /// Waits until the current catalog can decide `event`
    /// ([`Catalog::decidable`]) and returns that catalog, or `None` after
    /// `timeout`.
    pub async fn decidable_catalog(
        &self,
        event: &WorkflowEvent,
        timeout: Duration,
    ) -> Option<Arc<Catalog>> {
        let mut rx = self.watch();
        let deadline = Instant::now() + timeout;
        loop {
            rx.borrow_and_update();
            let catalog = self.catalog();
            if catalog.decidable(event) {
                return Some(catalog);
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) | Err(_) => return None,
            }
        }
    }

    /// Adds the winner of a version to the catalog; creates its topics first
    /// when the type is new (up to [`TOPIC_CREATION_ATTEMPTS`] tries of at most
    /// [`TOPIC_CREATION_TIMEOUT`] each, then it goes on without them).
    async fn insert(&self, def: WorkflowDefinition, registration: String) {
        let create = self.create_topics.load(Ordering::SeqCst);
        let mut specs = if self.catalog().contains_type(&def.workflow_type) {
            Vec::new()
        } else {
            kafka::workflow_type_topics(&self.topics, &def.workflow_type, self.kafka.partitions)
        };
        // The task topic of every lane a task of this version names (a new
        // version may name new lanes); existing topics are left as they are.
        specs.extend(kafka::lane_topics(
            &self.topics,
            &def,
            self.kafka.partitions,
        ));
        if create && !specs.is_empty() {
            let mut attempt = 1;
            loop {
                let created = tokio::time::timeout(
                    TOPIC_CREATION_TIMEOUT,
                    kafka::ensure_topics(&self.kafka, &specs),
                )
                .await
                .unwrap_or_else(|_| {
                    Err(kafka::Error::CreateTopic {
                        topic: def.workflow_type.clone(),
                        reason: format!("no answer within {TOPIC_CREATION_TIMEOUT:?}"),
                    })
                });
                match created {
                    Ok(()) => break,
                    Err(e) if attempt < TOPIC_CREATION_ATTEMPTS => {
                        tracing::warn!(workflow_type = %def.workflow_type, error = %e, attempt, "cannot create the topics of a new workflow type; retrying");
                        tokio::time::sleep(Duration::from_millis(500) * attempt).await;
                        attempt += 1;
                    }
                    Err(e) => {
                        // The catalog must not stall on a broker that refuses (an
                        // operator may provision the topics): go on without them.
                        tracing::error!(workflow_type = %def.workflow_type, error = %e, attempt, "cannot create the topics of a new workflow type; adding it to the catalog without them (create them by hand)");
                        break;
                    }
                }
            }
        }
        tracing::info!(workflow_type = %def.workflow_type, version = def.version, registration = %registration, "definition version added to the catalog");
        let types = self.update(|c| {
            let mut next = (*c.by_type).clone();
            next.entry(def.workflow_type.clone()).or_default().insert(
                def.version,
                Arc::new(Entry {
                    def: Arc::new(def),
                    registration,
                }),
            );
            Catalog {
                by_type: Arc::new(next),
                complete_as_of_ms: c.complete_as_of_ms,
            }
        });
        // Only a change in the number of types changes the subscription.
        self.types_tx.send_if_modified(|current| {
            let changed = *current != types;
            *current = types;
            changed
        });
    }

    /// Replaces the catalog with `f(current)`; returns the number of types.
    fn update(&self, f: impl FnOnce(&Catalog) -> Catalog) -> usize {
        let mut guard = self.catalog.write().expect("catalog lock");
        let next = f(&guard);
        let (types, versions, complete) = (
            next.by_type.len(),
            next.by_type.values().map(BTreeMap::len).sum(),
            next.complete_as_of_ms,
        );
        *guard = Arc::new(next);
        drop(guard);
        self.progress_tx.send_modify(|p| {
            p.versions = versions;
            p.complete_as_of_ms = complete;
        });
        types
    }

    fn set_complete_as_of(&self, w: i64) {
        self.update(|c| Catalog {
            by_type: c.by_type.clone(),
            complete_as_of_ms: c.complete_as_of_ms.max(w),
        });
    }

    fn set_next_offset(&self, next: i64) {
        self.progress_tx.send_if_modified(|p| {
            let changed = next > p.next_offset;
            p.next_offset = p.next_offset.max(next);
            changed
        });
    }

    /// The high watermark of `weft.definitions` now.
    async fn high_watermark(&self) -> Result<i64, Error> {
        let producer = self.producer.clone();
        let topic = self.topics.definitions();
        let (_, high) = tokio::task::spawn_blocking(move || {
            producer
                .client()
                .fetch_watermarks(&topic, 0, WATERMARK_TIMEOUT)
        })
        .await
        .map_err(|e| Error::Unavailable(e.to_string()))?
        .map_err(kafka::Error::from)?;
        Ok(high)
    }

    /// Waits until the follower has read every record before `offset`.
    async fn read_to(&self, offset: i64, deadline: Instant) -> Result<(), Error> {
        let mut rx = self.watch();
        let read = tokio::time::timeout_at(deadline, rx.wait_for(|p| p.next_offset >= offset))
            .await
            .map(|r| r.is_ok());
        match read {
            Ok(true) => Ok(()),
            Ok(false) => Err(Error::Unavailable("the registry is gone".into())),
            Err(_) => Err(Error::Unavailable(format!(
                "the definitions follower did not read up to offset {offset} in time"
            ))),
        }
    }

    /// Registers a parsed definition. The same content as the latest version
    /// returns that version (`false`: nothing new); anything else becomes the
    /// next version (`true`). Race-free across replicas: it reads the topic
    /// up to its end, proposes latest + 1, publishes once, reads the topic past
    /// its own record and returns the version the log gave it — its own when
    /// its record was the first for the version, the winner's when the winner
    /// has the same content; else it tries again with the next version.
    pub async fn register(
        &self,
        def: WorkflowDefinition,
    ) -> Result<(WorkflowDefinition, bool), Error> {
        validate(&def)?;
        if self.kafka.transactions != TransactionsMode::On {
            if let Some(t) = def
                .tasks
                .iter()
                .find(|t| t.execution_semantics == ExecutionSemantics::ExactlyOnce)
            {
                return Err(Error::ExactlyOnceUnsupported {
                    task: t.name.clone(),
                    mode: self.kafka.transactions,
                });
            }
        }
        let deadline = Instant::now() + REGISTER_TIMEOUT;
        let ty = def.workflow_type.clone();
        for attempt in 1.. {
            let high = self.high_watermark().await?;
            self.read_to(high, deadline).await?;
            let catalog = self.catalog();
            let latest = catalog.latest(&ty);
            if let Some(l) = latest.filter(|l| same_content(l, &def)) {
                return Ok((l.clone(), false));
            }
            let mut proposal = def.clone();
            proposal.version = latest.map_or(1, |l| l.version + 1);
            // Registration times grow with the version (latest_at relies on the order).
            proposal.registered_at_ms =
                now_ms().max(latest.map_or(i64::MIN, |l| l.registered_at_ms + 1));
            let key = registration_key(&proposal);
            let payload = proposal.encode();
            let topic = self.topics.definitions();
            let record = FutureRecord::to(&topic).key(&key).payload(&payload);
            let delivery = self
                .publisher
                .send(record, Duration::from_millis(PUBLISH_TIMEOUT_MS as u64))
                .await
                .map_err(|(e, _)| Error::Publish(e.to_string()))?;
            self.read_to(delivery.offset + 1, deadline).await?;
            let catalog = self.catalog();
            match catalog.entry(&ty, proposal.version) {
                Some(e) if e.registration == key => {
                    tracing::info!(workflow_type = %ty, version = proposal.version, attempt, "definition registered");
                    return Ok((proposal, true));
                }
                Some(e) if same_content(&e.def, &def) => {
                    return Ok((e.def.as_ref().clone(), false));
                }
                Some(e) => {
                    tracing::info!(workflow_type = %ty, version = proposal.version, winner = %e.registration, attempt, "another registration took this version first; proposing the next");
                }
                None => {
                    return Err(Error::Unavailable(format!(
                        "registration {key} was read back but is not in the catalog"
                    )))
                }
            }
            if Instant::now() >= deadline {
                break;
            }
        }
        Err(Error::Unavailable(format!(
            "registering {ty} lost every race for a version within {REGISTER_TIMEOUT:?}"
        )))
    }

    /// Folds one record: the first definition for a `(type, version)` wins;
    /// lifecycle records ([`lifecycle`]) change what may start.
    async fn fold(&self, key: Option<&[u8]>, payload: Option<&[u8]>, offset: i64) {
        let Some(payload) = payload else {
            return; // a tombstone deletes nothing here
        };
        let text_key = key.map(String::from_utf8_lossy).unwrap_or_default();
        match lifecycle::parse(&text_key, payload) {
            Some(Ok(change)) => {
                let latest = self
                    .catalog()
                    .latest(&change.workflow_type)
                    .map(|d| d.version);
                tracing::info!(offset, workflow_type = %change.workflow_type, action = ?change.action, version = ?change.version, "definition lifecycle change");
                self.lifecycle
                    .write()
                    .expect("lifecycle lock")
                    .apply(&change, latest);
                return;
            }
            Some(Err(e)) => {
                tracing::warn!(offset, error = %e, "skipping an unreadable lifecycle record");
                return;
            }
            None => {}
        }
        let def = match WorkflowDefinition::decode(payload) {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(offset, error = %e, "skipping undecodable definition record");
                return;
            }
        };
        let key = key
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .unwrap_or_default();
        if !key_matches(&key, &def) {
            tracing::warn!(offset, key = %key, workflow_type = %def.workflow_type, version = def.version, "skipping a definition record whose key names another version");
            return;
        }
        if let Some(winner) = self.catalog().entry(&def.workflow_type, def.version) {
            tracing::debug!(offset, registration = %key, winner = %winner.registration, "definition record lost its version to an earlier one");
            return;
        }
        let registration = if key.is_empty() {
            format!("offset:{offset}")
        } else {
            key
        };
        self.insert(def, registration).await;
    }

    /// Folds `weft.definitions` from its start and keeps following it. Sends
    /// `loaded` once it has read up to the high watermark it found at start.
    /// About every 250 ms it fetches the high watermark again; once it has read
    /// up to it, [`Catalog::complete_as_of_ms`] becomes the time of that fetch.
    pub async fn follow(
        self: Arc<Self>,
        loaded: tokio::sync::oneshot::Sender<()>,
    ) -> Result<(), Error> {
        let topic = self.topics.definitions();
        let mut cfg = client_config(&self.kafka, Role::Consumer);
        cfg.set(
            "group.id",
            format!("weft-definitions-{}", uuid::Uuid::new_v4()),
        );
        // New definitions are rare: long-poll instead of asking the broker every few ms.
        cfg.set("fetch.wait.max.ms", "100");
        let consumer: StreamConsumer = cfg.create().map_err(kafka::Error::from)?;
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&topic, 0, Offset::Beginning)
            .map_err(kafka::Error::from)?;
        consumer.assign(&tpl).map_err(kafka::Error::from)?;
        let mut loaded = Some(loaded);
        let mut next_offset = 0i64;
        // A completed watermark fetch not yet read up to: (wall time before the fetch, high).
        let mut mark: Option<(i64, i64)> = None;
        let mut probe: Option<tokio::task::JoinHandle<(i64, Result<i64, Error>)>> = None;
        let mut next_probe = Instant::now();
        loop {
            if mark.is_none() && probe.is_none() && Instant::now() >= next_probe {
                let me = self.clone();
                probe = Some(tokio::spawn(async move {
                    let w = now_ms();
                    (w, me.high_watermark().await)
                }));
            }
            if probe.as_ref().is_some_and(|p| p.is_finished()) {
                if let Some(Ok((w, result))) = probe.take().and_then(FutureExt::now_or_never) {
                    match result {
                        Ok(high) => mark = Some((w, high)),
                        Err(e) => {
                            tracing::warn!(error = %e, "cannot fetch the definitions topic's high watermark");
                            next_probe = Instant::now() + PROBE_EVERY;
                        }
                    }
                }
            }
            // A timeout keeps the loop turning (probes, shutdown).
            match tokio::time::timeout(Duration::from_millis(50), consumer.recv()).await {
                Ok(Ok(m)) => {
                    self.fold(m.key(), m.payload(), m.offset()).await;
                    next_offset = m.offset() + 1;
                    self.set_next_offset(next_offset);
                }
                Ok(Err(e)) => tracing::warn!(error = %e, "definitions consumer error"),
                Err(_) => {
                    // Idle: the consumer's position also skips offsets that hold no record.
                    if let Ok(pos) = consumer.position() {
                        if let Some(Offset::Offset(p)) =
                            pos.find_partition(&topic, 0).map(|e| e.offset())
                        {
                            if p > next_offset {
                                next_offset = p;
                                self.set_next_offset(next_offset);
                            }
                        }
                    }
                }
            }
            if let Some((w, high)) = mark {
                if next_offset >= high {
                    self.set_complete_as_of(w);
                    mark = None;
                    next_probe = Instant::now() + PROBE_EVERY;
                    if let Some(tx) = loaded.take() {
                        let _ = tx.send(());
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
