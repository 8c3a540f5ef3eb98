//! A whole Weft deployment for one test: a [`Broker`], N `weft-orchestrator`
//! processes (each with its own data dir and HTTP port) and M `weft-worker`
//! processes, all on loopback, all logging into one temporary directory.
//! [`TestCluster::start`] returns once every orchestrator's `/readyz` says 200.
//! Orchestrators can join later ([`TestCluster::add_orchestrator`],
//! [`TestCluster::launch_orchestrator`]) and be SIGKILLed for good
//! ([`TestCluster::kill_orchestrator`]) or restarted. Workers can differ:
//! [`ClusterOptions::worker_args_for`] gives worker `i` arguments of its own
//! (`--capabilities gpu`, `--resources cpu=4`), and
//! [`TestCluster::add_worker_with`] starts one more with its own.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use tempfile::TempDir;

use crate::api::ApiClient;
use crate::broker::{Broker, BrokerOptions};
use crate::paths::{bin_path, free_addr};
use crate::process::{Process, ProcessSpec};

/// `WEFT_*` variables of the repository's scripts that are no configuration keys
/// (the binaries reject unknown `WEFT_*` variables), removed from their environment.
pub const SCRIPT_ONLY_ENV: &[&str] = &[
    "WEFT_BROKER_PORT",
    "WEFT_DEV_API_ADDR",
    "WEFT_DEV_WORKER_ADDR",
    "WEFT_DEV_READY_SECONDS",
];

/// What the orchestrator logs when `--rebuild` discarded its projections.
pub const REBUILD_LOG_LINE: &str = "projections discarded; rebuilding from the topics";

/// What to start.
#[derive(Clone, Debug)]
pub struct ClusterOptions {
    /// How many orchestrators (default 1).
    pub orchestrators: usize,
    /// How many workers (default 1).
    pub workers: usize,
    /// Extra arguments for every orchestrator.
    pub orchestrator_args: Vec<String>,
    /// Extra arguments for every worker.
    pub worker_args: Vec<String>,
    /// Extra arguments for worker `i` only (after [`worker_args`](Self::worker_args)),
    /// by index; see [`worker_args_for`](Self::worker_args_for).
    pub per_worker_args: Vec<Vec<String>>,
    /// Extra environment for every Weft process (e.g. `WEFT_*` settings, `WEFT_LOG`).
    pub env: Vec<(String, String)>,
    /// How long each process may take to answer `/readyz` with 200 (default 120 s).
    pub ready_timeout: Duration,
    /// How the broker is started (default: Tansu on SQLite).
    pub broker: BrokerOptions,
    /// With the orchestrators' API served over TLS (their `api.tls_*`
    /// settings are the test's to pass): the client that reaches it (trusting
    /// the test CA, with a client certificate for mTLS). Orchestrators' URLs
    /// are then `https://`, and readiness and [`TestCluster::api_at`] use it.
    pub api_http: Option<reqwest::Client>,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        Self {
            orchestrators: 1,
            workers: 1,
            orchestrator_args: Vec::new(),
            worker_args: Vec::new(),
            per_worker_args: Vec::new(),
            env: Vec::new(),
            ready_timeout: Duration::from_secs(120),
            broker: BrokerOptions::default(),
            api_http: None,
        }
    }
}

impl ClusterOptions {
    /// `orchestrators` orchestrators and `workers` workers, defaults otherwise.
    pub fn new(orchestrators: usize, workers: usize) -> Self {
        Self {
            orchestrators,
            workers,
            ..Self::default()
        }
    }

    /// Adds an environment variable for every Weft process.
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Adds arguments for worker `i` only (`worker-<i>`), after those of every
    /// worker: `opts.worker_args_for(0, ["--capabilities", "gpu"])`.
    pub fn worker_args_for<I, S>(mut self, i: usize, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        if self.per_worker_args.len() <= i {
            self.per_worker_args.resize(i + 1, Vec::new());
        }
        self.per_worker_args[i].extend(args.into_iter().map(Into::into));
        self
    }

    /// The API is served over TLS and reached with `http` (see [`Self::api_http`]).
    pub fn api_tls(mut self, http: reqwest::Client) -> Self {
        self.api_http = Some(http);
        self
    }

    /// Adds arguments for every orchestrator (`--set orchestrator.x=y`).
    pub fn orchestrator_args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.orchestrator_args
            .extend(args.into_iter().map(Into::into));
        self
    }
}

/// Which binary a [`Node`] runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeKind {
    Orchestrator,
    Worker,
}

