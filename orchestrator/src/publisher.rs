//! Publishing outbox records: every record of a flush is handed to the
//! idempotent producer at once (order within a partition is kept by the
//! producer), and the flush completes only when the broker acknowledged all of
//! them. A failed flush is retried by the caller with backoff; duplicates a
//! retry may write carry the same idempotency keys and are dropped on apply.

use std::time::Duration;

use futures::future::join_all;
use rdkafka::producer::{FutureProducer, FutureRecord};
use weft_shared::kafka::headers;

use crate::store::OutboxRecord;

/// A publish that did not complete.
#[derive(Debug, thiserror::Error)]
#[error("publishing to {topic} failed: {reason}")]
pub struct PublishError {
    pub topic: String,
    pub reason: String,
}

/// Sends `records` and waits until the broker acknowledged every one.
pub async fn publish_all(producer: &FutureProducer, records: &[OutboxRecord]) -> Result<(), PublishError> {
    let sends = records.iter().map(|r| {
        let pairs: Vec<(&str, &str)> = r.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let record = FutureRecord::to(&r.topic).key(&r.key).payload(&r.payload).headers(headers(&pairs));
        producer.send(record, Duration::from_secs(30))
    });
    for (result, r) in join_all(sends).await.into_iter().zip(records) {
        if let Err((e, _)) = result {
            return Err(PublishError { topic: r.topic.clone(), reason: e.to_string() });
        }
    }
    Ok(())
}
