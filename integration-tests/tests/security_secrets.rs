//! Secrets end to end (ADR 0014), with the real binaries on a real broker: an
//! instance started through the API, one through the CLI and one by a
//! `workflow.created` published directly carry a known secret; the task
//! whose definition names it receives it (it writes its SHA-256 to a file),
//! the task that does not name it sees nothing, and the secret's bytes are
//! in no record of any topic (DLQ included), no file of the orchestrator's
//! RocksDB or of the broker's storage, no log line, no API response (state,
//! history, trace, lists, analytics), no trace exported to an OpenTelemetry
//! collector and no metric. A canary input value is
//! found in the same places, so the searches can see what is there. An
//! instance sealed with a key id the worker lacks goes to the DLQ naming it.

mod security;

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use reqwest::Method;
use serde_json::{json, Value};
use weft_integration_tests::collector::Collector;
use weft_integration_tests::{cli, wait_for, wait_until, ClusterOptions, TestCluster};
use weft_shared::avro::AvroRecord;
use weft_shared::event::{now_ms, META_SOURCE_KIND};
use weft_shared::ids::InstanceId;
use weft_shared::secrets::{self, Keyring, SECRETS_KEY};
use weft_shared::topics::headers;
use weft_shared::{WorkflowEvent, WorkflowEventType};

use security::support::*;

const DEFINITION: &str = r#"
type: vault
tasks:
  - name: use
    handler: shell
    parameters:
      secrets: [api_token]
      command: 'printf %s "$WEFT_SECRET_API_TOKEN" | sha256sum | cut -d" " -f1 > "$WEFT_TEST_OUT/$WEFT_INSTANCE_ID"'
  - name: blind
    handler: shell
    depends_on: [use]
    parameters:
      command: 'printf "%s %s" "${WEFT_SECRET_API_TOKEN:-none}" "${WEFT_SECRETS_KEYS:-none}" > "$WEFT_TEST_OUT/$WEFT_INSTANCE_ID.blind"'
"#;

/// Publishes a `workflow.created` of `vault` whose input carries `sealed`.
async fn publish_created(
    bootstrap: &str,
    input: Value,
    sealed: Option<(InstanceId, String)>,
) -> Result<String> {
    let id = sealed
        .as_ref()
        .map_or_else(InstanceId::random, |(id, _)| *id);
    let mut event = WorkflowEvent::new(
        WorkflowEventType::WorkflowCreated,
        "vault",
        id,
        format!("create:{id}"),
        now_ms(),
    );
    event.data = weft_shared::data::data_map_from_json(&input, "input")?;
    if let Some((_, env)) = sealed {
        event.data.insert(SECRETS_KEY.to_owned(), env.into());
    }
    event
        .metadata
        .insert(META_SOURCE_KIND.into(), "input".into());
    let producer: FutureProducer =
        weft_integration_tests::broker::client_config(bootstrap).create()?;
    let key = id.to_string();
    let payload = event.encode();
    let hdrs = OwnedHeaders::new()
        .insert(Header {
            key: headers::EVENT_TYPE,
            value: Some("workflow.created"),
        })
        .insert(Header {
            key: headers::IDEMPOTENCY_KEY,
            value: Some(&event.idempotency_key),
        });
    producer
        .send(
            FutureRecord::to("weft.vault.events")
                .key(&key)
                .payload(&payload)
                .headers(hdrs),
            Duration::from_secs(10),
        )
        .await
        .map_err(|(e, _)| e)?;
    Ok(key)
}

