//! One engine run of `weft-bench` on one broker storage: a fresh cluster, then
//! the phases in order, each figure into the run's JSON object.
//!
//! Order (each phase on the same broker, the engine otherwise idle):
//! 1. raw bulk produce → consume ([`bench_support::raw_produce_consume_rate`]);
//! 2. the diamond registered; latency: warm-up runs, then one diamond at a time,
//!    watched to its end (its history gives the causal chain);
//! 3. Weft's records sampled from the events and tasks topics (sizes, headers);
//! 4. the broker round trip (a chain of depth 1, one at a time) and the raw
//!    chain as deep as the diamond's causal chain, one at a time;
//! 5. throughput: `workflows` diamonds, `in_flight` at a time, with `/proc` and `/metrics`
//!    readings around it and the topics' high watermarks (engine records);
//! 6. the raw chain's throughput with as many chains in flight as the engine
//!    had workflows (`--in-flight`).
//!
//! Steps 2–4 and 6 are skipped for a throughput-only run (the memory engine).

use std::cell::RefCell;
use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::{json, Map, Value};
use weft_shared::topics::Topics;

use super::chain::{ChainRig, ChainShape};
use super::engine::{self, ThroughputRun};
use super::procstat::{self, ProcSample};
use super::records::{sample_topic, RecordSample};
use super::scrape::batch_figures;
use super::stats::{flatness_windows, round, Window};
use crate::broker::high_watermarks;
use crate::{bench_support, wait_until, ApiClient, TestCluster};

pub const WORKFLOW_TYPE: &str = "diamond";
pub const TASKS_PER_WORKFLOW: usize = 4;
const DIAMOND: &str = include_str!("../../../examples/diamond.yaml");

/// What one run does.
#[derive(Clone, Debug)]
pub struct RunPlan {
    pub workflows: usize,
    /// Workflows (and raw chains) in flight at once in the throughput runs.
    pub in_flight: usize,
    pub concurrency: usize,
    pub raw_messages: usize,
    pub deadline: Duration,
    /// Latency, round trip and chain phases too (else throughput and cost only).
    pub full: bool,
    pub warmup_runs: usize,
    pub latency_runs: usize,
    pub rtt_runs: usize,
    pub chains: usize,
}

/// The processes whose cost is read.
fn pids(cluster: &mut TestCluster) -> Vec<(String, u32)> {
    let mut out = Vec::new();
    if let Some(pid) = cluster.broker_mut().process_mut().pid() {
        out.push(("broker".to_owned(), pid));
    }
    for i in 0..cluster.orchestrators().len() {
        let node = cluster.orchestrator_mut(i);
        let name = node.node_id().to_owned();
        if let Some(pid) = node.process_mut().pid() {
            out.push((name, pid));
        }
    }
    for i in 0..cluster.workers().len() {
        let node = cluster.worker_mut(i);
        let name = node.node_id().to_owned();
        if let Some(pid) = node.process_mut().pid() {
            out.push((name, pid));
        }
    }
    out.push(("bench (load generator)".to_owned(), std::process::id()));
    out
}

fn sample_all(pids: &[(String, u32)]) -> Vec<Option<ProcSample>> {
    pids.iter()
        .map(|(_, pid)| procstat::sample(*pid).ok())
        .collect()
}

