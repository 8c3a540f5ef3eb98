//! The failure model, first cut: an orchestrator killed with SIGKILL in the
//! middle of a run (workflows still unfinished, and finishing after the kill)
//! loses no decision and repeats none; a projection rebuilt from an empty data
//! directory replays every input of the topics, equals the live one, and
//! publishes nothing again: the tasks and events topics do not grow (their
//! high watermarks are compared, not the worker's or the orchestrator's own
//! counts), until a new workflow adds exactly its own records.

mod common;

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use serde_json::Value;
use weft_integration_tests::{wait_for, wait_until, ApiClient, ClusterOptions, TestCluster};
use weft_shared::event::now_ms;

use common::{check_history, start_many, wait_all_completed, DIAMOND};

const WORKFLOWS: usize = 100;
const TASKS_TOPIC: &str = "weft.diamond.tasks";
const EVENTS_TOPIC: &str = "weft.diamond.events";

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

/// The sum of a topic's high watermarks: how many records it ever received.
async fn topic_size(cluster: &TestCluster, topic: &str) -> Result<i64> {
    Ok(cluster.broker().high_watermarks(topic).await?.iter().sum())
}

fn is_input(e: &Value) -> bool {
    e["metadata"]["weft.source_kind"] != "decision"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn orchestrator_killed_mid_run_and_rebuilt_from_nothing() -> Result<()> {
    let mut cluster = TestCluster::start(ClusterOptions::new(1, 1)).await?;
    let result = async {
        let api = cluster.api();
        api.register_definition(DIAMOND).await?;
        let mut ids = start_many(&api, WORKFLOWS / 2).await?;
        wait_until(
            "some workflows completed",
            Duration::from_secs(60),
            Duration::from_millis(50),
            || async { completed_count(&api, &ids[..20]).await >= 5 },
        )
        .await?;
        // Killed mid-run: the second half is started right before the SIGKILL
        // (a diamond needs 7 broker round trips; the engine finishes a batch of
        // 100 in well under a second, so work left at a kill that follows a
        // count of the completed ones is a race). Work is left at the kill and
        // finishes after it.
        ids.extend(start_many(&api, WORKFLOWS - WORKFLOWS / 2).await?);
        let killed_at_ms = now_ms();
        cluster.restart_orchestrator(0).await?; // SIGKILL, then start on the same data dir
        wait_all_completed(&api, &ids, Duration::from_secs(180)).await?;
        let mut lengths = Vec::new();
        let (mut inputs, mut finished_after_kill, mut done_at_kill) = (0usize, 0usize, 0usize);
        for id in &ids {
            let h = api.events("diamond", id).await?;
            let events = h["events"].as_array().context("events")?;
            check_history(id, events)?;
            lengths.push(events.len());
            inputs += events.iter().filter(|e| is_input(e)).count();
            let completed_ms = events.last().and_then(|e| e["timestamp_ms"].as_i64());
            if completed_ms.is_some_and(|t| t > killed_at_ms) {
                finished_after_kill += 1;
            } else {
                done_at_kill += 1;
            }
        }
        ensure!(
            finished_after_kill > 0,
            "no workflow completed after the kill ({done_at_kill} of {WORKFLOWS} had before it)"
        );
        println!(
            "killed with {done_at_kill} of {WORKFLOWS} completed; {finished_after_kill} completed after the kill"
        );
        let live = digest(&api).await?;
        let tasks_before = topic_size(&cluster, TASKS_TOPIC).await?;
        let events_before = topic_size(&cluster, EVENTS_TOPIC).await?;
        ensure!(
            tasks_before >= (4 * WORKFLOWS) as i64,
            "{tasks_before} records in {TASKS_TOPIC} for {WORKFLOWS} diamonds"
        );

        // Rebuild: kill, wipe the projections, start again.
        let data_dir = cluster
            .orchestrator(0)
            .data_dir()
            .context("data dir")?
            .to_path_buf();
        cluster.orchestrator_mut(0).process_mut().kill9();
        std::fs::remove_dir_all(&data_dir)?;
        std::fs::create_dir_all(&data_dir)?;
        ensure!(
            std::fs::read_dir(&data_dir)?.next().is_none(),
            "the data dir is not empty"
        );
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
        // It replayed: every input of the topics was applied again by the new process.
        let applied = api.metric("weft_orchestrator_events_applied_total").await?;
        ensure!(
            applied as usize == inputs,
            "the rebuild applied {applied} inputs; the histories hold {inputs}"
        );
        for (id, len) in ids.iter().zip(&lengths) {
            let h = api.events("diamond", id).await?;
            let n = h["events"].as_array().context("events")?.len();
            ensure!(
                n == *len,
                "{id}: {n} events after the rebuild, {len} before: a task ran again"
            );
        }
        let dispatched = api.metric("weft_orchestrator_dispatches_total").await?;
        ensure!(
            dispatched as usize == 4 * WORKFLOWS,
            "the rebuild derived {dispatched} dispatches, the histories {}",
            4 * WORKFLOWS
        );
        // Derived again, published never: the topics did not grow.
        let tasks_after = topic_size(&cluster, TASKS_TOPIC).await?;
        let events_after = topic_size(&cluster, EVENTS_TOPIC).await?;
        ensure!(
            tasks_after == tasks_before && events_after == events_before,
            "the rebuild published again: {TASKS_TOPIC} {tasks_before} -> {tasks_after} records, \
             {EVENTS_TOPIC} {events_before} -> {events_after}"
        );

        // A new workflow afterwards (its partition's processor is past anything the
        // rebuild could still publish) adds exactly its own records.
        let marker = start_many(&api, 1).await?;
        wait_all_completed(&api, &marker, Duration::from_secs(60)).await?;
        let marker_len = api.events("diamond", &marker[0]).await?["events"]
            .as_array()
            .context("events")?
            .len() as i64;
        let tasks_end = topic_size(&cluster, TASKS_TOPIC).await?;
        let events_end = topic_size(&cluster, EVENTS_TOPIC).await?;
        ensure!(
            tasks_end == tasks_before + 4 && events_end == events_before + marker_len,
            "after one more diamond ({marker_len} events, 4 tasks): {TASKS_TOPIC} \
             {tasks_before} -> {tasks_end} records, {EVENTS_TOPIC} {events_before} -> {events_end}"
        );
        cluster.check_processes()?;
        Ok(())
    }
    .await;
    if result.is_err() {
        cluster.print_logs(80);
    }
    result
}
