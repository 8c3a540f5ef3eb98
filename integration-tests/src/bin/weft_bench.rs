//! `weft-bench`: Weft's diamond workflows (A → (B, C) → D, no-op tasks) on a
//! real broker, next to what the same broker does with no Weft in between —
//! throughput, flatness, latency and its floor, cost, and raw baselines, in one
//! table and one JSON file. docs/benchmarks.md explains every figure.
//!
//! Runs (see `weft_integration_tests::bench::run` for the phases):
//! 1. a cluster with Tansu on SQLite (as `make run` starts it): raw bulk,
//!    latency one diamond at a time, broker round trip, raw chain (one at a
//!    time), throughput of `--workflows` diamonds with CPU and memory from
//!    `/proc`, raw chain throughput;
//! 2. a cluster with Tansu's memory engine: raw bulk, throughput and cost
//!    (`--memory-workflows 0` skips it; a Tansu without the memory engine is
//!    reported as skipped);
//! 3. placement (issue 15), each on a fresh SQLite cluster: priority (critical
//!    work arriving behind 10,000 queued normal tasks and 2,000 low ones) and
//!    the spread of tasks over three workers of unequal capacity
//!    (`--placement-normal 0` skips it).
//!
//! Writes the report to `<--out-dir>/weft-bench-<UTC time>.json` and
//! `latest.json`; `--compare <old.json>` prints the changes against an
//! earlier report. Fails (with the processes' log tails) if a workflow ends
//! other than completed or a phase misses its deadline.
//!
//! Prerequisites as for the tests: `make setup` and `cargo build --workspace
//! --bins` (`make bench` does both).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{ensure, Context, Result};
use clap::Parser;
use serde_json::{json, Value};
use weft_integration_tests::bench::run::{run, RunPlan};
use weft_integration_tests::bench::{files, placement, report};
use weft_integration_tests::paths::{tansu_bin, TANSU_PATCHLEVEL, TANSU_VERSION};
use weft_integration_tests::{BrokerOptions, BrokerStorage, ClusterOptions, TestCluster};

