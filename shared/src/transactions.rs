//! What `kafka.transactions = "auto"` means: at start-up a process asks the
//! broker whether it supports transactions, by running a probe transaction
//! with a short timeout, and runs with the answer
//! (`on` or `off`) from then on. [`resolve`] is called once, before anything
//! else reads the setting, and logs the choice with its reason.

use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseProducer, Producer};
use rdkafka::{Offset, TopicPartitionList};

use crate::config::{KafkaSettings, TransactionsMode};
use crate::kafka::{client_config, Role};
use crate::topics::Topics;

/// How long the probe waits for the broker to initialise a transactional producer.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs one whole transaction within `timeout` per step, as Weft's producers
/// do: initialise a transactional producer (a throw-away `transactional.id`),
/// begin, add the offset 0 of `topic`'s partition 0 for a throw-away consumer
/// group (`AddOffsetsToTxn` + `TxnOffsetCommit`), commit (`EndTxn`). `Ok` when
/// the broker took every step. A broker that only initialises transactional
/// producers (Tansu 0.6) fails a later step. `topic` must exist.
pub async fn probe(
    settings: &KafkaSettings,
    topic: &str,
    timeout: Duration,
) -> Result<(), KafkaError> {
    let id = uuid::Uuid::new_v4().simple();
    let mut cfg = client_config(settings, Role::Producer);
    cfg.set("transactional.id", format!("weft-transactions-probe-{id}"));
    let producer: BaseProducer = cfg.create()?;
    let mut consumer_cfg = client_config(settings, Role::Consumer);
    consumer_cfg.set("group.id", format!("weft-transactions-probe-{id}"));
    let consumer: BaseConsumer = consumer_cfg.create()?;
    let topic = topic.to_owned();
    // Blocking calls (and the clients' destructors) stay off the async threads.
    tokio::task::spawn_blocking(move || {
        let result = (|| {
            producer.init_transactions(timeout)?;
            producer.begin_transaction()?;
            let mut offsets = TopicPartitionList::new();
            offsets.add_partition_offset(&topic, 0, Offset::Offset(0))?;
            let group = consumer.group_metadata().ok_or(KafkaError::Canceled)?;
            producer.send_offsets_to_transaction(&offsets, &group, timeout)?;
            producer.commit_transaction(timeout)
        })();
        if result.is_err() {
            let _ = producer.abort_transaction(timeout);
        }
        drop(consumer);
        drop(producer);
        result
    })
    .await
    .unwrap_or(Err(KafkaError::Canceled))
}

/// The mode a process runs with: `on` and `off` as configured; `auto` becomes
/// `on` when [`probe`] (on the definitions topic, which the orchestrators
/// create) succeeds within [`PROBE_TIMEOUT`] a step, else `off`. Logs the
/// setting, the resolved mode and, for `auto`, why.
pub async fn resolve(settings: &KafkaSettings) -> TransactionsMode {
    let configured = settings.transactions;
    if configured != TransactionsMode::Auto {
        tracing::info!(kafka.transactions = %configured, resolved = %configured, "kafka transactions as configured");
        return configured;
    }
    let topic = Topics::new(settings.topic_prefix.clone()).definitions();
    match probe(settings, &topic, PROBE_TIMEOUT).await {
        Ok(()) => {
            let resolved = TransactionsMode::On;
            tracing::info!(kafka.transactions = %configured, resolved = %resolved, bootstrap = %settings.bootstrap, "kafka transactions detected: the broker ran a probe transaction");
            resolved
        }
        Err(e) => {
            let resolved = TransactionsMode::Off;
            tracing::warn!(kafka.transactions = %configured, resolved = %resolved, bootstrap = %settings.bootstrap, reason = %e, timeout_ms = PROBE_TIMEOUT.as_millis() as u64, "kafka transactions unavailable: the broker did not run a probe transaction; exactly_once tasks are refused");
            resolved
        }
    }
}

#[cfg(test)]
mod tests {
    use rdkafka::mocking::MockCluster;

    use super::*;
    use crate::config::WeftConfig;

    fn settings(bootstrap: String, mode: TransactionsMode) -> KafkaSettings {
        let mut s = WeftConfig::default().kafka;
        s.bootstrap = bootstrap;
        s.transactions = mode;
        s
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn auto_is_on_against_a_broker_with_transactions() {
        let cluster = MockCluster::new(1).expect("mock cluster");
        let topic = Topics::default().definitions();
        cluster.create_topic(&topic, 1, 1).expect("topic");
        let s = settings(cluster.bootstrap_servers(), TransactionsMode::Auto);
        assert_eq!(resolve(&s).await, TransactionsMode::On);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn auto_is_off_when_the_broker_does_not_answer_and_explicit_modes_stay() {
        // Nothing listens on this port: the probe times out.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let s = settings(format!("127.0.0.1:{port}"), TransactionsMode::Auto);
        let started = std::time::Instant::now();
        assert_eq!(resolve(&s).await, TransactionsMode::Off);
        assert!(
            started.elapsed() < PROBE_TIMEOUT + Duration::from_secs(5),
            "the probe took {:?}",
            started.elapsed()
        );
        for mode in [TransactionsMode::On, TransactionsMode::Off] {
            assert_eq!(resolve(&settings(s.bootstrap.clone(), mode)).await, mode);
        }
    }
}
