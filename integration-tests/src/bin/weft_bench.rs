//! `weft-bench`: Weft's workflow throughput and latency on a real broker, next to
//! what the same broker does with no Weft in between.
//!
//! It starts a [`TestCluster`] (a Tansu broker, N orchestrators, M workers, all on
//! loopback), then:
//!
//! 1. measures the raw broker: `--raw-messages` small records produced to a new
//!    1-partition topic and consumed back in a consumer group (records per second,
//!    first send to last record consumed), while the engine is idle;
//! 2. registers `examples/diamond.yaml` (A → (B, C) → D, no-op tasks) and starts
//!    `--workflows` instances through the HTTP API, `--concurrency` start requests
//!    in flight (spread over the orchestrators), while polling the instances for
//!    completion;
//! 3. reports workflows/s, tasks/s and engine messages/s over the wall time (first
//!    start request to the last instance's completion), the start → completed
//!    latency percentiles, the raw broker rate and the engine ÷ raw ratio, and
//!    ends with one `BENCH_JSON {...}` line for scripts.
//!
//! Timing: an instance's start → completed latency is `updated_at_ms − created_at_ms`
//! of the completed instance, both event timestamps (`created_at_ms` is stamped by
//! the API when it appends `workflow.created`; `updated_at_ms` of a completed
//! instance is its last event's, i.e. when its last task completed). The wall time
//! runs from the client's first start request to the latest `updated_at_ms`; all
//! processes share this machine's clock, and polling lag does not enter the figures.
//!
//! Engine messages: every record of an instance's history (each is produced to
//! `<prefix>.diamond.events` and consumed by the orchestrator; decisions are read
//! back too) plus one dispatch record on `<prefix>.diamond.tasks` per
//! `task.scheduled` (consumed by a worker). Histories are read from the API after
//! the run and summed over all instances. Node heartbeats, definitions and offset
//! commits are not counted.
//!
//! Fails (with the processes' log tails) if an instance ends in another terminal
//! state or not every instance completes within `--deadline-secs`.
//!
//! Prerequisites as for the tests: `make setup` and `cargo build --workspace --bins`
//! (`make bench` does both). Usage: `weft-bench [--workflows N] [--concurrency N]
//! [--orchestrators N] [--workers N] [--raw-messages N] [--deadline-secs N]`.

use std::collections::{BTreeMap, VecDeque};
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, ensure, Context, Result};
use clap::Parser;
use futures::future::join_all;
use futures::stream::{self, StreamExt, TryStreamExt};
use serde_json::{json, Value};
use tokio::sync::mpsc;
use weft_integration_tests::{bench_support, wait_until, ApiClient, ClusterOptions, TestCluster};

const DIAMOND: &str = include_str!("../../../examples/diamond.yaml");
const WORKFLOW_TYPE: &str = "diamond";
const TASKS_PER_WORKFLOW: usize = 4;

/// Pause between polling rounds.
const POLL_INTERVAL: Duration = Duration::from_millis(200);
/// Instances polled at once.
const POLL_BATCH: usize = 8;
/// Instances polled per round: the pending ones are polled in turn, a round
/// taking the next ones of the queue (which bounds the load polling adds).
const POLL_PER_ROUND: usize = 32;

#[derive(Parser, Debug, Clone)]
#[command(
    name = "weft-bench",
    about = "Diamond workflow throughput and latency on a local Weft cluster, \
             compared with the raw broker's produce → consume rate"
)]
struct Args {
    /// Orchestrator processes.
    #[arg(long, default_value_t = 1)]
    orchestrators: usize,
    /// Worker processes.
    #[arg(long, default_value_t = 1)]
    workers: usize,
    /// Diamond workflows to run.
    #[arg(long, default_value_t = 500)]
    workflows: usize,
    /// Start requests in flight at once.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Records for the raw broker produce → consume measurement.
    #[arg(long, default_value_t = 20_000)]
    raw_messages: usize,
    /// Seconds from the first start request until every workflow must have completed.
    #[arg(long, default_value_t = 600)]
    deadline_secs: u64,
    /// Lines of each process's log to print when the run fails.
    #[arg(long, default_value_t = 80)]
    log_lines: usize,
}