async fn wait_completed(api: &weft_integration_tests::ApiClient, id: &str) -> Result<()> {
    wait_for(
        &format!("vault {id} completes"),
        Duration::from_secs(90),
        Duration::from_millis(200),
        || async {
            let v = api.get("vault", id).await?;
            ensure!(v["state"] != "failed", "{id} failed: {v}");
            Ok::<_, anyhow::Error>((v["state"] == "completed").then_some(()))
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn secrets_reach_only_the_tasks_that_name_them_and_are_ciphertext_everywhere_else(
) -> Result<()> {
    let scratch = tempfile::tempdir()?;
    let out = scratch.path().join("out");
    std::fs::create_dir_all(&out)?;
    let (key, key_b64) = random_key();
    let secret = random_secret("SeCrEt-");
    let canary = random_secret("canary-");
    let collector = Collector::start().await?;
    let cluster = TestCluster::start(
        ClusterOptions::new(1, 1)
            .env("WEFT_ORCHESTRATOR_OTLP_ENDPOINT", collector.url.clone())
            .env("WEFT_SECRETS_KEYS", format!("k1={key_b64}"))
            .env("WEFT_WORKER_ENABLE_SHELL", "true")
            .env("WEFT_TEST_OUT", out.display().to_string()),
    )
    .await?;
    let api = cluster.api();
    let result = async {
        api.register_definition(DEFINITION).await?;
        // Auth is off by default, and says so at start.
        ensure!(
            cluster
                .orchestrator(0)
                .process()
                .log()
                .contains("API authentication is off"),
            "no warning that API authentication is off"
        );
        let input = json!({"note": canary});

        // 1. The API seals the body's secrets.
        let body = json!({"input": input, "secrets": {"api_token": secret}});
        let r = api
            .send(
                Method::POST,
                "/v1/workflows/vault",
                Some(("application/json", body.to_string())),
            )
            .await?;
        ensure!(
            r.status.as_u16() == 202,
            "start with secrets: {} {}",
            r.status,
            r.body
        );
        let mut responses = vec![r.body.to_string()];
        let via_api = r.body["instance_id"]
            .as_str()
            .context("instance_id")?
            .to_owned();

        // 2. The CLI, the value read from a file.
        let secret_file = scratch.path().join("token");
        std::fs::write(&secret_file, format!("{secret}\n"))?;
        let run = cli::weft(
            &api,
            &[
                "start",
                "vault",
                "--input",
                &input.to_string(),
                "--secret",
                &format!("api_token=@{}", secret_file.display()),
            ],
            Duration::from_secs(30),
        )
        .await?;
        let via_cli = run.ok()?.trim().to_owned();
        ensure!(
            !run.stdout.contains(&secret) && !run.stderr.contains(&secret),
            "the CLI printed the secret"
        );

        // 3. A workflow.created published directly, sealed by the client.
        let mut ring = Keyring::default();
        ring.insert("k1", key)?;
        let id = InstanceId::random();
        let clear = BTreeMap::from([("api_token".to_owned(), secret.clone())]);
        let env = secrets::seal(&ring, "vault", &id.to_string(), &clear)?;
        let direct = publish_created(&cluster.bootstrap(), input.clone(), Some((id, env))).await?;

        // 4. Sealed with a key id no process holds: the task's record goes to the DLQ.
        let mut gone = Keyring::default();
        gone.insert("k-gone", [7; 32])?;
        let lost_id = InstanceId::random();
        let env = secrets::seal(&gone, "vault", &lost_id.to_string(), &clear)?;
        let lost =
            publish_created(&cluster.bootstrap(), input.clone(), Some((lost_id, env))).await?;

        let ids = [via_api, via_cli, direct];
        let digest = sha256_hex(&secret)?;
        for id in &ids {
            wait_completed(&api, id).await?;
            let got = std::fs::read_to_string(out.join(id))
                .with_context(|| format!("{id}: the handler wrote nothing"))?;
            ensure!(
                got.trim() == digest,
                "{id}: the handler received something else than the secret"
            );
            let blind = std::fs::read_to_string(out.join(format!("{id}.blind")))?;
            ensure!(
                blind == "none none",
                "{id}: a task that names no secret saw '{blind}'"
            );
        }

        let reason = wait_for(
            "the unknown key id's DLQ record",
            Duration::from_secs(60),
            Duration::from_millis(500),
            || {
                let bootstrap = cluster.bootstrap();
                let lost = lost.clone();
                async move {
                    let records =
                        tokio::task::spawn_blocking(move || read_all_topics(&bootstrap)).await??;
                    Ok::<_, anyhow::Error>(records.into_iter().find_map(|r| {
                        let reason = r.headers.get(headers::DLQ_REASON)?;
                        (r.topic == "weft.vault.dlq" && r.key == lost.as_bytes())
                            .then(|| String::from_utf8_lossy(reason).into_owned())
                    }))
                }
            },
        )
        .await?;
        ensure!(
            reason.contains("secrets_unknown_key_id")
                && reason.contains("'k-gone'")
                && reason.contains("k1"),
            "DLQ reason: {reason}"
        );
        let lost_state = api.get("vault", &lost).await?;
        ensure!(
            lost_state["state"] == "running",
            "the instance whose task waits in the DLQ: {lost_state}"
        );

        // Everything a client can read back.
        for id in ids.iter().chain([&lost]) {
            for path in ["", "/events", "/trace", "/state?at=3"] {
                let r = api
                    .send(
                        Method::GET,
                        &format!("/v1/workflows/vault/{id}{path}"),
                        None,
                    )
                    .await?;
                responses.push(r.body.to_string());
            }
        }
        for path in [
            "/v1/workflows?type=vault",
            "/v1/analytics/vault",
            "/v1/definitions/vault",
        ] {
            responses.push(api.send(Method::GET, path, None).await?.body.to_string());
        }
        responses.push(api.metrics().await?);
        let worker_metrics = reqwest::get(format!("{}/metrics", cluster.worker(0).http_url()))
            .await?
            .text()
            .await?;
        responses.push(worker_metrics);
        let all = responses.join("\n");
        ensure!(
            all.contains(&canary),
            "the API responses do not show the canary: the search is blind"
        );
        for needle in [&secret, &key_b64] {
            ensure!(
                !all.contains(needle.as_str()),
                "an API response or metric holds a secret"
            );
        }

        // The traces pushed to an OpenTelemetry collector.
        wait_until(
            "the three traces are exported",
            Duration::from_secs(30),
            Duration::from_millis(200),
            || async {
                let all = serde_json::Value::Array(collector.received()).to_string();
                ids.iter()
                    .all(|id| all.contains(&id.replace('-', "")) || all.contains(id.as_str()))
            },
        )
        .await?;
        let traces = serde_json::Value::Array(collector.received()).to_string();
        for needle in [&secret, &key_b64] {
            ensure!(
                !traces.contains(needle.as_str()),
                "an exported trace holds a secret"
            );
        }

        // Every record of every topic, raw.
        let bootstrap = cluster.bootstrap();
        let records = tokio::task::spawn_blocking(move || read_all_topics(&bootstrap)).await??;
        ensure!(
            records.iter().any(|r| r.contains(canary.as_bytes())),
            "no record holds the canary"
        );
        for needle in [&secret, &key_b64] {
            let leaks: Vec<&str> = records
                .iter()
                .filter(|r| r.contains(needle.as_bytes()))
                .map(|r| r.topic.as_str())
                .collect();
            ensure!(leaks.is_empty(), "records of {leaks:?} hold a secret");
        }
        let topics: std::collections::BTreeSet<&str> =
            records.iter().map(|r| r.topic.as_str()).collect();
        for t in ["weft.vault.events", "weft.vault.tasks", "weft.vault.dlq"] {
            ensure!(topics.contains(t), "{t} was not read: {topics:?}");
        }

        // The orchestrator's RocksDB, the broker's storage, every log.
        let data_dir = cluster
            .orchestrator(0)
            .data_dir()
            .context("data dir")?
            .to_path_buf();
        ensure!(
            !files_containing(&data_dir, canary.as_bytes())?.is_empty(),
            "RocksDB files do not show the canary"
        );
        ensure!(
            !files_containing(cluster.broker().data_dir(), canary.as_bytes())?.is_empty(),
            "broker files do not show the canary"
        );
        let logs = cluster.dir().join("logs");
        for needle in [&secret, &key_b64] {
            for dir in [
                data_dir.as_path(),
                cluster.broker().data_dir(),
                logs.as_path(),
            ] {
                let hits = files_containing(dir, needle.as_bytes())?;
                ensure!(hits.is_empty(), "files hold a secret: {hits:?}");
            }
        }
        Ok(())
    }
    .await;
    if result.is_err() {
        cluster.print_logs(80);
    }
    result
}
