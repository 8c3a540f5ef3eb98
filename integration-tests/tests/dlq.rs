//! DLQ tools (issue 18 item 3), with the real binaries on a real broker and
//! two orchestrator replicas: an input for an instance nobody started yet and
//! an undecodable record go to `weft.dlqt.dlq`; `GET /v1/dlq/dlqt` and
//! `weft dlq list|show` name them with their reasons; the first is redriven
//! as it is once its instance exists (two replicas asked at once: one copy),
//! the second fixed through `weft dlq redrive --event`; both take effect on
//! their instances; every further redrive of them, also of the copies an
//! orchestrator writes again when it rebuilds its projection, is a no-op; the
//! events topic holds exactly one redriven copy of each, and
//! `weft_dlq_records` counts them per reason.

use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use weft_integration_tests::api::metric_sum_labelled;
use weft_integration_tests::broker::{client_config, high_watermarks};
use weft_integration_tests::{
    cli::weft, wait_for, wait_until, ApiClient, ClusterOptions, TestCluster,
};
use weft_shared::avro::AvroRecord;
use weft_shared::event::{now_ms, META_SOURCE_KIND};
use weft_shared::ids::InstanceId;
use weft_shared::{WorkflowEvent, WorkflowEventType};

const DEF: &str =
    "type: dlqt\ntasks:\n  - name: hold\n    handler: sleep\n    parameters: {ms: 120000}\n";
const EVENTS: &str = "weft.dlqt.events";
mod issue18;

const DEADLINE: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(200);

/// A cancel input for `id`, as the API would append it.
fn cancel_input(id: InstanceId, key: &str) -> WorkflowEvent {
    let mut e = WorkflowEvent::new(
        WorkflowEventType::WorkflowCancelled,
        "dlqt",
        id,
        key,
        now_ms(),
    );
    e.metadata.insert(META_SOURCE_KIND.into(), "input".into());
    e
}

async fn produce(bootstrap: &str, key: &str, value: &[u8]) -> Result<()> {
    let producer: FutureProducer = client_config(bootstrap)
        .set("partitioner", "murmur2_random")
        .create()?;
    producer
        .send(
            FutureRecord::to(EVENTS).key(key).payload(value),
            Duration::from_secs(10),
        )
        .await
        .map_err(|(e, _)| e)?;
    Ok(())
}

/// The DLQ listing's item whose reason contains `needle`.
async fn dlq_item(api: &ApiClient, needle: &str) -> Result<Value> {
    wait_for(
        &format!("a DLQ item with reason '{needle}'"),
        DEADLINE,
        POLL,
        || async {
            let r = api.send(Method::GET, "/v1/dlq/dlqt", None).await?;
            ensure!(r.status == StatusCode::OK, "{} {}", r.status, r.body);
            Ok(r.body["items"]
                .as_array()
                .and_then(|items| {
                    items
                        .iter()
                        .find(|i| i["reason"].as_str().is_some_and(|r| r.contains(needle)))
                })
                .cloned())
        },
    )
    .await
}

async fn redrive(api: &ApiClient, id: &str, body: Value) -> Result<(StatusCode, Value)> {
    let r = api
        .send(
            Method::POST,
            &format!("/v1/dlq/dlqt/{id}/redrive"),
            Some(("application/json", body.to_string())),
        )
        .await?;
    Ok((r.status, r.body))
}

async fn wait_state(api: &ApiClient, id: &str, state: &str) -> Result<()> {
    wait_until(&format!("{id} is {state}"), DEADLINE, POLL, || async {
        api.get("dlqt", id).await.is_ok_and(|v| v["state"] == state)
    })
    .await
}

/// `(dlq record id "p/o", weft-dlq-source)` of every DLQ record (markers skipped),
/// and the `weft-redriven-from` of every record of the events topic.
async fn raw_records(bootstrap: &str) -> Result<(Vec<(String, String)>, Vec<String>)> {
    let mut dlq = Vec::new();
    for (p, o, hs) in read_all(bootstrap, "weft.dlqt.dlq").await? {
        if let Some(src) = hs.iter().find(|(k, _)| k == "weft-dlq-source") {
            if !hs.iter().any(|(k, _)| k == "weft-dlq-redrive") {
                dlq.push((format!("{p}/{o}"), src.1.clone()));
            }
        }
    }
    let redriven = read_all(bootstrap, EVENTS)
        .await?
        .into_iter()
        .filter_map(|(_, _, hs)| {
            hs.into_iter()
                .find(|(k, _)| k == "weft-redriven-from")
                .map(|h| h.1)
        })
        .collect();
    Ok((dlq, redriven))
}

