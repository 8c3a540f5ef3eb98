//! Support of `weft-rebuild-bench`: an events topic filled with complete
//! workflow histories exactly as a live run leaves them (inputs at sequence 0,
//! as clients and workers produce them, and the orchestrator's decisions with
//! their sequence numbers), a plain consumer that reads the topic to its end,
//! the orchestrator counters that say how many records it has processed, and
//! (`fold`) the orchestrator's partition processors run in process over records
//! read back from the broker.

pub mod fold;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};
use weft_orchestrator::protocol::conformance::history::{Defs, Driver};
use weft_shared::avro::AvroRecord;
use weft_shared::definition::parse_definition;
use weft_shared::ids::InstanceId;
use weft_shared::kafka::headers;
use weft_shared::topics::headers as h;
use weft_shared::WorkflowState;

use crate::broker::client_config;

/// What was produced.
#[derive(Debug)]
pub struct Produced {
    pub events: usize,
    pub workflows: Vec<(InstanceId, usize)>,
    pub bytes: usize,
    pub elapsed: Duration,
    /// Of `elapsed`, the time spent deciding and encoding the histories.
    pub generating: Duration,
    /// The budget ran out before the target was reached.
    pub truncated: bool,
}

/// Decides complete workflows of `definition_yaml` (registered as version 1)
/// and produces their histories to `topic` until `target` events are there or
/// `budget` has passed. Prints progress every 100,000 events. With
/// `with_headers`, records carry the event-type and idempotency-key headers
/// Weft's producers set (nothing reads them on the way back in).
pub async fn produce_histories(
    bootstrap: &str,
    topic: &str,
    definition_yaml: &str,
    target: usize,
    budget: Duration,
    with_headers: bool,
) -> Result<Produced> {
    let mut def = parse_definition(definition_yaml, None).context("parsing the definition")?;
    def.version = 1;
    let tasks: Vec<String> = def.tasks.iter().map(|t| t.name.clone()).collect();
    let ty = def.workflow_type.clone();
    let defs = Defs(vec![def]);
    let mut cfg = client_config(bootstrap);
    cfg.set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("batch.num.messages", "1000")
        .set("queue.buffering.max.messages", "500000")
        .set("compression.type", "lz4")
        .set("message.timeout.ms", "300000");
    let producer: FutureProducer = cfg.create().context("creating the producer")?;
    let started = Instant::now();
    let base_ms = weft_shared::event::now_ms();
    let mut out = Produced {
        events: 0,
        workflows: Vec::new(),
        bytes: 0,
        elapsed: Duration::ZERO,
        generating: Duration::ZERO,
        truncated: false,
    };
    let mut in_flight: Vec<DeliveryFuture> = Vec::new();
    let mut next_report = 100_000;
    while out.events < target {
        if started.elapsed() > budget {
            out.truncated = true;
            break;
        }
        let i = out.workflows.len() as i64;
        let generating = Instant::now();
        let mut d = Driver::new(&ty, InstanceId::random(), base_ms + i * 20);
        d.create(&defs);
        for t in &tasks {
            d.run_task(&defs, t);
        }
        let state = d.state.as_ref().map(|s| s.state);
        if state != Some(WorkflowState::Completed) {
            bail!("generated workflow {i} ended {state:?}, not completed");
        }
        let key = d.id.to_string();
        let payloads: Vec<Vec<u8>> = d
            .history
            .iter()
            .map(|e| {
                let mut record = e.clone();
                if !record.is_decision() {
                    record.sequence_number = 0; // as a client or worker produced it
                }
                if record.event_type == weft_shared::WorkflowEventType::WorkflowCreated {
                    // Pinned to version 1, as the API writes a start: an unpinned
                    // start waits until the catalog is complete as of its
                    // timestamp plus the settle time (ADR 0011), and these
                    // timestamps run ahead of the clock (20 ms per workflow), so
                    // the rebuild measured that wait, not the fold.
                    record
                        .metadata
                        .entry(weft_shared::event::META_DEFINITION_VERSION.to_owned())
                        .or_insert_with(|| "1".to_owned());
                }
                record.encode()
            })
            .collect();
        out.generating += generating.elapsed();
        for (e, payload) in d.history.iter().zip(&payloads) {
            out.bytes += payload.len();
            let mut r = FutureRecord::to(topic).key(&key).payload(payload);
            if with_headers {
                r = r.headers(headers(&[
                    (h::EVENT_TYPE, e.event_type.as_str()),
                    (h::IDEMPOTENCY_KEY, e.idempotency_key.as_str()),
                ]));
            }
            loop {
                match producer.send_result(r) {
                    Ok(delivery) => break in_flight.push(delivery),
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                        r = back;
                        settle(&mut in_flight).await?;
                    }
                    Err((e, _)) => bail!("producing: {e}"),
                }
            }
        }
        out.events += d.history.len();
        out.workflows.push((d.id, d.history.len()));
        if in_flight.len() >= 50_000 {
            settle(&mut in_flight).await?;
        }
        if out.events >= next_report {
            next_report += 100_000;
            let secs = started.elapsed().as_secs_f64();
            println!(
                "  produced {} events ({:.0}/s)",
                out.events,
                out.events as f64 / secs
            );
        }
    }
    settle(&mut in_flight).await?;
    out.elapsed = started.elapsed();
    Ok(out)
}

