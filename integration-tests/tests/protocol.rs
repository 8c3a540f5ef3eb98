//! The event-bus conformance suite of `weft_orchestrator::protocol` against a
//! real broker: the Kafka implementation of `WorkflowEventBus` (rdkafka
//! producer, a consumer-group member per subscription, replay by reading the
//! topic) on Tansu, creating its topics as it goes.

use anyhow::Result;
use weft_integration_tests::Broker;
use weft_orchestrator::protocol::conformance::{bus_suite, BusFixture, KafkaProbe};
use weft_orchestrator::protocol::KafkaEventBus;
use weft_shared::config::WeftConfig;
use weft_shared::Topics;

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
