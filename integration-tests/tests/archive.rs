//! Archival (issue 18 item 6), with the real binaries on a real broker and two
//! orchestrator replicas: `weft admin archive TYPE --before T` removes the
//! instances that ended before `T` from every replica's projection (lists and
//! reads no longer see them) and nothing else (instances running, or ended
//! after `T`, stay); their histories are not lost: `GET /v1/archive/{ty}/{id}`
//! and `weft archived` read the same events back from the events topic; and a
//! replica that rebuilds its projection from the topics archives them again.

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use weft_integration_tests::cli::weft;
use weft_integration_tests::{wait_for, wait_until, ApiClient, ClusterOptions, TestCluster};

mod issue18;

const QUICK: &str = "type: arch\ntasks:\n  - name: a\n    handler: noop\n  - name: b\n    handler: noop\n    depends_on: [a]\n";
const DEADLINE: Duration = Duration::from_secs(90);
const POLL: Duration = Duration::from_millis(200);

async fn start(api: &ApiClient, input: Value) -> Result<String> {
    let v = api.start("arch", input, None).await?;
    Ok(v["instance_id"].as_str().context("instance_id")?.to_owned())
}

async fn wait_state(api: &ApiClient, id: &str, state: &str) -> Result<()> {
    wait_until(&format!("{id} is {state}"), DEADLINE, POLL, || async {
        api.get("arch", id).await.is_ok_and(|v| v["state"] == state)
    })
    .await
}

/// The ids every replica lists for `arch` (each list scatters to the owners).
async fn listed(api: &ApiClient) -> Result<BTreeSet<String>> {
    let v = api.list("type=arch&limit=1000").await?;
    Ok(v["items"]
        .as_array()
        .context("items")?
        .iter()
        .filter_map(|i| i["instance_id"].as_str().map(str::to_owned))
        .collect())
}

/// `(sequence, event id)` of every event of a history answer.
fn ids(events: &Value) -> Vec<(u64, String)> {
    events
        .as_array()
        .map(|es| {
            es.iter()
                .map(|e| {
                    let seq = e["sequence_number"].as_u64().unwrap_or(0);
                    (seq, e["event_id"].as_str().unwrap_or("").to_owned())
                })
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ended_instances_are_archived_out_of_the_projection_with_their_history_kept() -> Result<()>
{
    let mut cluster = TestCluster::start(ClusterOptions::new(2, 1)).await?;
    let result = scenario(&mut cluster).await;
    if result.is_err() {
        cluster.print_logs(60);
    }
    result
}

async fn scenario(cluster: &mut TestCluster) -> Result<()> {
    let (a, b) = (cluster.api_at(0), cluster.api_at(1));
    a.register_definition(QUICK).await?;
    issue18::wait_spread(cluster, &[a.clone(), b.clone()], "arch").await?;

    // Six instances end before the cut; their histories as the projection has them.
    let mut old = Vec::new();
    for i in 0..6 {
        old.push(start(&a, json!({ "old": i })).await?);
    }
    let mut before = Vec::new();
    for id in &old {
        wait_state(&a, id, "completed").await?;
        before.push(ids(&a.events("arch", id).await?["events"]));
    }
    // The cut falls after their last events and before anything that follows.
    let cut = weft_shared::event::now_ms() + 1;
    wait_until(
        "the clock passes the cut",
        DEADLINE,
        Duration::from_millis(2),
        || async { weft_shared::event::now_ms() > cut },
    )
    .await?;
    // Two end after the cut, two keep running (a newer definition version with a long task).
    let mut kept = Vec::new();
    for i in 0..2 {
        let id = start(&b, json!({ "new": i })).await?;
        wait_state(&b, &id, "completed").await?;
        kept.push(id);
    }
    a.register_definition(&QUICK.replace(
        "handler: noop\n    depends_on",
        "handler: sleep\n    parameters: {ms: 60000}\n    depends_on",
    ))
    .await?;
    wait_until("both replicas know arch@2", DEADLINE, POLL, || async {
        b.definition("arch").await.is_ok_and(|d| d["version"] == 2)
    })
    .await?;
    for i in 0..2 {
        let id = start(&b, json!({ "running": i })).await?;
        wait_state(&b, &id, "running").await?;
        kept.push(id);
    }

    // A dry run counts, on each replica, what it holds of the six.
    let mut covered = 0;
    for api in [&a, &b] {
        let r = api
            .send(
                Method::POST,
                "/v1/admin/archive",
                Some((
                    "application/json",
                    json!({"workflow_type": "arch", "ended_before": cut, "dry_run": true})
                        .to_string(),
                )),
            )
            .await?;
        ensure!(r.status == StatusCode::OK, "{r:?}");
        covered += r.body["covered_here"].as_u64().context("covered_here")?;
    }
    ensure!(
        covered == 6,
        "the dry runs cover the six old instances once: {covered}"
    );
    ensure!(
        listed(&a).await?.len() == 10,
        "nothing archived by a dry run"
    );

    // Archive through the CLI on one replica: every replica applies it.
    let out = weft(
        &b,
        &["admin", "archive", "arch", "--before", &cut.to_string()],
        DEADLINE,
    )
    .await?;
    ensure!(
        out.ok()?.contains("archive of arch instances ended before"),
        "{out:?}"
    );
    let expected: BTreeSet<String> = kept.iter().cloned().collect();
    for api in [&a, &b] {
        wait_for(
            "the list holds only the kept instances",
            DEADLINE,
            POLL,
            || async {
                let l = listed(api).await?;
                anyhow::Ok(if l == expected { Some(()) } else { None })
            },
        )
        .await?;
    }
    for id in &old {
        let r = b
            .send(Method::GET, &format!("/v1/workflows/arch/{id}"), None)
            .await?;
        ensure!(
            r.status == StatusCode::NOT_FOUND,
            "an archived instance is out of the projection: {r:?}"
        );
    }
    for id in &kept {
        ensure!(a.get("arch", id).await.is_ok(), "{id} stays");
    }

    // The histories are kept: read back from the events topic, the same events.
    for (id, events) in old.iter().zip(&before) {
        let r = a
            .send(Method::GET, &format!("/v1/archive/arch/{id}"), None)
            .await?;
        ensure!(r.status == StatusCode::OK, "{r:?}");
        ensure!(r.body["state"]["state"] == "completed", "{}", r.body);
        ensure!(
            &ids(&r.body["events"]) == events,
            "{id}: the archived history differs from the projection's"
        );
    }
    let out = weft(&b, &["archived", "arch", &old[0]], DEADLINE).await?;
    ensure!(
        out.ok()?.contains("completed") && out.stdout.contains("workflow.completed"),
        "{out:?}"
    );

    // A rebuild folds the six back from the topic and archives them again.
    cluster.rebuild_orchestrator(0).await?;
    let a = cluster.api_at(0);
    wait_for(
        "the rebuilt replica archives them again",
        DEADLINE,
        POLL,
        || async {
            let l = listed(&a).await?;
            anyhow::Ok(if l == expected { Some(()) } else { None })
        },
    )
    .await?;
    Ok(())
}
