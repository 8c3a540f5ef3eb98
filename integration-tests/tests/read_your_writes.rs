//! Read your writes (issue 18 item 7), with the real binaries on a real broker
//! and two orchestrator replicas (so a start is often accepted by the replica
//! that does not own the instance's partition): a `GET` right after a `POST`
//! start, on either replica, never answers 404; a signal or cancel sent right
//! after a start is accepted (not 404) and answers once applied, so a read
//! after it shows it; `weft start` without `--wait` followed by `weft get`
//! works every time. An id nobody started is still 404.

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use weft_integration_tests::{cli::weft, ApiClient, ClusterOptions, TestCluster};

mod issue18;

const ROUNDS: usize = 25;
const CLI_ROUNDS: usize = 8;
const CLI_DEADLINE: Duration = Duration::from_secs(30);

const DEF: &str =
    "type: ryw\ntasks:\n  - name: hold\n    handler: sleep\n    parameters: {ms: 60000}\n";

async fn start(api: &ApiClient, i: usize) -> Result<String> {
    let v = api.start("ryw", json!({ "i": i }), None).await?;
    ensure!(v["state"] == "accepted", "start answer: {v}");
    Ok(v["instance_id"].as_str().context("instance_id")?.to_owned())
}

/// A GET right after the write: 200 at once; only a 503 (a partition moving
/// between replicas, "try again") is asked again, never a 404.
async fn get_now(api: &ApiClient, id: &str) -> Result<Value> {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let r = loop {
        let r = api
            .send(Method::GET, &format!("/v1/workflows/ryw/{id}"), None)
            .await?;
        if r.status != StatusCode::SERVICE_UNAVAILABLE || std::time::Instant::now() > deadline {
            break r;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    ensure!(
        r.status == StatusCode::OK,
        "GET right after the start of {id} through {}: {} {}",
        api.base_url(),
        r.status,
        r.body
    );
    ensure!(r.body["instance_id"] == id, "wrong instance: {}", r.body);
    Ok(r.body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_read_after_an_accepted_write_sees_it() -> Result<()> {
    let cluster = TestCluster::start(ClusterOptions::new(2, 1)).await?;
    let apis = [cluster.api_at(0), cluster.api_at(1)];
    let result = async {
        apis[0].register_definition(DEF).await?;
        for api in &apis {
            weft_integration_tests::wait_until(
                "both replicas know the type",
                Duration::from_secs(30),
                Duration::from_millis(50),
                || async { api.definition("ryw").await.is_ok() },
            )
            .await?;
        }
        issue18::wait_spread(&cluster, &apis, "ryw").await?;
        for i in 0..ROUNDS {
            let (writer, reader) = (&apis[i % 2], &apis[(i / 2) % 2]);
            let id = start(writer, i).await?;
            get_now(reader, &id).await?;
        }

        // A signal and a cancel right after a start: accepted, applied, visible.
        for i in 0..ROUNDS / 5 {
            let (writer, other) = (&apis[i % 2], &apis[(i + 1) % 2]);
            let id = start(writer, 1000 + i).await?;
            let sig = other
                .control("ryw", &id, "signals/poke", json!({ "n": i }), None)
                .await?;
            ensure!(
                sig.status == StatusCode::ACCEPTED && sig.body["applied"] == true,
                "signal right after the start: {} {}",
                sig.status,
                sig.body
            );
            let id2 = start(other, 2000 + i).await?;
            let cancel = writer
                .control("ryw", &id2, "cancel", json!({ "reason": "ryw" }), None)
                .await?;
            ensure!(
                cancel.status == StatusCode::ACCEPTED && cancel.body["applied"] == true,
                "cancel right after the start: {} {}",
                cancel.status,
                cancel.body
            );
            let seen = get_now(other, &id2).await?;
            ensure!(
                seen["state"] == "cancelled",
                "a read after an applied cancel: {seen}"
            );
            let events = other.events("ryw", &id).await?;
            let signals = events["events"]
                .as_array()
                .context("events")?
                .iter()
                .filter(|e| e["metadata"]["weft.signal"] == "poke")
                .count();
            ensure!(signals == 1, "the signal is in the history once: {events}");
        }

        // The CLI: `weft start` (no --wait) then `weft get`, each a new process.
        for i in 0..CLI_ROUNDS {
            let (writer, reader) = (&apis[i % 2], &apis[(i + 1) % 2]);
            let input = format!("{{\"cli\": {i}}}");
            let started = weft(writer, &["start", "ryw", "--input", &input], CLI_DEADLINE).await?;
            let id = started.ok()?.trim().to_owned();
            ensure!(id.len() == 36, "weft start printed {started:?}");
            let got = weft(reader, &["get", "ryw", &id, "--json"], CLI_DEADLINE).await?;
            let v: Value = serde_json::from_str(got.ok()?).context("weft get --json")?;
            ensure!(v["instance_id"] == id.as_str(), "weft get: {v}");
        }

        // Nobody started this one: still 404, and not after the whole wait.
        let unknown = uuid::Uuid::new_v4().to_string();
        let t = std::time::Instant::now();
        let r = apis[0]
            .send(Method::GET, &format!("/v1/workflows/ryw/{unknown}"), None)
            .await?;
        ensure!(
            r.status == StatusCode::NOT_FOUND,
            "unknown id: {} {}",
            r.status,
            r.body
        );
        ensure!(
            t.elapsed() < Duration::from_secs(4),
            "404 took {:?}",
            t.elapsed()
        );
        Ok(())
    }
    .await;
    if result.is_err() {
        cluster.print_logs(80);
    }
    result
}
