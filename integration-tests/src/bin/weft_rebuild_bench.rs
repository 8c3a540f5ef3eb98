//! `weft-rebuild-bench`: how fast the orchestrator rebuilds its projections from
//! the events topic, next to how fast the same broker hands the same records to
//! a plain consumer in the same run.
//!
//! 1. Starts a Tansu broker and one orchestrator, registers
//!    `examples/diamond.yaml`, and stops the orchestrator (SIGKILL).
//! 2. Produces `--events` records (default 1,000,000) to `<prefix>.diamond.events`:
//!    the complete histories of diamond workflows decided by the real decider,
//!    as a live run leaves them — inputs (`workflow.created`, `task.started`,
//!    `task.completed`) at sequence 0, decisions with their sequence numbers.
//!    If `--produce-budget-secs` runs out first, it goes on with what was
//!    produced and says so. The records carry the headers Weft's producers set
//!    (`--without-headers` drops them); the test broker has the header index
//!    Tansu 0.6 lacks (ADR 0007).
//! 3. Raw: reads the whole topic with a plain consumer (records/s).
//! 4. Rebuild, by `--mode`:
//!    - `in-process`: the orchestrator's own partition processors
//!      (decide, RocksDB batches with projection, indexes, snapshots, outbox)
//!      run in this process over the records the raw consumer read back, fed
//!      from memory. This is the fold and write path alone: the broker's fetch
//!      time is in the raw figure, not here.
//!    - `e2e` (default): deletes the orchestrator's data directory, starts the real
//!      binary, and polls until `/readyz` reports every partition owned and live
//!      and its counters have seen every record. A partition's replay ends when
//!      the consumer position reaches the partition's end (ADR 0007).
//!
//! Ends with one `BENCH_JSON {...}` line. Usage: `weft-rebuild-bench [--events N]
//! [--mode in-process|e2e] [--produce-budget-secs N] [--rebuild-deadline-secs N]`.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use clap::{Parser, ValueEnum};
use serde_json::json;
use weft_integration_tests::rebuild::fold::{check_instances, fold_in_process};
use weft_integration_tests::rebuild::{
    consume_all, counter, partition_count, produce_histories, Produced, PROCESSED_COUNTERS,
};
use weft_integration_tests::{ApiClient, ClusterOptions, TestCluster};
use weft_shared::config::WeftConfig;

const DIAMOND: &str = include_str!("../../../examples/diamond.yaml");
const WORKFLOW_TYPE: &str = "diamond";

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Mode {
    /// The real orchestrator binary, from an empty data directory.
    E2e,
    /// The orchestrator's partition processors in this process, over records
    /// read back (the fold and write path alone, without the broker's fetches).
    InProcess,
}

#[derive(Parser, Debug)]
#[command(
    name = "weft-rebuild-bench",
    about = "Projection rebuild speed (events/s) from a filled events topic, next to a raw consumer"
)]
struct Args {
    /// Events to put in the topic (whole workflows, so slightly more).
    #[arg(long, default_value_t = 1_000_000)]
    events: usize,
    /// How the rebuild is measured.
    #[arg(long, value_enum, default_value_t = Mode::E2e)]
    mode: Mode,
    /// Produce the records without the headers Weft's producers set (event
    /// type, idempotency key); Weft reads only keys and values when it folds.
    #[arg(long)]
    without_headers: bool,
    /// Seconds producing may take; then the run measures what was produced.
    #[arg(long, default_value_t = 3600)]
    produce_budget_secs: u64,
    /// Seconds reading the topic and the rebuild may take, each.
    #[arg(long, default_value_t = 7200)]
    rebuild_deadline_secs: u64,
    /// Lines of each process's log to print when the run fails.
    #[arg(long, default_value_t = 80)]
    log_lines: usize,
}

