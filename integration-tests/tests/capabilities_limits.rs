//! Issue 15 on the real broker, what limits tasks:
//!
//! - resources: one worker with `--resources cpu=4 --concurrency 8` runs
//!   twelve `cpu: 2` tasks of 400 ms never more than two at once (from their
//!   `task.started` times), so they take at least six rounds; a `cpu: 64`
//!   task no worker can take gets, once `orchestrator.unschedulable_after_ms`
//!   passed, an `error.occurred` saying "no capable node" and the type's
//!   analytics the `unschedulable` insight, stays pending, and completes on a
//!   worker with `cpu=64` as soon as one joins;
//! - priority: behind a backlog of 1,000 normal and 200 low tasks on one
//!   worker of concurrency 2, twenty critical tasks start far sooner than the
//!   backlog they arrived behind, and low tasks run while normal ones still
//!   wait (bench/priority.rs measures; `weft-bench` runs it with 10,000);
//! - context: a start whose context `resource_limits` or `capabilities` cannot
//!   hold a task of the definition is refused with 400 naming the task and
//!   the resource or capability.

mod issue15;

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use weft_integration_tests::bench::lanes::peak_overlap;
use weft_integration_tests::bench::priority::{self, PriorityPlan};
use weft_integration_tests::{wait_for, ClusterOptions, TestCluster};

use issue15::{all_ran_on, runs_by_task, start_n, wait_completed, POLL};

const UNSCHEDULABLE_AFTER_MS: i64 = 2_000;
const HALF_MS: i64 = 400;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_worker_never_exceeds_its_cpu_and_an_impossible_task_waits_loudly_for_a_node(
) -> Result<()> {
    let opts = ClusterOptions::new(1, 1)
        .orchestrator_args([
            "--set".to_owned(),
            format!("orchestrator.unschedulable_after_ms={UNSCHEDULABLE_AFTER_MS}"),
        ])
        .worker_args_for(0, ["--resources", "cpu=4", "--concurrency", "8"]);
    let mut cluster = TestCluster::start(opts).await?;
    let result = resources(&mut cluster).await;
    if result.is_err() {
        cluster.print_logs(60);
    }
    result
}

