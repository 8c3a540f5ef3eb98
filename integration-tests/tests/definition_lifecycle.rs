//! Definition lifecycle (issue 18 item 5), with the real binaries on a real
//! broker and two orchestrator replicas, through the CLI and the API: an older
//! version is started explicitly; the diff of two versions names what changed;
//! a deprecated version takes no new starts on either replica (a start without
//! a version runs the latest one not deprecated; with every version
//! deprecated, none) until it is reinstated; a type is not deleted while an
//! instance runs, is deleted once none does (starts refused, histories still
//! readable), and comes back with a newer version; the lifecycle survives a
//! restart (it is folded from `weft.definitions`).

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use weft_integration_tests::cli::{weft, CliRun};
use weft_integration_tests::{wait_until, ApiClient, ClusterOptions, TestCluster};

mod issue18;

const DEADLINE: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(100);

fn def(description: &str, ms: u64, extra_task: bool) -> String {
    let mut d = format!(
        "type: lc\ndescription: {description}\ntasks:\n  - name: hold\n    handler: sleep\n    parameters: {{ms: {ms}}}\n"
    );
    if extra_task {
        d.push_str("  - name: after\n    handler: noop\n    depends_on: [hold]\n");
    }
    d
}

async fn cli(api: &ApiClient, args: &[&str]) -> Result<CliRun> {
    weft(api, args, DEADLINE).await
}

/// Starts `lc` through the API (`version` pinned or not); status and body.
async fn start(api: &ApiClient, version: Option<u32>) -> Result<(StatusCode, Value)> {
    let mut body = json!({ "input": {} });
    if let Some(v) = version {
        body["version"] = json!(v);
    }
    let r = api
        .send(
            Method::POST,
            "/v1/workflows/lc",
            Some(("application/json", body.to_string())),
        )
        .await?;
    Ok((r.status, r.body))
}

fn id_of(start_answer: &Value) -> Result<String> {
    Ok(start_answer["instance_id"]
        .as_str()
        .context("instance_id")?
        .to_owned())
}

/// The instance, retried while its partition changes owner or replays (503).
async fn read(api: &ApiClient, id: &str) -> Result<Value> {
    weft_integration_tests::wait_for(&format!("a read of lc {id}"), DEADLINE, POLL, || async {
        api.get("lc", id).await.map(Some)
    })
    .await
}