/// Waits until every record in flight is acknowledged.
async fn settle(in_flight: &mut Vec<DeliveryFuture>) -> Result<()> {
    for d in in_flight.drain(..) {
        match d.await {
            Ok(Ok(_)) => {}
            Ok(Err((e, _))) => bail!("a record was not delivered: {e}"),
            Err(_) => bail!("the producer went away before a delivery"),
        }
    }
    Ok(())
}

/// Reads every partition of `topic` from its start to its end with a plain
/// consumer (no group): `(records, time from assignment to the last record)`,
/// and the records themselves if `keep`.
pub fn consume_all(
    bootstrap: &str,
    topic: &str,
    deadline: Duration,
    keep: bool,
) -> Result<(usize, Duration, Vec<OwnedMessage>)> {
    let mut settings = weft_shared::config::WeftConfig::default().kafka;
    settings.bootstrap = bootstrap.to_owned();
    let mut cfg = weft_shared::kafka::client_config(&settings, weft_shared::kafka::Role::Consumer);
    cfg.set(
        "group.id",
        format!("weft-rebuild-bench-raw-{}", InstanceId::random()),
    );
    let consumer: BaseConsumer = cfg.create()?;
    let timeout = Duration::from_secs(10);
    let md = consumer.fetch_metadata(Some(topic), timeout)?;
    let mut tpl = TopicPartitionList::new();
    let mut ends = HashMap::new();
    for p in md.topics().iter().flat_map(|t| t.partitions()) {
        let (low, high) = consumer.fetch_watermarks(topic, p.id(), timeout)?;
        if high > low {
            tpl.add_partition_offset(topic, p.id(), Offset::Offset(low.max(0)))?;
            ends.insert(p.id(), high);
        }
    }
    let started = Instant::now();
    consumer.assign(&tpl)?;
    let mut n = 0;
    let mut kept = Vec::new();
    let mut report = Instant::now();
    while !ends.is_empty() {
        if report.elapsed() > Duration::from_secs(30) {
            report = Instant::now();
            println!("  raw consumer: {n} records; waiting for partitions (end offset) {ends:?}");
        }
        if started.elapsed() > deadline {
            bail!("read {n} records of {topic} in {deadline:?}, not to its end");
        }
        let m = match consumer.poll(Duration::from_millis(100)) {
            None => continue,
            Some(Ok(m)) => m,
            Some(Err(e)) => {
                // Transient (a connection dropped): librdkafka reconnects and resumes.
                eprintln!("  raw consumer: {e} (continuing)");
                continue;
            }
        };
        n += 1;
        if keep {
            kept.push(m.detach());
        }
        if ends
            .get(&m.partition())
            .is_some_and(|end| m.offset() + 1 >= *end)
        {
            ends.remove(&m.partition());
        }
    }
    Ok((n, started.elapsed(), kept))
}

/// How many partitions `topic` has.
pub fn partition_count(bootstrap: &str, topic: &str) -> Result<usize> {
    let consumer: BaseConsumer = client_config(bootstrap).create()?;
    let md = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    Ok(md.topics().iter().map(|t| t.partitions().len()).sum())
}

/// The orchestrator counters that together count every record it processed.
pub const PROCESSED_COUNTERS: &[&str] = &[
    "weft_orchestrator_events_applied_total",
    "weft_orchestrator_events_stale_total",
    "weft_orchestrator_events_rejected_total",
    "weft_orchestrator_events_duplicate_total",
    "weft_orchestrator_orphan_decisions_total",
    "weft_orchestrator_dlq_records_total",
];

/// The value of counter `name` in a Prometheus text exposition (0 if absent).
pub fn counter(metrics: &str, name: &str) -> u64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}
