//! Checkpoints and measured resource usage end to end (ADR 0023), on Tansu
//! with an orchestrator and a worker running the built-ins:
//!
//! - `work` (the `steps` kind) runs 5 steps with a checkpoint after each and
//!   fails retryably at step 2 on attempt 1. Attempt 2 starts at step 2: the
//!   handler's own log shows every step ran exactly once; the history holds
//!   the `task.checkpointed` events of both attempts; the dispatch of attempt
//!   2, read raw from the tasks topic, carried the last checkpoint of attempt 1.
//! - `burn` (the `shell` kind) busy-loops for a few hundred ms: its result
//!   reports the child's CPU time (plausible against the wall time) and peak
//!   memory, which the instance, the type's analytics and the task's trace
//!   span show, and the worker's `/metrics` histograms by type, task and scope.
//! - After `--rebuild` the orchestrator serves the same instance, checkpoint
//!   and usage included: they come from the log only.
//! - The Python worker (the same wire protocol) does the same with its own
//!   `steps` built-in, and reports process-scoped usage.

mod security;

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use reqwest::Method;
use serde_json::{json, Value};
use weft_integration_tests::python;
use weft_integration_tests::{wait_for, ApiClient, ClusterOptions, TestCluster};
use weft_shared::avro::AvroRecord;
use weft_shared::TaskDispatch;

use security::support::read_all_topics;

/// A pure-CPU shell loop: a few hundred ms of CPU on any machine.
const BUSY: &str = "i=0; while [ $i -lt 250000 ]; do i=$((i+1)); done";

fn definition(dir: &str) -> String {
    format!(
        r#"
type: ckpt
tasks:
  - name: work
    handler: steps
    parameters: {{steps: 5, fail_at: 2, dir: "{dir}"}}
    retry: {{max_attempts: 3, backoff: fixed, base_delay: 50ms}}
  - name: burn
    handler: shell
    depends_on: [work]
    parameters: {{command: "{BUSY}"}}
"#
    )
}

async fn get(api: &ApiClient, path: &str) -> Result<Value> {
    let r = api.send(Method::GET, path, None).await?;
    ensure!(r.status.is_success(), "GET {path}: {} {}", r.status, r.body);
    Ok(r.body)
}