#[derive(Parser, Debug, Clone)]
#[command(
    name = "weft-bench",
    about = "Diamond workflow throughput, latency and cost on a local Weft cluster, \
             beside raw broker baselines (docs/benchmarks.md)"
)]
struct Args {
    /// Diamond workflows in the throughput run (20000 for the targets).
    #[arg(long, default_value_t = 2_000)]
    workflows: usize,
    /// Diamond workflows in the throughput run on Tansu's memory engine (0: skip
    /// it); default: as --workflows.
    #[arg(long)]
    memory_workflows: Option<usize>,
    /// Workflows in flight at once in the throughput runs (started and not yet
    /// seen completed; a new one starts as one completes), and raw chains in
    /// flight in the chain's throughput run.
    #[arg(long, default_value_t = 500)]
    in_flight: usize,
    /// Start requests open at once in the throughput runs.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Diamonds run one at a time for the latency figures.
    #[arg(long, default_value_t = 200)]
    latency_runs: usize,
    /// Diamonds run one at a time before them, not counted.
    #[arg(long, default_value_t = 10)]
    warmup_runs: usize,
    /// Single-record produce -> consume round trips for the broker round trip.
    #[arg(long, default_value_t = 200)]
    rtt_runs: usize,
    /// Chains in the raw chain's throughput run; default: as --workflows.
    #[arg(long)]
    chains: Option<usize>,
    /// Run every phase on the memory engine too (latency, round trip, chains),
    /// not only raw bulk, throughput and cost.
    #[arg(long)]
    memory_all_phases: bool,
    /// Records for the raw bulk produce -> consume rate.
    #[arg(long, default_value_t = 20_000)]
    raw_messages: usize,
    /// Orchestrator processes.
    #[arg(long, default_value_t = 1)]
    orchestrators: usize,
    /// Worker processes.
    #[arg(long, default_value_t = 1)]
    workers: usize,
    /// Seconds each throughput run (and the chain run) may take.
    #[arg(long, default_value_t = 300)]
    deadline_secs: u64,
    /// The Tansu binary for the memory engine run [env: WEFT_BENCH_TANSU_MEMORY_BIN]
    /// (needs the `dynostore` feature); default: the one the tests use.
    #[arg(long, env = "WEFT_BENCH_TANSU_MEMORY_BIN")]
    memory_tansu_bin: Option<PathBuf>,
    /// Where the JSON report goes.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../target/bench"))]
    out_dir: PathBuf,
    /// An earlier report to compare this run with.
    #[arg(long)]
    compare: Option<PathBuf>,
    #[command(flatten)]
    placement: placement::PlacementArgs,
    /// Lines of each process's log to print when a run fails.
    #[arg(long, default_value_t = 80)]
    log_lines: usize,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    match bench(&args).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("\nweft-bench FAILED: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Every figure; `Ok(false)` when the SQLite run or the placement phase failed (the report is still
/// written, with what was measured before the failure). A failed memory-engine
/// run is reported but does not fail the bench.
async fn bench(args: &Args) -> Result<bool> {
    ensure!(
        args.orchestrators >= 1,
        "--orchestrators must be at least 1"
    );
    ensure!(args.workers >= 1, "--workers must be at least 1");
    ensure!(
        args.workflows >= 20,
        "--workflows must be at least 20 (its windows need it)"
    );
    ensure!(args.concurrency >= 1, "--concurrency must be at least 1");
    ensure!(args.in_flight >= 1, "--in-flight must be at least 1");
    ensure!(args.latency_runs >= 1, "--latency-runs must be at least 1");
    ensure!(args.rtt_runs >= 1, "--rtt-runs must be at least 1");
    ensure!(args.raw_messages >= 1, "--raw-messages must be at least 1");
    let memory_workflows = args.memory_workflows.unwrap_or(args.workflows);
    ensure!(
        memory_workflows == 0 || memory_workflows >= 20,
        "--memory-workflows must be 0 (skip) or at least 20"
    );
    let old = match &args.compare {
        Some(p) => Some(read_report(p)?),
        None => None,
    };
    let chains = args.chains.unwrap_or(args.workflows);
    let plan = RunPlan {
        workflows: args.workflows,
        in_flight: args.in_flight,
        concurrency: args.concurrency,
        raw_messages: args.raw_messages,
        deadline: Duration::from_secs(args.deadline_secs),
        full: true,
        warmup_runs: args.warmup_runs,
        latency_runs: args.latency_runs,
        rtt_runs: args.rtt_runs,
        chains,
    };
    let load = load_average();
    let profile = if cfg!(debug_assertions) {
        "dev (Weft's crates unoptimised, dependencies opt-level 2)"
    } else {
        "release"
    };
    println!(
        "weft-bench: {} workflows on SQLite, {memory_workflows} on the memory engine, {} in \
         flight, {} start requests at once, {} latency runs (+{} warm-up), {} round trips, {chains} chains, {} \
         raw records; {} orchestrator(s), {} worker(s); build profile {profile}",
        args.workflows,
        args.in_flight,
        args.concurrency,
        args.latency_runs,
        args.warmup_runs,
        args.rtt_runs,
        args.raw_messages,
        args.orchestrators,
        args.workers
    );

    let (sqlite, sqlite_err) = if args.placement.placement_only {
        (json!({ "skipped": "--placement-only" }), None)
    } else {
        println!("\n[1/3] Tansu on SQLite");
        let (mut v, err) = engine_run(args, BrokerOptions::default(), &plan).await;
        if let Some(e) = &err {
            eprintln!("weft-bench: the SQLite run FAILED: {e:#}");
            v["failed"] = json!(format!("{e:#}"));
        }
        (v, err)
    };

    let memory_bin = args.memory_tansu_bin.clone().unwrap_or_else(tansu_bin);
    let mut memory_failed = false;
    let memory = if args.placement.placement_only {
        json!({ "skipped": "--placement-only" })
    } else if memory_workflows == 0 {
        json!({ "skipped": "--memory-workflows 0" })
    } else {
        println!("\n[2/3] Tansu's memory engine ({})", memory_bin.display());
        let opts = BrokerOptions {
            storage: BrokerStorage::Memory,
            tansu_bin: Some(memory_bin.clone()),
        };
        let plan = RunPlan {
            workflows: memory_workflows,
            full: args.memory_all_phases,
            ..plan.clone()
        };
        match engine_run(args, opts, &plan).await {
            (v, None) => v,
            (_, Some(e)) if format!("{e:#}").contains("FeatureNotEnabled") => {
                let reason = format!(
                    "{} was built without Tansu's memory engine (feature `dynostore`); build \
                     one with `--features libsql,dynostore` and pass --memory-tansu-bin or \
                     WEFT_BENCH_TANSU_MEMORY_BIN",
                    memory_bin.display()
                );
                eprintln!("weft-bench: memory engine run skipped: {reason}");
                json!({ "skipped": reason })
            }
            (mut v, Some(e)) => {
                eprintln!("weft-bench: the memory engine run FAILED: {e:#}");
                memory_failed = true;
                v["failed"] = json!(format!("{e:#}"));
                v
            }
        }
    };

    let (placement, placement_failed) = placement::phase(
        &args.placement,
        Duration::from_secs(args.deadline_secs),
        args.log_lines,
    )
    .await;

    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let stamp = files::utc_stamp(now);
    let report_json = json!({
        "schema": 1,
        "timestamp": stamp,
        "machine": {
            "nproc": std::thread::available_parallelism().map_or(0, |p| p.get()),
            "cpu": cpu_model().unwrap_or_else(|| "unknown CPU".into()),
            "load_average_before": load,
            "profile": profile,
        },
        "tansu": {
            "version": format!("{TANSU_VERSION} ({TANSU_PATCHLEVEL})"),
            "sqlite_bin": tansu_bin().display().to_string(),
            "memory_bin": memory_bin.display().to_string(),
        },
        "settings": {
            "workflows": args.workflows,
            "memory_workflows": memory_workflows,
            "concurrency": args.concurrency,
            "latency_runs": args.latency_runs,
            "warmup_runs": args.warmup_runs,
            "rtt_runs": args.rtt_runs,
            "chains": chains,
            "in_flight": args.in_flight,
            "raw_messages": args.raw_messages,
            "orchestrators": args.orchestrators,
            "workers": args.workers,
            "placement": args.placement.to_json(),
        },
        "sqlite": sqlite,
        "memory": memory,
        "placement": placement,
    });
    if !args.placement.placement_only {
        print!("{}", report::table(&report_json));
    }
    print!("{}", placement::table(&report_json["placement"]));
    let path = files::write(&report_json, &args.out_dir, &stamp)?;
    let shown = path.canonicalize().unwrap_or(path);
    println!("\nreport: {} (and latest.json beside it)", shown.display());
    if let Some(old) = old {
        print!("{}", files::compare(&old, &report_json));
    }
    if memory_failed {
        // The comparison run failed: said in the table, the report and here, but
        // the SQLite figures stand and `make bench` goes on to the rebuild bench.
        eprintln!(
            "\nweft-bench: WARNING: the memory engine run failed (see above); the exit \
             status is still 0 because the SQLite run passed"
        );
    }
    Ok(sqlite_err.is_none() && !placement_failed)
}

/// A fresh cluster on `broker`, [`run`] on it, its logs printed if it fails.
async fn engine_run(
    args: &Args,
    broker: BrokerOptions,
    plan: &RunPlan,
) -> (Value, Option<anyhow::Error>) {
    let mut opts = ClusterOptions::new(args.orchestrators, args.workers);
    opts.broker = broker;
    let mut figures = serde_json::Map::new();
    let mut cluster = match TestCluster::start(opts).await {
        Ok(c) => c,
        Err(e) => {
            return (
                Value::Object(figures),
                Some(e.context("starting the cluster")),
            )
        }
    };
    let result = run(&mut cluster, plan, &mut figures).await;
    if result.is_err() {
        eprintln!(
            "\nweft-bench: the run failed; last {} log lines of every process:",
            args.log_lines
        );
        cluster.print_logs(args.log_lines);
        keep_logs(&cluster, plan_label(&cluster));
    }
    (Value::Object(figures), result.err())
}

/// `sqlite` or `memory`: which broker storage the cluster runs on.
fn plan_label(cluster: &TestCluster) -> &'static str {
    let cmd = cluster.broker().process().spec().command_line();
    if cmd.contains(BrokerStorage::Memory.url()) {
        BrokerStorage::Memory.name()
    } else {
        BrokerStorage::Sqlite.name()
    }
}

fn read_report(path: &std::path::Path) -> Result<Value> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading --compare {}", path.display()))?;
    let v: Value = serde_json::from_str(&text)
        .with_context(|| format!("--compare {} is not JSON", path.display()))?;
    ensure!(
        v.get("sqlite").is_some(),
        "--compare {} is not a weft-bench report (no \"sqlite\" figures)",
        path.display()
    );
    Ok(v)
}

/// Copies the cluster's logs (its directory is removed when it is dropped) to
/// a directory of their own in the temporary directory (the broker's too), and says where.
fn keep_logs(cluster: &TestCluster, label: &str) {
    let from = cluster.dir().join("logs");
    let to = std::env::temp_dir().join(format!("weft-bench-logs-{}-{label}", std::process::id()));
    let broker_log = cluster.broker().process().log_path().to_path_buf();
    let copied = std::fs::create_dir_all(&to).and_then(|()| {
        for entry in std::fs::read_dir(&from)? {
            let entry = entry?;
            std::fs::copy(entry.path(), to.join(entry.file_name()))?;
        }
        std::fs::copy(&broker_log, to.join("broker.log"))?;
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
