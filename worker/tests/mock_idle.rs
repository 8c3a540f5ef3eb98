//! More workers than partitions on librdkafka's mock cluster with the
//! development-broker workarounds on: three workers in one group on a task
//! topic of two partitions, so one is idle. The idle watch (which makes a
//! member that was assigned nothing rejoin while a partition has no live
//! owner) runs with a short unowned time; every partition is held by a
//! worker that heartbeats on the node registry, so the idle member stays and
//! the group does not rebalance again, also long after the claims are known.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use weft_shared::avro::AvroRecord;
use weft_shared::config::{BrokerWorkarounds, TransactionsMode};
use weft_shared::node::NodeRecord;
use weft_shared::Topics;
use weft_worker::{Metrics, Worker};

use common::*;

const NODES: [&str; 3] = ["a", "b", "c"];

fn worker(bootstrap: &str, group: &str, node: &str) -> anyhow::Result<Worker> {
    let mut cfg = config(bootstrap, group, &["orders"], TransactionsMode::Off);
    cfg.worker.node_id = node.to_owned();
    cfg.worker.shutdown_grace_ms = 500;
    cfg.kafka.broker_workarounds = BrokerWorkarounds::On;
    Ok(Worker::builder(cfg)
        .with_builtins()
        .idle_watch(Duration::from_millis(250), Duration::from_millis(1_500))
        .build()?)
}

/// How many rebalances ended with an assignment, per worker.
fn assigns(metrics: &[Metrics]) -> Vec<u64> {
    metrics
        .iter()
        .map(|m| m.rebalances_total.with_label_values(&["assign"]).get())
        .collect()
}

/// The task partitions each node claims in its latest node record.
async fn claims(bootstrap: &str, topics: &Topics) -> anyhow::Result<BTreeMap<String, usize>> {
    let end = high_watermark(bootstrap, &topics.nodes(), 0)?;
    let recs = read_until(bootstrap, &topics.nodes(), |recs| recs.len() as i64 >= end).await?;
    let mut latest = BTreeMap::new();
    for r in &recs {
        let record = NodeRecord::decode(&r.payload)?;
        let held = record
            .labels
            .keys()
            .filter(|k| k.starts_with("weft.partition."))
            .count();
        latest.insert(record.node_id, held);
    }
    Ok(latest)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_idle_member_stays_while_live_workers_hold_every_partition() -> anyhow::Result<()> {
    init_logs();
    let topics = Topics::default();
    let mock = mock_cluster(
        1,
        &[
            (topics.tasks("orders"), 2),
            (topics.events("orders"), 1),
            (topics.heartbeats("orders"), 1),
            (topics.nodes(), 1),
        ],
    )?;
    let group = format!("workers-{}", uuid_like());
    let mut metrics = Vec::new();
    let mut running = Vec::new();
    for node in NODES {
        let w = worker(&mock.bootstrap, &group, node)?;
        metrics.push(w.metrics().clone());
        running.push(spawn_worker(w));
    }

    // The group settles: every worker saw a rebalance end, and none for 5 s.
    let mut last = (assigns(&metrics), tokio::time::Instant::now());
    let settled = tokio::time::Instant::now() + DEADLINE;
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now = assigns(&metrics);
        if now != last.0 {
            last = (now, tokio::time::Instant::now());
        } else if now.iter().all(|n| *n > 0) && last.1.elapsed() > Duration::from_secs(5) {
            break;
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < settled,
            "the group never settled: {:?}",
            last.0
        );
        for (_, r) in &running {
            anyhow::ensure!(!r.is_finished(), "a worker stopped early");
        }
    }
    let before = last.0;

    // Past the 20 s the claims need to be trusted, many times the 1.5 s unowned time.
    tokio::time::sleep(Duration::from_secs(30)).await;
    let after = assigns(&metrics);
    let held = claims(&mock.bootstrap, &topics).await?;
    for (stop_tx, r) in running {
        stop(stop_tx, r).await?;
    }
    assert_eq!(
        after, before,
        "a worker took part in another rebalance (assignments per worker {NODES:?})"
    );
    let mut counts: Vec<usize> = held.values().copied().collect();
    counts.sort_unstable();
    assert_eq!(
        counts,
        [0, 1, 1],
        "one idle member and a partition on each of the others: {held:?}"
    );
    Ok(())
}
