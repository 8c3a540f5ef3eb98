//! The orchestrator's rebuild path in process: its real partition processors
//! (`weft_orchestrator::partition::Partition`: decide, one RocksDB batch per
//! batch of records with the projection, indexes, snapshots and outbox, the
//! replay watermark) fed from memory with records already read back from the
//! broker. It measures the fold and the RocksDB writes without the broker's
//! fetch latency, which is what `weft-rebuild-bench --mode in-process` reports
//! (clearly labelled as such).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::AtomicI64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::producer::FutureProducer;
use tokio::sync::mpsc;
use weft_orchestrator::definitions::Registry;
use weft_orchestrator::heartbeats::HeartbeatTracker;
use weft_orchestrator::metrics::Metrics;
use weft_orchestrator::partition::feed::Fed;
use weft_orchestrator::partition::{Partition, Placement, ReplayProgress, Shared};
use weft_orchestrator::status::Status;
use weft_orchestrator::store::Store;
use weft_shared::config::KafkaSettings;
use weft_shared::ids::InstanceId;
use weft_shared::kafka::{client_config, Role};
use weft_shared::{Topics, WorkflowState};

/// What an in-process fold did.
pub struct Folded {
    /// From the first record handed over to the last partition's offset stored.
    pub elapsed: Duration,
    /// The partition processors' metrics (Prometheus text).
    pub metrics: String,
}

/// Folds `records` of `topic` (all of it, read from offset 0) into a new store
/// in `dir` with one partition processor per partition, as a rebuild does.
pub async fn fold_in_process(
    settings: &KafkaSettings,
    topic: &str,
    workflow_type: &str,
    records: Vec<OwnedMessage>,
    dir: &Path,
) -> Result<(Folded, Store)> {
    let topics = Topics::new(settings.topic_prefix.clone());
    let store = Store::open(dir).context("opening the store")?;
    let producer: FutureProducer = client_config(settings, Role::Producer).create()?;
    let registry = Registry::new(settings.clone(), topics.clone(), producer.clone());
    let (loaded_tx, loaded_rx) = tokio::sync::oneshot::channel();
    let follower = tokio::spawn(registry.clone().follow(loaded_tx));
    let _ = loaded_rx.await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while !registry.catalog().contains_type(workflow_type) {
        ensure!(
            Instant::now() < deadline,
            "the definition of {workflow_type} did not load"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let metrics = Arc::new(Metrics::new());
    let shared = Shared {
        store: store.clone(),
        registry,
        producer,
        kafka: settings.clone(),
        topics,
        metrics: metrics.clone(),
        status: Arc::new(Status::default()),
        batch_max: 500,
        events_tx: tokio::sync::broadcast::channel(16).0,
        heartbeats: Arc::new(HeartbeatTracker::default()),
        traces: None,
        unschedulable: None,
    };
    let mut by_partition: BTreeMap<i32, Vec<OwnedMessage>> = BTreeMap::new();
    for m in records {
        by_partition.entry(m.partition()).or_default().push(m);
    }
    let mut ends = BTreeMap::new();
    let mut feeds = Vec::new();
    // Nothing here seeks (the records are gapless); the receiver stays open.
    let (seeks, _seek_requests) = mpsc::unbounded_channel();
    for (p, msgs) in by_partition {
        let end = msgs.last().map(|m| m.offset() + 1).unwrap_or(0);
        ensure!(
            msgs.first().map(|m| m.offset()) == Some(0) && end == msgs.len() as i64,
            "partition {p}: the records do not run from offset 0 without gaps"
        );
        ends.insert(p, end);
        let at = Placement {
            topic: topic.into(),
            partition: p,
            workflow_type: workflow_type.into(),
            replay_end: end,
            partition_count: None,
        };
        let mut partition = Partition::open(
            shared.clone(),
            at,
            ReplayProgress::new(Arc::new(AtomicI64::new(weft_shared::event::now_ms()))),
            seeks.clone(),
        )?;
        let (tx, mut rx) = mpsc::channel::<Fed>(2_000);
        tokio::spawn(async move { partition.run(&mut rx).await });
        feeds.push((tx, msgs));
    }
    let started = Instant::now();
    let mut senders = Vec::new();
    for (tx, msgs) in feeds {
        senders.push(tokio::spawn(async move {
            for m in msgs {
                // Gapless from offset 0: the record before this one ends where it starts.
                let prev_next = m.offset();
                if tx.send(Fed { msg: m, prev_next }).await.is_err() {
                    bail!("a partition processor stopped");
                }
            }
            Ok(tx)
        }));
    }
    let mut keep_open = Vec::new();
    for s in senders {
        keep_open.push(s.await??);
    }
    let deadline = Instant::now() + Duration::from_secs(3_600);
    loop {
        let mut done = true;
        for (p, end) in &ends {
            done &= store.offset(topic, *p)? == Some(*end);
        }
        if done {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "the partitions did not reach their ends"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = started.elapsed();
    drop(keep_open);
    follower.abort();
    Ok((
        Folded {
            elapsed,
            metrics: metrics.render(),
        },
        store,
    ))
}

/// Checks that each of `sample` (instance, history length) is completed with its whole history.
pub fn check_instances(
    store: &Store,
    workflow_type: &str,
    sample: &[(InstanceId, usize)],
) -> Result<()> {
    for (id, len) in sample {
        let s = store
            .instance(workflow_type, *id)?
            .with_context(|| format!("instance {id} is missing"))?;
        ensure!(s.state == WorkflowState::Completed, "{id} is {}", s.state);
        ensure!(
            s.last_seq == *len as u64,
            "{id}: {} events, {len} produced",
            s.last_seq
        );
        let events = store.events(workflow_type, *id, 1, None, usize::MAX)?;
        ensure!(events.len() == *len, "{id}: {} events stored", events.len());
    }
    Ok(())
}
