//! `weft-worker`: runs the built-in task kinds (`noop`, `sleep`, `http`,
//! `shell`, `fail`) from the Kafka task topics until SIGTERM or SIGINT.
//! Flags become configuration overrides on top of the file and `WEFT_*` env.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use weft_shared::config::WeftConfig;
use weft_worker::Worker;

#[derive(Parser, Debug)]
#[command(
    name = "weft-worker",
    version,
    about = "Runs Weft task handlers from Kafka task topics"
)]
struct Args {
    /// TOML configuration file.
    #[arg(long, env = "WEFT_CONFIG")]
    config: Option<PathBuf>,
    /// Sets any configuration key (repeatable), e.g. --set worker.concurrency=8.
    #[arg(long = "set", value_name = "KEY=VALUE", value_parser = parse_set)]
    set: Vec<(String, String)>,
    /// Broker list (kafka.bootstrap).
    #[arg(long)]
    bootstrap: Option<String>,
    /// Node id in the registry (worker.node_id).
    #[arg(long)]
    node_id: Option<String>,
    /// Tasks run at the same time (worker.concurrency).
    #[arg(long)]
    concurrency: Option<usize>,
    /// Workflow types served, comma-separated; default every type (worker.types).
    #[arg(long)]
    types: Option<String>,
    /// Lets the `shell` kind run commands (worker.enable_shell).
    #[arg(long)]
    enable_shell: bool,
    /// Address of /metrics, /healthz, /readyz (worker.http_addr).
    #[arg(long)]
    http_addr: Option<String>,
    /// Prints the effective configuration as TOML and exits.
    #[arg(long)]
    dump_config: bool,
}

fn parse_set(s: &str) -> Result<(String, String), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("expected KEY=VALUE, got '{s}'"))?;
    Ok((k.trim().to_owned(), v.to_owned()))
}

impl Args {
    fn overrides(&self) -> Vec<(String, String)> {
        let mut out = self.set.clone();
        let mut push = |k: &str, v: Option<String>| out.extend(v.map(|v| (k.to_owned(), v)));
        push("kafka.bootstrap", self.bootstrap.clone());
        push("worker.node_id", self.node_id.clone());
        push(
            "worker.concurrency",
            self.concurrency.map(|c| c.to_string()),
        );
        push("worker.types", self.types.clone());
        push(
            "worker.enable_shell",
            self.enable_shell.then(|| "true".to_owned()),
        );
        push("worker.http_addr", self.http_addr.clone());
        out
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let config = match WeftConfig::from_process(args.config.as_deref(), &args.overrides()) {
        Ok(c) => c,
        Err(e) => return usage_error(&e),
    };
    if args.dump_config {
        print!("{}", config.to_toml());
        return ExitCode::SUCCESS;
    }
    weft_shared::telemetry::init_logging(&config.log);
    let worker = match Worker::builder(config).with_builtins().build() {
        Ok(w) => w,
        Err(e) => return usage_error(&e),
    };
    if let Err(e) = worker
        .run(shutdown_signal())
        .await
        .context("worker stopped")
    {
        tracing::error!(error = format!("{e:#}"), "worker failed");
        eprintln!("weft-worker: {e:#}");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

fn usage_error(e: &dyn std::fmt::Display) -> ExitCode {
    eprintln!("weft-worker: {e}");
    ExitCode::from(2)
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("install SIGTERM handler");
    tokio::select! {
        _ = term.recv() => tracing::info!("sigterm received, shutting down"),
        _ = tokio::signal::ctrl_c() => tracing::info!("sigint received, shutting down"),
    }
}
