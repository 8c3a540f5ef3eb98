//! The conformance suites of `weft_orchestrator::protocol` against a real
//! broker (Tansu):
//!
//! - the Kafka implementation of `WorkflowEventBus` (rdkafka producer, a
//!   consumer-group member per subscription, replay by reading the topic),
//!   creating its topics as it goes;
//! - the Kafka implementation of `WorkflowNodeRegistry` (records produced to
//!   the compacted nodes topic, the view fed by its one follower), then a
//!   second registry (another orchestrator) that learns the nodes from the
//!   topic alone and heartbeats a node it never registered.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{ensure, Result};
use weft_integration_tests::{wait_for, Broker};
use weft_orchestrator::protocol::conformance::{bus_suite, registry_suite, BusFixture, KafkaProbe};
use weft_orchestrator::protocol::{
    KafkaEventBus, KafkaNodeRegistry, Liveness, NodeMetadata, WorkflowNodeRegistry,
};
use weft_shared::config::WeftConfig;
use weft_shared::kafka;
use weft_shared::lanes::CAPABILITIES_CONSTRAINT;
use weft_shared::model::TaskConfiguration;
use weft_shared::node::HealthStatus;
use weft_shared::{Topics, WorkflowData};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_event_bus_conforms_on_a_real_broker() -> Result<()> {
    let broker = Broker::start().await?;
    let mut settings = WeftConfig::default().kafka;
    settings.bootstrap = broker.bootstrap();
    settings.partitions = 2;
    let topics = Topics::new(settings.topic_prefix.clone());
    let bus = KafkaEventBus::new(settings.clone(), topics.clone())?;
    let fixture = BusFixture {
        topics,
        workflow_type: "protocol",
        other_type: "protocol_other",
        queue_topic: "weft.q.gpu.tasks",
    };
    bus_suite(&bus, &fixture, &KafkaProbe(settings)).await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_node_registry_conforms_on_a_real_broker() -> Result<()> {
    let broker = Broker::start().await?;
    let mut settings = WeftConfig::default().kafka;
    settings.bootstrap = broker.bootstrap();
    let topics = Topics::new(settings.topic_prefix.clone());
    // What an orchestrator creates at start-up, the nodes topic among them.
    kafka::ensure_topics(&settings, &kafka::global_topics(&topics)).await?;
    // A read-back on Tansu takes up to its half-second fetch wait; 5 s leaves
    // a loaded machine room for a few of them between two heartbeats.
    let liveness = Liveness::new(Duration::from_secs(5), Duration::from_secs(8));
    let registry = KafkaNodeRegistry::new(settings.clone(), topics.clone())?;
    let registry = Arc::new(registry.with_liveness(liveness));
    let follower = registry.spawn_follower();
    registry_suite(registry.as_ref()).await;

    let other = KafkaNodeRegistry::new(settings, topics)?.with_liveness(liveness);
    let other = Arc::new(other);
    let other_follower = other.spawn_follower();
    let id = registry
        .register_workflow_node(
            NodeMetadata::worker("late-gpu").label("zone", "b"),
            vec!["gpu".into()],
            BTreeMap::from([("slots".into(), 2)]),
        )
        .await?;
    let deadline = Duration::from_secs(30);
    let poll = Duration::from_millis(50);
    let seen = wait_for(
        "the other registry sees late-gpu",
        deadline,
        poll,
        || async {
            let nodes = other.nodes().await?;
            anyhow::Ok(
                nodes
                    .into_iter()
                    .find(|v| v.record.node_id == id && !v.silent),
            )
        },
    )
    .await?;
    ensure!(seen.record.labels.get("zone").map(String::as_str) == Some("b"));
    let load = BTreeMap::from([("in_flight".into(), 1)]);
    let known = other
        .update_node_heartbeat(&id, HealthStatus::Healthy, load, vec!["x".into()])
        .await?;
    ensure!(known, "a node registered elsewhere is known from the topic");
    wait_for(
        "the first registry sees the other's heartbeat",
        deadline,
        poll,
        || async {
            let nodes = registry.nodes().await?;
            let beat = nodes.iter().any(|v| {
                v.record.node_id == id && v.record.active_tasks == ["x"] && v.load() == 0.5
            });
            anyhow::Ok(beat.then_some(()))
        },
    )
    .await?;
    let mut task = TaskConfiguration::new("render", "render");
    task.constraints.insert(
        CAPABILITIES_CONSTRAINT.into(),
        WorkflowData::List(vec!["gpu".into(), "zone=b".into()]),
    );
    let assigned = other.assign_task_to_node(&task, None).await?;
    ensure!(
        assigned.as_deref() == Some("late-gpu"),
        "assigned to {assigned:?}"
    );
    follower.abort();
    other_follower.abort();
    Ok(())
}