/// An accepted start request.
#[derive(Debug)]
struct Started {
    id: String,
    /// Client clock, just before the request was sent.
    sent_ms: i64,
    /// Round trip of the start request.
    request: Duration,
    /// What the last poll saw: the state, or why there was none.
    last_seen: String,
}

/// A completed instance.
#[derive(Debug)]
struct Completed {
    started: Started,
    /// The orchestrator whose API reported it completed.
    orchestrator: usize,
    created_ms: i64,
    updated_ms: i64,
}

/// What the histories of all instances hold.
#[derive(Debug, Default)]
struct Histories {
    events: usize,
    by_type: BTreeMap<String, usize>,
}

impl Histories {
    fn count(&self, event_type: &str) -> usize {
        self.by_type.get(event_type).copied().unwrap_or(0)
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("\nweft-bench FAILED: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: &Args) -> Result<()> {
    ensure!(
        args.orchestrators >= 1,
        "--orchestrators must be at least 1"
    );
    ensure!(args.workers >= 1, "--workers must be at least 1");
    ensure!(args.workflows >= 1, "--workflows must be at least 1");
    ensure!(args.concurrency >= 1, "--concurrency must be at least 1");
    ensure!(args.raw_messages >= 1, "--raw-messages must be at least 1");

    let load = load_average();
    println!(
        "weft-bench: starting a broker, {} orchestrator(s) and {} worker(s)...",
        args.orchestrators, args.workers
    );
    let cluster = TestCluster::start(ClusterOptions::new(args.orchestrators, args.workers))
        .await
        .context("starting the cluster")?;
    let result = bench(&cluster, args, load.as_deref()).await;
    if result.is_err() {
        eprintln!(
            "\nweft-bench: the run failed; last {} log lines of every process:",
            args.log_lines
        );
        cluster.print_logs(args.log_lines);
        keep_logs(&cluster);
    }
    result
}

async fn bench(cluster: &TestCluster, args: &Args, load: Option<&str>) -> Result<()> {
    let n = args.workflows;
    let apis: Vec<ApiClient> = (0..args.orchestrators).map(|i| cluster.api_at(i)).collect();

    println!(
        "measuring the raw broker: {} records produce -> consume...",
        args.raw_messages
    );
    let raw_rate = bench_support::raw_produce_consume_rate(&cluster.bootstrap(), args.raw_messages)
        .await
        .context("measuring the raw broker")?;

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

    println!(
        "running {n} diamond workflows, {} start requests in flight...",
        args.concurrency
    );
    let deadline = Duration::from_secs(args.deadline_secs);
    let (tx, rx) = mpsc::unbounded_channel::<Started>();
    let first_start_ms = now_ms();
    let t0 = Instant::now();
    let starting = async {
        stream::iter(0..n)
            .map(Ok::<usize, anyhow::Error>)
            .try_for_each_concurrent(args.concurrency, |i| {
                let api = &apis[i % apis.len()];
                let tx = tx.clone();
                async move {
                    let sent_ms = now_ms();
                    let sent = Instant::now();
                    let v = api
                        .start(WORKFLOW_TYPE, json!({ "n": i }), None)
                        .await
                        .with_context(|| format!("starting workflow {i}"))?;
                    let id = v["instance_id"]
                        .as_str()
                        .with_context(|| format!("no instance_id in the start answer {v}"))?
                        .to_owned();
                    // The poller only stops listening when it has failed.
                    let _ = tx.send(Started {
                        id,
                        sent_ms,
                        request: sent.elapsed(),
                        last_seen: "not polled yet".into(),
                    });
                    Ok(())
                }
            })
            .await?;
        drop(tx);
        Ok::<Duration, anyhow::Error>(t0.elapsed())
    };
    let polling = poll_until_completed(&apis, rx, n, t0, deadline);
    let (start_phase, completed) = tokio::try_join!(starting, polling)?;
    let observed = t0.elapsed();

    println!("reading the {n} histories...");
    let histories = read_histories(&apis, &completed, args.concurrency).await?;

    // Figures.
    let last_completed_ms = completed.iter().map(|c| c.updated_ms).max().unwrap_or(0);
    let wall_ms = (last_completed_ms - first_start_ms).max(1);
    let wall_s = wall_ms as f64 / 1000.0;
    let dispatches = histories.count("task.scheduled");
    let engine_messages = histories.events + dispatches;
    let workflows_per_s = n as f64 / wall_s;
    let tasks_per_s = (n * TASKS_PER_WORKFLOW) as f64 / wall_s;
    let engine_per_s = engine_messages as f64 / wall_s;
    let ratio = engine_per_s / raw_rate;

    let latency = Percentiles::of(completed.iter().map(|c| c.updated_ms - c.created_ms));
    let client_latency =
        Percentiles::of(completed.iter().map(|c| c.updated_ms - c.started.sent_ms));
    let request = Percentiles::of(
        completed
            .iter()
            .map(|c| c.started.request.as_millis() as i64),
    );

    let nproc = std::thread::available_parallelism().map_or(0, |p| p.get());
    let cpu = cpu_model().unwrap_or_else(|| "unknown CPU".into());
    let partitions = std::env::var("WEFT_KAFKA_PARTITIONS").ok();
    let per_wf = |x: usize| x as f64 / n as f64;

    println!();
    println!("=== weft-bench: diamond workflows (A -> (B, C) -> D, no-op tasks) ===");
    println!(
        "machine        {nproc} CPUs (nproc), {cpu}; load average before the run: {}",
        load.unwrap_or("unknown")
    );
    println!(
        "settings       {} orchestrator(s), {} worker(s), {n} workflows, {} start requests \
         in flight, {} raw records{}",
        args.orchestrators,
        args.workers,
        args.concurrency,
        args.raw_messages,
        partitions
            .as_deref()
            .map(|p| format!(", WEFT_KAFKA_PARTITIONS={p}"))
            .unwrap_or_default()
    );
    println!();
    println!(
        "raw broker     {raw_rate:.0} msgs/s  (produce -> consume, 1 partition, \
         {} records of ~32 bytes, engine idle)",
        args.raw_messages
    );
    println!();
    println!("engine");
    println!(
        "  wall time          {wall_s:.2} s  (first start request -> last workflow completed)"
    );
    println!(
        "  start requests     {n} in {:.2} s ({:.0}/s); round trip p50 {} ms, p99 {} ms, max {} ms",
        start_phase.as_secs_f64(),
        n as f64 / start_phase.as_secs_f64(),
        request.p50,
        request.p99,
        request.max
    );
    println!("  workflows/s        {workflows_per_s:.1}");
    println!("  tasks/s            {tasks_per_s:.1}  ({TASKS_PER_WORKFLOW} tasks per workflow)");
    println!(
        "  engine messages/s  {engine_per_s:.0}  ({engine_messages} messages, {:.1} per workflow: \
         {:.1} history events + {:.1} task dispatches)",
        per_wf(engine_messages),
        per_wf(histories.events),
        per_wf(dispatches)
    );
    println!(
        "  latency, ms        p50 {}  p90 {}  p99 {}  max {}  (start -> completed: \
         workflow.created -> last event, server timestamps)",
        latency.p50, latency.p90, latency.p99, latency.max
    );
    println!(
        "                     p50 {}  p90 {}  p99 {}  max {}  (client start request sent -> completed)",
        client_latency.p50, client_latency.p90, client_latency.p99, client_latency.max
    );
    println!();
    println!("engine msgs/s / raw msgs/s = {ratio:.3}");
    println!();
    println!("counted as engine messages, per workflow on average:");
    for (ty, count) in &histories.by_type {
        println!("  {:<20} {:>5.2}  (history event)", ty, per_wf(*count));
    }
    println!(
        "  {:<20} {:>5.2}  (dispatch record on the tasks topic, one per task.scheduled)",
        "task dispatch",
        per_wf(dispatches)
    );
    println!(
        "(each history event is produced to the events topic and consumed by the orchestrator; \
         heartbeats, definitions and offset commits are not counted; completion was observed \
         by polling {:.2} s after the first start request)",
        observed.as_secs_f64()
    );

    let report = json!({
        "nproc": nproc,
        "cpu": cpu,
        "load_average_before": load,
        "orchestrators": args.orchestrators,
        "workers": args.workers,
        "workflows": n,
        "concurrency": args.concurrency,
        "raw_messages": args.raw_messages,
        "kafka_partitions": partitions,
        "wall_s": round(wall_s, 3),
        "start_phase_s": round(start_phase.as_secs_f64(), 3),
        "workflows_per_s": round(workflows_per_s, 2),
        "tasks_per_s": round(tasks_per_s, 2),
        "engine_messages": engine_messages,
        "engine_messages_per_workflow": round(per_wf(engine_messages), 2),
        "history_events_per_workflow": round(per_wf(histories.events), 2),
        "dispatches_per_workflow": round(per_wf(dispatches), 2),
        "engine_messages_per_s": round(engine_per_s, 1),
        "latency_ms": latency.to_json(),
        "client_latency_ms": client_latency.to_json(),
        "start_request_ms": request.to_json(),
        "raw_messages_per_s": round(raw_rate, 1),
        "engine_to_raw_ratio": round(ratio, 4),
    });
    println!("BENCH_JSON {report}");
    Ok(())
}

/// Polls the started instances in turn until all `n` are completed; fails if one
/// ends otherwise or `deadline` passes after `t0`.
async fn poll_until_completed(
    apis: &[ApiClient],
    mut rx: mpsc::UnboundedReceiver<Started>,
    n: usize,
    t0: Instant,
    deadline: Duration,
) -> Result<Vec<Completed>> {
    let mut pending: VecDeque<Started> = VecDeque::new();
    let mut completed = Vec::with_capacity(n);
    let mut last_report = Instant::now();
    while completed.len() < n {
        while let Ok(s) = rx.try_recv() {
            pending.push_back(s);
        }
        if t0.elapsed() > deadline {
            let sample: Vec<String> = pending
                .iter()
                .take(5)
                .map(|s| format!("\n  {}: {}", s.id, s.last_seen))
                .collect();
            bail!(
                "{} of {n} workflows did not complete within {deadline:?} of the first start \
                 request ({} not even started); pending by last seen state: {}; e.g.{}",
                n - completed.len(),
                n - completed.len() - pending.len(),
                tally(&pending),
                sample.concat()
            );
        }

        let quota = POLL_PER_ROUND.min(pending.len());
        let mut polled = 0;
        while polled < quota {
            let batch: Vec<Started> = (0..POLL_BATCH.min(quota - polled))
                .map_while(|_| pending.pop_front())
                .collect();
            polled += batch.len();
            let polls = join_all(batch.iter().map(|s| poll_one(apis, &s.id))).await;
            for (mut started, poll) in batch.into_iter().zip(polls) {
                match poll? {
                    Poll::Completed {
                        orchestrator,
                        created_ms,
                        updated_ms,
                    } => completed.push(Completed {
                        started,
                        orchestrator,
                        created_ms,
                        updated_ms,
                    }),
                    // Its turn comes again after the others'.
                    Poll::Pending(seen) => {
                        started.last_seen = seen;
                        pending.push_back(started);
                    }
                }
            }
        }

        if last_report.elapsed() >= Duration::from_secs(5) {
            println!(
                "  {:>6.1} s: {} of {n} completed; pending by last seen state: {}",
                t0.elapsed().as_secs_f64(),
                completed.len(),
                tally(&pending)
            );
            last_report = Instant::now();
        }
        if completed.len() < n {
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }
    Ok(completed)
}

/// `state × count, ...` of the pending instances' last seen states.
fn tally(pending: &VecDeque<Started>) -> String {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for s in pending {
        *counts.entry(s.last_seen.as_str()).or_default() += 1;
    }
    if counts.is_empty() {
        return "none".into();
    }
    counts
        .iter()
        .map(|(state, count)| format!("{state} {count}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// What polling one instance found.
enum Poll {
    /// An orchestrator reports it completed, with these event timestamps.
    Completed {
        orchestrator: usize,
        created_ms: i64,
        updated_ms: i64,
    },
    /// Not completed yet: its state, `not projected` (404) or the error.
    Pending(String),
}

/// Asks every orchestrator about instance `id`; an error if it ended other than
/// completed.
async fn poll_one(apis: &[ApiClient], id: &str) -> Result<Poll> {
    let answers = join_all(apis.iter().map(|api| api.get(WORKFLOW_TYPE, id))).await;
    let mut seen: Option<String> = None;
    for (i, answer) in answers.into_iter().enumerate() {
        let v = match answer {
            Ok(v) => v,
            Err(e) => {
                let msg = format!("{e:#}");
                if seen.is_none() {
                    seen = Some(if msg.contains("404") {
                        "not projected".into()
                    } else {
                        format!("error: {msg}")
                    });
                }
                continue;
            }
        };
        match v["state"].as_str() {
            Some("completed") => {
                let created_ms = v["created_at_ms"]
                    .as_i64()
                    .with_context(|| format!("no created_at_ms in {v}"))?;
                let updated_ms = v["updated_at_ms"]
                    .as_i64()
                    .with_context(|| format!("no updated_at_ms in {v}"))?;
                return Ok(Poll::Completed {
                    orchestrator: i,
                    created_ms,
                    updated_ms,
                });
            }
            Some(s @ ("failed" | "cancelled" | "timeout" | "compensated")) => {
                bail!("workflow {id} ended {s}: {v}")
            }
            Some(s) => seen = Some(s.to_owned()),
            None => seen = Some(format!("no state in {v}")),
        }
    }
    Ok(Poll::Pending(seen.unwrap_or_else(|| "no answer".into())))
}

/// Reads every completed instance's history from the orchestrator that reported it.
async fn read_histories(
    apis: &[ApiClient],
    completed: &[Completed],
    concurrency: usize,
) -> Result<Histories> {
    let histories: Vec<Vec<String>> = stream::iter(completed)
        .map(|c| async move {
            let id = &c.started.id;
            let v = apis[c.orchestrator]
                .events(WORKFLOW_TYPE, id)
                .await
                .with_context(|| format!("reading the history of {id}"))?;
            let events = v["events"]
                .as_array()
                .with_context(|| format!("no events in the history of {id}: {v}"))?;
            ensure!(
                events
                    .last()
                    .is_some_and(|e| e["event_type"] == "workflow.completed"),
                "the history of {id} does not end with workflow.completed"
            );
            Ok(events
                .iter()
                .map(|e| e["event_type"].as_str().unwrap_or("?").to_owned())
                .collect())
        })
        .buffer_unordered(concurrency)
        .try_collect()
        .await?;
    let mut out = Histories::default();
    for types in histories {
        out.events += types.len();
        for ty in types {
            *out.by_type.entry(ty).or_default() += 1;
        }
    }
    Ok(out)
}

/// Nearest-rank percentiles of a sample of milliseconds.
#[derive(Debug, Clone, Copy)]
struct Percentiles {
    p50: i64,
    p90: i64,
    p99: i64,
    max: i64,
}

impl Percentiles {
    fn of(values: impl IntoIterator<Item = i64>) -> Self {
        let mut v: Vec<i64> = values.into_iter().collect();
        v.sort_unstable();
        let at = |q: f64| {
            if v.is_empty() {
                return 0;
            }
            let rank = (q * v.len() as f64).ceil() as usize;
            v[rank.clamp(1, v.len()) - 1]
        };
        Self {
            p50: at(0.50),
            p90: at(0.90),
            p99: at(0.99),
            max: v.last().copied().unwrap_or(0),
        }
    }

    fn to_json(self) -> Value {
        json!({ "p50": self.p50, "p90": self.p90, "p99": self.p99, "max": self.max })
    }
}

/// Copies the cluster's logs (the cluster's directory is removed when it is
/// dropped) to a directory of their own in the temporary directory, and says where.
fn keep_logs(cluster: &TestCluster) {
    let from = cluster.dir().join("logs");
    let to = std::env::temp_dir().join(format!("weft-bench-logs-{}", std::process::id()));
    let copied = std::fs::create_dir_all(&to).and_then(|()| {
        for entry in std::fs::read_dir(&from)? {
            let entry = entry?;
            std::fs::copy(entry.path(), to.join(entry.file_name()))?;
        }
        Ok(())
    });
    match copied {
        Ok(()) => eprintln!("weft-bench: the full logs are kept in {}", to.display()),
        Err(e) => eprintln!(
            "weft-bench: could not copy the logs from {} to {}: {e}",
            from.display(),
            to.display()
        ),
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn round(x: f64, decimals: i32) -> f64 {
    let f = 10f64.powi(decimals);
    (x * f).round() / f
}

/// The 1, 5 and 15 minute load averages from `/proc/loadavg` (Linux): other work
/// on the machine skews the figures.
fn load_average() -> Option<String> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    Some(
        text.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" "),
    )
}

/// The CPU model from `/proc/cpuinfo` (Linux), if there is one.
fn cpu_model() -> Option<String> {
    let info = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    info.lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, m)| m.trim().to_owned())
}
