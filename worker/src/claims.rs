//! Which task partitions live workers hold, as their node heartbeats say.
//! Every worker's node record (published every `HEARTBEAT_INTERVAL` to the
//! nodes topic) carries one label per assigned partition,
//! `weft.partition.<topic>/<partition>` = `assigned@<since ms>` (the form
//! orchestrator replicas use for theirs). [`follow`] reads the nodes topic
//! from its end and keeps, per node, the partitions of its latest record and
//! when that arrived. The orphan watch asks [`Claims::claimed`]: a partition
//! that a worker heartbeating within [`FRESH_FOR`] holds is not orphaned, however
//! long its record runs; the idle watch ([`crate::unowned`]) asks it whether a
//! partition has a live owner at all. Until the nodes topic has been followed
//! for [`FRESH_FOR`] (also when it cannot be followed: the topic does not exist
//! yet, the broker is away) nothing is known and nobody is called silent.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use weft_shared::avro::AvroRecord;
use weft_shared::config::KafkaSettings;
use weft_shared::kafka::{client_config, Role};
use weft_shared::node::{HealthStatus, NodeRecord};

use crate::consumer::lock;
use crate::execute::Shared;
use crate::heartbeat::HEARTBEAT_INTERVAL;

/// Prefix of the partition labels of a node record.
pub(crate) const LABEL_PARTITION: &str = "weft.partition.";
/// A node's claims count for this long after its record arrived (four heartbeats).
pub(crate) const FRESH_FOR: Duration = Duration::from_secs(4 * HEARTBEAT_INTERVAL.as_secs());

/// The partition labels of a worker holding `assignment` (partition → since ms).
pub(crate) fn labels(assignment: &BTreeMap<(String, i32), i64>) -> BTreeMap<String, String> {
    assignment
        .iter()
        .map(|((topic, partition), since)| {
            (
                format!("{LABEL_PARTITION}{topic}/{partition}"),
                format!("assigned@{since}"),
            )
        })
        .collect()
}

/// The partitions a node record claims.
fn claimed_by(record: &NodeRecord) -> BTreeSet<(String, i32)> {
    if record.health == HealthStatus::Draining {
        return BTreeSet::new();
    }
    record
        .labels
        .iter()
        .filter(|(_, v)| v.starts_with("assigned@"))
        .filter_map(|(k, _)| {
            let (topic, partition) = k.strip_prefix(LABEL_PARTITION)?.rsplit_once('/')?;
            Some((topic.to_owned(), partition.parse().ok()?))
        })
        .collect()
}

/// A task partition: topic and partition number.
type Partition = (String, i32);

/// The claims of the worker nodes heard from, and since when they are followed.
#[derive(Debug, Default)]
pub(crate) struct Claims {
    /// Per node id: when its latest record arrived and the partitions it claims.
    nodes: Mutex<HashMap<String, (Instant, BTreeSet<Partition>)>>,
    /// When following the nodes topic started; unset while it is not followed.
    since: OnceLock<Instant>,
}

impl Claims {
    /// Claims that have been followed since `since`.
    #[cfg(test)]
    fn followed_since(since: Instant) -> Self {
        Self {
            nodes: Mutex::default(),
            since: OnceLock::from(since),
        }
    }

    /// Notes that the nodes topic is followed from now on (the first call counts).
    pub fn following(&self) {
        let _ = self.since.set(Instant::now());
    }

    /// Takes in one node record (heard now).
    pub fn record(&self, record: &NodeRecord) {
        if record.role != "worker" {
            return;
        }
        lock(&self.nodes).insert(record.node_id.clone(), (Instant::now(), claimed_by(record)));
    }

    /// Whether a worker heard from within [`FRESH_FOR`] holds `partition`;
    /// `None` while the nodes topic is not followed, or has been followed for
    /// less than that (no one can be called silent yet).
    pub fn claimed(&self, partition: &(String, i32)) -> Option<bool> {
        let now = Instant::now();
        let since = *self.since.get()?;
        if now.duration_since(since) < FRESH_FOR {
            return None;
        }
        Some(lock(&self.nodes).values().any(|(heard, parts)| {
            now.duration_since(*heard) < FRESH_FOR && parts.contains(partition)
        }))
    }
}

/// How long [`follow`] waits before it tries again to find the nodes topic.
const RETRY_EVERY: Duration = Duration::from_secs(2);

