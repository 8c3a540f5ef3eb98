//! Issue 15 on the real broker, where tasks run: workers of different
//! capabilities in one worker group, and tasks that need some of them.
//!
//! - routing: worker-0 has `gpu`, worker-1 nothing, worker-2 `region=eu`;
//!   every `requires: [gpu]` task runs on worker-0, every `node_selector:
//!   {region: eu}` task on worker-2, the plain ones anywhere; each lane's task
//!   topic holds exactly its own tasks' dispatches;
//! - failover: two `gpu` workers and one without; the worker running a long
//!   gpu task (with a heartbeat timeout) is SIGKILLed, the attempt is retried
//!   and completes on the other gpu worker (a second `task.started` naming
//!   it) within the session timeout, or on Tansu the orphan watch's bound,
//!   and slack;
//! - preferred node: `assign_task_to_node` (GET
//!   /v1/definitions/{type}/tasks/{task}/placement?preferred=) answers the
//!   preferred worker while it is capable and healthy, another capable one
//!   when it lacks a capability or has gone silent; dispatch itself goes by
//!   lane (ADR 0022), so the gpu task runs on either gpu worker.
//!
//! Where a task ran is the `data.node_id` of its `task.started` in the
//! history the API serves.

mod issue15;

use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use reqwest::Method;
use serde_json::{json, Value};
use weft_integration_tests::bench::lanes::per_node;
use weft_integration_tests::{wait_for, ApiClient, ClusterOptions, TestCluster};

use issue15::{all_ran_on, runs_by_task, start_n, wait_completed, POLL};

/// Kafka's session timeout of Weft's clients (shared/src/kafka.rs): how long a
/// SIGKILLed worker keeps its partitions on Apache Kafka.
const SESSION_TIMEOUT: Duration = Duration::from_secs(10);
/// On Tansu a rebalance can hand the dead member partitions it never reads;
/// the survivors' orphan watch (worker/src/orphans.rs) takes them back once
/// they made no progress for 40 s, checked every 10 s: the bound of a
/// failover on the development broker.
const TANSU_ORPHAN_BOUND: Duration = Duration::from_secs(50);

const ROUTED: &str = "type: routed
tasks:
  - name: render
    handler: sleep
    requires: [gpu]
    parameters: {ms: 20}
  - name: store
    handler: sleep
    node_selector: {region: eu}
    parameters: {ms: 20}
  - name: plain
    handler: sleep
    parameters: {ms: 20}
";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn gpu_tasks_run_on_the_gpu_worker_and_eu_tasks_on_the_eu_worker() -> Result<()> {
    // The flag and the configuration key both declare capabilities.
    let opts = ClusterOptions::new(1, 3)
        .worker_args_for(0, ["--capabilities", "gpu"])
        .worker_args_for(2, ["--set", "worker.capabilities=region=eu"]);
    let cluster = TestCluster::start(opts).await?;
    let result = routing(&cluster).await;
    if result.is_err() {
        cluster.print_logs(60);
    }
    result
}

