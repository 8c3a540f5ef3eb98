//! The broker the harness starts is a working Kafka broker: records produced to
//! a topic created through the admin API come back, complete and in order, to a
//! consumer group, whose committed offsets are stored; and the data survives a
//! `kill -9` of the broker.

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{ensure, Result};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use weft_integration_tests::bench_support::{consume, produce_consume, record_key, record_payload};
use weft_integration_tests::{wait_for, Broker};

const RECORDS: usize = 1_000;
const PARTITIONS: i32 = 3;

/// The offsets group `group` has committed on `topic`, per partition.
async fn committed(broker: &Broker, group: &str, topic: &str) -> Result<Vec<Offset>> {
    let mut cfg = broker.client_config();
    cfg.set("group.id", group)
        .set("enable.auto.commit", "false");
    let consumer: BaseConsumer = cfg.create()?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition(topic, p);
    }
    let committed = tokio::task::spawn_blocking(move || {
        consumer.committed_offsets(tpl, Duration::from_secs(10))
    })
    .await??;
    Ok(committed.elements().iter().map(|e| e.offset()).collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produce_and_consume_in_a_group() -> Result<()> {
    let mut broker = Broker::start().await?;
    let topic = "weft.harness.check";
    broker.create_topic(topic, PARTITIONS).await?;

    let trip = produce_consume(&broker.bootstrap(), topic, "weft-harness-group", RECORDS).await?;
    eprintln!(
        "round trip of {RECORDS} records: {:?} ({:.0} records/s)",
        trip.elapsed,
        trip.rate()
    );

    // Every record came back once, with its payload.
    ensure!(
        trip.records.len() == RECORDS,
        "consumed {} records, expected {RECORDS}",
        trip.records.len()
    );
    let keys: BTreeSet<String> = trip
        .records
        .iter()
        .map(|r| String::from_utf8_lossy(&r.key).into_owned())
        .collect();
    let expected: BTreeSet<String> = (0..RECORDS).map(record_key).collect();
    ensure!(
        keys == expected,
        "the consumed keys differ from the produced ones"
    );
    for r in &trip.records {
        let i: usize = String::from_utf8_lossy(&r.key)["key-".len()..].parse()?;
        ensure!(
            r.payload == record_payload(i).into_bytes(),
            "record {i} came back with another payload"
        );
    }

    // In each partition, offsets are 0, 1, 2, … in order.
    let by_partition = trip.offsets_by_partition();
    let mut per_partition = Vec::new();
    for (p, offsets) in &by_partition {
        ensure!(
            offsets.iter().copied().eq(0..offsets.len() as i64),
            "partition {p}: offsets not contiguous from 0: {:?}…",
            &offsets[..offsets.len().min(20)]
        );
        per_partition.push((*p, offsets.len() as i64));
    }
    ensure!(
        by_partition.len() > 1,
        "all records landed in one partition: keys are not spread"
    );

    // The group's committed offsets are the ends of the partitions.
    let offsets = committed(&broker, "weft-harness-group", topic).await?;
    for (p, count) in &per_partition {
        ensure!(
            offsets[*p as usize] == Offset::Offset(*count),
            "partition {p}: committed {:?}, expected {count}",
            offsets[*p as usize]
        );
    }

    // After a kill -9 and a restart, the records and the committed offsets are still there.
    broker.kill9();
    broker.restart().await?;
    let offsets = wait_for(
        "committed offsets after a broker restart",
        Duration::from_secs(30),
        Duration::from_millis(200),
        || {
            let broker = &broker;
            async move {
                committed(broker, "weft-harness-group", topic)
                    .await
                    .map(Some)
            }
        },
    )
    .await?;
    for (p, count) in &per_partition {
        ensure!(
            offsets[*p as usize] == Offset::Offset(*count),
            "partition {p}: committed offset lost across restart"
        );
    }
    // A new group reads the same records from the start.
    let replay = consume(&broker.bootstrap(), topic, "weft-harness-replay", RECORDS).await?;
    let mut replayed: Vec<_> = replay
        .iter()
        .map(|r| (r.partition, r.offset, r.key.clone()))
        .collect();
    let mut original: Vec<_> = trip
        .records
        .iter()
        .map(|r| (r.partition, r.offset, r.key.clone()))
        .collect();
    replayed.sort();
    original.sort();
    ensure!(
        replayed == original,
        "records read after the restart differ from those before"
    );
    Ok(())
}
