//! The engine core end to end, with the real binaries on a real broker:
//! 200 diamond workflows complete with gapless, causally linked histories; a
//! cyclic definition is rejected naming the cycle; an undecodable record on an
//! events topic, and a result for an instance nobody started, go to the DLQ with
//! their reason while the instances on their partitions complete.

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use reqwest::{Method, StatusCode};
use serde_json::json;
use weft_integration_tests::{ClusterOptions, TestCluster};
use weft_shared::avro::AvroRecord;
use weft_shared::ids::InstanceId;
use weft_shared::{WorkflowEvent, WorkflowEventType};

mod common;

use common::{check_history, start_many, wait_all_completed, DIAMOND};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_diamonds_complete_with_causal_gapless_histories() -> Result<()> {
    let cluster = TestCluster::start(ClusterOptions::new(1, 1)).await?;
    let api = cluster.api();
    let result = async {
        api.register_definition(DIAMOND).await?;
        let ids = start_many(&api, 200).await?;
        wait_all_completed(&api, &ids, Duration::from_secs(240)).await?;
        for id in &ids {
            let h = api.events("diamond", id).await?;
            check_history(id, h["events"].as_array().context("events")?)?;
        }
        // Starting again with the same idempotency key names the same instance.
        let a = api.start("diamond", json!({}), Some("order-42")).await?;
        let b = api.start("diamond", json!({}), Some("order-42")).await?;
        ensure!(
            a["instance_id"] == b["instance_id"],
            "idempotency key gave two instances: {a} {b}"
        );
        let id = a["instance_id"].as_str().context("id")?.to_owned();
        wait_all_completed(&api, std::slice::from_ref(&id), Duration::from_secs(60)).await?;
        let h = api.events("diamond", &id).await?;
        let created = h["events"]
            .as_array()
            .context("events")?
            .iter()
            .filter(|e| e["event_type"] == "workflow.created")
            .count();
        ensure!(created == 1, "the repeated start was applied twice");
        Ok(())
    }
    .await;
    if result.is_err() {
        cluster.print_logs(60);
    }
    result
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cyclic_and_malformed_definitions_are_rejected_with_the_reason() -> Result<()> {
    let cluster = TestCluster::start(ClusterOptions::new(1, 0)).await?;
    let api = cluster.api();
    let cyclic = "type: loop\ntasks:\n  - {name: a, handler: noop, depends_on: [c]}\n  - {name: b, handler: noop, depends_on: [a]}\n  - {name: c, handler: noop, depends_on: [b]}\n";
    let r = api
        .send(
            Method::POST,
            "/v1/definitions",
            Some(("application/yaml", cyclic.into())),
        )
        .await?;
    ensure!(
        r.status == StatusCode::BAD_REQUEST,
        "cycle accepted: {} {}",
        r.status,
        r.body
    );
    let msg = r.body["error"].as_str().unwrap_or("");
    ensure!(
        msg.contains("cycle") && msg.contains("a -> b -> c -> a"),
        "message does not show the cycle: {msg}"
    );

    // Tansu has no transactions: an exactly_once task is refused at registration.
    let exactly_once =
        "type: once\ntasks:\n  - {name: pay, handler: noop, semantics: exactly_once}\n";
    let r = api
        .send(
            Method::POST,
            "/v1/definitions",
            Some(("application/yaml", exactly_once.into())),
        )
        .await?;
    let msg = r.body["error"].as_str().unwrap_or("");
    ensure!(
        r.status.is_client_error()
            && msg.contains("'pay'")
            && msg.contains("exactly_once")
            && msg.contains("transactions"),
        "exactly_once without transactions: {} {}",
        r.status,
        r.body
    );

    let unknown = "type: bad\ntasks:\n  - {name: a, handler: noop, depends_on: [zz]}\n";
    let r = api
        .send(
            Method::POST,
            "/v1/definitions",
            Some(("application/yaml", unknown.into())),
        )
        .await?;
    ensure!(
        r.status == StatusCode::BAD_REQUEST
            && r.body["error"].as_str().unwrap_or("").contains("zz"),
        "{}",
        r.body
    );

    let r = api
        .send(
            Method::POST,
            "/v1/workflows/nope",
            Some(("application/json", "{}".into())),
        )
        .await?;
    ensure!(
        r.status == StatusCode::NOT_FOUND,
        "unknown type: {} {}",
        r.status,
        r.body
    );
    api.register_definition(DIAMOND).await?;
    let r = api
        .send(
            Method::POST,
            "/v1/workflows/diamond",
            Some((
                "application/json",
                "{\"input\": {\"a\": {\"b\": {}}}}".into(),
            )),
        )
        .await?;
    ensure!(
        r.status == StatusCode::BAD_REQUEST
            && r.body["error"].as_str().unwrap_or("").contains("input.a.b"),
        "{}",
        r.body
    );
    let r = api
        .send(Method::GET, "/v1/workflows/diamond/not-a-uuid", None)
        .await?;
    ensure!(
        r.status == StatusCode::BAD_REQUEST,
        "bad id: {} {}",
        r.status,
        r.body
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn undecodable_record_goes_to_the_dlq_and_its_partition_keeps_moving() -> Result<()> {
    let cluster = TestCluster::start(ClusterOptions::new(1, 1)).await?;
    let api = cluster.api();
    api.register_definition(DIAMOND).await?;
    let bootstrap = cluster.bootstrap();
    let producer: FutureProducer =
        weft_integration_tests::broker::client_config(&bootstrap).create()?;
    let garbage = b"this is not an avro record".to_vec();
    let metadata = {
        let consumer: BaseConsumer =
            weft_integration_tests::broker::client_config(&bootstrap).create()?;
        tokio::task::spawn_blocking(move || {
            consumer.fetch_metadata(Some("weft.diamond.events"), Duration::from_secs(10))
        })
        .await??
    };
    let partitions = metadata.topics()[0].partitions().len() as i32;
    ensure!(partitions > 0, "events topic has no partitions");
    // One bad record in front of every partition: every instance shares a partition with one.
    for p in 0..partitions {
        let rec = FutureRecord::to("weft.diamond.events")
            .partition(p)
            .key("garbage")
            .payload(&garbage);
        producer
            .send(rec, Duration::from_secs(10))
            .await
            .map_err(|(e, _)| e)?;
    }
    // And a well-formed result for an instance nobody started.
    let stray = InstanceId::random();
    let mut result_for_nobody = WorkflowEvent::new(
        WorkflowEventType::TaskCompleted,
        "diamond",
        stray,
        "stray-result",
        weft_shared::event::now_ms(),
    );
    result_for_nobody.metadata.extend([
        ("weft.task".into(), "a".into()),
        ("weft.attempt".into(), "1".into()),
    ]);
    let stray_bytes = result_for_nobody.encode();
    let stray_key = stray.to_string();
    producer
        .send(
            FutureRecord::to("weft.diamond.events")
                .key(&stray_key)
                .payload(&stray_bytes),
            Duration::from_secs(10),
        )
        .await
        .map_err(|(e, _)| e)?;
    let ids = start_many(&api, 30).await?;
    let result = wait_all_completed(&api, &ids, Duration::from_secs(120)).await;
    if result.is_err() {
        cluster.print_logs(60);
    }
    result?;

    let mut cfg = weft_integration_tests::broker::client_config(&bootstrap);
    cfg.set("group.id", "dlq-reader")
        .set("enable.auto.commit", "false");
    let consumer: BaseConsumer = cfg.create()?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset("weft.diamond.dlq", p, Offset::Beginning)?;
    }
    consumer.assign(&tpl)?;
    let (mut found, mut stray_found) = (0, false);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while (found < partitions || !stray_found) && std::time::Instant::now() < deadline {
        let msg = tokio::task::block_in_place(|| consumer.poll(Duration::from_millis(200)));
        if let Some(Ok(m)) = msg {
            let headers = m.headers().context("dlq record has headers")?;
            let reason = headers
                .iter()
                .find(|h| h.key == "weft-dlq-reason")
                .and_then(|h| h.value)
                .map(|v| String::from_utf8_lossy(v).into_owned())
                .context("weft-dlq-reason header")?;
            if m.payload() == Some(stray_bytes.as_slice()) {
                ensure!(
                    reason.contains(&format!("no workflow instance {stray}")),
                    "reason for the stray result: {reason}"
                );
                stray_found = true;
                continue;
            }
            ensure!(
                m.payload() == Some(garbage.as_slice()),
                "dlq record is not the original bytes"
            );
            ensure!(reason.contains("undecodable"), "reason: {reason}");
            found += 1;
        }
    }
    ensure!(
        found == partitions,
        "found {found} of {partitions} bad records in the dlq"
    );
    ensure!(
        stray_found,
        "the result for an unknown instance is not in the dlq"
    );
    let metrics = api.metrics().await?;
    let dlq_line = metrics
        .lines()
        .find(|l| l.starts_with("weft_orchestrator_dlq_records_total "))
        .context("dlq metric")?;
    ensure!(
        dlq_line.ends_with(&format!(" {}", partitions + 1)),
        "dlq metric: {dlq_line}"
    );
    Ok(())
}
