//! Control records: records on a tasks topic that carry the `weft-control`
//! header are [`TaskControl`] requests, not dispatches (Avro `TaskControl`;
//! the JSON form of releases up to 0.1 is still read, see
//! `weft_shared::control`). A cancel fires the
//! token of the attempt if it runs (or waits) here, and is remembered so that
//! a dispatch of that attempt arriving later is skipped.
//!
//! They reach the worker two ways. In band, through the group consumer, like
//! any record (done at once, so their offsets are committed in order). And
//! through a [`listen`]er: a group-less consumer assigned every partition of
//! the served task topics from their end, which sees a cancel at once even
//! when the group consumer is paused because every slot is busy, or is still
//! working through dispatches queued ahead of the cancel. Applying a cancel
//! twice is harmless.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use weft_shared::config::KafkaSettings;
use weft_shared::control::{ControlAction, TaskControl};
use weft_shared::kafka::{client_config, Role};
use weft_shared::topics::headers;
use weft_shared::Topics;

use crate::consumer::lock;
use crate::execute::Shared;

/// How often the listener looks for new task topics and partitions.
pub const DISCOVERY_INTERVAL: Duration = Duration::from_secs(5);

/// The control request in `msg`, if it is a control record (`Err`: it is one
/// but cannot be read).
pub(crate) fn control_of<M: Message>(msg: &M) -> Option<Result<TaskControl, String>> {
    let is_control = msg
        .headers()
        .is_some_and(|h| h.iter().any(|h| h.key == headers::CONTROL));
    if !is_control {
        return None;
    }
    Some(match msg.payload() {
        None => Err("control record has no value".to_owned()),
        Some(bytes) => TaskControl::decode(bytes).map_err(|e| e.to_string()),
    })
}

/// Applies a control request received `via` the group consumer or the listener.
pub(crate) fn apply(shared: &Shared, control: &TaskControl, via: &'static str) {
    match control.action {
        ControlAction::Cancel => {
            let grace = Duration::from_millis(control.grace_period_ms);
            let Some(running) = lock(&shared.attempts).cancel(control.execution_id, grace) else {
                return;
            };
            shared
                .metrics
                .control_records_total
                .with_label_values(&["cancel", if running { "true" } else { "false" }])
                .inc();
            tracing::info!(
                instance_id = %control.instance_id,
                task = %control.task_name,
                attempt = control.attempt,
                execution_id = %control.execution_id,
                grace_ms = control.grace_period_ms,
                reason = %control.reason,
                running,
                via,
                "cancel received"
            );
        }
    }
}

