//! The fair raw baseline: a produce → consume → produce chain on the same broker,
//! with Weft's client settings, headers, record values and partition count, as
//! deep as a diamond's critical path, and no Weft code in between.
//!
//! Two topics play the events and tasks topics. Relay 0 consumes the first and
//! produces to the second (the orchestrator's part), relay 1 the reverse (the
//! worker's). The bench produces hop 1 of a chain to the first topic (the API's
//! `workflow.created`); a relay that receives hop `k < depth` produces hop
//! `k + 1` to the other topic, and one that receives hop `depth` reports the
//! chain done. So a chain is `depth` sequential produce → consume round trips,
//! as many as the causal chain of a diamond's history has links.
//!
//! - Producers: `weft_shared::kafka::client_config(Role::Producer)` (idempotent,
//!   acks=all, linger.ms=1, lz4, murmur2 partitioner), one per relay plus the
//!   starter; a relay does not wait for a send's ack before it reads on (the
//!   idempotent producer keeps the order), which is what the broker allows.
//! - Consumers: `client_config(Role::Consumer)` (`fetch.wait.max.ms` as Weft's),
//!   each relay its own group, offsets auto-committed every second.
//! - Records: the key is the chain id; the values are Weft's own records
//!   sampled from its events and tasks topics (so lz4 sees the same bytes); the
//!   headers are the names Weft's records carry, values of the same lengths, the
//!   hop riding in `weft-idempotency-key`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;
use weft_shared::kafka::{client_config, Role};

use super::stats::Percentiles;
use crate::broker::create_topic;

/// The header that carries `<chain id>:<hop>:` (padded).
const HOP_HEADER: &str = "weft-idempotency-key";

/// What the chain's records look like.
#[derive(Clone, Debug)]
pub struct ChainShape {
    /// Produce → consume round trips per chain.
    pub depth: usize,
    /// Partitions of each of the two topics.
    pub partitions: i32,
    /// Header names and value lengths of every record.
    pub headers: Vec<(String, usize)>,
    /// Values of records to the first topic (events-like), used in turn.
    pub events_values: Vec<Vec<u8>>,
    /// Values of records to the second topic (tasks-like), used in turn.
    pub tasks_values: Vec<Vec<u8>>,
}

type Producer0 = ThreadedProducer<DefaultProducerContext>;

/// Two topics, two relays and a starter, ready for chains.
pub struct ChainRig {
    shape: Arc<ChainShape>,
    topics: [String; 2],
    starter: Producer0,
    done: mpsc::Receiver<(u64, Instant)>,
    stop: Arc<AtomicBool>,
    relays: Vec<JoinHandle<Result<()>>>,
    next_id: u64,
}

fn settings(bootstrap: &str) -> weft_shared::config::KafkaSettings {
    let mut s = weft_shared::config::WeftConfig::default().kafka;
    s.bootstrap = bootstrap.to_owned();
    s
}

fn producer(bootstrap: &str) -> Result<Producer0> {
    client_config(&settings(bootstrap), Role::Producer)
        .create()
        .context("creating a chain producer")
}

/// The headers of hop `hop` of chain `id`.
fn headers(shape: &ChainShape, id: u64, hop: usize) -> OwnedHeaders {
    let mut h = OwnedHeaders::new_with_capacity(shape.headers.len());
    let mut has_hop = false;
    for (name, len) in &shape.headers {
        let value = if name == HOP_HEADER {
            has_hop = true;
            hop_value(id, hop, *len)
        } else {
            "x".repeat(*len)
        };
        h = h.insert(Header {
            key: name,
            value: Some(value.as_bytes()),
        });
    }
    if !has_hop {
        h = h.insert(Header {
            key: HOP_HEADER,
            value: Some(hop_value(id, hop, 0).as_bytes()),
        });
    }
    h
}

fn hop_value(id: u64, hop: usize, len: usize) -> String {
    let mut v = format!("{id}:{hop}:");
    while v.len() < len {
        v.push('0');
    }
    v
}

