//! Tracing and analytics end to end, on Tansu with two orchestrator replicas
//! and a worker: every replica reports the same per-type analytics (its own
//! partitions plus its peer's), with the counts, retries, durations,
//! bottleneck and insights the runs produced; an instance's trace has the
//! spans its history implies; every ended workflow's trace is pushed to an
//! OTLP collector exactly once — counted per trace, also after a replica has
//! rebuilt its projection from the topics (a replay pushes nothing again);
//! `weft analytics` and `weft trace` print them.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use reqwest::Method;
use serde_json::{json, Value};
use weft_integration_tests::cli::weft;
use weft_integration_tests::collector::Collector;
use weft_integration_tests::{wait_for, ApiClient, ClusterOptions, TestCluster};

/// `check` fails its first attempt; `slow` takes 1.5 s.
const TRACED: &str = r#"
type: traced
tasks:
  - {name: check, handler: fail, parameters: {fail_attempts: 1}, retry: {max_attempts: 3, backoff: fixed, base_delay: 50ms}}
  - {name: slow, handler: sleep, parameters: {ms: 1500}, depends_on: [check]}
  - {name: quick, handler: noop, depends_on: [check]}
"#;
/// Always fails, terminally.
const DOOMED: &str = r#"
type: doomed
tasks:
  - {name: boom, handler: fail, parameters: {retryable: false}}
"#;

async fn start(api: &ApiClient, ty: &str, n: usize) -> Result<Vec<String>> {
    let mut ids = Vec::new();
    for i in 0..n {
        let v = api.start(ty, json!({ "n": i }), None).await?;
        ids.push(v["instance_id"].as_str().context("instance_id")?.to_owned());
    }
    Ok(ids)
}

async fn wait_ended(api: &ApiClient, ty: &str, ids: &[String], state: &str) -> Result<()> {
    for id in ids {
        wait_for(
            &format!("{ty} {id} {state}"),
            Duration::from_secs(120),
            Duration::from_millis(200),
            || async {
                let v = api.get(ty, id).await?;
                anyhow::Ok((v["state"] == state).then_some(()))
            },
        )
        .await?;
    }
    Ok(())
}

async fn get(api: &ApiClient, path: &str) -> Result<Value> {
    let r = api.send(Method::GET, path, None).await?;
    ensure!(r.status.is_success(), "GET {path}: {} {}", r.status, r.body);
    Ok(r.body)
}

