//! Kafka plumbing shared by every Weft process: librdkafka client
//! configuration from [`KafkaSettings`], idempotent topic creation, and record
//! header helpers. Nothing here depends on a particular broker: the same code
//! runs against Apache Kafka, Redpanda or Tansu.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, Headers, OwnedHeaders};
use rdkafka::types::RDKafkaErrorCode;

use crate::config::KafkaSettings;
use crate::topics::Topics;

/// Errors talking to Kafka.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kafka client error: {0}")]
    Client(#[from] KafkaError),
    #[error("could not create topic {topic}: {reason}")]
    CreateTopic { topic: String, reason: String },
}

/// What a client is for; decides the defaults applied on top of the user's properties.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Produces records; idempotent, acks=all, ordered.
    Producer,
    /// Consumes in a group; offsets are managed by the caller.
    Consumer,
    /// Creates topics and reads metadata.
    Admin,
}

/// A librdkafka configuration for `role`: Weft's defaults, then every
/// `kafka.properties` entry (SASL, TLS, …) as given, which win.
pub fn client_config(settings: &KafkaSettings, role: Role) -> ClientConfig {
    let mut cfg = ClientConfig::new();
    cfg.set("bootstrap.servers", &settings.bootstrap);
    cfg.set("client.id", "weft");
    match role {
        Role::Producer => {
            // Java's partitioner (murmur2 of the key): a record for an instance
            // lands on the same partition whichever client produced it.
            cfg.set("partitioner", "murmur2_random")
                .set("enable.idempotence", "true")
                .set("acks", "all")
                .set("linger.ms", "1")
                .set("compression.type", "lz4")
                .set("message.timeout.ms", "30000");
        }
        Role::Consumer => {
            cfg.set("enable.auto.commit", "false")
                .set("enable.auto.offset.store", "false")
                .set("auto.offset.reset", "earliest")
                .set("fetch.wait.max.ms", settings.fetch_wait_max_ms.to_string())
                .set("session.timeout.ms", "10000")
                .set("heartbeat.interval.ms", "1000")
                .set("topic.metadata.refresh.interval.ms", "5000")
                .set("partition.assignment.strategy", "range");
        }
        Role::Admin => {}
    }
    for (k, v) in &settings.properties {
        cfg.set(k, v);
    }
    cfg
}

/// The partitions and cleanup policy of one topic to ensure.
#[derive(Clone, Debug)]
pub struct TopicSpec {
    pub name: String,
    pub partitions: i32,
    pub compacted: bool,
}

/// The topics of one workflow type.
pub fn workflow_type_topics(
    topics: &Topics,
    workflow_type: &str,
    partitions: i32,
) -> Vec<TopicSpec> {
    vec![
        TopicSpec {
            name: topics.events(workflow_type),
            partitions,
            compacted: false,
        },
        TopicSpec {
            name: topics.tasks(workflow_type),
            partitions,
            compacted: false,
        },
        TopicSpec {
            name: topics.snapshots(workflow_type),
            partitions,
            compacted: true,
        },
        TopicSpec {
            name: topics.dlq(workflow_type),
            partitions,
            compacted: false,
        },
        TopicSpec {
            name: topics.heartbeats(workflow_type),
            partitions,
            compacted: false,
        },
    ]
}

/// The cluster-wide topics (definitions and the node registry).
pub fn global_topics(topics: &Topics) -> Vec<TopicSpec> {
    vec![
        TopicSpec {
            name: topics.definitions(),
            partitions: 1,
            compacted: true,
        },
        TopicSpec {
            name: topics.nodes(),
            partitions: 1,
            compacted: true,
        },
    ]
}

/// Creates each topic that does not exist yet; an existing topic is left as it is.
pub async fn ensure_topics(settings: &KafkaSettings, specs: &[TopicSpec]) -> Result<(), Error> {
    if specs.is_empty() {
        return Ok(());
    }
    let admin: AdminClient<DefaultClientContext> = client_config(settings, Role::Admin).create()?;
    let new_topics: Vec<NewTopic<'_>> = specs
        .iter()
        .map(|s| {
            let t = NewTopic::new(
                &s.name,
                s.partitions,
                TopicReplication::Fixed(settings.replication_factor),
            );
            if s.compacted {
                t.set("cleanup.policy", "compact")
            } else {
                t.set("cleanup.policy", "delete")
            }
        })
        .collect();
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    for result in admin.create_topics(new_topics.iter(), &opts).await? {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => {
                return Err(Error::CreateTopic {
                    topic,
                    reason: code.to_string(),
                });
            }
        }
    }
    Ok(())
}

/// Builds record headers from `(name, value)` pairs.
pub fn headers(pairs: &[(&str, &str)]) -> OwnedHeaders {
    pairs
        .iter()
        .fold(OwnedHeaders::new_with_capacity(pairs.len()), |h, (k, v)| {
            h.insert(Header {
                key: k,
                value: Some(v.as_bytes()),
            })
        })
}

/// Reads the headers of a record into a map (non-UTF-8 values are skipped).
pub fn header_map<H: Headers>(headers: Option<&H>) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    if let Some(h) = headers {
        for header in h.iter() {
            if let Some(Ok(v)) = header.value.map(std::str::from_utf8) {
                out.insert(header.key.to_owned(), v.to_owned());
            }
        }
    }
    out
}
