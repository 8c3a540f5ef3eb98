//! The events consumer: one consumer-group member over the events topics of
//! every registered workflow type. Its rebalance callback seeks each assigned
//! partition to the offset stored with the projection (the group's committed
//! offsets are not the source of truth); the loop routes records to one
//! partition supervisor per owned partition, each with the offset the consumer
//! handed over before it (so a processor can tell a lost record from a
//! transaction marker, see `partition::feed`), seeks back when a processor
//! asks, re-subscribes when a new type is registered, and retires partition
//! tasks on revocation before a later assignment of the same partition may
//! start.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::consumer::{
    BaseConsumer, Consumer, ConsumerContext, RebalanceProtocol, StreamConsumer,
};
use rdkafka::message::Message;
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use weft_shared::config::KafkaSettings;
use weft_shared::kafka::{client_config, Role};
use weft_shared::topics::TopicKind;

use crate::partition::feed::{Fed, UNKNOWN};
use crate::partition::supervise::{supervise, Assignment};
use crate::partition::{ReplayProgress, Seek, Shared};
use crate::status::scope;
use crate::store::Store;

type Tp = (String, i32);

/// How long a subscribed consumer may wait for its first assignment before it
/// rejoins the group (longer than the session timeout of a crashed predecessor).
const JOIN_WATCHDOG: Duration = Duration::from_secs(15);
/// Rejoins after which an empty assignment is taken as final (more replicas
/// than partitions).
const MAX_REJOINS: u32 = 3;
/// How often the consumer's positions are handed to replaying partitions.
const POSITIONS_EVERY: Duration = Duration::from_millis(200);

enum RebalanceEvent {
    Assigned(Vec<Tp>),
    Revoked(Vec<Tp>),
}

/// The offset after the record last handed over per partition (or where it
/// was assigned or sought to).
type Cursors = Arc<Mutex<HashMap<Tp, i64>>>;

/// Rebalance callback context: seeks to stored offsets and reports changes.
struct Ctx {
    store: Store,
    events: mpsc::UnboundedSender<RebalanceEvent>,
    owned: Arc<Mutex<HashSet<Tp>>>,
    cursors: Cursors,
}

impl ClientContext for Ctx {}

impl ConsumerContext for Ctx {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        let parts: Vec<Tp> = tpl
            .elements()
            .iter()
            .map(|e| (e.topic().to_owned(), e.partition()))
            .collect();
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                let mut cursors = self.cursors.lock().expect("cursors lock");
                for (topic, p) in &parts {
                    let offset = match self.store.offset(topic, *p) {
                        Ok(Some(o)) => Offset::Offset(o),
                        Ok(None) => Offset::Beginning,
                        Err(e) => {
                            tracing::error!(%topic, partition = p, error = %e, "cannot read stored offset; replaying from the beginning");
                            Offset::Beginning
                        }
                    };
                    let start = match offset {
                        Offset::Offset(o) => o,
                        _ => 0,
                    };
                    cursors.insert((topic.clone(), *p), start);
                    let _ = tpl.set_partition_offset(topic, *p, offset);
                }
                drop(cursors);
                let assigned = if cooperative(consumer) {
                    consumer.incremental_assign(tpl)
                } else {
                    consumer.assign(tpl)
                };
                if let Err(e) = assigned {
                    tracing::error!(error = %e, "assign failed");
                }
                self.owned
                    .lock()
                    .expect("owned lock")
                    .extend(parts.iter().cloned());
                let _ = self.events.send(RebalanceEvent::Assigned(parts));
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                {
                    let mut owned = self.owned.lock().expect("owned lock");
                    let mut cursors = self.cursors.lock().expect("cursors lock");
                    for tp in &parts {
                        owned.remove(tp);
                        cursors.remove(tp);
                    }
                }
                let unassigned = if cooperative(consumer) {
                    consumer.incremental_unassign(tpl)
                } else {
                    consumer.unassign()
                };
                if let Err(e) = unassigned {
                    tracing::error!(error = %e, "unassign failed");
                }
                let _ = self.events.send(RebalanceEvent::Revoked(parts));
            }
            other => tracing::error!(error = ?other, "rebalance error"),
        }
    }
}