/// Reads the nodes topic from its end into `claims` until the worker stops.
/// The consumer has a group id of its own (librdkafka needs one to assign)
/// that it never joins or commits to. A nodes topic that does not exist yet
/// (the worker may start before any orchestrator created it) or whose
/// metadata cannot be read is looked for again every [`RETRY_EVERY`]; until
/// it is followed, [`Claims::claimed`] knows nothing.
pub(crate) async fn follow(
    claims: Arc<Claims>,
    settings: KafkaSettings,
    group: String,
    shared: Arc<Shared>,
) {
    let group = format!(
        "{group}.claims.{}.{}",
        shared.node_id,
        weft_shared::ids::ExecutionId::random()
    );
    let consumer: StreamConsumer = match client_config(&settings, Role::Consumer)
        .set("group.id", &group)
        .set("enable.partition.eof", "false")
        .set("fetch.wait.max.ms", "500")
        .create()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "could not follow the node registry; the orphan and idle watches call no partition unowned");
            return;
        }
    };
    let consumer = Arc::new(consumer);
    let topic = shared.publisher.topics().nodes();
    let mut tries = 0u32;
    loop {
        match assign_from_end(&consumer, &topic).await {
            Ok(partitions) => {
                tracing::info!(%topic, partitions, "following the node registry");
                break;
            }
            Err(reason) => {
                tries += 1;
                // the first miss is normal at start-up; say so once, then only now and then
                if tries == 1 || tries.is_multiple_of(30) {
                    tracing::warn!(%topic, %reason, tries, "cannot follow the node registry yet; trying again (until then the orphan and idle watches call no partition unowned)");
                }
            }
        }
        tokio::select! {
            () = shared.cancel.cancelled() => return,
            () = tokio::time::sleep(RETRY_EVERY) => {}
        }
    }
    claims.following();
    loop {
        tokio::select! {
            () = shared.cancel.cancelled() => return,
            received = consumer.recv() => match received {
                Ok(msg) => match msg.payload().map(NodeRecord::decode) {
                    Some(Ok(record)) => claims.record(&record),
                    Some(Err(e)) => tracing::debug!(error = %e, "unreadable node record"),
                    None => {}
                },
                Err(e) => {
                    tracing::debug!(error = %e, "node registry consumer error");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            },
        }
    }
}

/// Assigns every partition of `topic` to `consumer`, from its end; the
/// number of partitions, or why not.
async fn assign_from_end(consumer: &Arc<StreamConsumer>, topic: &str) -> Result<usize, String> {
    let partitions = {
        let (c, t) = (consumer.clone(), topic.to_owned());
        tokio::task::spawn_blocking(move || {
            let md = c
                .fetch_metadata(Some(&t), Duration::from_secs(10))
                .map_err(|e| format!("metadata: {e}"))?;
            let found = md
                .topics()
                .iter()
                .find(|m| m.name() == t)
                .ok_or_else(|| "not in the metadata".to_owned())?;
            if let Some(e) = found.error() {
                return Err(format!(
                    "metadata: {}",
                    rdkafka::types::RDKafkaErrorCode::from(e)
                ));
            }
            Ok(found
                .partitions()
                .iter()
                .map(|p| p.id())
                .collect::<Vec<_>>())
        })
        .await
        .map_err(|e| e.to_string())??
    };
    if partitions.is_empty() {
        return Err("the topic has no partitions (not created yet)".to_owned());
    }
    let mut tpl = TopicPartitionList::new();
    for p in &partitions {
        tpl.add_partition_offset(topic, *p, Offset::End)
            .map_err(|e| e.to_string())?;
    }
    consumer.assign(&tpl).map_err(|e| format!("assign: {e}"))?;
    Ok(partitions.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(node: &str, health: HealthStatus, labels: BTreeMap<String, String>) -> NodeRecord {
        NodeRecord {
            node_id: node.into(),
            role: "worker".into(),
            capabilities: Vec::new(),
            capacity_limits: BTreeMap::new(),
            current_load: BTreeMap::new(),
            active_tasks: Vec::new(),
            health,
            labels,
            started_at_ms: 0,
            heartbeat_at_ms: 0,
        }
    }

    #[test]
    fn labels_round_trip_into_claims() {
        let assignment = BTreeMap::from([
            (("weft.a.tasks".to_owned(), 0), 5),
            (("weft.b.tasks".to_owned(), 3), 7),
        ]);
        let labels = labels(&assignment);
        assert_eq!(labels["weft.partition.weft.a.tasks/0"], "assigned@5");
        let claimed = claimed_by(&record("w", HealthStatus::Healthy, labels.clone()));
        assert_eq!(claimed, assignment.keys().cloned().collect());
        assert!(claimed_by(&record("w", HealthStatus::Draining, labels)).is_empty());
    }

    #[test]
    fn nothing_is_unclaimed_before_a_whole_freshness_window_was_followed() {
        let claims = Claims::default();
        let p = ("weft.a.tasks".to_owned(), 0);
        assert_eq!(claims.claimed(&p), None);
        claims.following();
        assert_eq!(claims.claimed(&p), None);
        let Some(since) = Instant::now().checked_sub(FRESH_FOR) else {
            return; // a machine up for less than the window
        };
        let old = Claims::followed_since(since);
        assert_eq!(old.claimed(&p), Some(false));
        old.record(&record(
            "w",
            HealthStatus::Healthy,
            labels(&BTreeMap::from([(p.clone(), 1)])),
        ));
        assert_eq!(old.claimed(&p), Some(true));
        assert_eq!(old.claimed(&("weft.a.tasks".to_owned(), 1)), Some(false));
    }
}
