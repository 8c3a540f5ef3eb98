//! Definition versions across orchestrator replicas, with the real binaries on a
//! real broker: two replicas register different contents of the same workflow
//! type at the same time through their own HTTP APIs, round after round. Each
//! registrant is told the version its content has, distinct contents get
//! distinct versions, and both replicas end with the same versions (the log
//! decides: ADR 0011). A start pinned to the version just registered through
//! one replica then completes, whichever replica owns its partition.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use weft_integration_tests::{wait_for, wait_until, ApiClient, ClusterOptions, TestCluster};

const ROUNDS: usize = 3;
const DEADLINE: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(100);

fn yaml(content: &str) -> String {
    format!("type: race\ndescription: {content}\ntasks:\n  - name: only\n    handler: noop\n")
}

/// `version -> description` of every version of `race` a replica serves.
async fn versions(api: &ApiClient) -> Result<BTreeMap<u64, String>> {
    let latest = api.definition("race").await?;
    let n = latest["version"].as_u64().context("version")?;
    let mut out = BTreeMap::new();
    for v in 1..=n {
        let r = api
            .send(Method::GET, &format!("/v1/definitions/race/{v}"), None)
            .await?;
        ensure!(
            r.status == StatusCode::OK,
            "race@{v}: {} {}",
            r.status,
            r.body
        );
        let d = r.body["description"].as_str().context("description")?;
        out.insert(v, d.to_owned());
    }
    Ok(out)
}

fn registered(answer: &Value) -> Result<u64> {
    answer["version"].as_u64().context("version in the answer")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_registering_one_type_concurrently_end_with_the_same_versions() -> Result<()> {
    let cluster = TestCluster::start(ClusterOptions::new(2, 1)).await?;
    let (a, b) = (cluster.api_at(0), cluster.api_at(1));
    let result = async {
        let first = a.register_definition(&yaml("base")).await?;
        ensure!(registered(&first)? == 1, "first version: {first}");
        let mut learned = BTreeMap::new();
        for round in 0..ROUNDS {
            let latest = 2 * round as u64 + 1;
            for api in [&a, &b] {
                wait_until(
                    &format!("{} serves version {latest}", api.base_url()),
                    DEADLINE,
                    POLL,
                    || async {
                        api.definition("race")
                            .await
                            .is_ok_and(|d| d["version"].as_u64() == Some(latest))
                    },
                )
                .await?;
            }
            let (x, y) = (format!("a-{round}"), format!("b-{round}"));
            let (ya, yb) = (yaml(&x), yaml(&y));
            let (ra, rb) = tokio::join!(a.register_definition(&ya), b.register_definition(&yb));
            let (va, vb) = (registered(&ra?)?, registered(&rb?)?);
            ensure!(va != vb, "round {round}: both contents got version {va}");
            learned.insert(va, x);
            learned.insert(vb, y);
        }
        learned.insert(1, "base".to_owned());
        let expected = learned;
        let seen_a = wait_for("replica 0 serves every version", DEADLINE, POLL, || async {
            versions(&a)
                .await
                .map(|v| (v.len() == expected.len()).then_some(v))
        })
        .await?;
        ensure!(
            seen_a == expected,
            "replica 0's versions differ from what the registrants were told:\n{seen_a:?}\n{expected:?}"
        );
        let seen_b = wait_for("replica 1 serves every version", DEADLINE, POLL, || async {
            versions(&b)
                .await
                .map(|v| (v.len() == expected.len()).then_some(v))
        })
        .await?;
        ensure!(
            seen_b == seen_a,
            "the replicas' versions differ:\n0: {seen_a:?}\n1: {seen_b:?}"
        );

        // Starts through both replicas pin the latest version; each completes
        // with it, whichever replica owns its partition.
        let latest = *expected.keys().next_back().context("versions")?;
        let mut ids = Vec::new();
        for api in [&a, &b] {
            for _ in 0..4 {
                let s = api.start("race", json!({}), None).await?;
                ensure!(
                    s["definition_version"].as_u64() == Some(latest),
                    "a start pinned another version: {s}"
                );
                ids.push(s["instance_id"].as_str().context("id")?.to_owned());
            }
        }
        for id in &ids {
            wait_until(&format!("{id} completes"), DEADLINE, POLL, || async {
                a.get("race", id)
                    .await
                    .is_ok_and(|w| w["state"] == "completed")
            })
            .await?;
        }
        Ok(())
    }
    .await;
    if result.is_err() {
        cluster.print_logs(60);
    }
    result
}
