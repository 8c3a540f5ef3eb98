//! `weft-rebuild-bench`: how fast an orchestrator rebuilds its projections from
//! the events topic (delete the data directory, start, fold everything again),
//! next to how fast the same broker hands the same records to a plain consumer
//! in the same run.
//!
//! 1. Starts a Tansu broker and one orchestrator, registers
//!    `examples/diamond.yaml`, and stops the orchestrator (SIGKILL).
//! 2. Produces `--events` records (default 1,000,000) to `<prefix>.diamond.events`:
//!    the complete histories of diamond workflows decided by the real decider,
//!    as a live run leaves them — inputs (`workflow.created`, `task.started`,
//!    `task.completed`) at sequence 0, decisions with their sequence numbers.
//!    If `--produce-budget-secs` runs out first, it goes on with what was
//!    produced and says so. The records carry no headers unless
//!    `--with-headers` (Tansu 0.6 reads headers in time quadratic in the
//!    topic's size; Weft does not read them when it folds).
//! 3. Raw: reads the whole topic with a plain consumer (records/s).
//! 4. Rebuild: deletes the orchestrator's data directory, starts it, and polls
//!    until `/readyz` reports every partition of the topic owned and live (each
//!    replayed to the high watermark it had at takeover) and its counters have
//!    seen every record (applied, duplicate, stale, rejected, orphan or DLQ; a
//!    record read twice after a rebalance counts twice). Reports
//!    events/s from the start of the process (process start, group join and
//!    definitions included) and from its first processed record, and the ratio
//!    to the raw rate; checks a sample of instances through the API.
//!
//! Ends with one `BENCH_JSON {...}` line. Usage: `weft-rebuild-bench [--events N]
//! [--produce-budget-secs N] [--rebuild-deadline-secs N]`.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use clap::Parser;
use serde_json::json;
use weft_integration_tests::rebuild::{
    consume_all, counter, partition_count, produce_histories, PROCESSED_COUNTERS,
};
use weft_integration_tests::{wait_until, ApiClient, ClusterOptions, TestCluster};

const DIAMOND: &str = include_str!("../../../examples/diamond.yaml");
const WORKFLOW_TYPE: &str = "diamond";

#[derive(Parser, Debug)]
#[command(
    name = "weft-rebuild-bench",
    about = "Projection rebuild speed (events/s) from a filled events topic, next to a raw consumer"
)]
struct Args {
    /// Events to put in the topic (whole workflows, so slightly more).
    #[arg(long, default_value_t = 1_000_000)]
    events: usize,
    /// Seconds producing may take; then the run measures what was produced.
    #[arg(long, default_value_t = 3600)]
    produce_budget_secs: u64,
    /// Seconds the rebuild may take.
    #[arg(long, default_value_t = 7200)]
    rebuild_deadline_secs: u64,
    /// Give the records the headers Weft's producers set (event type,
    /// idempotency key). Off by default: Tansu 0.6 stores headers in a SQLite
    /// table without an index, so every fetched record scans every header row
    /// of the broker and reads slow down quadratically with the topic (a fetch
    /// of 3,000 records of a 20,000-record topic took ~30 s). Weft reads only
    /// keys and values when it folds, so the rebuild work is the same.
    #[arg(long)]
    with_headers: bool,
    /// Skip the raw consumer measurement.
    #[arg(long)]
    skip_raw: bool,
    /// Lines of each process's log to print when the run fails.
    #[arg(long, default_value_t = 80)]
    log_lines: usize,
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
        args.with_headers,
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
            " -- the produce budget ran out before the target: the figures below are for these events only"
        } else {
            ""
        }
    );

    let deadline = Duration::from_secs(args.rebuild_deadline_secs);
    let mut raw_rate = f64::NAN;
    if !args.skip_raw {
        println!("raw: reading the topic with a plain consumer...");
        let (b, t) = (bootstrap.clone(), topic.clone());
        let (raw_n, raw_t) =
            tokio::task::spawn_blocking(move || consume_all(&b, &t, deadline)).await??;
        ensure!(
            raw_n == n,
            "the raw consumer read {raw_n} records, {n} were produced"
        );
        raw_rate = n as f64 / raw_t.as_secs_f64();
        println!("raw consume: {n} records in {raw_t:.1?}: {raw_rate:.0} records/s");
    }

    println!("rebuild: deleting the orchestrator's data directory and starting it...");
    let data_dir = cluster
        .orchestrator(0)
        .data_dir()
        .context("data dir")?
        .to_path_buf();
    std::fs::remove_dir_all(&data_dir)?;
    std::fs::create_dir_all(&data_dir)?;
    let partitions = partition_count(&bootstrap, &topic)?;
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
            if done >= n as u64 && all_live(&api, partitions).await {
                break m;
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let total = started.elapsed();
    let first = first.unwrap_or_default();
    let rate = n as f64 / total.as_secs_f64();
    let steady = n as f64 / (total - first).as_secs_f64().max(1e-3);
    let processed: u64 = PROCESSED_COUNTERS
        .iter()
        .map(|c| counter(&metrics, c))
        .sum();
    let duplicates = counter(&metrics, "weft_orchestrator_events_duplicate_total");
    let orphans = counter(&metrics, "weft_orchestrator_orphan_decisions_total");
    let applied = counter(&metrics, "weft_orchestrator_events_applied_total");
    ensure!(
        orphans == 0,
        "{orphans} decision copies were not re-derived by the rebuild"
    );

    // A sample of instances is complete, with its whole history.
    let step = (produced.workflows.len() / 5).max(1);
    for (id, len) in produced.workflows.iter().step_by(step) {
        let id = id.to_string();
        wait_until(
            "the instance to be readable",
            Duration::from_secs(60),
            Duration::from_millis(200),
            || async { api.get(WORKFLOW_TYPE, &id).await.is_ok() },
        )
        .await?;
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

    println!();
    println!(
        "rebuild of {n} events ({} workflows) by one orchestrator:",
        produced.workflows.len()
    );
    println!("  {total:.1?} from process start: {rate:.0} events/s");
    println!(
        "  {:.1?} from the first processed record ({first:.1?} to start and join): {steady:.0} events/s",
        total - first
    );
    println!(
        "  inputs decided again: {applied}; decision copies dropped as duplicates: {duplicates}; \
         records processed: {processed}{}",
        if processed > n as u64 {
            " (some read twice: a rebalance moved partitions)"
        } else {
            ""
        }
    );
    println!("raw consume of the same topic: {raw_rate:.0} records/s");
    println!(
        "rebuild / raw consume: {:.2} (from process start), {:.2} (from the first record)",
        rate / raw_rate,
        steady / raw_rate
    );
    let report = json!({
        "events": n,
        "workflows": produced.workflows.len(),
        "produce_truncated": produced.truncated,
        "produce_events_per_s": produce_rate.round(),
        "raw_consume_records_per_s": raw_rate.round(),
        "rebuild_seconds": total.as_secs_f64(),
        "rebuild_events_per_s": rate.round(),
        "rebuild_events_per_s_after_first_record": steady.round(),
        "rebuild_to_raw_ratio": (rate / raw_rate * 1000.0).round() / 1000.0,
        "startup_seconds": first.as_secs_f64(),
    });
    println!("BENCH_JSON {report}");
    Ok(())
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