fn parse_hop(m: &impl Message) -> Option<(u64, usize)> {
    let h = m.headers()?;
    let v = h.iter().find(|h| h.key == HOP_HEADER)?.value?;
    let s = std::str::from_utf8(v).ok()?;
    let mut it = s.split(':');
    Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
}

/// Sends one record, waiting while the producer's queue is full.
fn send(p: &Producer0, topic: &str, key: &str, value: &[u8], headers: OwnedHeaders) -> Result<()> {
    let mut record = BaseRecord::to(topic)
        .key(key)
        .payload(value)
        .headers(headers);
    loop {
        match p.send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                record = r;
                std::thread::sleep(Duration::from_millis(1));
            }
            Err((e, _)) => bail!("producing to {topic}: {e}"),
        }
    }
}

fn value_for(shape: &ChainShape, hop: usize, id: u64) -> &[u8] {
    // Odd hops go to the events-like topic, even hops to the tasks-like one.
    let values = if hop % 2 == 1 {
        &shape.events_values
    } else {
        &shape.tasks_values
    };
    if values.is_empty() {
        return b"{}";
    }
    &values[(id as usize + hop) % values.len()]
}

impl ChainRig {
    /// Creates the topics, starts both relays and waits (up to `ready`) until
    /// both have their partitions and one chain went through end to end.
    pub async fn start(bootstrap: &str, shape: ChainShape, ready: Duration) -> Result<Self> {
        if shape.depth == 0 {
            bail!("a chain needs a depth of at least 1");
        }
        let run = uuid::Uuid::new_v4().simple().to_string();
        let topics = [
            format!("weft-bench-chain-{run}-a"),
            format!("weft-bench-chain-{run}-b"),
        ];
        for t in &topics {
            create_topic(bootstrap, t, shape.partitions).await?;
        }
        let shape = Arc::new(shape);
        let stop = Arc::new(AtomicBool::new(false));
        let assigned = Arc::new(AtomicUsize::new(0));
        let (done_tx, done) = mpsc::channel();
        let mut relays = Vec::new();
        for side in 0..2 {
            let mut cfg = client_config(&settings(bootstrap), Role::Consumer);
            cfg.set("group.id", format!("weft-bench-chain-{run}-{side}"))
                .set("enable.auto.commit", "true")
                .set("enable.auto.offset.store", "true")
                .set("auto.commit.interval.ms", "1000");
            let consumer: BaseConsumer = cfg.create().context("creating a relay consumer")?;
            consumer.subscribe(&[topics[side].as_str()])?;
            let out = producer(bootstrap)?;
            let (out_topic, shape, stop, assigned, done_tx) = (
                topics[1 - side].clone(),
                shape.clone(),
                stop.clone(),
                assigned.clone(),
                done_tx.clone(),
            );
            relays.push(std::thread::spawn(move || {
                relay(
                    consumer, out, &out_topic, &shape, &stop, &assigned, &done_tx,
                )
            }));
        }
        let mut rig = Self {
            shape,
            topics,
            starter: producer(bootstrap)?,
            done,
            stop,
            relays,
            next_id: 0,
        };
        let deadline = Instant::now() + ready;
        while assigned.load(Ordering::SeqCst) < 2 {
            if Instant::now() > deadline {
                bail!("the relays got no partitions within {ready:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // One chain through, retried: the first fetches may come before the group settled.
        let left = deadline.saturating_duration_since(Instant::now());
        tokio::task::block_in_place(|| rig.one(left.max(Duration::from_secs(5))))
            .context("the first chain did not go through")?;
        Ok(rig)
    }

    fn start_chain(&mut self) -> Result<u64> {
        let id = self.next_id;
        self.next_id += 1;
        send(
            &self.starter,
            &self.topics[0],
            &id.to_string(),
            value_for(&self.shape, 1, id),
            headers(&self.shape, id, 1),
        )?;
        Ok(id)
    }

    /// One chain, waited for: its latency.
    fn one(&mut self, timeout: Duration) -> Result<Duration> {
        let t0 = Instant::now();
        let id = self.start_chain()?;
        loop {
            let left = timeout.saturating_sub(t0.elapsed());
            match self.done.recv_timeout(left) {
                Ok((done, at)) if done == id => return Ok(at.duration_since(t0)),
                Ok(_) => {} // a late one of an earlier run
                Err(_) => bail!("chain {id} did not complete within {timeout:?}"),
            }
        }
    }

    /// `runs` chains one at a time: their latencies in milliseconds. Blocking.
    pub fn latency(&mut self, runs: usize, timeout: Duration) -> Result<Percentiles> {
        let mut ms = Vec::with_capacity(runs);
        for _ in 0..runs {
            ms.push(self.one(timeout)?.as_secs_f64() * 1000.0);
        }
        Ok(Percentiles::of(ms))
    }

    /// `total` chains with at most `window` in flight: chains per second from
    /// the first start to the last completion, and their latencies. Blocking.
    pub fn throughput(
        &mut self,
        total: usize,
        window: usize,
        deadline: Duration,
    ) -> Result<(f64, Percentiles)> {
        let window = window.max(1);
        let t0 = Instant::now();
        let mut started: HashMap<u64, Instant> = HashMap::with_capacity(window);
        let mut latencies = Vec::with_capacity(total);
        let mut launched = 0;
        let mut last = t0;
        while latencies.len() < total {
            while launched < total && started.len() < window {
                let id = self.start_chain()?;
                started.insert(id, Instant::now());
                launched += 1;
            }
            let left = deadline.saturating_sub(t0.elapsed());
            match self.done.recv_timeout(left.min(Duration::from_secs(1))) {
                Ok((id, at)) => {
                    if let Some(s) = started.remove(&id) {
                        latencies.push(at.duration_since(s).as_secs_f64() * 1000.0);
                        last = last.max(at);
                    }
                }
                Err(_) if left.is_zero() => bail!(
                    "{} of {total} chains completed within {deadline:?}",
                    latencies.len()
                ),
                Err(_) => {}
            }
        }
        let secs = last.duration_since(t0).as_secs_f64().max(1e-3);
        Ok((total as f64 / secs, Percentiles::of(latencies)))
    }

    /// Stops the relays and waits for them.
    pub fn stop(mut self) -> Result<()> {
        self.stop.store(true, Ordering::SeqCst);
        for r in self.relays.drain(..) {
            r.join()
                .map_err(|_| anyhow::anyhow!("a relay thread panicked"))??;
        }
        self.starter.flush(Duration::from_secs(10))?;
        Ok(())
    }
}

impl Drop for ChainRig {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// A relay's loop: forward hop `k < depth` to `out_topic` as hop `k + 1`,
/// report hop `depth` done.
fn relay(
    consumer: BaseConsumer,
    out: Producer0,
    out_topic: &str,
    shape: &ChainShape,
    stop: &AtomicBool,
    assigned: &AtomicUsize,
    done: &mpsc::Sender<(u64, Instant)>,
) -> Result<()> {
    let mut counted = false;
    while !stop.load(Ordering::SeqCst) {
        let polled = consumer.poll(Duration::from_millis(50));
        if !counted && consumer.assignment().is_ok_and(|a| a.count() > 0) {
            counted = true;
            assigned.fetch_add(1, Ordering::SeqCst);
        }
        let m = match polled {
            None => continue,
            Some(Err(KafkaError::PartitionEOF(_))) => continue,
            // Transient (a connection dropped): librdkafka reconnects.
            Some(Err(_)) => continue,
            Some(Ok(m)) => m,
        };
        let Some((id, hop)) = parse_hop(&m) else {
            continue;
        };
        if hop >= shape.depth {
            let _ = done.send((id, Instant::now()));
            continue;
        }
        let next = hop + 1;
        send(
            &out,
            out_topic,
            &id.to_string(),
            value_for(shape, next, id),
            headers(shape, id, next),
        )?;
    }
    out.flush(Duration::from_secs(10))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_values_are_padded_and_parse_back() {
        let v = hop_value(42, 3, 40);
        assert_eq!(v.len(), 40);
        let mut it = v.split(':');
        assert_eq!(it.next(), Some("42"));
        assert_eq!(it.next(), Some("3"));
        // Shorter than the id itself: not cut.
        assert_eq!(hop_value(123456, 7, 3), "123456:7:");
    }
}