/// Every figure of one run, into `out` (what was measured stays there when a
/// later phase fails).
pub async fn run(
    cluster: &mut TestCluster,
    plan: &RunPlan,
    out: &mut Map<String, Value>,
) -> Result<()> {
    let bootstrap = cluster.bootstrap();
    let apis: Vec<ApiClient> = (0..cluster.orchestrators().len())
        .map(|i| cluster.api_at(i))
        .collect();
    let topics = Topics::new(
        weft_shared::config::WeftConfig::default()
            .kafka
            .topic_prefix
            .clone(),
    );
    let (events_topic, tasks_topic) = (topics.events(WORKFLOW_TYPE), topics.tasks(WORKFLOW_TYPE));

    println!(
        "  raw bulk: {} records produce -> consume...",
        plan.raw_messages
    );
    let raw = bench_support::raw_produce_consume_rate(&bootstrap, plan.raw_messages)
        .await
        .context("measuring the raw broker")?;
    out.insert(
        "raw_bulk".into(),
        json!({ "records": plan.raw_messages, "messages_per_s": round(raw, 1) }),
    );

    apis[0]
        .register_definition(DIAMOND)
        .await
        .context("registering examples/diamond.yaml")?;
    for api in &apis {
        wait_until(
            &format!("{} to know the diamond definition", api.base_url()),
            Duration::from_secs(60),
            Duration::from_millis(100),
            || async { api.definition(WORKFLOW_TYPE).await.is_ok() },
        )
        .await?;
    }
    let partitions = crate::rebuild::partition_count(&bootstrap, &events_topic)?;
    out.insert("partitions".into(), json!(partitions));

    let mut hops = None;
    let mut shape = None;
    if plan.full {
        println!(
            "  latency: {} warm-up + {} diamonds one at a time...",
            plan.warmup_runs, plan.latency_runs
        );
        let timeout = Duration::from_secs(60);
        engine::sequential(&apis, WORKFLOW_TYPE, plan.warmup_runs, timeout).await?;
        let runs = engine::sequential(&apis, WORKFLOW_TYPE, plan.latency_runs, timeout).await?;
        let depths: Vec<usize> = runs.iter().map(|r| r.links.len()).collect();
        let depth = most_common(&depths);
        hops = Some(depth);
        let server = super::stats::Percentiles::of_ms(runs.iter().map(|r| r.server_ms));
        let client = super::stats::Percentiles::of(runs.iter().map(|r| r.client_ms));
        let profile = engine::link_profile(&runs);
        out.insert(
            "latency".into(),
            json!({
                "runs": runs.len(),
                "server_ms": server.to_json(),
                "client_ms": client.to_json(),
                "hops": depth,
                "hops_min": depths.iter().min(),
                "hops_max": depths.iter().max(),
                "spans": profile.iter().map(|(label, hops, p)| json!({
                    "span": label, "round_trips": hops, "p50_ms": p.p50, "p99_ms": p.p99,
                })).collect::<Vec<_>>(),
                "events_per_workflow": engine::events_per_workflow(&runs),
            }),
        );

        println!("  sampling Weft's records on {events_topic} and {tasks_topic}...");
        let (ev, ta) = {
            let (b, e, t) = (bootstrap.clone(), events_topic.clone(), tasks_topic.clone());
            tokio::task::spawn_blocking(move || {
                let budget = Duration::from_secs(5);
                Ok::<_, anyhow::Error>((
                    sample_topic(&b, &e, 400, budget)?,
                    sample_topic(&b, &t, 400, budget)?,
                ))
            })
            .await??
        };
        out.insert(
            "records".into(),
            json!({ "events": ev.to_json(), "tasks": ta.to_json() }),
        );
        let chain_shape = chain_shape(&ev, &ta, partitions as i32, depth);

        println!(
            "  broker round trip: {} single records produce -> consume...",
            plan.rtt_runs
        );
        let rtt = {
            let mut s = chain_shape.clone();
            s.depth = 1;
            let mut rig = ChainRig::start(&bootstrap, s, Duration::from_secs(60)).await?;
            let p = tokio::task::block_in_place(|| rig.latency(plan.rtt_runs, timeout))?;
            rig.stop()?;
            p
        };
        println!(
            "  raw chain: depth {depth}, {} one at a time...",
            plan.latency_runs
        );
        let mut rig =
            ChainRig::start(&bootstrap, chain_shape.clone(), Duration::from_secs(60)).await?;
        let chain_latency =
            tokio::task::block_in_place(|| rig.latency(plan.latency_runs, timeout))?;
        rig.stop()?;
        out.insert("broker_rtt_ms".into(), rtt.to_json());
        out.insert("floor_ms".into(), json!(round(depth as f64 * rtt.p50, 2)));
        out.insert(
            "chain".into(),
            json!({ "depth": depth, "latency_ms": chain_latency.to_json() }),
        );
        shape = Some(chain_shape);
    }

    println!(
        "  throughput: {} diamonds, {} in flight, {} start requests at once...",
        plan.workflows, plan.in_flight, plan.concurrency
    );
    let procs = pids(cluster);
    let metrics_before = metrics_texts(&apis).await?;
    let marks_before = record_count(&bootstrap, &[&events_topic, &tasks_topic]).await?;
    let cost_before = sample_all(&procs);
    let cost_after = RefCell::new(Vec::new());
    let tp = engine::throughput(
        &apis,
        WORKFLOW_TYPE,
        plan.workflows,
        plan.in_flight,
        plan.concurrency,
        plan.deadline,
        || *cost_after.borrow_mut() = sample_all(&procs),
    )
    .await?;
    let cost_after = cost_after.into_inner();
    let marks_after = record_count(&bootstrap, &[&events_topic, &tasks_topic]).await?;
    let metrics_after = metrics_texts(&apis).await?;
    let engine_records: Vec<i64> = marks_after
        .iter()
        .zip(&marks_before)
        .map(|(a, b)| a - b)
        .collect();
    out.insert(
        "throughput".into(),
        throughput_json(&tp, &engine_records, raw, plan.in_flight),
    );
    out.insert(
        "cost".into(),
        cost_json(&procs, &cost_before, &cost_after, plan.workflows),
    );
    out.insert(
        "batch".into(),
        batch_figures(&metrics_before, &metrics_after).to_json(),
    );

    if let (true, Some(shape)) = (plan.full, shape) {
        let window = plan.in_flight;
        println!(
            "  raw chain throughput: {} chains of depth {}, {window} in flight...",
            plan.chains, shape.depth
        );
        let mut rig = ChainRig::start(&bootstrap, shape, Duration::from_secs(60)).await?;
        let (per_s, lat) =
            tokio::task::block_in_place(|| rig.throughput(plan.chains, window, plan.deadline))?;
        rig.stop()?;
        let chain = out
            .get_mut("chain")
            .and_then(Value::as_object_mut)
            .context("chain figures")?;
        chain.insert(
            "throughput".into(),
            json!({
                "chains": plan.chains,
                "window": window,
                "per_s": round(per_s, 2),
                "messages_per_s": round(per_s * hops.unwrap_or(1) as f64, 1),
                "latency_ms": lat.to_json(),
            }),
        );
    }
    cluster.check_processes()?;
    Ok(())
}