fn task<'a>(report: &'a Value, name: &str) -> Result<&'a Value> {
    report["tasks"]
        .as_array()
        .and_then(|ts| ts.iter().find(|t| t["name"] == name))
        .with_context(|| format!("task {name} in {report}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn analytics_and_traces_across_replicas() -> Result<()> {
    let collector = Collector::start().await?;
    let opts =
        ClusterOptions::new(2, 1).env("WEFT_ORCHESTRATOR_OTLP_ENDPOINT", collector.url.clone());
    let mut cluster = TestCluster::start(opts).await?;
    let result = body(&mut cluster, &collector).await;
    if result.is_err() {
        cluster.print_logs(80);
    }
    result
}

/// How many export requests the collector received for each trace id.
fn pushes_by_trace(collector: &Collector) -> BTreeMap<String, (usize, Value)> {
    let mut by_trace: BTreeMap<String, (usize, Value)> = BTreeMap::new();
    for body in collector.received() {
        let trace = body["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["traceId"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let entry = by_trace.entry(trace).or_insert((0, Value::Null));
        entry.0 += 1;
        entry.1 = body;
    }
    by_trace
}

async fn body(cluster: &mut TestCluster, collector: &Collector) -> Result<()> {
    let api = cluster.api();
    api.register_definition(TRACED).await?;
    api.register_definition(DOOMED).await?;
    let traced = start(&api, "traced", 6).await?;
    let doomed = start(&api, "doomed", 3).await?;
    wait_ended(&api, "traced", &traced, "completed").await?;
    wait_ended(&api, "doomed", &doomed, "failed").await?;

    // Each replica sums its own partitions and its peer's: the same report.
    let mut reports = Vec::new();
    for i in 0..2 {
        reports.push(get(&cluster.api_at(i), "/v1/analytics/traced?slow_ms=1000").await?);
    }
    let r = &reports[0];
    ensure!(reports[1] == *r, "replicas disagree:\n{r}\n{}", reports[1]);
    // Partitions that have seen an instance of the type (6 instances, 6 partitions).
    let parts = r["partitions"].as_u64().context("partitions")?;
    ensure!((1..=6).contains(&parts), "{r}");
    ensure!(r["started"] == 6 && r["in_flight"] == 0, "{r}");
    ensure!(
        r["finished"] == json!({"completed": 6}) && r["success_rate"] == 1.0,
        "{r}"
    );
    let check = task(r, "check")?;
    ensure!(
        check["attempts"] == 12,
        "two attempts per instance: {check}"
    );
    ensure!(
        check["outcomes"] == json!({"completed": 6, "retrying": 6}),
        "{check}"
    );
    ensure!(check["failure_rate"] == 0.5, "{check}");
    let slow = task(r, "slow")?;
    ensure!(
        slow["run"]["count"] == 6 && slow["run"]["min_ms"].as_u64() >= Some(1500),
        "{slow}"
    );
    ensure!(
        task(r, "quick")?["run"]["p50_ms"].as_u64() < Some(1500),
        "{r}"
    );
    ensure!(
        r["completed_duration"]["min_ms"].as_u64() >= Some(1500),
        "{r}"
    );
    // Which task dominates depends on the queue times this run measured (the
    // first dispatches of a new type wait for the worker to subscribe to its
    // topic): the bottleneck is whichever has the largest share.
    let tasks = r["tasks"].as_array().context("tasks")?;
    let shares: Vec<f64> = tasks
        .iter()
        .filter_map(|t| t["time_share"].as_f64())
        .collect();
    ensure!(
        shares.windows(2).all(|w| w[0] >= w[1]),
        "tasks by share: {shares:?}"
    );
    ensure!(
        (shares.iter().sum::<f64>() - 1.0).abs() < 0.001,
        "{shares:?}"
    );
    ensure!(r["bottleneck"] == tasks[0]["name"], "{r}");
    let kinds: BTreeSet<&str> = r["insights"]
        .as_array()
        .context("insights")?
        .iter()
        .filter_map(|i| i["kind"].as_str())
        .collect();
    // 12 ended attempts of `check`, half of them failed; completed runs take > 1 s.
    ensure!(
        kinds.contains("flaky_task") && kinds.contains("slow_workflow"),
        "{kinds:?}"
    );
    ensure!(!kinds.contains("low_success_rate"), "{kinds:?}");

    let d = get(&cluster.api_at(1), "/v1/analytics/doomed?min_samples=3").await?;
    ensure!(
        d["finished"] == json!({"failed": 3}) && d["success_rate"] == 0.0,
        "{d}"
    );
    ensure!(
        d["insights"]
            .as_array()
            .context("insights")?
            .iter()
            .any(|i| i["kind"] == "low_success_rate" && i["subject"] == "doomed"),
        "{d}"
    );

    // The trace of one instance, through either replica (forwarded to the owner).
    let id = &traced[0];
    let spans = get(
        &cluster.api_at(1),
        &format!("/v1/workflows/traced/{id}/trace?format=spans"),
    )
    .await?;
    ensure!(spans["trace_id"] == id.replace('-', ""), "{spans}");
    let list = spans["spans"].as_array().context("spans")?;
    let names: Vec<&str> = list.iter().filter_map(|s| s["name"].as_str()).collect();
    let count = |n: &str| names.iter().filter(|x| **x == n).count();
    ensure!(
        names[0] == "workflow traced" && list[0]["status"]["code"] == "ok",
        "{names:?}"
    );
    ensure!(
        count("task check") == 2 && count("task slow") == 1 && count("task quick") == 1,
        "{names:?}"
    );
    ensure!(
        list.iter().all(|s| s["end_ms"].is_i64()),
        "every span of an ended workflow is closed"
    );
    let slow_span = list
        .iter()
        .find(|s| s["name"] == "task slow")
        .context("slow span")?;
    let run_ms: u64 = slow_span["attributes"]["task.run_ms"]
        .as_str()
        .context("run_ms")?
        .parse()?;
    ensure!(run_ms >= 1500, "{slow_span}");
    let otlp = get(
        &cluster.api_at(0),
        &format!("/v1/workflows/traced/{id}/trace"),
    )
    .await?;
    let otlp_ids = span_ids(&otlp, &id.replace('-', ""));
    let ids: BTreeSet<String> = list
        .iter()
        .filter_map(|s| s["span_id"].as_str().map(str::to_owned))
        .collect();
    ensure!(
        otlp_ids == ids,
        "OTLP and span list differ: {otlp_ids:?} vs {ids:?}"
    );

    // The collector got every ended workflow's trace, and this one's whole.
    let all: BTreeSet<String> = traced
        .iter()
        .chain(&doomed)
        .map(|i| i.replace('-', ""))
        .collect();
    let pushed = wait_for(
        "every trace pushed",
        Duration::from_secs(30),
        Duration::from_millis(200),
        || async {
            let by_trace = pushes_by_trace(collector);
            anyhow::Ok(
                (by_trace.keys().cloned().collect::<BTreeSet<_>>() == all).then_some(by_trace),
            )
        },
    )
    .await?;
    let trace = id.replace('-', "");
    ensure!(
        span_ids(&pushed[&trace].1, &trace) == ids,
        "the pushed trace differs from the served one"
    );
    // The CLI prints both.
    let run = weft(&api, &["analytics", "traced"], Duration::from_secs(30)).await?;
    let out = run.ok()?;
    let bottleneck = format!("bottleneck: {}", r["bottleneck"].as_str().unwrap_or("?"));
    ensure!(
        out.contains("success rate 100.0 %") && out.contains(&bottleneck),
        "{out}"
    );
    let run = weft(&api, &["trace", "traced", id], Duration::from_secs(30)).await?;
    let out = run.ok()?;
    ensure!(
        out.contains("workflow traced  ok") && out.contains("task slow #1  ok"),
        "{out}"
    );

    // Pushed once: a replica rebuilds its projection from the topics (replaying
    // every ended workflow), then one more workflow ends; its trace arrives,
    // and every other trace was still received exactly once.
    cluster.rebuild_orchestrator(1).await?;
    let api = cluster.api();
    let marker = start(&api, "doomed", 1).await?;
    wait_ended(&api, "doomed", &marker, "failed").await?;
    let marker_trace = marker[0].replace('-', "");
    let by_trace = wait_for(
        "the last workflow's trace pushed",
        Duration::from_secs(30),
        Duration::from_millis(200),
        || async {
            let by_trace = pushes_by_trace(collector);
            anyhow::Ok(by_trace.contains_key(&marker_trace).then_some(by_trace))
        },
    )
    .await?;
    let counts: BTreeMap<&String, usize> = by_trace.iter().map(|(t, (n, _))| (t, *n)).collect();
    ensure!(
        by_trace.len() == all.len() + 1 && counts.values().all(|n| *n == 1),
        "traces pushed more or less than once each: {counts:?}"
    );
    let mut exported = 0.0;
    for i in 0..2 {
        exported += cluster
            .api_at(i)
            .metric("weft_orchestrator_traces_exported_total")
            .await?;
    }
    // The rebuilt replica's counter starts again at 0; it pushed nothing while replaying.
    ensure!(
        exported as usize <= all.len() + 1,
        "{exported} exports counted for {} traces",
        all.len() + 1
    );
    Ok(())
}

/// The span ids of an OTLP export request, checking they all belong to `trace`.
fn span_ids(otlp: &Value, trace: &str) -> BTreeSet<String> {
    otlp["resourceSpans"][0]["scopeSpans"][0]["spans"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|s| s["traceId"] == trace)
        .filter_map(|s| s["spanId"].as_str().map(str::to_owned))
        .collect()
}
