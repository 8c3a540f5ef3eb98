//! The failure model, first cut: an orchestrator killed with SIGKILL in the
//! middle of a run loses no decision and repeats none; a projection rebuilt
//! from an empty data directory equals the live one, byte for byte, without
//! dispatching any task again.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use weft_integration_tests::{wait_for, wait_until, ApiClient, ClusterOptions, TestCluster};

use common::{check_history, start_many, wait_all_completed, DIAMOND};

async fn digest(api: &ApiClient) -> Result<String> {
    let v = api
        .send(reqwest::Method::GET, "/v1/admin/projection-digest", None)
        .await?;
    ensure!(v.status.is_success(), "digest: {} {}", v.status, v.body);
    Ok(format!("{}:{}", v.body["records"], v.body["digest"]))
}

async fn completed_count(api: &ApiClient, ids: &[String]) -> usize {
    let mut n = 0;
    for id in ids {
        if api
            .get("diamond", id)
            .await
            .is_ok_and(|v| v["state"] == "completed")
        {
            n += 1;
        }
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn orchestrator_killed_mid_run_and_rebuilt_from_nothing() -> Result<()> {
    let mut cluster = TestCluster::start(ClusterOptions::new(1, 1)).await?;
    let result = async {
        let api = cluster.api();
        api.register_definition(DIAMOND).await?;
        let ids = start_many(&api, 100).await?;
        wait_until(
            "some workflows completed",
            Duration::from_secs(60),
            Duration::from_millis(50),
            || async { completed_count(&api, &ids[..20]).await >= 5 },
        )
        .await?;
        cluster.restart_orchestrator(0).await?; // SIGKILL, then start on the same data dir
        wait_all_completed(&api, &ids, Duration::from_secs(180)).await?;
        let mut lengths = HashMap::new();
        for id in &ids {
            let h = api.events("diamond", id).await?;
            let events = h["events"].as_array().context("events")?;
            check_history(id, events)?;
            lengths.insert(id.clone(), events.len());
        }
        let live = digest(&api).await?;

        // Rebuild: kill, wipe the projections, start again.
        let data_dir = cluster
            .orchestrator(0)
            .data_dir()
            .context("data dir")?
            .to_path_buf();
        cluster.orchestrator_mut(0).process_mut().kill9();
        std::fs::remove_dir_all(&data_dir)?;
        std::fs::create_dir_all(&data_dir)?;
        cluster.orchestrator_mut(0).process_mut().start()?;
        cluster.wait_ready(0).await?;
        let rebuilt = wait_for(
            "the rebuilt projection equals the live one",
            Duration::from_secs(60),
            Duration::from_millis(200),
            || async {
                let d = digest(&api).await?;
                anyhow::Ok((d == live).then_some(d))
            },
        )
        .await;
        ensure!(
            rebuilt.is_ok(),
            "rebuilt digest {} != live {live}",
            digest(&api).await?
        );
        for id in &ids {
            let h = api.events("diamond", id).await?;
            let n = h["events"].as_array().context("events")?.len();
            ensure!(
                n == lengths[id],
                "{id}: {n} events after the rebuild, {} before: a task ran again",
                lengths[id]
            );
        }
        let metrics = api.metrics().await?;
        let dispatched = metrics
            .lines()
            .find(|l| l.starts_with("weft_orchestrator_dispatches_total "))
            .unwrap_or("");
        ensure!(
            dispatched.ends_with(" 400"),
            "a rebuild decides again: expected 400 dispatches decided, got '{dispatched}'"
        );
        Ok(())
    }
    .await;
    if result.is_err() {
        cluster.print_logs(80);
    }
    result
}