fn task<'a>(instance: &'a Value, name: &str) -> Result<&'a Value> {
    instance["tasks"]
        .as_array()
        .and_then(|ts| ts.iter().find(|t| t["name"] == name))
        .with_context(|| format!("task {name} in {instance}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_retry_resumes_from_the_checkpoint_and_usage_is_measured() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let opts = ClusterOptions::new(1, 1).env("WEFT_WORKER_ENABLE_SHELL", "true");
    let mut cluster = TestCluster::start(opts).await?;
    let result = body(&mut cluster, dir.path()).await;
    if result.is_err() {
        cluster.print_logs(80);
    }
    result
}

async fn body(cluster: &mut TestCluster, dir: &std::path::Path) -> Result<()> {
    let api = cluster.api();
    api.register_definition(&definition(&dir.display().to_string()))
        .await?;
    let started = api.start("ckpt", json!({}), None).await?;
    let id = started["instance_id"]
        .as_str()
        .context("instance_id")?
        .to_owned();
    let done = wait_for(
        "ckpt completes",
        Duration::from_secs(120),
        Duration::from_millis(200),
        || async {
            let v = api.get("ckpt", &id).await?;
            ensure!(v["state"] != "failed", "workflow failed: {v}");
            anyhow::Ok((v["state"] == "completed").then_some(v))
        },
    )
    .await?;

    // The handler's own log: steps 0 and 1 on attempt 1, 2..4 on attempt 2, each once.
    let runs = steps_run(dir, &id)?;
    let expected: Vec<(String, String)> =
        [("1", "0"), ("1", "1"), ("2", "2"), ("2", "3"), ("2", "4")]
            .iter()
            .map(|(a, s)| ((*a).to_owned(), (*s).to_owned()))
            .collect();
    ensure!(runs == expected, "steps run (attempt, step): {runs:?}");
    let work = task(&done, "work")?;
    ensure!(
        work["attempt"] == 2
            && work["output"]["resumed_at"] == 2
            && work["output"]["steps_run"] == 3,
        "{work}"
    );
    ensure!(
        work["checkpoint"] == json!({"next_step": 5}) && work["checkpoints"] == 5,
        "{work}"
    );

    // The history: the checkpoints of both attempts, in order.
    let history = api.events("ckpt", &id).await?;
    let events = history["events"].as_array().context("events")?;
    let checkpoints: Vec<(String, String, i64)> = events
        .iter()
        .filter(|e| e["event_type"] == "task.checkpointed")
        .map(|e| {
            (
                e["metadata"]["weft.attempt"]
                    .as_str()
                    .unwrap_or("")
                    .to_owned(),
                e["metadata"]["weft.checkpoint_seq"]
                    .as_str()
                    .unwrap_or("")
                    .to_owned(),
                e["data"]["next_step"].as_i64().unwrap_or(-1),
            )
        })
        .collect();
    let want: Vec<(String, String, i64)> = [
        ("1", "1", 1),
        ("1", "2", 2),
        ("2", "1", 3),
        ("2", "2", 4),
        ("2", "3", 5),
    ]
    .iter()
    .map(|(a, s, n)| ((*a).to_owned(), (*s).to_owned(), *n))
    .collect();
    ensure!(
        checkpoints == want,
        "checkpoints in the history: {checkpoints:?}"
    );

    // The dispatch of attempt 2 carried attempt 1's last checkpoint.
    let bootstrap = cluster.bootstrap();
    let records = tokio::task::spawn_blocking(move || read_all_topics(&bootstrap)).await??;
    let dispatches: Vec<TaskDispatch> = records
        .iter()
        .filter(|r| r.topic == "weft.ckpt.tasks")
        .filter_map(|r| TaskDispatch::decode(&r.value).ok())
        .filter(|d| d.task_name == "work" && d.instance_id.to_string() == id)
        .collect();
    let carried = |attempt: u32| {
        dispatches.iter().find(|d| d.attempt == attempt).map(|d| {
            d.upstream
                .get(weft_shared::checkpoint::UPSTREAM_KEY)
                .cloned()
        })
    };
    ensure!(carried(1) == Some(None), "attempt 1 starts from nothing");
    let step2 =
        weft_shared::DataMap::from([("next_step".to_owned(), weft_shared::WorkflowData::Int(2))]);
    ensure!(
        carried(2) == Some(Some(step2)),
        "attempt 2's dispatch: {:?}",
        carried(2)
    );

    // What `burn` used: the child's CPU, plausible against its wall time.
    let burn = task(&done, "burn")?;
    let usage = &burn["resource_usage"];
    let cpu = usage["cpu_ms"].as_i64().context("cpu_ms")?;
    let wall = usage["wall_ms"].as_i64().context("wall_ms")?;
    let rss = usage["peak_rss_kb"].as_i64().context("peak_rss_kb")?;
    ensure!(burn["usage_scope"] == "child", "{burn}");
    ensure!(
        cpu >= 50 && cpu <= wall + 50 && rss > 0,
        "cpu {cpu} ms, wall {wall} ms, peak {rss} KiB"
    );
    let result = events
        .iter()
        .find(|e| e["event_type"] == "task.completed" && e["metadata"]["weft.task"] == "burn")
        .context("burn's task.completed")?;
    ensure!(
        int_str(&result["metadata"]["weft.usage.cpu_ms"]) == Some(cpu),
        "{result}"
    );
    usage_in_worker_metrics(cluster, cpu, rss).await?;

    // Analytics: per task, CPU and wall summaries and the peak memory.
    let report = get(&api, "/v1/analytics/ckpt").await?;
    let rt = report["tasks"]
        .as_array()
        .and_then(|ts| ts.iter().find(|t| t["name"] == "burn"))
        .with_context(|| format!("burn in {report}"))?;
    ensure!(
        rt["cpu"]["count"] == 1
            && rt["cpu"]["max_ms"]
                .as_i64()
                .is_some_and(|m| m >= cpu * 9 / 10)
            && rt["peak_rss_kb"] == rss,
        "{rt}"
    );
    let rw = report["tasks"]
        .as_array()
        .and_then(|ts| ts.iter().find(|t| t["name"] == "work"))
        .context("work in the report")?;
    ensure!(rw["wall"]["count"] == 2, "both attempts measured: {rw}");

    // The trace: burn's span carries its usage; work's first attempt its checkpoints.
    let trace = get(&api, &format!("/v1/workflows/ckpt/{id}/trace?format=spans")).await?;
    let spans = trace["spans"].as_array().context("spans")?;
    let burn_span = spans
        .iter()
        .find(|s| s["name"] == "task burn")
        .context("burn's span")?;
    let attrs = &burn_span["attributes"];
    ensure!(
        int_str(&attrs["task.cpu_ms"]) == Some(cpu)
            && int_str(&attrs["task.peak_rss_kb"]) == Some(rss)
            && attrs["task.usage_scope"] == "child",
        "{burn_span}"
    );
    let work_1 = spans
        .iter()
        .find(|s| s["name"] == "task work" && s["attributes"]["task.attempt"] == "1")
        .context("work's first span")?;
    ensure!(
        work_1["attributes"]["task.checkpoints"] == "2"
            && work_1["events"].as_array().is_some_and(|es| es
                .iter()
                .filter(|e| e["name"] == "checkpoint")
                .count()
                == 2),
        "{work_1}"
    );

    // A rebuild from the topics gives the same instance, checkpoint and usage included.
    cluster.rebuild_orchestrator(0).await?;
    let api = cluster.api();
    let rebuilt = wait_for(
        "the instance after the rebuild",
        Duration::from_secs(60),
        Duration::from_millis(200),
        || async { anyhow::Ok(api.get("ckpt", &id).await.ok()) },
    )
    .await?;
    ensure!(rebuilt == done, "rebuilt:\n{rebuilt}\nlive:\n{done}");
    Ok(())
}

/// The worker's usage histograms hold `burn`'s one attempt (observed before
/// its result was published): its CPU (≥ 50 ms of busy loop), wall time and
/// peak memory, labelled by workflow type, task and scope `child`.
async fn usage_in_worker_metrics(cluster: &TestCluster, cpu_ms: i64, rss_kb: i64) -> Result<()> {
    let labels = r#"scope="child",task="burn",workflow_type="ckpt""#;
    let metric = move |name: &'static str| cluster.worker_metric_labelled(0, name, labels);
    let cpu_count = metric("weft_worker_task_cpu_seconds_count").await?;
    let cpu_sum = metric("weft_worker_task_cpu_seconds_sum").await?;
    ensure!(
        cpu_count >= 1.0 && cpu_sum >= 0.05,
        "weft_worker_task_cpu_seconds{{{labels}}}: count {cpu_count}, sum {cpu_sum}"
    );
    // One attempt: exactly what its result reported.
    ensure!(
        cpu_count == 1.0 && (cpu_sum - cpu_ms as f64 / 1000.0).abs() < 1e-6,
        "cpu sum {cpu_sum} s over {cpu_count}, result {cpu_ms} ms"
    );
    let wall = metric("weft_worker_task_wall_seconds_count").await?;
    let peak = metric("weft_worker_task_peak_memory_bytes_sum").await?;
    ensure!(
        wall == 1.0 && peak == (rss_kb * 1024) as f64,
        "wall count {wall}, peak memory sum {peak} (result {rss_kb} KiB)"
    );
    Ok(())
}

/// A JSON string holding a whole number, as metadata and span attributes do.
fn int_str(v: &Value) -> Option<i64> {
    v.as_str().and_then(|s| s.parse().ok())
}

/// The steps the handler's log shows for instance `id`, as (attempt, step).
fn steps_run(dir: &std::path::Path, id: &str) -> Result<Vec<(String, String)>> {
    let log = std::fs::read_to_string(dir.join("steps.log"))?;
    Ok(log
        .lines()
        .filter(|l| l.starts_with(id))
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            (f[1].to_owned(), f[2].to_owned())
        })
        .collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_python_worker_checkpoints_and_resumes_the_same_way() -> Result<()> {
    let py = python::python()?;
    let dir = tempfile::tempdir()?;
    let cluster = TestCluster::start(ClusterOptions::new(1, 0)).await?;
    let logs = cluster.dir().join("logs");
    let mut worker = python::start_worker(&py, "py-ckpt", &cluster.bootstrap(), &[], &logs).await?;
    let result = async {
        let api = cluster.api();
        let def = format!(
            r#"
type: ckpt-py
tasks:
  - name: work
    handler: steps
    parameters: {{steps: 4, fail_at: 1, dir: "{}"}}
    retry: {{max_attempts: 3, backoff: fixed, base_delay: 50ms}}
"#,
            dir.path().display()
        );
        api.register_definition(&def).await?;
        let started = api.start("ckpt-py", json!({}), None).await?;
        let id = started["instance_id"]
            .as_str()
            .context("instance_id")?
            .to_owned();
        let done = wait_for(
            "ckpt-py completes",
            Duration::from_secs(120),
            Duration::from_millis(200),
            || async {
                let v = api.get("ckpt-py", &id).await?;
                ensure!(v["state"] != "failed", "workflow failed: {v}");
                anyhow::Ok((v["state"] == "completed").then_some(v))
            },
        )
        .await?;
        let runs = steps_run(dir.path(), &id)?;
        let want: Vec<(String, String)> = [("1", "0"), ("2", "1"), ("2", "2"), ("2", "3")]
            .iter()
            .map(|(a, s)| ((*a).to_owned(), (*s).to_owned()))
            .collect();
        ensure!(runs == want, "steps run (attempt, step): {runs:?}");
        let work = task(&done, "work")?;
        ensure!(
            work["output"]["resumed_at"] == 1
                && work["checkpoint"] == json!({"next_step": 4})
                && work["checkpoints"] == 4,
            "{work}"
        );
        ensure!(
            work["usage_scope"] == "process"
                && work["resource_usage"]["wall_ms"].as_i64().is_some()
                && work["resource_usage"]["peak_rss_kb"].as_i64() > Some(0),
            "{work}"
        );
        let history = api.events("ckpt-py", &id).await?;
        let keys: Vec<String> = history["events"]
            .as_array()
            .context("events")?
            .iter()
            .filter(|e| e["event_type"] == "task.checkpointed")
            .map(|e| {
                format!(
                    "{}:{}",
                    e["metadata"]["weft.attempt"].as_str().unwrap_or(""),
                    e["metadata"]["weft.checkpoint_seq"].as_str().unwrap_or("")
                )
            })
            .collect();
        ensure!(keys == ["1:1", "2:1", "2:2", "2:3"], "{keys:?}");
        anyhow::Ok(())
    }
    .await;
    if result.is_err() {
        eprintln!("{}", worker.log_tail(60));
        cluster.print_logs(60);
    }
    worker.kill9();
    result
}
