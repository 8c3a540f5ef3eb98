//! Helpers shared by the issue 15 tests (capability routing, priority,
//! resources, failover, preferred node, context limits): start workflows,
//! wait for their ends, and read where their tasks ran.

#![allow(dead_code)]

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use futures::stream::{self, StreamExt, TryStreamExt};
use serde_json::json;
use weft_integration_tests::bench::lanes::{api_runs, TaskRun};
use weft_integration_tests::{wait_for, ApiClient};

pub const POLL: Duration = Duration::from_millis(100);

/// Starts `n` workflows of `ty` (input `{n: i}`), 16 requests at a time; returns their ids.
pub async fn start_n(api: &ApiClient, ty: &str, n: usize) -> Result<Vec<String>> {
    stream::iter(0..n)
        .map(|i| async move {
            let v = api.start(ty, json!({ "n": i }), None).await?;
            Ok::<_, anyhow::Error>(v["instance_id"].as_str().context("instance_id")?.to_owned())
        })
        .buffered(16)
        .try_collect()
        .await
}

/// Waits until every instance of `ids` is `completed`; fails at once if one
/// ends otherwise, or after `deadline`.
pub async fn wait_completed(
    api: &ApiClient,
    ty: &str,
    ids: &[String],
    deadline: Duration,
) -> Result<()> {
    let pending = RefCell::new(ids.to_vec());
    wait_for(
        &format!("{} workflows of {ty} complete", ids.len()),
        deadline,
        POLL,
        || async {
            let snapshot = pending.borrow().clone();
            let mut still = Vec::new();
            for id in snapshot {
                let v = api.get(ty, &id).await?;
                match v["state"].as_str() {
                    Some("completed") => {}
                    Some(s @ ("failed" | "cancelled" | "timeout")) => {
                        return Ok(Some(Err(anyhow!("{ty}/{id} ended {s}: {v}"))))
                    }
                    _ => still.push(id),
                }
            }
            let done = still.is_empty();
            *pending.borrow_mut() = still;
            Ok::<_, anyhow::Error>(done.then_some(Ok(())))
        },
    )
    .await?
}

/// The task runs of `ids`, grouped by task name.
pub async fn runs_by_task(
    api: &ApiClient,
    ty: &str,
    ids: &[String],
) -> Result<BTreeMap<String, Vec<TaskRun>>> {
    let mut out: BTreeMap<String, Vec<TaskRun>> = BTreeMap::new();
    for r in api_runs(api, ty, ids, 16).await? {
        out.entry(r.task.clone()).or_default().push(r);
    }
    Ok(out)
}

/// Fails unless every run of `runs` started exactly once, completed, and ran
/// on `node` (any node when `None`): its `task.started` names it and it
/// produced the `task.completed`.
pub fn all_ran_on(task: &str, runs: &[TaskRun], node: Option<&str>, expected: usize) -> Result<()> {
    if runs.len() != expected {
        bail!(
            "{expected} runs of task {task} expected, found {}",
            runs.len()
        );
    }
    for r in runs {
        if r.completed_ms.is_none() {
            bail!("task {task} of {} never completed: {r:?}", r.instance_id);
        }
        if r.starts.len() != 1 {
            bail!(
                "task {task} of {} started {} times: {:?}",
                r.instance_id,
                r.starts.len(),
                r.starts
            );
        }
        if let Some(node) = node {
            if r.node() != Some(node) {
                bail!(
                    "task {task} of {} ran on {:?}, not on {node}",
                    r.instance_id,
                    r.node()
                );
            }
        }
    }
    Ok(())
}