/// Whether the group runs the cooperative (incremental) rebalance protocol.
fn cooperative(consumer: &BaseConsumer<Ctx>) -> bool {
    matches!(
        consumer.rebalance_protocol(),
        RebalanceProtocol::Cooperative
    )
}

/// Runs the events consumer until `shutdown` resolves.
pub async fn run(
    shared: Shared,
    kafka: KafkaSettings,
    group_id: String,
    shutdown: impl std::future::Future<Output = ()>,
) -> crate::Result<()> {
    let (tx, mut rebalances) = mpsc::unbounded_channel();
    let (seeks_tx, mut seeks) = mpsc::unbounded_channel::<Seek>();
    let owned = Arc::new(Mutex::new(HashSet::new()));
    let cursors: Cursors = Arc::new(Mutex::new(HashMap::new()));
    let ctx = Ctx {
        store: shared.store.clone(),
        events: tx.clone(),
        owned: owned.clone(),
        cursors: cursors.clone(),
    };
    // Workarounds for development brokers (Tansu): rejoining a group whose
    // rebalance never finishes. Off on Kafka, where an idle member is normal.
    let workarounds = {
        let kafka = kafka.clone();
        tokio::task::spawn_blocking(move || weft_shared::kafka::broker_workarounds_enabled(&kafka))
            .await
            .unwrap_or(false)
    };
    let mut cfg = client_config(&kafka, Role::Consumer);
    cfg.set("group.id", &group_id);
    // Cooperative rebalancing moves only the partitions that change owner
    // (a replica joining does not stop the others); Tansu's group coordinator
    // is kept on the eager protocol it is tested with. An explicit
    // kafka.properties setting wins.
    if !kafka
        .properties
        .contains_key("partition.assignment.strategy")
    {
        let strategy = if workarounds {
            "range"
        } else {
            "cooperative-sticky"
        };
        cfg.set("partition.assignment.strategy", strategy);
    }
    tracing::info!(
        broker_workarounds = workarounds,
        "events consumer configured"
    );
    // session.timeout.ms stays at the shared 10 s: how long a SIGKILLed replica's
    // partitions wait before they move. 6 s (Kafka's minimum) moved them sooner,
    // but Tansu under load answered heartbeats late enough to expel live members
    // (ADR 0004).
    let mut consumer: StreamConsumer<Ctx> = cfg.create_with_context(ctx)?;
    let watermarks: Arc<BaseConsumer> = Arc::new(
        client_config(&kafka, Role::Consumer)
            .set("group.id", "weft-watermarks")
            .create()?,
    );
    let mut types = shared.registry.watch_types();
    let mut senders: HashMap<Tp, mpsc::Sender<Fed>> = HashMap::new();
    let mut handles: HashMap<Tp, JoinHandle<()>> = HashMap::new();
    let mut positions: HashMap<Tp, Arc<AtomicI64>> = HashMap::new();
    let active = Arc::new(AtomicI64::new(weft_shared::event::now_ms()));
    let mut positions_tick = tokio::time::interval(POSITIONS_EVERY);
    positions_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(shutdown);
    let mut joined = !subscribe(&consumer, &shared)? || !workarounds;
    let mut join_deadline = tokio::time::Instant::now() + JOIN_WATCHDOG;
    let mut rejoins = 0u32;
    let mut rejoin_requests = shared.status.rejoin_requests();
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            _ = tokio::time::sleep_until(join_deadline), if !joined => {
                // Some brokers (Tansu 0.6) never finish a rebalance that a crashed
                // member of this group joined before its session expired. By now it
                // has expired: leave and join afresh as a new member.
                tracing::warn!(waited_s = JOIN_WATCHDOG.as_secs(), "no partition assignment yet; rejoining the group");
                rejoins += 1;
                drop(consumer);
                consumer = new_member(&cfg, &shared, &tx, &owned, &cursors)?;
                join_deadline = tokio::time::Instant::now() + JOIN_WATCHDOG;
            }
            requested = rejoin_requests.changed() => {
                // The ownership watchdog saw partitions the group failed to hand
                // out (see replicas::watchdog): leave, which revokes everything
                // this member holds, and join as a new member.
                if requested.is_ok() && joined {
                    tracing::warn!("rejoining the group at the ownership watchdog's request");
                    drop(consumer);
                    consumer = new_member(&cfg, &shared, &tx, &owned, &cursors)?;
                    (joined, rejoins) = (!workarounds, 0);
                    join_deadline = tokio::time::Instant::now() + JOIN_WATCHDOG;
                }
            }
            changed = types.changed() => {
                if changed.is_ok() && subscribe(&consumer, &shared)? && joined && workarounds {
                    joined = false;
                    join_deadline = tokio::time::Instant::now() + JOIN_WATCHDOG;
                }
            }
            Some(ev) = rebalances.recv() => match ev {
                RebalanceEvent::Assigned(parts) => {
                    tracing::info!(partitions = parts.len(), "group assigned partitions");
                    // An empty assignment right after joining can mean a crashed
                    // predecessor still holds everything: keep the watchdog armed.
                    joined = !parts.is_empty() || rejoins >= MAX_REJOINS || !workarounds;
                    for tp in parts {
                        ensure_task(&shared, &watermarks, &seeks_tx, &mut senders, &mut handles, &mut positions, &active, tp);
                    }
                }
                RebalanceEvent::Revoked(parts) => {
                    tracing::info!(partitions = parts.len(), "group revoked partitions");
                    for tp in parts {
                        senders.remove(&tp);
                        positions.remove(&tp);
                        shared.status.remove(&scope(&tp.0, tp.1));
                    }
                }
            },
            Some(seek) = seeks.recv() => {
                let tp = (seek.topic.clone(), seek.partition);
                if owned.lock().expect("owned lock").contains(&tp) {
                    match consumer.seek(&seek.topic, seek.partition, Offset::Offset(seek.offset), Duration::from_secs(5)) {
                        Ok(()) => {
                            cursors.lock().expect("cursors lock").insert(tp, seek.offset);
                            tracing::info!(topic = %seek.topic, partition = seek.partition, offset = seek.offset, "sought back to the stored offset");
                        }
                        // The processor asks again if the records do not come.
                        Err(e) => tracing::warn!(topic = %seek.topic, partition = seek.partition, offset = seek.offset, error = %e, "seek failed"),
                    }
                }
            }
            _ = positions_tick.tick(), if !positions.is_empty() => {
                // Taken between two records handed over, so a position at or past
                // a partition's replay end means every record below it is queued.
                publish_positions(&consumer, &positions);
            }
            msg = consumer.recv() => match msg {
                Ok(m) => {
                    active.store(weft_shared::event::now_ms(), Ordering::Release);
                    let tp = (m.topic().to_owned(), m.partition());
                    if !owned.lock().expect("owned lock").contains(&tp) {
                        continue;
                    }
                    let prev_next = {
                        let mut cursors = cursors.lock().expect("cursors lock");
                        let slot = cursors.entry(tp.clone()).or_insert(UNKNOWN);
                        std::mem::replace(slot, m.offset() + 1)
                    };
                    ensure_task(&shared, &watermarks, &seeks_tx, &mut senders, &mut handles, &mut positions, &active, tp.clone());
                    if let Some(s) = senders.get(&tp) {
                        if s.send(Fed { msg: m.detach(), prev_next }).await.is_err() {
                            senders.remove(&tp);
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "events consumer error");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
        shared.metrics.partitions_owned.set(senders.len() as i64);
    }
    senders.clear();
    for (_, h) in handles {
        let _ = h.await;
    }
    consumer.unsubscribe();
    Ok(())
}

/// Hands the consumer's position in each owned partition to its processor.
fn publish_positions(consumer: &StreamConsumer<Ctx>, positions: &HashMap<Tp, Arc<AtomicI64>>) {
    let Ok(tpl) = consumer.position() else { return };
    for e in tpl.elements() {
        if let (Offset::Offset(o), Some(slot)) = (
            e.offset(),
            positions.get(&(e.topic().to_owned(), e.partition())),
        ) {
            slot.store(o, Ordering::Release);
        }
    }
}

/// A new group member (the old one was dropped, which left the group).
fn new_member(
    cfg: &rdkafka::ClientConfig,
    shared: &Shared,
    tx: &mpsc::UnboundedSender<RebalanceEvent>,
    owned: &Arc<Mutex<HashSet<Tp>>>,
    cursors: &Cursors,
) -> crate::Result<StreamConsumer<Ctx>> {
    let ctx = Ctx {
        store: shared.store.clone(),
        events: tx.clone(),
        owned: owned.clone(),
        cursors: cursors.clone(),
    };
    let consumer = cfg.create_with_context(ctx)?;
    subscribe(&consumer, shared)?;
    Ok(consumer)
}

/// Subscribes to the events topic of every registered type; `false` when there
/// is none yet or the subscription is already that (a needless re-subscribe
/// makes the group rebalance, and some brokers keep a ghost member from it).
fn subscribe(consumer: &StreamConsumer<Ctx>, shared: &Shared) -> crate::Result<bool> {
    let catalog = shared.registry.catalog();
    let topics: Vec<String> = catalog.types().map(|t| shared.topics.events(t)).collect();
    if topics.is_empty() {
        shared.status.set_subscribed();
        return Ok(false);
    }
    let current: Vec<String> = consumer
        .subscription()
        .map(|tpl| {
            tpl.elements()
                .iter()
                .map(|e| e.topic().to_owned())
                .collect()
        })
        .unwrap_or_default();
    let mut sorted = topics.clone();
    sorted.sort();
    let mut current_sorted = current;
    current_sorted.sort();
    if sorted == current_sorted {
        return Ok(false);
    }
    let refs: Vec<&str> = topics.iter().map(String::as_str).collect();
    consumer.subscribe(&refs)?;
    shared.status.set_subscribed();
    tracing::info!(topics = ?topics, "subscribed to events topics");
    Ok(true)
}

/// Starts the supervisor of `tp` unless one is running; it first waits for
/// the previous one of the same partition to finish.
#[allow(clippy::too_many_arguments)]
fn ensure_task(
    shared: &Shared,
    watermarks: &Arc<BaseConsumer>,
    seeks: &mpsc::UnboundedSender<Seek>,
    senders: &mut HashMap<Tp, mpsc::Sender<Fed>>,
    handles: &mut HashMap<Tp, JoinHandle<()>>,
    positions: &mut HashMap<Tp, Arc<AtomicI64>>,
    active: &Arc<AtomicI64>,
    tp: Tp,
) {
    if senders.contains_key(&tp) {
        return;
    }
    let Some((ty, TopicKind::Events)) = shared.topics.parse(&tp.0).map(|(t, k)| (t.to_owned(), k))
    else {
        return;
    };
    let (tx, rx) = mpsc::channel(10_000);
    senders.insert(tp.clone(), tx);
    let progress = ReplayProgress::new(active.clone());
    positions.insert(tp.clone(), progress.position.clone());
    // Owned and replaying from now on (readiness and announcements say so), even
    // while the previous processor of the partition finishes.
    shared.status.claim(&scope(&tp.0, tp.1));
    let assignment = Assignment {
        shared: shared.clone(),
        topic: tp.0.clone(),
        partition: tp.1,
        workflow_type: ty,
        progress,
        seeks: seeks.clone(),
        metadata: watermarks.clone(),
        previous: handles.remove(&tp),
    };
    handles.insert(tp, tokio::spawn(supervise(assignment, rx)));
}