/// One rebuild measurement.
struct Rebuilt {
    label: &'static str,
    elapsed: Duration,
    /// Time before the first record was processed (process start and group join).
    startup: Duration,
    metrics: String,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    println!("weft-rebuild-bench: starting a broker and an orchestrator...");
    let mut cluster = match TestCluster::start(ClusterOptions::new(1, 0)).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("weft-rebuild-bench FAILED: starting the cluster: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    match run(&mut cluster, &args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            cluster.print_logs(args.log_lines);
            eprintln!("\nweft-rebuild-bench FAILED: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cluster: &mut TestCluster, args: &Args) -> Result<()> {
    let api = cluster.api();
    api.register_definition(DIAMOND)
        .await
        .context("registering the definition")?;
    cluster.orchestrator_mut(0).process_mut().kill9();
    let topic = format!("weft.{WORKFLOW_TYPE}.events");
    let bootstrap = cluster.bootstrap();

    println!(
        "producing {} events of diamond workflows to {topic}...",
        args.events
    );
    let budget = Duration::from_secs(args.produce_budget_secs);
    let produced = produce_histories(
        &bootstrap,
        &topic,
        DIAMOND,
        args.events,
        budget,
        !args.without_headers,
    )
    .await?;
    let n = produced.events;
    let produce_rate = n as f64 / produced.elapsed.as_secs_f64();
    println!(
        "produced {n} events ({} workflows, {:.1} MB Avro) in {:.1?} ({:.1?} of it deciding and \
         encoding them): {produce_rate:.0} events/s{}",
        produced.workflows.len(),
        produced.bytes as f64 / 1e6,
        produced.elapsed,
        produced.generating,
        if produced.truncated {
            " -- the produce budget ran out first: the figures below are for these events only"
        } else {
            ""
        }
    );

    println!("raw: reading the topic with a plain consumer...");
    let deadline = Duration::from_secs(args.rebuild_deadline_secs);
    let keep = args.mode == Mode::InProcess;
    let (b, t) = (bootstrap.clone(), topic.clone());
    let (raw_n, raw_t, records) =
        tokio::task::spawn_blocking(move || consume_all(&b, &t, deadline, keep)).await??;
    ensure!(
        raw_n == n,
        "the raw consumer read {raw_n} records, {n} were produced"
    );
    let raw_rate = n as f64 / raw_t.as_secs_f64();
    println!("raw consume: {n} records in {raw_t:.1?}: {raw_rate:.0} records/s");

    let step = (produced.workflows.len() / 20).max(1);
    let sample: Vec<_> = produced.workflows.iter().step_by(step).copied().collect();
    let rebuilt = match args.mode {
        Mode::InProcess => {
            println!(
                "rebuild (in process): folding the records through the partition processors..."
            );
            let mut settings = WeftConfig::default().kafka;
            settings.bootstrap = bootstrap.clone();
            let dir = tempfile::tempdir()?;
            let (folded, store) =
                fold_in_process(&settings, &topic, WORKFLOW_TYPE, records, dir.path()).await?;
            check_instances(&store, WORKFLOW_TYPE, &sample)?;
            Rebuilt {
                label: "in process: the orchestrator's partition processors over records read \
                        back from the broker, fed from memory",
                elapsed: folded.elapsed,
                startup: Duration::ZERO,
                metrics: folded.metrics,
            }
        }
        Mode::E2e => {
            e2e(
                cluster, &api, &bootstrap, &topic, &produced, &sample, deadline,
            )
            .await?
        }
    };
    report(&produced, raw_rate, produce_rate, &rebuilt)
}

/// The real orchestrator rebuilding from an empty data directory.
async fn e2e(
    cluster: &mut TestCluster,
    api: &ApiClient,
    bootstrap: &str,
    topic: &str,
    produced: &Produced,
    sample: &[(weft_shared::ids::InstanceId, usize)],
    deadline: Duration,
) -> Result<Rebuilt> {
    println!("rebuild (e2e): deleting the orchestrator's data directory and starting it...");
    let n = produced.events as u64;
    let data_dir = cluster
        .orchestrator(0)
        .data_dir()
        .context("data dir")?
        .to_path_buf();
    std::fs::remove_dir_all(&data_dir)?;
    std::fs::create_dir_all(&data_dir)?;
    let partitions = partition_count(bootstrap, topic)?;
    let started = Instant::now();
    cluster.orchestrator_mut(0).process_mut().start()?;
    let mut first = None;
    let mut last_print = Instant::now();
    let metrics = loop {
        ensure!(
            started.elapsed() < deadline,
            "the rebuild did not finish within {deadline:?}"
        );
        ensure!(
            cluster.orchestrator_mut(0).process_mut().is_running(),
            "the orchestrator exited"
        );
        if let Ok(m) = api.metrics().await {
            let done: u64 = PROCESSED_COUNTERS.iter().map(|c| counter(&m, c)).sum();
            if done > 0 && first.is_none() {
                first = Some(started.elapsed());
            }
            if last_print.elapsed() > Duration::from_secs(30) {
                last_print = Instant::now();
                println!("  processed {done} of {n} after {:.0?}", started.elapsed());
            }
            if done >= n && all_live(api, partitions).await {
                break m;
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let elapsed = started.elapsed();
    for (id, len) in sample {
        let id = id.to_string();
        let state = api.get(WORKFLOW_TYPE, &id).await?;
        ensure!(
            state["state"] == "completed",
            "{id} is {} after the rebuild",
            state["state"]
        );
        let events = api.events(WORKFLOW_TYPE, &id).await?;
        let got = events["events"].as_array().map(Vec::len).unwrap_or(0);
        ensure!(
            got == *len,
            "{id}: {got} events after the rebuild, {len} produced"
        );
    }
    Ok(Rebuilt {
        label: "end to end: the orchestrator binary from an empty data directory",
        elapsed,
        startup: first.unwrap_or_default(),
        metrics,
    })
}

/// Whether `/readyz` is green with `partitions` partitions owned, all live.
async fn all_live(api: &ApiClient, partitions: usize) -> bool {
    let Ok(r) = api.send(reqwest::Method::GET, "/readyz", None).await else {
        return false;
    };
    let owned = r.body["partitions"].as_object();
    r.status.is_success()
        && owned.is_some_and(|o| o.len() >= partitions && o.values().all(|v| v == true))
}

fn report(produced: &Produced, raw_rate: f64, produce_rate: f64, r: &Rebuilt) -> Result<()> {
    let n = produced.events;
    let m = &r.metrics;
    let processed: u64 = PROCESSED_COUNTERS.iter().map(|c| counter(m, c)).sum();
    let duplicates = counter(m, "weft_orchestrator_events_duplicate_total");
    let orphans = counter(m, "weft_orchestrator_orphan_decisions_total");
    let applied = counter(m, "weft_orchestrator_events_applied_total");
    ensure!(
        orphans == 0,
        "{orphans} decision copies were not re-derived by the rebuild"
    );
    let rate = n as f64 / r.elapsed.as_secs_f64();
    let steady = n as f64 / (r.elapsed - r.startup).as_secs_f64().max(1e-3);
    println!();
    println!(
        "rebuild of {n} events ({} workflows), {}:",
        produced.workflows.len(),
        r.label
    );
    println!("  {:.1?}: {rate:.0} events/s", r.elapsed);
    if !r.startup.is_zero() {
        println!(
            "  {:.1?} of it to start and join the group; after that {steady:.0} events/s",
            r.startup
        );
    }
    println!(
        "  inputs decided again: {applied}; decision copies dropped as duplicates: {duplicates}; \
         records processed: {processed}{}",
        if processed > n as u64 {
            " (some read twice after a rebalance)"
        } else {
            ""
        }
    );
    println!("raw consume of the same topic: {raw_rate:.0} records/s");
    println!("rebuild / raw consume: {:.2}", rate / raw_rate);
    let report = json!({
        "mode": r.label,
        "events": n,
        "workflows": produced.workflows.len(),
        "produce_truncated": produced.truncated,
        "produce_events_per_s": produce_rate.round(),
        "raw_consume_records_per_s": raw_rate.round(),
        "rebuild_seconds": r.elapsed.as_secs_f64(),
        "rebuild_events_per_s": rate.round(),
        "rebuild_events_per_s_after_startup": steady.round(),
        "rebuild_to_raw_ratio": (rate / raw_rate * 1000.0).round() / 1000.0,
    });
    println!("BENCH_JSON {report}");
    Ok(())
}