type Headed = (i32, i64, Vec<(String, String)>);

async fn read_all(bootstrap: &str, topic: &str) -> Result<Vec<Headed>> {
    let ends = high_watermarks(bootstrap, topic).await?;
    let mut cfg = client_config(bootstrap);
    cfg.set("group.id", format!("dlq-test-{}", InstanceId::random()));
    let consumer: BaseConsumer = cfg.create()?;
    let topic = topic.to_owned();
    tokio::task::spawn_blocking(move || {
        let mut tpl = TopicPartitionList::new();
        let mut open = Vec::new();
        for (p, end) in ends.iter().enumerate() {
            if *end > 0 {
                tpl.add_partition_offset(&topic, p as i32, Offset::Beginning)?;
                open.push(p as i32);
            }
        }
        consumer.assign(&tpl)?;
        let mut out = Vec::new();
        let deadline = Instant::now() + DEADLINE;
        while !open.is_empty() {
            ensure!(
                Instant::now() < deadline,
                "reading {topic} did not reach its end"
            );
            let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) else {
                continue;
            };
            let hs = m.headers().map_or_else(Vec::new, |h| {
                h.iter()
                    .filter_map(|h| {
                        Some((h.key.to_owned(), String::from_utf8(h.value?.to_vec()).ok()?))
                    })
                    .collect()
            });
            out.push((m.partition(), m.offset(), hs));
            if m.offset() + 1 >= ends[m.partition() as usize] {
                open.retain(|p| *p != m.partition());
            }
        }
        Ok(out)
    })
    .await?
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dead_letters_are_listed_shown_and_redriven_once() -> Result<()> {
    let mut cluster = TestCluster::start(ClusterOptions::new(2, 1)).await?;
    let result = scenario(&mut cluster).await;
    if result.is_err() {
        cluster.print_logs(60);
    }
    result
}

