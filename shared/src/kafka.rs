//! Kafka plumbing shared by every Weft process: librdkafka client
//! configuration from [`KafkaSettings`], idempotent topic creation, and record
//! header helpers. Nothing here depends on a particular broker: the same code
//! runs against Apache Kafka, Redpanda or Tansu — except
//! [`broker_workarounds_enabled`], which tells whether the development broker
//! (Tansu) is there, so that its workarounds run only where they are needed.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, Headers, OwnedHeaders};
use rdkafka::types::RDKafkaErrorCode;

use crate::config::{BrokerWorkarounds, KafkaSettings};
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
                // Records are small and brokers often near: compression costs
                // both ends CPU for little. Set compression.type in
                // kafka.properties for a distant cluster.
                .set("compression.type", "none")
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

/// The task topics of the lanes other than the default one that the tasks
/// of `def` name (see [`crate::lanes`]), once each.
pub fn lane_topics(
    topics: &Topics,
    def: &crate::WorkflowDefinition,
    partitions: i32,
) -> Vec<TopicSpec> {
    let tasks = topics.tasks(&def.workflow_type);
    let names: std::collections::BTreeSet<String> = def
        .tasks
        .iter()
        .filter_map(|t| crate::lanes::Requirements::of_task(t).ok())
        .map(|req| req.topic(&tasks))
        .filter(|name| *name != tasks)
        .collect();
    names
        .into_iter()
        .map(|name| TopicSpec {
            name,
            partitions,
            compacted: false,
        })
        .collect()
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
    // Topics that exist already need no CreateTopics request (and no admin
    // rights): only the missing ones are created.
    let existing: std::collections::HashSet<String> = admin
        .inner()
        .fetch_metadata(None, Duration::from_secs(10))
        .map(|md| {
            md.topics()
                .iter()
                .filter(|t| t.error().is_none() && !t.partitions().is_empty())
                .map(|t| t.name().to_owned())
                .collect()
        })
        .unwrap_or_default();
    let new_topics: Vec<NewTopic<'_>> = specs
        .iter()
        .filter(|s| !existing.contains(&s.name))
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
    if new_topics.is_empty() {
        return Ok(());
    }
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

/// The node id every Tansu 0.6 broker announces (`tansu_broker::NODE_ID`; its
/// command line has no option to change it).
pub const TANSU_NODE_ID: i32 = 111;
/// How long [`broker_workarounds_enabled`] waits for the broker's metadata.
pub const DETECT_TIMEOUT: Duration = Duration::from_secs(15);

/// What a broker says about itself in a metadata response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BrokerIdentity {
    /// The cluster id (Metadata v2+), if the broker sent one.
    pub cluster_id: Option<String>,
    /// The node ids of the brokers listed.
    pub broker_ids: Vec<i32>,
}

impl BrokerIdentity {
    /// Whether this is Tansu: its cluster id names it (Tansu's default is
    /// `tansu_cluster`), or it is one broker with Tansu's fixed node id 111
    /// and a cluster id that is not Kafka's (Kafka's is a 22-character
    /// base64url UUID, required by KRaft's storage format and generated under
    /// ZooKeeper), as a Tansu started with another `--cluster-id` answers.
    pub fn is_tansu(&self) -> bool {
        let id = self.cluster_id.as_deref().unwrap_or_default();
        if id.to_ascii_lowercase().contains("tansu") {
            return true;
        }
        self.broker_ids == [TANSU_NODE_ID] && !is_kafka_cluster_id(id)
    }
}

