//! Snapshots end to end: an orchestrator told to snapshot every 3 events
//! publishes each instance's snapshots to the compacted snapshots topic through
//! its outbox; every one decodes (Avro), converts back to a state, and agrees
//! with the state the API reconstructs at its sequence number — the workflow's
//! state and every task's state, attempt and output; the newest one of a
//! completed instance is at most 2 events behind its end.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use serde_json::Value;
use weft_integration_tests::{ClusterOptions, TestCluster};
use weft_orchestrator::protocol::conformance::{KafkaProbe, TopicProbe};
use weft_orchestrator::store::from_snapshot;
use weft_shared::avro::AvroRecord;
use weft_shared::config::WeftConfig;
use weft_shared::data::data_map_to_json;
use weft_shared::WorkflowSnapshot;

use common::{start_many, wait_all_completed, DIAMOND};

const EVERY: u64 = 3;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_reach_the_compacted_topic_and_match_the_history() -> Result<()> {
    let mut opts = ClusterOptions::new(1, 1);
    opts.orchestrator_args = vec![
        "--set".into(),
        format!("orchestrator.snapshot_every={EVERY}"),
    ];
    let cluster = TestCluster::start(opts).await?;
    let result = async {
        let api = cluster.api();
        api.register_definition(DIAMOND).await?;
        let ids = start_many(&api, 3).await?;
        wait_all_completed(&api, &ids, Duration::from_secs(120)).await?;
        let mut lengths = BTreeMap::new();
        for id in &ids {
            let h = api.events("diamond", id).await?;
            lengths.insert(
                id.clone(),
                h["events"].as_array().context("events")?.len() as u64,
            );
        }
        // Each instance crosses a multiple of 3 at least every 3 events.
        let at_least: u64 = lengths.values().map(|n| n / EVERY / 2).sum();
        let mut settings = WeftConfig::default().kafka;
        settings.bootstrap = cluster.bootstrap();
        let records = KafkaProbe(settings)
            .read("weft.diamond.snapshots", at_least as usize)
            .await;
        let mut newest: BTreeMap<String, u64> = BTreeMap::new();
        let mut task_states: BTreeMap<&str, usize> = BTreeMap::new();
        for (key, payload) in &records {
            let snap = WorkflowSnapshot::decode(payload).context("a snapshot record")?;
            let id = snap.instance_id.to_string();
            ensure!(key == id.as_bytes(), "snapshot of {id} keyed otherwise");
            let state = from_snapshot(&snap)?;
            ensure!(state.last_seq == snap.sequence_number);
            ensure!(
                snap.tasks.len() == 4,
                "the definition's tasks are in the snapshot"
            );
            let path = format!(
                "/v1/workflows/diamond/{id}/state?at={}",
                snap.sequence_number
            );
            let at = api.send(reqwest::Method::GET, &path, None).await?;
            ensure!(at.status.is_success(), "{path}: {} {}", at.status, at.body);
            ensure!(
                at.body["state"] == snap.state.as_str()
                    && at.body["sequence_number"] == snap.sequence_number,
                "{id}@{}: snapshot says {}, the history {}",
                snap.sequence_number,
                snap.state,
                at.body
            );
            let api_tasks = at.body["tasks"].as_array().context("tasks")?;
            ensure!(api_tasks.len() == 4, "{id}: tasks {}", at.body["tasks"]);
            for t in api_tasks {
                let name = t["name"].as_str().context("task name")?;
                let mine = state.task(name);
                let output = mine.output.as_ref().map(data_map_to_json);
                ensure!(
                    t["state"] == mine.state.as_str()
                        && t["attempt"] == mine.attempt
                        && t["output"] == output.unwrap_or(Value::Null),
                    "{id}@{}: task {name} in the snapshot is {} (attempt {}), the history says {t}",
                    snap.sequence_number,
                    mine.state,
                    mine.attempt
                );
                *task_states.entry(mine.state.as_str()).or_default() += 1;
            }
            let e = newest.entry(id).or_default();
            *e = (*e).max(snap.sequence_number);
        }
        // The snapshots caught tasks on the way, not only at rest.
        ensure!(
            task_states.contains_key("pending")
                && task_states.contains_key("completed")
                && task_states.len() >= 3,
            "task states seen in snapshots: {task_states:?}"
        );
        for (id, len) in &lengths {
            let seq = newest.get(id).copied().unwrap_or(0);
            ensure!(
                seq <= *len && len - seq < EVERY,
                "{id}: newest snapshot at {seq} of {len} events"
            );
        }
        Ok(())
    }
    .await;
    if result.is_err() {
        cluster.print_logs(60);
    }
    result
}