async fn running_version(api: &ApiClient, id: &str) -> Result<u64> {
    let v = read(api, id).await?;
    v["definition_version"]
        .as_u64()
        .with_context(|| format!("definition_version in {v}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn versions_are_started_deprecated_diffed_and_deleted() -> Result<()> {
    let mut cluster = TestCluster::start(ClusterOptions::new(2, 1)).await?;
    let result = scenario(&mut cluster).await;
    if result.is_err() {
        cluster.print_logs(60);
    }
    result
}

async fn scenario(cluster: &mut TestCluster) -> Result<()> {
    let (a, b) = (cluster.api_at(0), cluster.api_at(1));
    ensure!(a.register_definition(&def("first", 60_000, false)).await?["version"] == 1);
    ensure!(a.register_definition(&def("second", 60_000, true)).await?["version"] == 2);
    for api in [&a, &b] {
        wait_until("both replicas know lc@2", DEADLINE, POLL, || async {
            api.definition("lc").await.is_ok_and(|d| d["version"] == 2)
        })
        .await?;
    }
    issue18::wait_spread(cluster, &[a.clone(), b.clone()], "lc").await?;

    // The diff, in the API and the CLI.
    let d = a
        .send(Method::GET, "/v1/definitions/lc/diff?from=1&to=2", None)
        .await?;
    ensure!(d.status == StatusCode::OK, "{d:?}");
    let changes: Vec<(String, String)> = d.body["changes"]
        .as_array()
        .context("changes")?
        .iter()
        .map(|c| {
            (
                c["path"].as_str().unwrap_or("").to_owned(),
                c["change"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    ensure!(
        changes
            == vec![
                ("description".into(), "changed".into()),
                ("tasks.after".into(), "added".into())
            ],
        "diff 1 -> 2: {changes:?}"
    );
    let out = cli(&b, &["def", "diff", "lc", "1"]).await?;
    let text = out.ok()?;
    ensure!(
        text.contains("lc@1 -> lc@2: 2 change(s)")
            && text.contains("+ tasks.after")
            && text.contains("~ description: \"first\" -> \"second\""),
        "weft def diff: {text}"
    );

    // An older version, started explicitly (CLI), and the latest by default.
    let out = cli(&a, &["start", "lc", "--version", "1"]).await?;
    let old = out.ok()?.trim().to_owned();
    ensure!(
        running_version(&b, &old).await? == 1,
        "pinned start runs v1"
    );
    let (s, latest) = start(&b, None).await?;
    ensure!(
        s == StatusCode::ACCEPTED && latest["definition_version"] == 2,
        "{s} {latest}"
    );

    // Deprecate v1 through one replica: both refuse it; the default is still v2.
    let out = cli(&a, &["def", "deprecate", "lc", "1", "--reason", "use v2"]).await?;
    ensure!(out.ok()?.contains("deprecated lc@1"), "{out:?}");
    for api in [&a, &b] {
        wait_until("v1 is refused", DEADLINE, POLL, || async {
            start(api, Some(1)).await.is_ok_and(|(s, v)| {
                s == StatusCode::CONFLICT
                    && v["error"]
                        .as_str()
                        .is_some_and(|e| e.contains("deprecated (use v2)"))
            })
        })
        .await?;
    }
    let refused = cli(&b, &["start", "lc", "--version", "1"]).await?;
    ensure!(
        refused.code == Some(1) && refused.stderr.contains("deprecated"),
        "{refused:?}"
    );
    ensure!(a.definition("lc").await?["deprecated"] == false);
    let v1 = a
        .send(Method::GET, "/v1/definitions/lc/1", None)
        .await?
        .body;
    ensure!(
        v1["deprecated"] == true && v1["deprecation_reason"] == "use v2",
        "{v1}"
    );
    ensure!(
        running_version(&a, &old).await? == 1,
        "the running v1 instance goes on"
    );

    // Every version deprecated: no start without a version; reinstated: starts again.
    cli(&a, &["def", "deprecate", "lc", "2"]).await?.ok()?;
    let (s, v) = start(&a, None).await?;
    ensure!(
        s == StatusCode::CONFLICT
            && v["error"]
                .as_str()
                .is_some_and(|e| e.contains("every version")),
        "{s} {v}"
    );
    cli(&a, &["def", "reinstate", "lc", "2"]).await?.ok()?;
    let (s, v) = start(&a, None).await?;
    ensure!(
        s == StatusCode::ACCEPTED && v["definition_version"] == 2,
        "{s} {v}"
    );

    // Delete: refused while instances run, done once none does.
    let refused = cli(&b, &["def", "delete", "lc"]).await?;
    ensure!(
        refused.code == Some(1)
            && refused.stderr.contains("instances have not ended")
            && refused.stderr.contains(&old),
        "{refused:?}"
    );
    // The instances this test started (a list may not show the newest yet).
    let started = [old.clone(), id_of(&latest)?, id_of(&v)?];
    for id in &started {
        let r = a.control("lc", id, "cancel", json!({}), None).await?;
        ensure!(
            r.status == StatusCode::ACCEPTED || r.status == StatusCode::CONFLICT,
            "{r:?}"
        );
    }
    weft_integration_tests::wait_for("no lc instance has not ended", DEADLINE, POLL, || async {
        let q = "type=lc&state=pending&state=initializing&state=running&state=paused&state=retrying&state=waiting_for_dependency&state=compensating";
        let v = a.list(q).await?;
        let items = v["items"].as_array().cloned().unwrap_or_default();
        anyhow::Ok(if items.is_empty() { Some(()) } else { anyhow::bail!("still: {items:?}") })
    })
    .await?;
    let out = cli(&b, &["def", "delete", "lc"]).await?;
    ensure!(
        out.ok()?.contains("deleted lc (versions up to 2)"),
        "{out:?}"
    );
    for api in [&a, &b] {
        wait_until(
            "starts of the deleted type are refused",
            DEADLINE,
            POLL,
            || async {
                start(api, None).await.is_ok_and(|(s, v)| {
                    s == StatusCode::NOT_FOUND
                        && v["error"]
                            .as_str()
                            .is_some_and(|e| e.contains("was deleted"))
                })
            },
        )
        .await?;
    }
    ensure!(
        read(&a, &old).await?["state"] == "cancelled",
        "histories stay readable"
    );

    // The lifecycle is in the topic: a restarted replica folds the same.
    cluster.restart_orchestrator(1).await?;
    let b = cluster.api_at(1);
    let v1 = b
        .send(Method::GET, "/v1/definitions/lc/1", None)
        .await?
        .body;
    ensure!(
        v1["deprecated"] == true && v1["deleted"] == true,
        "after a restart: {v1}"
    );

    // A newer version brings the type back; the deleted ones stay deleted.
    ensure!(b.register_definition(&def("third", 10, false)).await?["version"] == 3);
    for api in [&a, &b] {
        wait_until("lc@3 starts", DEADLINE, POLL, || async {
            start(api, None)
                .await
                .is_ok_and(|(s, v)| s == StatusCode::ACCEPTED && v["definition_version"] == 3)
        })
        .await?;
    }
    let (s, v) = start(&a, Some(2)).await?;
    ensure!(
        s == StatusCode::CONFLICT && v["error"].as_str().is_some_and(|e| e.contains("deleted")),
        "{s} {v}"
    );
    Ok(())
}