/// One Weft process of the cluster.
#[derive(Debug)]
pub struct Node {
    process: Process,
    kind: NodeKind,
    node_id: String,
    http_addr: SocketAddr,
    data_dir: Option<PathBuf>,
    /// The client of an API served over TLS (see [`ClusterOptions::api_http`]).
    api_http: Option<reqwest::Client>,
}

impl Node {
    pub fn kind(&self) -> NodeKind {
        self.kind
    }

    /// The `--node-id` it was started with (`orchestrator-0`, `worker-1`, …).
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// Its `--http-addr`.
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// `http://<http_addr>` (`https://` for an orchestrator whose API is served over TLS).
    pub fn http_url(&self) -> String {
        let scheme = if self.api_http.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{}", self.http_addr)
    }

    /// A client of the node's HTTP endpoints (its API for an orchestrator).
    pub fn client(&self) -> ApiClient {
        match &self.api_http {
            Some(http) => ApiClient::with_http(self.http_url(), http.clone()),
            None => ApiClient::new(self.http_url()),
        }
    }

    /// The orchestrator's `--data-dir` (RocksDB); `None` for workers.
    pub fn data_dir(&self) -> Option<&Path> {
        self.data_dir.as_deref()
    }

    pub fn process(&self) -> &Process {
        &self.process
    }

    /// For `kill9()`, `terminate()`, `restart()`, log access.
    pub fn process_mut(&mut self) -> &mut Process {
        &mut self.process
    }
}

/// A broker plus orchestrators and workers. Dropping it kills everything and
/// removes the directory (kept, and its path printed, if the test is panicking).
#[derive(Debug)]
pub struct TestCluster {
    // Field order matters: processes die before the broker, the directory goes last.
    orchestrators: Vec<Node>,
    workers: Vec<Node>,
    broker: Broker,
    opts: ClusterOptions,
    dir: TempDir,
}

impl TestCluster {
    /// Starts a broker, then the orchestrators and workers of `opts`, and waits
    /// until every one of them answers `/readyz` with 200.
    ///
    /// Panics if a binary is missing (build with `cargo build --workspace --bins`).
    pub async fn start(opts: ClusterOptions) -> Result<Self> {
        let broker = Broker::start_with(opts.broker.clone()).await?;
        let dir = tempfile::Builder::new()
            .prefix("weft-cluster-")
            .tempdir()
            .context("creating cluster temp dir")?;
        let mut cluster = TestCluster {
            orchestrators: Vec::new(),
            workers: Vec::new(),
            broker,
            opts,
            dir,
        };
        for _ in 0..cluster.opts.orchestrators {
            cluster.spawn_orchestrator()?;
        }
        for _ in 0..cluster.opts.workers {
            cluster.spawn_worker()?;
        }
        for i in 0..cluster.orchestrators.len() {
            cluster.wait_ready(i).await?;
        }
        for i in 0..cluster.workers.len() {
            cluster.wait_worker_ready(i).await?;
        }
        Ok(cluster)
    }

    fn spec(&self, kind: NodeKind, node_id: &str, http_addr: SocketAddr) -> ProcessSpec {
        let (bin, extra) = match kind {
            NodeKind::Orchestrator => ("weft-orchestrator", &self.opts.orchestrator_args),
            NodeKind::Worker => ("weft-worker", &self.opts.worker_args),
        };
        let mut spec = ProcessSpec::new(node_id, bin_path(bin))
            .args(["--bootstrap", &self.broker.bootstrap()])
            .args(["--http-addr", &http_addr.to_string()])
            .args(["--node-id", node_id])
            .current_dir(self.dir.path())
            .env("RUST_BACKTRACE", "1")
            // Plain log files: no ANSI colour escapes.
            .env("NO_COLOR", "1");
        // Weft's binaries reject unknown WEFT_* variables; these belong to the scripts.
        for var in SCRIPT_ONLY_ENV {
            spec = spec.env_remove(var);
        }
        for (k, v) in &self.opts.env {
            spec = spec.env(k, v);
        }
        spec.args(extra)
    }

    fn logs_dir(&self) -> PathBuf {
        self.dir.path().join("logs")
    }

