//! Helpers shared by the end-to-end tests: starting many diamond instances,
//! waiting for them, and checking a diamond's history.

#![allow(dead_code)]

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use futures::stream::{self, StreamExt};
use serde_json::{json, Value};
use weft_integration_tests::ApiClient;

pub const DIAMOND: &str = include_str!("../../../examples/diamond.yaml");

/// Starts `n` diamond instances, 16 requests at a time; returns their ids.
pub async fn start_many(api: &ApiClient, n: usize) -> Result<Vec<String>> {
    let ids: Vec<Result<String>> = stream::iter(0..n)
        .map(|i| async move {
            let v = api.start("diamond", json!({ "n": i }), None).await?;
            Ok(v["instance_id"].as_str().context("instance_id")?.to_owned())
        })
        .buffer_unordered(16)
        .collect()
        .await;
    ids.into_iter().collect()
}

/// Waits until every instance is `completed` (fails fast on another terminal state).
pub async fn wait_all_completed(api: &ApiClient, ids: &[String], deadline: Duration) -> Result<()> {
    let mut pending: BTreeSet<String> = ids.iter().cloned().collect();
    let start = std::time::Instant::now();
    while !pending.is_empty() {
        let mut done = Vec::new();
        for id in pending.iter().take(50) {
            if let Ok(v) = api.get("diamond", id).await {
                match v["state"].as_str() {
                    Some("completed") => done.push(id.clone()),
                    Some(s @ ("failed" | "cancelled" | "timeout")) => {
                        anyhow::bail!("instance {id} ended {s}: {v}")
                    }
                    _ => {}
                }
            }
        }
        for id in done {
            pending.remove(&id);
        }
        ensure!(
            start.elapsed() < deadline,
            "{} of {} instances not completed after {deadline:?}",
            pending.len(),
            ids.len()
        );
        if !pending.is_empty() {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    Ok(())
}

/// Checks one history: gapless sequence from 1, every decision caused by an
/// earlier event of the same history, worker events caused by their
/// `task.scheduled`, no idempotency key twice, and the diamond's shape.
pub fn check_history(id: &str, events: &[Value]) -> Result<()> {
    let mut position: HashMap<&str, usize> = HashMap::new();
    let mut keys = BTreeSet::new();
    for (i, e) in events.iter().enumerate() {
        ensure!(
            e["sequence_number"] == json!(i + 1),
            "{id}: event {i} has sequence {}",
            e["sequence_number"]
        );
        ensure!(
            keys.insert(e["idempotency_key"].as_str().unwrap_or("")),
            "{id}: idempotency key twice: {e}"
        );
        let ty = e["event_type"].as_str().unwrap_or("");
        if i > 0 {
            let cause = e["causation_id"]
                .as_str()
                .with_context(|| format!("{id}: {ty} at {} has no causation id", i + 1))?;
            let at = *position.get(cause).with_context(|| {
                format!(
                    "{id}: cause {cause} of {ty} at {} is not earlier in the history",
                    i + 1
                )
            })?;
            if ty == "task.started" || ty == "task.completed" {
                ensure!(
                    events[at]["event_type"] == "task.scheduled",
                    "{id}: {ty} caused by {}",
                    events[at]["event_type"]
                );
                ensure!(
                    events[at]["metadata"]["weft.task"] == e["metadata"]["weft.task"],
                    "{id}: {ty} caused by another task's schedule"
                );
            }
        }
        position.insert(e["event_id"].as_str().context("event_id")?, i);
    }
    let count = |t: &str| events.iter().filter(|e| e["event_type"] == t).count();
    ensure!(
        count("task.completed") == 4 && count("task.scheduled") == 4,
        "{id}: not 4 tasks run once each"
    );
    ensure!(
        count("workflow.completed") == 1,
        "{id}: no single workflow.completed"
    );
    ensure!(
        events
            .last()
            .map(|e| e["event_type"] == "workflow.completed")
            == Some(true),
        "{id}: history does not end completed"
    );
    Ok(())
}
