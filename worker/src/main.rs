//! `weft-worker`: runs the built-in task kinds from the Kafka task topics until SIGTERM/SIGINT;
//! flags become configuration overrides on top of the file and `WEFT_*` environment.

use clap::Parser;
use weft_shared::config::WeftConfig;
use weft_worker::Worker;

/// Runs Weft task handlers from the Kafka task topics.
#[derive(Parser, Debug)]
#[command(name = "weft-worker", version)]
struct Args {
    /// TOML configuration file.
    #[arg(long, env = "WEFT_CONFIG")]
    config: Option<std::path::PathBuf>,
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
    concurrency: Option<String>,
    /// Workflow types served, comma-separated; default every type (worker.types).
    #[arg(long)]
    types: Option<String>,
    /// Capabilities offered, comma-separated: names and key=value labels,
    /// e.g. gpu,region=eu (worker.capabilities).
    #[arg(long)]
    capabilities: Option<String>,
    /// Resource capacities, comma-separated name=amount, e.g. cpu=4,memory_mb=8192
    /// (worker.resources).
    #[arg(long)]
    resources: Option<String>,
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
    let (k, v) = s.split_once('=').ok_or("expected KEY=VALUE")?;
    Ok((k.trim().to_owned(), v.to_owned()))
}

impl Args {
    fn overrides(&self) -> Vec<(String, String)> {
        let shell = self.enable_shell.then(|| "true".to_owned());
        let flags = [
            ("kafka.bootstrap", &self.bootstrap),
            ("worker.node_id", &self.node_id),
            ("worker.concurrency", &self.concurrency),
            ("worker.types", &self.types),
            ("worker.capabilities", &self.capabilities),
            ("worker.resources", &self.resources),
            ("worker.enable_shell", &shell),
            ("worker.http_addr", &self.http_addr),
        ];
        let flags = flags
            .into_iter()
            .filter_map(|(k, v)| Some((k.to_owned(), v.clone()?)));
        self.set.iter().cloned().chain(flags).collect()
    }
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let config = WeftConfig::from_process(args.config.as_deref(), &args.overrides())
        .unwrap_or_else(|e| fail(&e, 2));
    if args.dump_config {
        print!("{}", config.to_toml());
        return;
    }
    weft_shared::telemetry::init_logging(&config.log);
    let worker = Worker::builder(config)
        .with_builtins()
        .build()
        .unwrap_or_else(|e| fail(&e, 2));
    if let Err(e) = worker.run(shutdown_signal()).await {
        fail(&e, 1);
    }
}

/// Prints `e` as one line on stderr and exits: 2 for bad arguments or configuration, else 1.
fn fail(e: &dyn std::fmt::Display, code: i32) -> ! {
    eprintln!("weft-worker: {e}");
    std::process::exit(code)
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("install SIGTERM handler");
    tokio::select! {
        _ = term.recv() => tracing::info!("sigterm received, shutting down"),
        _ = tokio::signal::ctrl_c() => tracing::info!("sigint received, shutting down"),
    }
}