    fn spawn_orchestrator(&mut self) -> Result<usize> {
        let i = self.orchestrators.len();
        let node_id = format!("orchestrator-{i}");
        let http_addr = free_addr();
        let data_dir = self.dir.path().join(&node_id).join("data");
        std::fs::create_dir_all(&data_dir)?;
        let spec = self
            .spec(NodeKind::Orchestrator, &node_id, http_addr)
            .arg("--data-dir")
            .arg(&data_dir);
        let process = Process::spawn(spec, &self.logs_dir())?;
        self.orchestrators.push(Node {
            process,
            kind: NodeKind::Orchestrator,
            node_id,
            http_addr,
            data_dir: Some(data_dir),
            api_http: self.opts.api_http.clone(),
        });
        Ok(i)
    }

    fn spawn_worker(&mut self) -> Result<usize> {
        let i = self.workers.len();
        let node_id = format!("worker-{i}");
        let http_addr = free_addr();
        let own = self
            .opts
            .per_worker_args
            .get(i)
            .cloned()
            .unwrap_or_default();
        let spec = self.spec(NodeKind::Worker, &node_id, http_addr).args(own);
        let process = Process::spawn(spec, &self.logs_dir())?;
        self.workers.push(Node {
            process,
            kind: NodeKind::Worker,
            node_id,
            http_addr,
            data_dir: None,
            api_http: None,
        });
        Ok(i)
    }

    /// Starts one more orchestrator, waits until it is ready, and returns its index.
    pub async fn add_orchestrator(&mut self) -> Result<usize> {
        let i = self.spawn_orchestrator()?;
        self.wait_ready(i).await?;
        Ok(i)
    }

    /// Starts one more orchestrator (own data dir and port, same group) without
    /// waiting for it, and returns its index; [`wait_ready`](Self::wait_ready) waits.
    pub fn launch_orchestrator(&mut self) -> Result<usize> {
        self.spawn_orchestrator()
    }

    /// SIGKILLs orchestrator `i` and leaves it down (its data dir stays; `process_mut().start()`
    /// brings it back).
    pub fn kill_orchestrator(&mut self, i: usize) {
        self.orchestrators[i].process.kill9();
    }

    /// Indices of the orchestrators whose process is running.
    pub fn running_orchestrators(&mut self) -> Vec<usize> {
        (0..self.orchestrators.len())
            .filter(|&i| self.orchestrators[i].process.is_running())
            .collect()
    }

    /// Starts one more worker, waits until it is ready, and returns its index.
    pub async fn add_worker(&mut self) -> Result<usize> {
        let i = self.spawn_worker()?;
        self.wait_worker_ready(i).await?;
        Ok(i)
    }