/// Whether `id` has the form of an Apache Kafka cluster id: a UUID in
/// unpadded base64url, 22 characters.
pub fn is_kafka_cluster_id(id: &str) -> bool {
    id.len() == 22
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Asks the broker for its cluster id and broker list. Blocking, up to `timeout`.
pub fn identify_broker(
    settings: &KafkaSettings,
    timeout: Duration,
) -> Result<BrokerIdentity, Error> {
    let consumer: BaseConsumer = client_config(settings, Role::Admin).create()?;
    let metadata = consumer.fetch_metadata(None, timeout)?;
    let mut broker_ids: Vec<i32> = metadata.brokers().iter().map(|b| b.id()).collect();
    broker_ids.sort_unstable();
    let cluster_id = consumer.client().fetch_cluster_id(timeout);
    Ok(BrokerIdentity {
        cluster_id,
        broker_ids,
    })
}

/// Whether the workarounds for the development broker run (see
/// [`BrokerWorkarounds`]): `on` and `off` as configured; `auto` asks the
/// broker ([`identify_broker`]) and turns them on for Tansu only — off when
/// the broker cannot be asked within [`DETECT_TIMEOUT`]. Logs the choice with
/// the structured field `broker_workarounds`. Blocking (a metadata round
/// trip): call it at start-up, from `spawn_blocking` in async code.
pub fn broker_workarounds_enabled(settings: &KafkaSettings) -> bool {
    let setting = settings.broker_workarounds;
    match setting {
        BrokerWorkarounds::On | BrokerWorkarounds::Off => {
            let enabled = setting == BrokerWorkarounds::On;
            tracing::info!(
                broker_workarounds = enabled,
                %setting,
                "development-broker workarounds {} (configured)",
                on_off(enabled)
            );
            enabled
        }
        BrokerWorkarounds::Auto => match identify_broker(settings, DETECT_TIMEOUT) {
            Ok(identity) => {
                let enabled = identity.is_tansu();
                tracing::info!(
                    broker_workarounds = enabled,
                    %setting,
                    cluster_id = identity.cluster_id.as_deref().unwrap_or(""),
                    broker_ids = ?identity.broker_ids,
                    "development-broker workarounds {} (broker {} Tansu)",
                    on_off(enabled),
                    if enabled { "is" } else { "is not" }
                );
                enabled
            }
            Err(e) => {
                tracing::warn!(
                    broker_workarounds = false,
                    %setting,
                    error = %e,
                    "could not ask the broker what it is; development-broker workarounds off \
                     (set kafka.broker_workarounds=on for Tansu)"
                );
                false
            }
        },
    }
}

fn on_off(enabled: bool) -> &'static str {
    if enabled {
        "on"
    } else {
        "off"
    }
}

#[cfg(test)]
mod detect_tests {
    use super::*;

    fn id(cluster: Option<&str>, brokers: &[i32]) -> BrokerIdentity {
        BrokerIdentity {
            cluster_id: cluster.map(str::to_owned),
            broker_ids: brokers.to_vec(),
        }
    }

    #[test]
    fn tansu_by_its_cluster_id_or_its_fixed_node_id() {
        assert!(id(Some("tansu_cluster"), &[111]).is_tansu());
        assert!(id(Some("Tansu-dev"), &[1]).is_tansu());
        assert!(id(Some("dev"), &[111]).is_tansu(), "custom --cluster-id");
        assert!(id(None, &[111]).is_tansu());
    }

    #[test]
    fn kafka_and_others_are_not_tansu() {
        assert!(!id(Some("MkU3OEVBNTcwNTJENDM2Qk"), &[1, 2, 3]).is_tansu());
        assert!(
            !id(Some("MkU3OEVBNTcwNTJENDM2Qk"), &[111]).is_tansu(),
            "a Kafka broker with node.id 111"
        );
        assert!(!id(Some("redpanda.4f1c0a2e"), &[0]).is_tansu());
        assert!(!id(None, &[1, 111]).is_tansu());
        assert!(is_kafka_cluster_id("4L6g3nShT-eMCtK--X86sw"));
        assert!(!is_kafka_cluster_id("tansu_cluster"));
    }

    #[test]
    fn configured_settings_win_without_asking_the_broker() {
        let mut s = crate::config::WeftConfig::default().kafka;
        s.bootstrap = "127.0.0.1:1".into(); // nothing listens: asking would fail
        s.broker_workarounds = BrokerWorkarounds::On;
        assert!(broker_workarounds_enabled(&s));
        s.broker_workarounds = BrokerWorkarounds::Off;
        assert!(!broker_workarounds_enabled(&s));
    }
}