fn most_common(v: &[usize]) -> usize {
    let mut counts = std::collections::BTreeMap::new();
    for x in v {
        *counts.entry(*x).or_insert(0) += 1;
    }
    counts
        .into_iter()
        .max_by_key(|(_, n)| *n)
        .map_or(0, |(x, _)| x)
}

fn chain_shape(ev: &RecordSample, ta: &RecordSample, partitions: i32, depth: usize) -> ChainShape {
    // The union of the headers common on either topic, at their mean lengths.
    let mut headers = ev.common_headers();
    for h in ta.common_headers() {
        if !headers.iter().any(|(k, _)| *k == h.0) {
            headers.push(h);
        }
    }
    ChainShape {
        depth,
        partitions,
        headers,
        events_values: ev.values.clone(),
        tasks_values: ta.values.clone(),
    }
}

async fn metrics_texts(apis: &[ApiClient]) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for api in apis {
        out.push(api.metrics().await?);
    }
    Ok(out)
}

/// Records on each topic (the sum of its partitions' high watermarks).
async fn record_count(bootstrap: &str, topics: &[&str]) -> Result<Vec<i64>> {
    let mut out = Vec::new();
    for t in topics {
        out.push(high_watermarks(bootstrap, t).await?.iter().sum());
    }
    Ok(out)
}

fn throughput_json(
    tp: &ThroughputRun,
    engine_records: &[i64],
    raw: f64,
    in_flight: usize,
) -> Value {
    let n = tp.workflows;
    let wall = tp.wall_s();
    let done = tp.done_ms();
    let ((e0, e1), (l0, l1)) = flatness_windows(n, in_flight);
    let early = Window::of(&done, e0, e1);
    let late = Window::of(&done, l0, l1);
    let records: i64 = engine_records.iter().sum();
    let (mean_in_flight, peak_in_flight) = tp.in_flight();
    let messages_per_s = records as f64 / wall;
    json!({
        "workflows": n,
        "wall_s": round(wall, 3),
        "workflows_per_s": round(n as f64 / wall, 2),
        "tasks_per_s": round((n * TASKS_PER_WORKFLOW) as f64 / wall, 2),
        "engine_records": records,
        "events_topic_records": engine_records.first(),
        "tasks_topic_records": engine_records.get(1),
        "records_per_workflow": round(records as f64 / n as f64, 2),
        "messages_per_s": round(messages_per_s, 1),
        "messages_vs_raw_bulk": round(messages_per_s / raw, 4),
        "early": early.map(Window::to_json),
        "late": late.map(Window::to_json),
        "late_to_early": match (early, late) {
            (Some(e), Some(l)) => json!(round(l.per_s / e.per_s, 3)),
            _ => Value::Null,
        },
        "latency_ms": tp.latency().to_json(),
        "in_flight_mean": round(mean_in_flight, 1),
        "in_flight_peak": peak_in_flight,
        "start_phase_s": round(tp.start_phase.as_secs_f64(), 3),
        "start_requests_ms": tp.start_requests.to_json(),
        "observed_after_s": round(tp.observed_after.as_secs_f64(), 3),
    })
}

fn cost_json(
    procs: &[(String, u32)],
    before: &[Option<ProcSample>],
    after: &[Option<ProcSample>],
    workflows: usize,
) -> Value {
    let mut out = Map::new();
    for (i, (name, pid)) in procs.iter().enumerate() {
        let (Some(Some(b)), Some(Some(a))) = (before.get(i), after.get(i)) else {
            out.insert(
                name.clone(),
                json!({ "pid": pid, "error": "no /proc reading" }),
            );
            continue;
        };
        let cpu = a.cpu_s - b.cpu_s;
        out.insert(
            name.clone(),
            json!({
                "pid": pid,
                "cpu_s": round(cpu, 2),
                "cpu_s_per_1000_workflows": round(cpu * 1000.0 / workflows as f64, 3),
                "rss_mib": round(a.rss_kib as f64 / 1024.0, 1),
            }),
        );
    }
    Value::Object(out)
}
