//! The unschedulable watch: a task that asks for capabilities or resources
//! goes to its lane's topic whether or not a worker can serve it, and waits
//! there until one joins. So that it does not wait silently, the partition
//! owner hands every live dispatch of a constrained lane to this watch; when
//! the attempt is still in the watch after `after` (the setting
//! `orchestrator.unschedulable_after_ms`) and the node registry knows no live
//! node able to run it, the watch appends the input
//! [`unschedulable_input`](weft_shared::fsm::unschedulable_input) to the
//! instance's events topic. The decider records it as `error.occurred`
//! (`no_capable_node`) only while the attempt still waits for a worker, and
//! analytics count it as the `unschedulable` insight; the attempt stays
//! dispatched and runs as soon as a capable worker subscribes to its lane.
//!
//! Dispatches decided while a partition replays are watched too when they
//! were scheduled within [`REPLAY_HORIZON`] (a start that raced its type's
//! registration, an owner that restarted): the deadline counts from the
//! dispatch's `scheduled_at_ms`, and the decider drops a report of an attempt
//! that has started since. Older ones are not watched again (they still run
//! when a capable worker joins): the watch is not history.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio::sync::mpsc;
use weft_shared::avro::AvroRecord;
use weft_shared::event::now_ms;
use weft_shared::ids::InstanceId;
use weft_shared::lanes::Requirements;
use weft_shared::topics::headers as h;
use weft_shared::Topics;

use crate::protocol::WorkflowNodeRegistry;

/// How old a dispatch decided in a replay may be and still be watched.
pub const REPLAY_HORIZON: Duration = Duration::from_secs(600);

/// One dispatched attempt of a constrained lane.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Waiting {
    pub workflow_type: String,
    pub instance_id: InstanceId,
    pub task: String,
    pub attempt: u32,
    pub requirements: Requirements,
    /// When the orchestrator scheduled it (epoch ms): the wait counts from here.
    pub scheduled_at_ms: i64,
}

/// Where partition owners hand their constrained dispatches.
#[derive(Clone)]
pub struct UnschedulableWatch {
    tx: mpsc::UnboundedSender<Waiting>,
    after: Duration,
}

impl UnschedulableWatch {
    /// Starts the watch; it runs until every handle is dropped.
    pub fn start(
        after: Duration,
        nodes: Arc<dyn WorkflowNodeRegistry>,
        producer: FutureProducer,
        topics: Topics,
    ) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(rx, after, nodes, producer, topics));
        Self { tx, after }
    }

    /// Watches `waiting` (decided live, or in a replay when recent enough).
    pub fn watch(&self, waiting: Waiting, live: bool) {
        let age = now_ms().saturating_sub(waiting.scheduled_at_ms);
        let horizon = (REPLAY_HORIZON + self.after).as_millis() as i64;
        if live || age < horizon {
            let _ = self.tx.send(waiting);
        }
    }
}

async fn run(
    mut rx: mpsc::UnboundedReceiver<Waiting>,
    after: Duration,
    nodes: Arc<dyn WorkflowNodeRegistry>,
    producer: FutureProducer,
    topics: Topics,
) {
    // Earliest deadline first: replayed dispatches arrive out of order.
    let mut queue: BinaryHeap<Reverse<(i64, Waiting)>> = BinaryHeap::new();
    let after_ms = after.as_millis() as i64;
    let tick = (after / 4).clamp(Duration::from_millis(100), Duration::from_secs(1));
    let mut ticker = tokio::time::interval(tick);
    loop {
        tokio::select! {
            got = rx.recv() => match got {
                Some(w) => queue.push(Reverse((w.scheduled_at_ms + after_ms, w))),
                None => return,
            },
            _ = ticker.tick() => {
                let now = now_ms();
                while queue.peek().is_some_and(|Reverse((due, _))| *due <= now) {
                    let Some(Reverse((_, w))) = queue.pop() else { break };
                    check(&w, nodes.as_ref(), &producer, &topics).await;
                }
            }
        }
    }
}

/// Reports `w` unless a live node can run it.
async fn check(
    w: &Waiting,
    nodes: &dyn WorkflowNodeRegistry,
    producer: &FutureProducer,
    topics: &Topics,
) {
    let req = &w.requirements;
    let caps: Vec<String> = req.capabilities.iter().cloned().collect();
    match nodes.find_capable_nodes(&caps, &req.resources, &[]).await {
        Ok(found) if !found.is_empty() => return,
        Ok(_) => {}
        Err(e) => {
            tracing::warn!(error = %e, "cannot ask the node registry; not reporting");
            return;
        }
    }
    let lane = topics.lane(&w.workflow_type, &req.unprioritised());
    let message = format!(
        "no capable node: no live worker offers what task '{}' asks for (lane {lane}); it runs as soon as one joins",
        w.task
    );
    let event = weft_shared::fsm::unschedulable_input(
        &w.workflow_type,
        w.instance_id,
        &w.task,
        w.attempt,
        &message,
        now_ms(),
    );
    let topic = topics.events(&w.workflow_type);
    let key = w.instance_id.to_string();
    let payload = event.encode();
    let headers = weft_shared::kafka::headers(&[
        (h::EVENT_TYPE, event.event_type.as_str()),
        (h::IDEMPOTENCY_KEY, event.idempotency_key.as_str()),
    ]);
    let record = FutureRecord::to(&topic)
        .key(&key)
        .payload(&payload)
        .headers(headers);
    match producer.send(record, Duration::from_secs(10)).await {
        Ok(_) => tracing::warn!(
            workflow_type = %w.workflow_type, instance_id = %w.instance_id, task = %w.task,
            attempt = w.attempt, %lane, "no capable node for a task; reported"
        ),
        Err((e, _)) => {
            tracing::warn!(error = %e, instance_id = %w.instance_id, "could not report an unschedulable task")
        }
    }
}