async fn resources(cluster: &mut TestCluster) -> Result<()> {
    const N: usize = 12;
    let api = cluster.api();
    api.register_definition(&format!(
        "type: halves\ntasks:\n  - name: half\n    handler: sleep\n    resources: {{cpu: 2}}\n    \
         parameters: {{ms: {HALF_MS}}}\n"
    ))
    .await?;
    let ids = start_n(&api, "halves", N).await?;
    wait_completed(&api, "halves", &ids, Duration::from_secs(120)).await?;
    let runs = runs_by_task(&api, "halves", &ids).await?;
    let halves = runs.get("half").context("no half task ran")?;
    all_ran_on("half", halves, Some("worker-0"), N)?;
    let peak = peak_overlap(halves, HALF_MS);
    let first = halves
        .iter()
        .filter_map(|r| r.started_ms())
        .min()
        .unwrap_or(0);
    let last = halves
        .iter()
        .filter_map(|r| r.completed_ms)
        .max()
        .unwrap_or(0);
    println!("resources: {N} cpu:2 tasks on cpu=4, at most {peak} at once, {} ms from first start to last completion", last - first);
    ensure!(
        peak <= 2,
        "{peak} cpu:2 tasks ran at once on a worker with cpu=4"
    );
    ensure!(
        peak == 2,
        "the cpu:2 tasks ran one at a time on a worker with cpu=4"
    );
    let rounds = (N as i64 + 1) / 2;
    ensure!(
        last - first >= rounds * HALF_MS,
        "{N} tasks of {HALF_MS} ms, two at a time, took {} ms, less than {} ms",
        last - first,
        rounds * HALF_MS
    );

    // The cpu:64 tasks: an error.occurred once the time passed, and the
    // insight. Started right after the registration, so some are decided
    // while the type's new partitions replay at start-up: those are watched
    // too (a start racing the registration is no exception).
    api.register_definition(
        "type: huge\ntasks:\n  - name: whole\n    handler: sleep\n    resources: {cpu: 64}\n    \
         parameters: {ms: 10}\n",
    )
    .await?;
    let huge = start_n(&api, "huge", 3).await?;
    for id in &huge[1..] {
        wait_for(
            "a cpu:64 task's 'no capable node' error",
            Duration::from_secs(60),
            POLL,
            || async {
                let h = api.events("huge", id).await?;
                let reported = h["events"].as_array().is_some_and(|l| {
                    l.iter().any(|e| {
                        e["event_type"] == "error.occurred"
                            && e["data"].to_string().contains("no_capable_node")
                    })
                });
                Ok::<_, anyhow::Error>(reported.then_some(()))
            },
        )
        .await?;
    }
    let error = wait_for(
        "the cpu:64 task's 'no capable node' error",
        Duration::from_secs(60),
        POLL,
        || async {
            let h = api.events("huge", &huge[0]).await?;
            let events = h["events"].as_array().cloned().unwrap_or_default();
            let scheduled = events
                .iter()
                .find(|e| e["event_type"] == "task.scheduled")
                .cloned();
            let error = events.iter().find(|e| {
                e["event_type"] == "error.occurred"
                    && e["data"]
                        .to_string()
                        .to_lowercase()
                        .contains("no capable node")
            });
            Ok::<_, anyhow::Error>(error.cloned().zip(scheduled))
        },
    )
    .await?;
    let (error, scheduled) = error;
    let after = error["timestamp_ms"].as_i64().unwrap_or(0)
        - scheduled["timestamp_ms"].as_i64().unwrap_or(0);
    println!(
        "unschedulable: error.occurred {after} ms after task.scheduled: {}",
        error["data"]
    );
    ensure!(
        after >= UNSCHEDULABLE_AFTER_MS,
        "'no capable node' came {after} ms after the task was scheduled, before unschedulable_after_ms={UNSCHEDULABLE_AFTER_MS}"
    );
    ensure!(
        error["data"].to_string().contains("no_capable_node"),
        "the error has no error_type no_capable_node: {}",
        error["data"]
    );
    let state = api.get("huge", &huge[0]).await?;
    ensure!(
        !matches!(
            state["state"].as_str(),
            Some("failed" | "cancelled" | "timeout" | "completed")
        ),
        "the unschedulable workflow ended: {state}"
    );
    let insight = wait_for(
        "the unschedulable insight of huge",
        Duration::from_secs(30),
        POLL,
        || async {
            let r = api.send(Method::GET, "/v1/analytics/huge", None).await?;
            let found = r.body["insights"]
                .as_array()
                .and_then(|l| l.iter().find(|i| i["kind"] == "unschedulable").cloned());
            Ok::<_, anyhow::Error>(found)
        },
    )
    .await?;
    println!("unschedulable: insight {insight}");

    // A node that can take it joins: it runs there.
    let joined = cluster
        .add_worker_with(["--set", "worker.resources=cpu=64"])
        .await?;
    wait_completed(&api, "huge", &huge, Duration::from_secs(60)).await?;
    let runs = runs_by_task(&api, "huge", &huge).await?;
    let node = format!("worker-{joined}");
    all_ran_on(
        "whole",
        runs.get("whole").context("no whole task")?,
        Some(&node),
        huge.len(),
    )?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn critical_tasks_overtake_a_backlog_and_low_ones_still_run() -> Result<()> {
    let mut cluster = TestCluster::start(ClusterOptions::new(1, 0)).await?;
    let plan = PriorityPlan {
        normal: 1_000,
        low: 200,
        critical: 20,
        task_ms: 10,
        worker_concurrency: 2,
        start_concurrency: 16,
        critical_gap: Duration::from_millis(50),
        deadline: Duration::from_secs(240),
    };
    let result = priority::run(&mut cluster, &plan).await;
    if result.is_err() {
        cluster.print_logs(60);
    }
    let f = result?;
    println!("priority: {:#}", f.to_json());
    for (i, c) in f.critical.iter().enumerate() {
        ensure!(
            c.backlog >= 50,
            "critical {i} arrived behind {} queued tasks only: no backlog to overtake",
            c.backlog
        );
        ensure!(
            c.overtaken > 0,
            "critical {i} overtook none of the {} tasks queued before it",
            c.backlog
        );
        ensure!(
            (c.queue_ms as f64) * 4.0 < c.backlog_wait_p50_ms,
            "critical {i} waited {} ms, not far below the {} ms (median) the normal tasks queued before it still waited",
            c.queue_ms,
            c.backlog_wait_p50_ms
        );
    }
    ensure!(
        f.critical_queue.max * 4.0 < f.normal_queue.p50,
        "critical queue time max {} ms is not far below the normal median {} ms",
        f.critical_queue.max,
        f.normal_queue.p50
    );
    ensure!(
        f.backlog_rate_during_critical * 4.0 >= f.normal_rate,
        "while critical tasks ran the backlog started {:.1} tasks/s, against {:.1}/s overall: it stalled",
        f.backlog_rate_during_critical,
        f.normal_rate
    );
    ensure!(
        f.low_before_last_normal * 4 >= f.low_total,
        "only {} of {} low tasks ran before the last normal one started: low starves",
        f.low_before_last_normal,
        f.low_total
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_start_whose_context_cannot_hold_a_task_is_refused_naming_it() -> Result<()> {
    let cluster = TestCluster::start(ClusterOptions::new(1, 0)).await?;
    let result = context(&cluster).await;
    if result.is_err() {
        cluster.print_logs(60);
    }
    result
}

async fn context(cluster: &TestCluster) -> Result<()> {
    let api = cluster.api();
    api.register_definition(
        "type: ctx\ntasks:\n  - name: crunch\n    handler: sleep\n    resources: {cpu: 2}\n    \
         parameters: {ms: 1}\n  - name: render\n    handler: sleep\n    requires: [gpu]\n    \
         parameters: {ms: 1}\n",
    )
    .await?;
    let start = |context: Value| {
        let api = api.clone();
        async move {
            let body = json!({ "input": {}, "context": context });
            api.send(
                Method::POST,
                "/v1/workflows/ctx",
                Some(("application/json", body.to_string())),
            )
            .await
        }
    };
    for (context, names) in [
        (
            json!({ "resource_limits": { "cpu": 1 } }),
            ["crunch", "cpu"],
        ),
        (json!({ "capabilities": ["ssd"] }), ["render", "gpu"]),
    ] {
        let r = start(context.clone()).await?;
        println!("context {context}: {} {}", r.status, r.body);
        ensure!(
            r.status == StatusCode::BAD_REQUEST,
            "context {context} answered {} {}, not 400",
            r.status,
            r.body
        );
        let text = r.body.to_string();
        for name in names {
            ensure!(
                text.contains(name),
                "the 400 for context {context} does not name '{name}': {text}"
            );
        }
    }
    let r =
        start(json!({ "resource_limits": { "cpu": 2 }, "capabilities": ["gpu", "ssd"] })).await?;
    ensure!(
        r.status == StatusCode::ACCEPTED,
        "a context that holds every task answered {} {}",
        r.status,
        r.body
    );
    let r = api.start("ctx", json!({}), None).await?;
    ensure!(
        r["state"] == "accepted",
        "a start without context answered {r}"
    );
    Ok(())
}