/// Reads the control records of the task topics of `types` (every type when
/// empty) until `shared.cancel` fires; see the module docs. librdkafka only
/// assigns partitions to a consumer with a group id, so the listener has one
/// of its own, `<group>.control.<node>.<random>`; it never joins it (it
/// assigns, never subscribes) and never commits.
pub(crate) async fn listen(
    shared: Arc<Shared>,
    settings: KafkaSettings,
    group: String,
    types: Vec<String>,
) {
    let group = format!(
        "{group}.control.{}.{}",
        shared.node_id,
        weft_shared::ids::ExecutionId::random()
    );
    let consumer: StreamConsumer = match client_config(&settings, Role::Consumer)
        .set("group.id", &group)
        .set("enable.partition.eof", "false")
        // Cancels are rare and not latency-critical: long-poll, so the listener
        // costs the broker a request per partition every half second, not every 10 ms.
        .set("fetch.wait.max.ms", "500")
        .create()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "could not create the control listener; cancels arrive in band only");
            return;
        }
    };
    let consumer = Arc::new(consumer);
    let topics = shared.publisher.topics().clone();
    let mut assigned: BTreeSet<(String, i32)> = BTreeSet::new();
    let mut discovery = tokio::time::interval(DISCOVERY_INTERVAL);
    discovery.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shared.cancel.cancelled() => return,
            _ = discovery.tick() => {
                let found = {
                    let (c, t, ty) = (consumer.clone(), topics.clone(), types.clone());
                    tokio::task::spawn_blocking(move || partitions(&c, &t, &ty)).await
                };
                let new: Vec<(String, i32)> = match found {
                    Ok(Ok(found)) => found.into_iter().filter(|p| !assigned.contains(p)).collect(),
                    Ok(Err(e)) => {
                        tracing::debug!(error = %e, "control listener could not read metadata");
                        continue;
                    }
                    Err(_) => continue,
                };
                if new.is_empty() {
                    continue;
                }
                let mut tpl = TopicPartitionList::with_capacity(new.len());
                for (topic, partition) in &new {
                    if let Err(e) = tpl.add_partition_offset(topic, *partition, Offset::End) {
                        tracing::warn!(error = %e, %topic, partition, "bad partition");
                    }
                }
                match consumer.incremental_assign(&tpl) {
                    Ok(()) => {
                        tracing::debug!(partitions = new.len(), "control listener reads new partitions");
                        assigned.extend(new);
                    }
                    Err(e) => tracing::warn!(error = %e, "control listener could not assign partitions"),
                }
            }
            received = consumer.recv(), if !assigned.is_empty() => match received {
                Ok(msg) => match control_of(&msg) {
                    Some(Ok(control)) => apply(&shared, &control, "listener"),
                    Some(Err(reason)) => tracing::debug!(%reason, "unreadable control record (listener)"),
                    None => {}
                },
                Err(e) => {
                    tracing::debug!(error = %e, "control listener consumer error");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
}

/// Every partition of the task topics (every lane) of `types`, or of every type.
fn partitions(
    consumer: &StreamConsumer,
    topics: &Topics,
    types: &[String],
) -> Result<Vec<(String, i32)>, rdkafka::error::KafkaError> {
    let metadata = consumer.fetch_metadata(None, Duration::from_secs(5))?;
    let wanted: BTreeSet<&str> = types.iter().map(|t| t.trim()).collect();
    Ok(metadata
        .topics()
        .iter()
        .filter(|t| t.error().is_none())
        .filter(|t| {
            // Every lane of the types: a cancel goes where its dispatch went.
            topics
                .parse_lane(t.name())
                .is_some_and(|(ty, _)| wanted.is_empty() || wanted.contains(ty))
        })
        .flat_map(|t| t.partitions().iter().map(|p| (t.name().to_owned(), p.id())))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::message::{OwnedHeaders, OwnedMessage, Timestamp};
    use weft_shared::ids::{ExecutionId, InstanceId};

    fn message(payload: &[u8], hdrs: Option<OwnedHeaders>) -> OwnedMessage {
        OwnedMessage::new(
            Some(payload.to_vec()),
            None,
            "weft.orders.tasks".into(),
            Timestamp::NotAvailable,
            0,
            0,
            hdrs,
        )
    }

    #[test]
    fn only_records_with_the_control_header_are_control_records() {
        let c = TaskControl {
            action: ControlAction::Cancel,
            workflow_type: "orders".into(),
            instance_id: InstanceId::random(),
            task_name: "t".into(),
            attempt: 1,
            execution_id: ExecutionId::random(),
            grace_period_ms: 10,
            reason: "test".into(),
        };
        let control = weft_shared::kafka::headers(&[(headers::CONTROL, "cancel")]);
        assert!(control_of(&message(&c.encode(), None)).is_none());
        assert_eq!(
            control_of(&message(&c.encode(), Some(control.clone()))),
            Some(Ok(c.clone()))
        );
        // the JSON form of releases up to 0.1, still read for one release
        let legacy = serde_json::to_vec(&c).unwrap();
        assert_eq!(
            control_of(&message(&legacy, Some(control.clone()))),
            Some(Ok(c))
        );
        assert!(matches!(
            control_of(&message(b"{", Some(control))),
            Some(Err(_))
        ));
    }
}