    /// Starts one more worker with `args` of its own (after those of every
    /// worker), waits until it is ready, and returns its index (its node id is
    /// `worker-<index>`).
    pub async fn add_worker_with<I, S>(&mut self, args: I) -> Result<usize>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let i = self.workers.len();
        self.opts = std::mem::take(&mut self.opts).worker_args_for(i, args);
        self.add_worker().await
    }

    /// Waits until orchestrator `i` answers `/readyz` with 200; fails (with its
    /// log tail) if it exits or the ready timeout passes.
    pub async fn wait_ready(&mut self, i: usize) -> Result<()> {
        let timeout = self.opts.ready_timeout;
        wait_node_ready(&mut self.orchestrators[i], timeout).await
    }

    /// Waits until worker `i` answers `/readyz` with 200 (its consumer is subscribed).
    pub async fn wait_worker_ready(&mut self, i: usize) -> Result<()> {
        let timeout = self.opts.ready_timeout;
        wait_node_ready(&mut self.workers[i], timeout).await
    }

    /// Kills orchestrator `i` with SIGKILL, starts it again on the same port and
    /// data dir, and waits until it is ready. Fails if it had crashed on its own.
    pub async fn restart_orchestrator(&mut self, i: usize) -> Result<()> {
        self.orchestrators[i].process.restart()?;
        self.wait_ready(i).await
    }

    /// Kills worker `i` with SIGKILL, starts it again, and waits until it is ready.
    /// Fails if it had crashed on its own.
    pub async fn restart_worker(&mut self, i: usize) -> Result<()> {
        self.workers[i].process.restart()?;
        self.wait_worker_ready(i).await
    }

    /// Restarts orchestrator `i` with `--rebuild` (SIGKILL, then a start that
    /// discards its projections) and waits until it is ready. Fails unless its
    /// log says the projections were discarded: a rebuild that deleted nothing
    /// would compare the old projection with itself.
    pub async fn rebuild_orchestrator(&mut self, i: usize) -> Result<()> {
        let process = &mut self.orchestrators[i].process;
        process.kill9();
        process.start_with(&["--rebuild"])?;
        self.wait_ready(i).await?;
        let log = self.orchestrators[i].process.current_log();
        if !log.contains(REBUILD_LOG_LINE) {
            bail!(
                "{} started with --rebuild but did not log '{REBUILD_LOG_LINE}'\n{}",
                self.orchestrators[i].node_id,
                self.orchestrators[i].process.log_tail(40)
            );
        }
        Ok(())
    }

    /// The sum of the samples of metric `name` on worker `i`'s `/metrics`.
    pub async fn worker_metric(&self, i: usize, name: &str) -> Result<f64> {
        self.worker_metric_labelled(i, name, "").await
    }

    /// The sum of the samples of metric `name` with `label` (`handler="sleep"`)
    /// on worker `i`'s `/metrics`.
    pub async fn worker_metric_labelled(&self, i: usize, name: &str, label: &str) -> Result<f64> {
        let text = ApiClient::new(self.workers[i].http_url()).metrics().await?;
        Ok(crate::api::metric_sum_labelled(&text, name, label).unwrap_or(0.0))
    }

    pub fn broker(&self) -> &Broker {
        &self.broker
    }

    /// For killing and restarting the broker.
    pub fn broker_mut(&mut self) -> &mut Broker {
        &mut self.broker
    }

    /// The broker's `127.0.0.1:<port>`.
    pub fn bootstrap(&self) -> String {
        self.broker.bootstrap()
    }

    /// The base URL of orchestrator `i`'s API: `http://127.0.0.1:<port>`.
    pub fn api_url(&self, i: usize) -> String {
        self.orchestrators[i].http_url()
    }

    /// An API client of orchestrator 0.
    pub fn api(&self) -> ApiClient {
        self.api_at(0)
    }

    /// An API client of orchestrator `i`.
    pub fn api_at(&self, i: usize) -> ApiClient {
        self.orchestrators[i].client()
    }

    pub fn orchestrators(&self) -> &[Node] {
        &self.orchestrators
    }

    pub fn orchestrator(&self, i: usize) -> &Node {
        &self.orchestrators[i]
    }

    pub fn orchestrator_mut(&mut self, i: usize) -> &mut Node {
        &mut self.orchestrators[i]
    }

    pub fn workers(&self) -> &[Node] {
        &self.workers
    }

    pub fn worker(&self, i: usize) -> &Node {
        &self.workers[i]
    }

    pub fn worker_mut(&mut self, i: usize) -> &mut Node {
        &mut self.workers[i]
    }

    /// The cluster's temporary directory (logs in `logs/`, orchestrator data in `orchestrator-N/`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Fails if any process of the cluster (broker included) exited without the
    /// test stopping it, or logged a panic. Tests call it at the end; dropping
    /// the cluster checks too.
    pub fn check_processes(&mut self) -> Result<()> {
        self.broker.process_mut().check()?;
        for node in self.orchestrators.iter_mut().chain(&mut self.workers) {
            node.process.check()?;
        }
        Ok(())
    }

    /// Prints the last `lines` lines of every process's log (broker included).
    pub fn print_logs(&self, lines: usize) {
        self.broker.process().print_log_tail(lines);
        for node in self.orchestrators.iter().chain(&self.workers) {
            node.process.print_log_tail(lines);
        }
    }
}

/// Waits until `node` answers `/readyz` with 200; fails (with its log tail) if it
/// exits or `timeout` passes.
pub async fn wait_node_ready(node: &mut Node, timeout: Duration) -> Result<()> {
    let api = node.client();
    let deadline = Instant::now() + timeout;
    loop {
        if api.is_ready().await {
            return Ok(());
        }
        if let Some(status) = node.process.try_exit_status() {
            bail!(
                "{} exited ({status}) before it was ready\n{}",
                node.node_id,
                node.process.log_tail(60)
            );
        }
        if Instant::now() >= deadline {
            bail!(
                "{} did not answer {}/readyz with 200 within {timeout:?}\n{}",
                node.node_id,
                api.base_url(),
                node.process.log_tail(60)
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            if let Err(e) = self.check_processes() {
                self.dir.disable_cleanup(true);
                eprintln!(
                    "cluster logs and data kept in {}",
                    self.dir.path().display()
                );
                panic!("{e:#}");
            }
        }
        if std::thread::panicking() {
            self.dir.disable_cleanup(true);
            eprintln!(
                "cluster logs and data kept in {}",
                self.dir.path().display()
            );
        }
    }
}
