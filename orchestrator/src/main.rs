//! `weft-orchestrator`: parses flags, loads the layered configuration, sets up
//! logging and runs the orchestrator until SIGTERM or Ctrl-C.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use weft_shared::config::WeftConfig;

/// The Weft orchestrator.
#[derive(Parser, Debug)]
#[command(name = "weft-orchestrator", version, about)]
struct Args {
    /// Configuration file (TOML).
    #[arg(long, env = "WEFT_CONFIG")]
    config: Option<PathBuf>,
    /// Override any configuration key, e.g. `--set kafka.partitions=12` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// Kafka bootstrap servers (kafka.bootstrap).
    #[arg(long)]
    bootstrap: Option<String>,
    /// HTTP API address (orchestrator.http_addr).
    #[arg(long)]
    http_addr: Option<String>,
    /// Directory of the RocksDB projections (orchestrator.data_dir).
    #[arg(long)]
    data_dir: Option<String>,
    /// Node id (orchestrator.node_id).
    #[arg(long)]
    node_id: Option<String>,
    /// Delete the RocksDB projections in the data directory first, so they are
    /// rebuilt from the topics (the same as starting on an empty data directory).
    #[arg(long)]
    rebuild: bool,
    /// Print the effective configuration and exit.
    #[arg(long)]
    dump_config: bool,
}

fn overrides(args: &Args) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for s in &args.set {
        let (k, v) = s
            .split_once('=')
            .ok_or_else(|| format!("--set expects KEY=VALUE, got '{s}'"))?;
        out.push((k.trim().to_owned(), v.to_owned()));
    }
    let flags = [
        ("kafka.bootstrap", &args.bootstrap),
        ("orchestrator.http_addr", &args.http_addr),
        ("orchestrator.data_dir", &args.data_dir),
        ("orchestrator.node_id", &args.node_id),
    ];
    for (key, value) in flags {
        if let Some(v) = value {
            out.push((key.to_owned(), v.clone()));
        }
    }
    Ok(out)
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let config = match overrides(&args).and_then(|o| {
        WeftConfig::from_process(args.config.as_deref(), &o).map_err(|e| e.to_string())
    }) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    if args.dump_config {
        print!("{}", config.to_toml());
        return ExitCode::SUCCESS;
    }
    weft_shared::telemetry::init_logging(&config.log);
    if args.rebuild {
        if let Err(e) = weft_orchestrator::discard_projections(&config.orchestrator.data_dir) {
            tracing::error!(error = %e, "cannot discard the projections for --rebuild");
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    }
    // Everything is durable once `run` returns; librdkafka's client destructors can
    // still wait on their background threads, so leave without running them.
    match weft_orchestrator::run(config, shutdown_signal()).await {
        Ok(()) => std::process::exit(0),
        Err(e) => {
            tracing::error!(error = %e, "orchestrator failed");
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("signal handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("shutting down");
}