async fn scenario(cluster: &mut TestCluster) -> Result<()> {
    let (a, b) = (cluster.api_at(0), cluster.api_at(1));
    let bootstrap = cluster.bootstrap();
    a.register_definition(DEF).await?;
    for api in [&a, &b] {
        wait_until("both replicas know dlqt", DEADLINE, POLL, || async {
            api.definition("dlqt").await.is_ok()
        })
        .await?;
    }
    issue18::wait_spread(cluster, &[a.clone(), b.clone()], "dlqt").await?;

    // 1. A cancel for an instance nobody started yet: dead-lettered.
    let late = InstanceId::for_idempotency_key("dlqt", "late");
    produce(
        &bootstrap,
        &late.to_string(),
        &cancel_input(late, "early-cancel").encode(),
    )
    .await?;
    let item = dlq_item(&b, &format!("no workflow instance {late}")).await?;
    ensure!(
        item["redrive"]["state"] == "none" && item["copies"] == 1,
        "{item}"
    );
    ensure!(
        item["reason_class"] == "no workflow instance _ of type dlqt",
        "{item}"
    );
    let first = item["id"].as_str().context("id")?.to_owned();

    // Its instance starts; both replicas are asked to redrive at once: one copy.
    let started = a.start("dlqt", json!({}), Some("late")).await?;
    ensure!(started["instance_id"] == late.to_string(), "{started}");
    wait_state(&a, &late.to_string(), "running").await?;
    let (ra, rb) = tokio::join!(
        redrive(&a, &first, json!({})),
        redrive(&b, &first, json!({}))
    );
    let (ra, rb) = (ra?, rb?);
    let outcomes =
        [&ra, &rb].map(|(s, v)| (s.as_u16(), v["outcome"].as_str().unwrap_or("").to_owned()));
    ensure!(
        outcomes.iter().filter(|o| o.1 == "redriven").count() == 1,
        "exactly one of two concurrent redrives sends: {ra:?} {rb:?}"
    );
    wait_state(&b, &late.to_string(), "cancelled").await?;
    let (s, again) = redrive(&b, &first, json!({})).await?;
    ensure!(
        s == StatusCode::OK && again["outcome"] == "already_redriven",
        "{s} {again}"
    );

    // 2. An undecodable record for a running instance: shown, redriven fixed through the CLI.
    let y = a.start("dlqt", json!({}), None).await?["instance_id"]
        .as_str()
        .context("instance_id")?
        .to_owned();
    wait_state(&a, &y, "running").await?;
    produce(&bootstrap, &y, b"definitely not avro").await?;
    let bad = dlq_item(&a, "undecodable").await?;
    let bad_id = bad["id"].as_str().context("id")?.to_owned();
    let listed = weft(&b, &["dlq", "list", "dlqt", "--state", "dead"], DEADLINE).await?;
    let listed = listed.ok()?;
    ensure!(
        listed.contains(&bad_id) && listed.contains("undecodable"),
        "weft dlq list: {listed}"
    );
    ensure!(
        !listed.contains(&format!("{first} ")),
        "a redriven record is not dead: {listed}"
    );
    let shown = weft(&a, &["dlq", "show", "dlqt", &bad_id], DEADLINE).await?;
    let shown: Value = serde_json::from_str(shown.ok()?)?;
    ensure!(
        shown["value"]["kind"] == "undecodable"
            && shown["source"]
                .as_str()
                .is_some_and(|s| s.starts_with(EVENTS)),
        "{shown}"
    );
    let yid: InstanceId = y.parse().map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let fixed = cancel_input(yid, "fixed-cancel");
    let file = cluster.dir().join("fixed.json");
    std::fs::write(&file, serde_json::to_vec(&fixed)?)?;
    let file = file.to_str().context("path")?;
    let out = weft(
        &b,
        &["dlq", "redrive", "dlqt", &bad_id, "--event", file],
        DEADLINE,
    )
    .await?;
    ensure!(
        out.ok()?.starts_with("redriven to weft.dlqt.events/"),
        "{out:?}"
    );
    wait_state(&a, &y, "cancelled").await?;
    let out = weft(&a, &["dlq", "redrive", "dlqt", &bad_id], DEADLINE).await?;
    ensure!(out.ok()?.starts_with("already redriven"), "{out:?}");

    // 3. Per-reason metric on any replica.
    for api in [&a, &b] {
        wait_until(
            "weft_dlq_records counts both redriven",
            DEADLINE,
            POLL,
            || async {
                let Ok(text) = api.metrics().await else {
                    return false;
                };
                let redriven = |class: &str| {
                    metric_sum_labelled(
                        &text,
                        "weft_dlq_records",
                        &format!("reason=\"{class}\",state=\"redriven\""),
                    )
                };
                redriven("undecodable event") == Some(1.0)
                    && metric_sum_labelled(
                        &text,
                        "weft_dlq_records",
                        "state=\"redriven\",workflow_type=\"dlqt\"",
                    ) == Some(2.0)
            },
        )
        .await?;
    }

    // 4. A rebuild refuses the bad records again; every copy's redrive is a no-op.
    cluster.rebuild_orchestrator(0).await?;
    let a = cluster.api_at(0);
    let (copies, redriven) = raw_records(&bootstrap).await?;
    ensure!(copies.len() >= 2, "the DLQ holds both records: {copies:?}");
    for (id, source) in &copies {
        let (s, v) = redrive(&a, id, json!({})).await?;
        ensure!(
            s == StatusCode::OK && v["outcome"] == "already_redriven",
            "redrive of the copy {id} ({source}): {s} {v}"
        );
    }
    let listing = a.send(Method::GET, "/v1/dlq/dlqt", None).await?.body;
    ensure!(listing["total"] == 2, "one entry per source: {listing}");
    let (_, redriven_after) = raw_records(&bootstrap).await?;
    ensure!(
        redriven.len() == 2 && redriven_after.len() == 2,
        "exactly one redriven copy per source in {EVENTS}: {redriven:?} then {redriven_after:?}"
    );
    Ok(())
}
