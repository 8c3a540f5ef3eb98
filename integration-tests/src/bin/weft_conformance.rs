//! `weft-conformance`: drives a running Weft worker — in any language —
//! through the cases of `docs/protocol.md` against a running orchestrator and
//! broker, and reports which it gets right. It reads what the worker wrote on
//! the wire (the events, heartbeats and DLQ topics, the workers' committed
//! offsets) and, for the cases a workflow cannot produce, writes task records
//! itself (a duplicate dispatch, an undecodable record, an `exactly_once`
//! dispatch).
//!
//! The worker under test must be the only member of its consumer group
//! (`--group`, default `weft-workers`), serve every workflow type (or the
//! types `conf-<run>-*`), and offer the built-in handlers `noop`, `sleep` and
//! `fail`. Each run registers its own workflow types (`conf-<run id>-<case>`).
//!
//! ```text
//! weft-conformance --bootstrap 127.0.0.1:9092 --api http://127.0.0.1:8080 [--only normal,cancel]
//! ```
//!
//! Exit status 0 when every case passed, 1 otherwise.

#[path = "weft_conformance/cases.rs"]
mod cases;
#[path = "weft_conformance/wire.rs"]
mod wire;

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use clap::Parser;
use futures::future::join_all;
use weft_integration_tests::ApiClient;
use weft_shared::config::WeftConfig;

use crate::cases::{Case, Ctx, CASES};
use crate::wire::Wire;

#[derive(Parser, Debug)]
#[command(
    name = "weft-conformance",
    about = "Drives a running Weft worker through the protocol's cases and reports which it gets right"
)]
struct Args {
    /// The broker.
    #[arg(long, default_value = "127.0.0.1:9092")]
    bootstrap: String,
    /// An orchestrator's HTTP API.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    api: String,
    /// The consumer group of the worker under test (it must be its only member).
    #[arg(long, default_value = "weft-workers")]
    group: String,
    /// The deployment's topic prefix.
    #[arg(long, default_value = "weft")]
    topic_prefix: String,
    /// Names this run's workflow types (`conf-<run id>-<case>`); random by default.
    #[arg(long)]
    run_id: Option<String>,
    /// Only these cases (comma-separated); `--list` names them.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Lists the cases and exits.
    #[arg(long)]
    list: bool,
    /// How long one case may take, in seconds.
    #[arg(long, default_value_t = 90)]
    case_timeout_secs: u64,
    /// The worker runs with Kafka transactions: an `exactly_once` task must complete
    /// (by default it must be refused with `exactly_once_unsupported`).
    #[arg(long)]
    transactions: bool,
    /// librdkafka properties for the kit's own clients (`NAME=VALUE`; SASL, TLS).
    #[arg(long = "property")]
    properties: Vec<String>,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args = Args::parse();
    if args.list {
        for c in CASES {
            println!("{:<16} {}", c.name, c.about);
        }
        return;
    }
    match run(args).await {
        Ok(true) => {}
        Ok(false) => std::process::exit(1),
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::exit(2);
        }
    }
}

async fn run(args: Args) -> Result<bool> {
    let selected: Vec<&'static Case> = CASES
        .iter()
        .filter(|c| args.only.is_empty() || args.only.iter().any(|o| o == c.name))
        .collect();
    if let Some(unknown) = args
        .only
        .iter()
        .find(|o| !CASES.iter().any(|c| c.name == o.as_str()))
    {
        anyhow::bail!("no case named '{unknown}' (see --list)");
    }
    let mut settings = WeftConfig::default().kafka;
    settings.bootstrap = args.bootstrap.clone();
    settings.topic_prefix = args.topic_prefix.clone();
    for p in &args.properties {
        let (k, v) = p
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("--property wants NAME=VALUE, got '{p}'"))?;
        settings.properties.insert(k.to_owned(), v.to_owned());
    }
    let run_id = args
        .run_id
        .clone()
        .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string()[..8].to_owned());
    let ctx = Arc::new(Ctx {
        api: ApiClient::new(args.api.clone()),
        wire: Arc::new(Wire::new(settings, args.group.clone())?),
        timeout: Duration::from_secs(args.case_timeout_secs),
        transactions: args.transactions,
    });
    println!(
        "weft-conformance: run {run_id}, {} cases, worker group {}, api {}",
        selected.len(),
        args.group,
        args.api
    );
    for case in &selected {
        let ty = case_type(&run_id, case.name);
        ctx.api
            .register_definition(&(case.definition)(&ty))
            .await
            .map_err(|e| {
                anyhow::anyhow!("registering the definition of case {}: {e:#}", case.name)
            })?;
    }
    // Every case topic is picked up (one rebalance, or a few) before any case
    // runs: a rebalance stops running attempts, which would muddle the cases.
    let tasks: Vec<String> = selected
        .iter()
        .map(|c| ctx.wire.topics.tasks(&case_type(&run_id, c.name)))
        .collect();
    match ctx
        .wire
        .wait_workers_hold(&tasks, Duration::from_secs(60))
        .await
    {
        Ok(took) => println!(
            "the worker holds every partition of the {} case topics ({:.1}s)",
            tasks.len(),
            took.as_secs_f64()
        ),
        Err(e) => println!("note: {e:#}; running the cases anyway"),
    }
    let results = join_all(selected.iter().map(|c| run_case(ctx.clone(), &run_id, c))).await;
    let passed = results.iter().filter(|r| r.is_ok()).count();
    println!(
        "weft-conformance: {passed} of {} cases passed{}",
        results.len(),
        if passed == results.len() {
            ""
        } else {
            " (FAILED)"
        }
    );
    Ok(passed == results.len())
}

fn case_type(run_id: &str, case: &str) -> String {
    format!("conf-{run_id}-{}", case.replace('_', "-"))
}

async fn run_case(ctx: Arc<Ctx>, run_id: &str, case: &'static Case) -> Result<(), ()> {
    let ty = case_type(run_id, case.name);
    let began = Instant::now();
    let outcome = tokio::time::timeout(ctx.timeout, (case.run)(ctx.clone(), ty.clone())).await;
    let secs = began.elapsed().as_secs_f64();
    match outcome {
        Ok(Ok(note)) => {
            println!("PASS {:<16} {secs:>5.1}s  {note}", case.name);
            Ok(())
        }
        Ok(Err(e)) => {
            println!("FAIL {:<16} {secs:>5.1}s  {e:#} [{ty}]", case.name);
            Err(())
        }
        Err(_) => {
            println!(
                "FAIL {:<16} {secs:>5.1}s  did not finish within {:?} [{ty}]",
                case.name, ctx.timeout
            );
            Err(())
        }
    }
}
