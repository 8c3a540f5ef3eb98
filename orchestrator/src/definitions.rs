//! The definition registry: every version of every workflow definition, kept
//! in memory and in the compacted `weft.definitions` topic. A tail consumer
//! keeps replicas in step; registering assigns the next version, publishes it
//! and creates the type's topics. Deciders read an immutable [`Catalog`]
//! snapshot, so a batch sees one consistent set of definitions.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Message, Offset, TopicPartitionList};
use tokio::sync::watch;
use weft_shared::avro::AvroRecord;
use weft_shared::config::{KafkaSettings, TransactionsMode};
use weft_shared::definition::{validate, DefinitionError};
use weft_shared::event::now_ms;
use weft_shared::fsm::DefinitionLookup;
use weft_shared::kafka::{self, client_config, Role};
use weft_shared::model::ExecutionSemantics;
use weft_shared::{Topics, WorkflowDefinition};

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
}

/// An immutable view of every registered definition.
#[derive(Default, Debug)]
pub struct Catalog {
    by_type: BTreeMap<String, BTreeMap<u32, Arc<WorkflowDefinition>>>,
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
            .map(|d| d.as_ref())
    }

    pub fn contains_type(&self, ty: &str) -> bool {
        self.by_type.contains_key(ty)
    }
}

impl DefinitionLookup for Catalog {
    fn get(&self, ty: &str, version: u32) -> Option<&WorkflowDefinition> {
        self.by_type.get(ty)?.get(&version).map(|d| d.as_ref())
    }

    fn latest_at(&self, ty: &str, at_ms: i64) -> Option<&WorkflowDefinition> {
        let versions = self.by_type.get(ty)?;
        versions
            .values()
            .rev()
            .find(|d| d.registered_at_ms <= at_ms)
            .or_else(|| versions.values().next())
            .map(|d| d.as_ref())
    }
}

/// The registry shared by the API and the partition processors.
pub struct Registry {
    catalog: RwLock<Arc<Catalog>>,
    /// Bumped whenever a new workflow type appears (the consumer re-subscribes).
    types_tx: watch::Sender<usize>,
    kafka: KafkaSettings,
    topics: Topics,
    producer: FutureProducer,
}

impl Registry {
    pub fn new(kafka: KafkaSettings, topics: Topics, producer: FutureProducer) -> Arc<Self> {
        let (types_tx, _) = watch::channel(0);
        Arc::new(Self {
            catalog: RwLock::new(Arc::new(Catalog::default())),
            types_tx,
            kafka,
            topics,
            producer,
        })
    }

    /// The current catalog.
    pub fn catalog(&self) -> Arc<Catalog> {
        self.catalog.read().expect("catalog lock").clone()
    }

    /// Notifies when the set of types changes.
    pub fn watch_types(&self) -> watch::Receiver<usize> {
        self.types_tx.subscribe()
    }

    /// Adds a definition to the catalog; creates its topics when the type is new.
    async fn insert(&self, def: WorkflowDefinition) -> Result<(), Error> {
        let new_type = !self.catalog().contains_type(&def.workflow_type);
        if new_type {
            let specs = kafka::workflow_type_topics(
                &self.topics,
                &def.workflow_type,
                self.kafka.partitions,
            );
            kafka::ensure_topics(&self.kafka, &specs).await?;
        }
        let types = {
            let mut guard = self.catalog.write().expect("catalog lock");
            let mut next = Catalog {
                by_type: guard.by_type.clone(),
            };
            next.by_type
                .entry(def.workflow_type.clone())
                .or_default()
                .insert(def.version, Arc::new(def));
            let n = next.by_type.len();
            *guard = Arc::new(next);
            n
        };
        // Only a change in the number of types changes the subscription (the API
        // and the topic follower may insert the same new type concurrently).
        self.types_tx.send_if_modified(|current| {
            let changed = *current != types;
            *current = types;
            changed
        });
        Ok(())
    }

    /// Registers a parsed definition: the same content as the latest version
    /// returns that version; anything else becomes the next version.
    pub async fn register(
        &self,
        mut def: WorkflowDefinition,
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
        let latest = self.catalog().latest(&def.workflow_type).cloned();
        if let Some(latest) = &latest {
            def.version = latest.version;
            def.registered_at_ms = latest.registered_at_ms;
            if &def == latest {
                return Ok((def, false));
            }
        }
        def.version = latest.map(|l| l.version + 1).unwrap_or(1);
        def.registered_at_ms = now_ms();
        let payload = def.encode();
        let key = def.key();
        let topic = self.topics.definitions();
        let record = FutureRecord::to(&topic).key(&key).payload(&payload);
        self.producer
            .send(record, Duration::from_secs(30))
            .await
            .map_err(|(e, _)| Error::Publish(e.to_string()))?;
        self.insert(def.clone()).await?;
        tracing::info!(workflow_type = %def.workflow_type, version = def.version, "definition registered");
        Ok((def, true))
    }

    /// Reads `weft.definitions` from the start up to its current end, then keeps
    /// following it (for definitions registered through other replicas).
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
        cfg.set("fetch.wait.max.ms", "500");
        let consumer: StreamConsumer = cfg.create().map_err(kafka::Error::from)?;
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&topic, 0, Offset::Beginning)
            .map_err(kafka::Error::from)?;
        consumer.assign(&tpl).map_err(kafka::Error::from)?;
        let (_, high) = {
            let c = &consumer;
            let t = topic.clone();
            tokio::task::block_in_place(|| c.fetch_watermarks(&t, 0, Duration::from_secs(30)))
                .map_err(kafka::Error::from)?
        };
        let mut loaded = Some(loaded);
        let mut next_offset = 0i64;
        if high == 0 {
            if let Some(tx) = loaded.take() {
                let _ = tx.send(());
            }
        }
        loop {
            // A timeout keeps the loop yielding, so the task can be stopped at shutdown.
            let msg = tokio::time::timeout(Duration::from_millis(200), consumer.recv())
                .await
                .ok();
            match msg {
                Some(Ok(m)) => {
                    next_offset = m.offset() + 1;
                    match m.payload().map(WorkflowDefinition::decode) {
                        Some(Ok(def)) => {
                            let known = self
                                .catalog()
                                .get(&def.workflow_type, def.version)
                                .is_some();
                            if !known {
                                self.insert(def).await?;
                            }
                        }
                        Some(Err(e)) => {
                            tracing::warn!(offset = m.offset(), error = %e, "skipping undecodable definition record")
                        }
                        None => {}
                    }
                }
                Some(Err(e)) => tracing::warn!(error = %e, "definitions consumer error"),
                None => {}
            }
            if next_offset >= high {
                if let Some(tx) = loaded.take() {
                    let _ = tx.send(());
                }
            }
        }
    }
}
