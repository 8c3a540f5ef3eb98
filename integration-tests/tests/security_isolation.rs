//! `isolation_level` (ADR 0016) on the real binaries, one workflow type per
//! level, each the DAG `a → b → c` beside an independent quick `x`. What the
//! last task `c` may read is decided by the orchestrator when it builds the
//! dispatch, so the test reads `c`'s dispatch records raw from the tasks
//! topic: its `upstream` outputs and its `input` keys. An unknown level is
//! refused at registration, naming the field.

mod security;

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use reqwest::Method;
use serde_json::json;
use weft_integration_tests::{wait_until, ClusterOptions, TestCluster};
use weft_shared::avro::AvroRecord;
use weft_shared::TaskDispatch;

use security::support::read_all_topics;

fn definition(ty: &str, level: &str) -> String {
    format!(
        r#"
type: {ty}
metadata: {{isolation_level: {level}}}
tasks:
  - name: a
    handler: sleep
    parameters: {{ms: 400}}
  - name: x
    handler: sleep
    parameters: {{ms: 1}}
  - name: b
    handler: sleep
    depends_on: [a]
    parameters: {{ms: 400}}
  - name: c
    handler: noop
    depends_on: [b]
    parameters: {{reads: [keep]}}
"#
    )
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn each_isolation_level_decides_what_a_task_reads() -> Result<()> {
    let cluster = TestCluster::start(ClusterOptions::new(1, 1)).await?;
    let api = cluster.api();
    let result = async {
        // (level, upstream c sees, input keys c sees)
        let cases = [
            (
                "read_uncommitted",
                set(&["a", "b", "x"]),
                set(&["drop", "keep"]),
            ),
            ("read_committed", set(&["b"]), set(&["drop", "keep"])),
            ("repeatable_read", set(&["a", "b"]), set(&["drop", "keep"])),
            ("serializable", set(&["b"]), set(&["keep"])),
        ];
        let mut started = Vec::new();
        for (level, _, _) in &cases {
            let ty = format!("iso-{}", level.replace('_', "-"));
            api.register_definition(&definition(&ty, level)).await?;
            let r = api
                .start(&ty, json!({"keep": "k", "drop": "d"}), None)
                .await?;
            started.push((ty, r["instance_id"].as_str().context("id")?.to_owned()));
        }
        for (ty, id) in &started {
            wait_until(
                &format!("{ty} completes"),
                Duration::from_secs(60),
                Duration::from_millis(200),
                || async {
                    api.get(ty, id)
                        .await
                        .is_ok_and(|v| v["state"] == "completed")
                },
            )
            .await?;
        }
        let bootstrap = cluster.bootstrap();
        let records = tokio::task::spawn_blocking(move || read_all_topics(&bootstrap)).await??;
        for ((level, upstream, input), (ty, id)) in cases.iter().zip(&started) {
            let topic = format!("weft.{ty}.tasks");
            let dispatches: Vec<TaskDispatch> = records
                .iter()
                .filter(|r| r.topic == topic)
                .filter_map(|r| TaskDispatch::decode(&r.value).ok())
                .filter(|d| d.task_name == "c" && d.instance_id.to_string() == *id)
                .collect();
            ensure!(
                !dispatches.is_empty(),
                "{level}: no dispatch of c in {topic}"
            );
            for d in &dispatches {
                let seen: BTreeSet<String> = d.upstream.keys().cloned().collect();
                ensure!(
                    &seen == upstream,
                    "{level}: c read the outputs of {seen:?}, expected {upstream:?}"
                );
                let keys: BTreeSet<String> = d.input.keys().cloned().collect();
                ensure!(
                    &keys == input,
                    "{level}: c read input keys {keys:?}, expected {input:?}"
                );
            }
        }
        let bad = definition("iso-bad", "snapshot");
        let r = api
            .send(
                Method::POST,
                "/v1/definitions",
                Some(("application/yaml", bad)),
            )
            .await?;
        ensure!(
            r.status.as_u16() == 400,
            "unknown level: {} {}",
            r.status,
            r.body
        );
        let msg = r.body.to_string();
        ensure!(
            msg.contains("metadata.isolation_level") && msg.contains("serializable"),
            "{msg}"
        );
        Ok(())
    }
    .await;
    if result.is_err() {
        cluster.print_logs(60);
    }
    result
}