async fn routing(cluster: &TestCluster) -> Result<()> {
    const N: usize = 30;
    let api = cluster.api();
    api.register_definition(ROUTED).await?;
    let ids = start_n(&api, "routed", N).await?;
    wait_completed(&api, "routed", &ids, Duration::from_secs(120)).await?;
    let runs = runs_by_task(&api, "routed", &ids).await?;
    let get = |t: &str| runs.get(t).map(Vec::as_slice).unwrap_or_default();
    all_ran_on("render", get("render"), Some("worker-0"), N)?;
    all_ran_on("store", get("store"), Some("worker-2"), N)?;
    all_ran_on("plain", get("plain"), None, N)?;
    println!(
        "routing: render {:?}, store {:?}, plain {:?}",
        per_node(get("render")),
        per_node(get("store")),
        per_node(get("plain"))
    );
    // Each lane's task topic got exactly its tasks' dispatches.
    for (topic, want) in [
        ("weft.routed.tasks.cap-gpu", N),
        ("weft.routed.tasks.sel-region--eu", N),
        ("weft.routed.tasks", N),
    ] {
        let got: i64 = cluster.broker().high_watermarks(topic).await?.iter().sum();
        ensure!(
            got == want as i64,
            "{topic} holds {got} records, not {want}"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_gpu_task_whose_worker_is_killed_completes_on_the_other_gpu_worker() -> Result<()> {
    let opts = ClusterOptions::new(1, 3)
        .worker_args_for(0, ["--set", "worker.capabilities=gpu"])
        .worker_args_for(1, ["--set", "worker.capabilities=gpu"]);
    let mut cluster = TestCluster::start(opts).await?;
    let result = failover(&mut cluster).await;
    if result.is_err() {
        cluster.print_logs(60);
    }
    result
}

async fn failover(cluster: &mut TestCluster) -> Result<()> {
    let api = cluster.api();
    // A heartbeat timeout: the orchestrator learns of the dead worker from its
    // silence and retries the attempt, which the other gpu worker starts.
    api.register_definition(
        "type: failover\ntasks:\n  - name: train\n    handler: sleep\n    requires: [gpu]\n    \
         parameters: {ms: 4000}\n    timeout: {heartbeat: 1500ms}\n    \
         retry: {max_attempts: 3, backoff: fixed, base_delay: 100ms}\n",
    )
    .await?;
    let id = api.start("failover", json!({}), None).await?["instance_id"]
        .as_str()
        .context("instance_id")?
        .to_owned();
    let first = wait_for(
        "the gpu task starts",
        Duration::from_secs(60),
        POLL,
        || async {
            let runs = runs_by_task(&api, "failover", std::slice::from_ref(&id)).await?;
            Ok::<_, anyhow::Error>(
                runs.get("train")
                    .and_then(|r| r[0].node().map(str::to_owned)),
            )
        },
    )
    .await?;
    let victim = cluster
        .workers()
        .iter()
        .position(|w| w.node_id() == first)
        .with_context(|| format!("task.started names {first}, no worker of the cluster"))?;
    ensure!(
        victim < 2,
        "the gpu task started on {first}, which has no gpu"
    );
    let survivor = format!("worker-{}", 1 - victim);
    let killed_at = Instant::now();
    cluster.worker_mut(victim).process_mut().kill9();
    println!("failover: killed {first} while it ran the gpu task");
    let deadline = SESSION_TIMEOUT.max(TANSU_ORPHAN_BOUND) + Duration::from_secs(4 + 30);
    wait_completed(&api, "failover", std::slice::from_ref(&id), deadline).await?;
    let took = killed_at.elapsed();
    let runs = runs_by_task(&api, "failover", std::slice::from_ref(&id)).await?;
    let run = &runs.get("train").context("no train task")?[0];
    let nodes: Vec<&str> = run.starts.iter().map(|(n, _)| n.as_str()).collect();
    ensure!(
        run.completed_by.as_deref() == Some(survivor.as_str()),
        "the task was completed by {:?}, not by the other gpu worker {survivor} (starts: {nodes:?})",
        run.completed_by
    );
    ensure!(
        !nodes.contains(&"worker-2"),
        "the gpu task started on worker-2, which has no gpu: {nodes:?}"
    );
    println!(
        "failover: completed on {survivor} {:.1} s after the kill (session timeout {SESSION_TIMEOUT:?}, Tansu orphan bound {TANSU_ORPHAN_BOUND:?}, task 4 s); starts {:?}",
        took.as_secs_f64(),
        run.starts
    );
    // Its history says where it ran: the first start on the killed worker,
    // then one on the survivor.
    ensure!(
        nodes.first() == Some(&first.as_str()) && nodes.last() == Some(&survivor.as_str()),
        "{survivor} completed the task, but its history's task.started events name {nodes:?} \
         (the survivor's start is missing)"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_preferred_node_is_assigned_while_it_is_capable_and_healthy() -> Result<()> {
    let opts = ClusterOptions::new(1, 3)
        .worker_args_for(0, ["--set", "worker.capabilities=gpu"])
        .worker_args_for(2, ["--set", "worker.capabilities=gpu"]);
    let mut cluster = TestCluster::start(opts).await?;
    let result = preferred(&mut cluster).await;
    if result.is_err() {
        cluster.print_logs(60);
    }
    result
}

/// `assigned` of the placement of `task` with `preferred`, once `capable`
/// lists exactly `capable` (sorted; the registry view has caught up).
async fn assigned(
    api: &ApiClient,
    task: &str,
    preferred: &str,
    capable: &[&str],
    deadline: Duration,
) -> Result<String> {
    let path = format!("/v1/definitions/pinned/tasks/{task}/placement?preferred={preferred}");
    let what = format!("the placement of {task} lists {capable:?} as capable");
    wait_for(&what, deadline, POLL, || async {
        let r = api.send(Method::GET, &path, None).await?;
        ensure!(r.status.is_success(), "GET {path}: {} {}", r.status, r.body);
        let mut listed: Vec<&str> = r.body["capable"]
            .as_array()
            .context("no capable list")?
            .iter()
            .filter_map(Value::as_str)
            .collect();
        listed.sort_unstable();
        if listed != capable {
            return Ok(None);
        }
        Ok(Some(
            r.body["assigned"].as_str().unwrap_or_default().to_owned(),
        ))
    })
    .await
}

async fn preferred(cluster: &mut TestCluster) -> Result<()> {
    const N: usize = 10;
    let api = cluster.api();
    api.register_definition(
        "type: pinned\ntasks:\n  - name: train\n    handler: sleep\n    requires: [gpu]\n    \
         constraints: {preferred_node: worker-2}\n    parameters: {ms: 10}\n  - name: free\n    \
         handler: sleep\n    parameters: {ms: 10}\n",
    )
    .await?;
    let gpus = ["worker-0", "worker-2"];
    let all = ["worker-0", "worker-1", "worker-2"];
    let wait = Duration::from_secs(60);
    let got = assigned(&api, "train", "worker-2", &gpus, wait).await?;
    ensure!(
        got == "worker-2",
        "train preferring worker-2 (capable, healthy) was assigned {got}"
    );
    let got = assigned(&api, "train", "worker-1", &gpus, wait).await?;
    ensure!(
        gpus.contains(&got.as_str()),
        "train preferring worker-1 (no gpu) was assigned {got}"
    );
    let got = assigned(&api, "free", "worker-1", &all, wait).await?;
    ensure!(
        got == "worker-1",
        "free preferring worker-1 (capable, healthy) was assigned {got}"
    );
    println!("preferred node: train→worker-2 honoured, train→worker-1 (no gpu) gave a gpu worker, free→worker-1 honoured");

    // The tasks themselves run on capable workers (dispatch goes by lane, ADR 0022).
    let ids = start_n(&api, "pinned", N).await?;
    wait_completed(&api, "pinned", &ids, Duration::from_secs(120)).await?;
    let runs = runs_by_task(&api, "pinned", &ids).await?;
    let train = runs.get("train").map(Vec::as_slice).unwrap_or_default();
    all_ran_on("train", train, None, N)?;
    ensure!(
        train
            .iter()
            .all(|r| r.node().is_some_and(|n| gpus.contains(&n))),
        "a gpu task ran on a worker without gpu: {:?}",
        per_node(train)
    );
    println!(
        "preferred node: train ran on {:?} (dispatch goes by lane)",
        per_node(train)
    );

    // worker-2 killed: once the registry sees it silent it is not assigned.
    cluster.worker_mut(2).process_mut().kill9();
    let got = assigned(
        &api,
        "train",
        "worker-2",
        &gpus[..1],
        Duration::from_secs(60),
    )
    .await?;
    ensure!(
        got == "worker-0",
        "train preferring the silent worker-2 was assigned {got}"
    );
    Ok(())
}
