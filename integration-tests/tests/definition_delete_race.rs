//! Deleting a type does not race a start that was accepted but not yet
//! applied (issue 18 item 5). A start is answered 202 once the broker has its
//! `workflow.created`, before the partition's processor has folded it; a
//! delete right after, through the other replica, must still see the
//! instance. Real binaries on a real broker, two orchestrator replicas: in
//! every round one replica starts an instance (no wait) and the other is asked
//! at once to delete the type, which must be a 409 naming that instance (the
//! first round through the CLI, the others through the API, alternating
//! replicas). A 503 (partitions moving between the replicas right after the
//! registration: the delete will not decide then) is asked again; a 200 never
//! is. Once every instance has ended the delete succeeds and starts are
//! refused on both replicas.

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use weft_integration_tests::cli::{weft, CliRun};
use weft_integration_tests::{wait_for, wait_until, ApiClient, ClusterOptions, TestCluster};

mod issue18;

const DEADLINE: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(100);
const ROUNDS: usize = 10;

/// Runs for seconds: longer than a round's start and delete, even one asked
/// again through a rebalance (each round cancels its instance).
const DEFINITION: &str =
    "type: dr\ntasks:\n  - name: hold\n    handler: sleep\n    parameters: {ms: 10000}\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_delete_right_after_an_accepted_start_sees_the_instance() -> Result<()> {
    let mut cluster = TestCluster::start(ClusterOptions::new(2, 1)).await?;
    let result = scenario(&mut cluster).await;
    if result.is_err() {
        cluster.print_logs(60);
    }
    result
}

/// `DELETE /v1/definitions/dr`, asked again while it answers 503 (partitions
/// moving between the replicas: the delete refuses to decide then, which is
/// right); any other answer, a 200 above all, is returned at once.
async fn delete(api: &ApiClient) -> Result<(StatusCode, Value)> {
    wait_for(
        "a delete not refused by a rebalance",
        DEADLINE,
        POLL,
        || async {
            let r = api.send(Method::DELETE, "/v1/definitions/dr", None).await?;
            if r.status == StatusCode::SERVICE_UNAVAILABLE {
                anyhow::bail!("503: {}", r.body);
            }
            anyhow::Ok(Some((r.status, r.body)))
        },
    )
    .await
}

/// `weft def delete dr` through `api`, run again while it fails with a 503
/// (`try again shortly`), like [`delete`].
async fn cli_delete(api: &ApiClient) -> Result<CliRun> {
    wait_for(
        "a weft def delete not refused by a rebalance",
        DEADLINE,
        POLL,
        || async {
            let run = weft(api, &["def", "delete", "dr"], DEADLINE).await?;
            if run.code == Some(1) && run.stderr.contains("try again shortly") {
                anyhow::bail!("{}", run.stderr.trim());
            }
            anyhow::Ok(Some(run))
        },
    )
    .await
}

/// Cancels `id` (again while a rebalance makes it a 503) and waits until it
/// has ended, so the next round's refusal names only the next instance.
async fn end(api: &ApiClient, id: &str) -> Result<()> {
    wait_for(
        &format!("the cancel of dr {id}"),
        DEADLINE,
        POLL,
        || async {
            let r = api.control("dr", id, "cancel", json!({}), None).await?;
            if r.status == StatusCode::SERVICE_UNAVAILABLE {
                anyhow::bail!("503: {}", r.body);
            }
            ensure!(
                r.status == StatusCode::ACCEPTED || r.status == StatusCode::CONFLICT,
                "cancel {id}: {r:?}"
            );
            anyhow::Ok(Some(()))
        },
    )
    .await?;
    wait_until(&format!("dr {id} has ended"), DEADLINE, POLL, || async {
        api.get("dr", id)
            .await
            .is_ok_and(|v| v["state"] == "cancelled" || v["state"] == "completed")
    })
    .await
}

async fn scenario(cluster: &mut TestCluster) -> Result<()> {
    let apis = [cluster.api_at(0), cluster.api_at(1)];
    ensure!(apis[0].register_definition(DEFINITION).await?["version"] == 1);
    for api in &apis {
        wait_until("both replicas know dr", DEADLINE, POLL, || async {
            api.definition("dr").await.is_ok()
        })
        .await?;
    }
    issue18::wait_spread(cluster, &apis, "dr").await?;

    // Through the CLI: `weft start` (no --wait), then at once `weft def delete`.
    let started = weft(&apis[0], &["start", "dr"], DEADLINE).await?;
    let id = started.ok()?.trim().to_owned();
    let refused = cli_delete(&apis[1]).await?;
    ensure!(
        refused.code == Some(1)
            && refused.stderr.contains("instances have not ended")
            && refused.stderr.contains(&id),
        "weft def delete right after weft start {id}: {refused:?}"
    );
    end(&apis[0], &id).await?;

    // Through the API, alternating replicas, the delete sent as soon as the 202 is in.
    for round in 1..ROUNDS {
        let (starter, deleter) = (&apis[round % 2], &apis[(round + 1) % 2]);
        let started = starter.start("dr", json!({}), None).await?;
        let id = started["instance_id"]
            .as_str()
            .context("instance_id")?
            .to_owned();
        let (status, body) = delete(deleter).await?;
        ensure!(
            status == StatusCode::CONFLICT
                && body["error"]
                    .as_str()
                    .is_some_and(|e| e.contains("instances have not ended") && e.contains(&id)),
            "round {round}: delete right after the start of {id} (partition {}): {status} {body}",
            started["partition"]
        );
        end(starter, &id).await?;
    }

    // Nothing runs any more: the delete goes through, and starts are refused.
    wait_for("no dr instance has not ended", DEADLINE, POLL, || async {
        let q = "type=dr&state=pending&state=initializing&state=running&state=paused&state=retrying&state=waiting_for_dependency&state=compensating";
        let items = apis[0].list(q).await?["items"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        anyhow::Ok(items.is_empty().then_some(()))
    })
    .await?;
    let (status, body) = delete(&apis[1]).await?;
    ensure!(
        status == StatusCode::OK && body["deleted_through_version"] == 1,
        "{status} {body}"
    );
    for api in &apis {
        wait_until("starts of dr are refused", DEADLINE, POLL, || async {
            let r = api
                .send(
                    Method::POST,
                    "/v1/workflows/dr",
                    Some(("application/json", "{}".to_owned())),
                )
                .await;
            r.is_ok_and(|r| {
                r.status == StatusCode::NOT_FOUND
                    && r.body["error"]
                        .as_str()
                        .is_some_and(|e| e.contains("was deleted"))
            })
        })
        .await?;
    }
    Ok(())
}
