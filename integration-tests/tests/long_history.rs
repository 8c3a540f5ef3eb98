//! No history cap, end to end: one workflow waits for a signal while a client
//! appends 100,000 pause and resume inputs straight to its events topic (as
//! any producer may: Avro-encoded, keyed by the instance id). The orchestrator
//! records every one, in order. Then the API reads its state, pages of its
//! events at the start, middle and end of the history, and its state at an old
//! sequence number; each is checked against what the test itself produced
//! (input `n` is event `base + n + 1`: a pause when `n` is even), not against
//! another answer of the API. Only correctness is asserted; the read times are
//! printed (speed belongs to benchmarks, not to timed tests).

use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use futures::stream::{self, StreamExt};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::{json, Value};
use weft_integration_tests::{wait_for, ApiClient, ClusterOptions, TestCluster};
use weft_shared::avro::AvroRecord;
use weft_shared::event::{now_ms, META_SOURCE_KIND};
use weft_shared::ids::InstanceId;
use weft_shared::kafka::headers;
use weft_shared::topics::headers as h;
use weft_shared::{WorkflowEvent, WorkflowEventType};

const TYPE: &str = "longrun";
const DEFINITION: &str =
    "type: longrun\ntasks:\n  - {name: hold, type: wait, parameters: {signal: go}}\n";
const INPUTS: usize = 100_000;

/// The `n`th input: pause on even `n`, resume on odd.
fn input(id: InstanceId, n: usize) -> WorkflowEvent {
    let ty = if n.is_multiple_of(2) {
        WorkflowEventType::WorkflowPaused
    } else {
        WorkflowEventType::WorkflowResumed
    };
    let mut e = WorkflowEvent::new(ty, TYPE, id, format!("long-{n}"), now_ms());
    e.metadata.insert(META_SOURCE_KIND.into(), "input".into());
    e
}

/// Mean time of `rounds` GETs of `path`, and the last body.
async fn timed(api: &ApiClient, path: &str, rounds: u32) -> Result<(Duration, Value)> {
    let started = Instant::now();
    let mut body = Value::Null;
    for _ in 0..rounds {
        let r = api.send(reqwest::Method::GET, path, None).await?;
        ensure!(r.status.is_success(), "{path}: {} {}", r.status, r.body);
        body = r.body;
    }
    Ok((started.elapsed() / rounds, body))
}

/// Which input the test put at sequence `seq` (inputs follow the `base`
/// events the workflow had when the test began producing).
fn input_at(base: u64, seq: u64) -> Option<usize> {
    (seq > base && seq <= base + INPUTS as u64).then(|| (seq - base - 1) as usize)
}

fn seqs(page: &Value) -> Vec<u64> {
    page["events"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["sequence_number"].as_u64())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_workflow_with_100k_events_is_recorded_and_read_back() -> Result<()> {
    let cluster = TestCluster::start(ClusterOptions::new(1, 1)).await?;
    let result = async {
        let api = cluster.api();
        api.register_definition(DEFINITION).await?;
        let started = api.start(TYPE, json!({}), Some("long")).await?;
        let id_str = started["instance_id"].as_str().context("instance_id")?.to_owned();
        let id: InstanceId = id_str.parse()?;
        wait_for("the workflow to wait for its signal", Duration::from_secs(60), Duration::from_millis(100), || async {
            let v = api.get(TYPE, &id_str).await?;
            anyhow::Ok((v["state"] == "running" && v["sequence_number"].as_u64() >= Some(3)).then_some(v))
        })
        .await?;
        let base = api.get(TYPE, &id_str).await?["sequence_number"].as_u64().context("seq")?;

        let producer: FutureProducer = weft_integration_tests::broker::client_config(&cluster.bootstrap())
            .set("linger.ms", "5")
            .set("enable.idempotence", "true")
            .create()?;
        let topic = format!("weft.{TYPE}.events");
        let key = id.to_string();
        let produce = Instant::now();
        // In order (one partition, an idempotent producer): pause, resume, pause, ...
        let sent: Vec<Result<()>> = stream::iter(0..INPUTS)
            .map(|n| {
                let (producer, topic, key) = (&producer, &topic, &key);
                async move {
                    let e = input(id, n);
                    let payload = e.encode();
                    let hdrs = headers(&[(h::EVENT_TYPE, e.event_type.as_str()), (h::IDEMPOTENCY_KEY, &e.idempotency_key)]);
                    let record = FutureRecord::to(topic).key(key).payload(&payload).headers(hdrs);
                    producer.send(record, Duration::from_secs(60)).await.map(|_| ()).map_err(|(e, _)| e.into())
                }
            })
            .buffered(2_000)
            .collect()
            .await;
        sent.into_iter().collect::<Result<Vec<()>>>()?;
        let produced = produce.elapsed();

        let want = base + INPUTS as u64;
        let state = wait_for(&format!("sequence {want}"), Duration::from_secs(300), Duration::from_millis(250), || async {
            let v = api.get(TYPE, &id_str).await?;
            anyhow::Ok((v["sequence_number"].as_u64() == Some(want)).then_some(v))
        })
        .await?;
        let recorded = produce.elapsed();
        ensure!(state["state"] == "running", "after an even number of pause/resume: {state}");

        let (get_t, _) = timed(&api, &format!("/v1/workflows/{TYPE}/{id_str}"), 20).await?;
        let mut pages = Vec::new();
        for from in [1, want / 2, want - 99] {
            let path = format!("/v1/workflows/{TYPE}/{id_str}/events?from={from}&limit=100");
            let (t, page) = timed(&api, &path, 10).await?;
            ensure!(seqs(&page) == (from..from + 100).collect::<Vec<_>>(), "{path}: sequences {:?}", seqs(&page));
            // Every input event is the one the test produced at that position.
            for e in page["events"].as_array().into_iter().flatten() {
                let seq = e["sequence_number"].as_u64().unwrap_or_default();
                if let Some(n) = input_at(base, seq) {
                    ensure!(
                        e["idempotency_key"] == format!("long-{n}") && e["event_type"] == input(id, n).event_type.as_str(),
                        "event {seq} should be input {n}: {e}"
                    );
                }
            }
            pages.push(format!("from {from}: {t:?}"));
        }
        for at in [want / 2 + 1, want / 2 + 2, want - 1] {
            let (at_t, old) = timed(&api, &format!("/v1/workflows/{TYPE}/{id_str}/state?at={at}"), 10).await?;
            ensure!(old["sequence_number"] == json!(at), "state at {at}: {old}");
            let n = input_at(base, at).context("an input position")?;
            let expected = if n.is_multiple_of(2) { "paused" } else { "running" };
            ensure!(old["state"] == expected, "state at {at} (after input {n}) is {}, not {expected}", old["state"]);
            pages.push(format!("state at seq {at}: {at_t:?}"));
        }
        println!(
            "{want} events: {INPUTS} inputs produced in {produced:?}, all recorded after {recorded:?}; \
             get state {get_t:?}; page of 100 events {} (HTTP, means)",
            pages.join(", ")
        );
        Ok(())
    }
    .await;
    if result.is_err() {
        cluster.print_logs(40);
    }
    result
}
