//! A real Kafka-compatible broker for one test: Tansu on a free loopback port,
//! storing its data in a SQLite file in a temporary directory (so it survives a
//! broker restart within the test), killed when dropped. [`Broker::start_with`]
//! can pick Tansu's memory engine instead (benchmarks: nothing survives a restart).

use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context, Result};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::types::RDKafkaErrorCode;
use tempfile::TempDir;

use crate::paths::{free_port, tansu_bin};
use crate::process::{Process, ProcessSpec};

/// The indexes Tansu's schema lacks, shared with `scripts/broker.sh`.
const TANSU_INDEXES: &str = include_str!("../../scripts/tansu-indexes.sql");

/// How long a broker may take to answer after it is started.
pub const BROKER_READY_TIMEOUT: Duration = Duration::from_secs(60);

/// Where Tansu keeps its data.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BrokerStorage {
    /// A SQLite file in the broker's directory (`sqlite://tansu.db`), as `make run` starts it.
    #[default]
    Sqlite,
    /// Tansu's memory engine (`memory://tansu/`; needs a Tansu built with the
    /// `dynostore` feature). Lost when the broker stops.
    Memory,
}

impl BrokerStorage {
    /// The `--storage-engine` URL.
    pub fn url(self) -> &'static str {
        match self {
            BrokerStorage::Sqlite => "sqlite://tansu.db",
            BrokerStorage::Memory => "memory://tansu/",
        }
    }

    /// `sqlite` or `memory`, for messages.
    pub fn name(self) -> &'static str {
        match self {
            BrokerStorage::Sqlite => "sqlite",
            BrokerStorage::Memory => "memory",
        }
    }
}

/// How to start a [`Broker`]: the defaults are what every test uses.
#[derive(Clone, Debug, Default)]
pub struct BrokerOptions {
    pub storage: BrokerStorage,
    /// The Tansu binary; `None`: [`tansu_bin`].
    pub tansu_bin: Option<PathBuf>,
}

/// A running Tansu broker. Dropping it kills the process and deletes its data
/// (kept, and its path printed, if the test is panicking).
#[derive(Debug)]
pub struct Broker {
    // Field order matters: the process is killed before its directory is removed.
    process: Process,
    port: u16,
    dir: TempDir,
}

impl Broker {
    /// Starts a broker on a free loopback port and waits until it answers a
    /// metadata request. Retries with another port if the first one was taken
    /// between picking and binding it.
    ///
    /// Panics if the Tansu binary is missing (run `make setup`).
    pub async fn start() -> Result<Self> {
        Self::start_with(BrokerOptions::default()).await
    }

    /// [`start`](Self::start) with another storage engine or Tansu binary.
    pub async fn start_with(opts: BrokerOptions) -> Result<Self> {
        let bin = opts.tansu_bin.clone().unwrap_or_else(tansu_bin);
        let mut last_err = None;
        for _attempt in 0..3 {
            let dir = tempfile::Builder::new()
                .prefix("weft-broker-")
                .tempdir()
                .context("creating broker temp dir")?;
            let port = free_port();
            let url = format!("tcp://127.0.0.1:{port}");
            let spec = ProcessSpec::new("broker", &bin)
                .args([
                    "broker",
                    "--listener-url",
                    &url,
                    "--advertised-listener-url",
                    &url,
                ])
                // The path is relative to the broker's working directory.
                .args(["--storage-engine", opts.storage.url()])
                .env(
                    "RUST_LOG",
                    std::env::var("WEFT_TEST_TANSU_LOG").unwrap_or_else(|_| "warn".into()),
                )
                .current_dir(dir.path());
            let process = Process::spawn(spec, dir.path())?;
            let mut broker = Broker { process, port, dir };
            match broker.wait_ready(BROKER_READY_TIMEOUT).await {
                Ok(()) => {
                    if opts.storage == BrokerStorage::Sqlite {
                        broker.add_indexes()?;
                    }
                    return Ok(broker);
                }
                // It exited: most likely the port was taken meanwhile, so try another one.
                Err(e) if !broker.process.is_running() => {
                    broker.process.kill9(); // an exit this start already reports
                    last_err = Some(e);
                }
                Err(e) => {
                    broker.process.kill9();
                    return Err(e);
                }
            }
        }
        Err(last_err.unwrap_or_else(|| anyhow!("the broker did not start")))
    }

    /// `127.0.0.1:<port>`, for `bootstrap.servers` and `--bootstrap`.
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The directory holding the SQLite file and the broker's log.
    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn process(&self) -> &Process {
        &self.process
    }

    pub fn process_mut(&mut self) -> &mut Process {
        &mut self.process
    }

    /// Kills the broker with SIGKILL (its data stays).
    pub fn kill9(&mut self) {
        self.process.kill9();
    }

    /// Starts the broker again on the same port and data, and waits until it answers.
    pub async fn restart(&mut self) -> Result<()> {
        self.process.restart()?;
        self.wait_ready(BROKER_READY_TIMEOUT).await
    }

    /// Adds the index Tansu's SQLite schema lacks (`scripts/tansu-indexes.sql`:
    /// without it every fetched record scans all headers, and replays go
    /// quadratic). Needs the `sqlite3` command, which `make setup` installs.
    fn add_indexes(&self) -> Result<()> {
        let db = self.dir.path().join("tansu.db");
        let mut child = std::process::Command::new("sqlite3")
            .args(["-cmd", ".timeout 10000"])
            .arg(&db)
            .stdin(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .context("running sqlite3 to index the broker's SQLite file (run `make setup`)")?;
        {
            use std::io::Write;
            let mut stdin = child.stdin.take().context("sqlite3 stdin")?;
            stdin.write_all(TANSU_INDEXES.as_bytes())?;
        }
        let out = child.wait_with_output()?;
        if !out.status.success() {
            bail!(
                "sqlite3 could not index {}: {}",
                db.display(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }

    /// Waits until the broker accepts TCP connections and answers a metadata
    /// request, or fails (with the log tail) if it exits or `timeout` passes.
    pub async fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        let mut last = String::from("not tried yet");
        loop {
            if let Some(status) = self.process.try_exit_status() {
                bail!(
                    "the broker exited ({status}) while starting\n{}",
                    self.process.log_tail(40)
                );
            }
            if Instant::now() >= deadline {
                bail!(
                    "the broker on {addr} did not answer within {timeout:?} (last: {last})\n{}",
                    self.process.log_tail(40)
                );
            }
            match TcpStream::connect_timeout(&addr, Duration::from_millis(500)) {
                Err(e) => last = format!("connect: {e}"),
                Ok(_) => {
                    let bootstrap = self.bootstrap();
                    match tokio::task::spawn_blocking(move || fetch_broker_count(&bootstrap))
                        .await?
                    {
                        Ok(n) if n > 0 => return Ok(()),
                        Ok(_) => last = "metadata lists no brokers".into(),
                        Err(e) => last = format!("metadata: {e:#}"),
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A client configuration for this broker: `bootstrap.servers`, and
    /// `fetch.wait.max.ms=10` (Tansu's fetch long-poll does not wake on new data).
    pub fn client_config(&self) -> ClientConfig {
        client_config(&self.bootstrap())
    }

    /// Creates a topic with `partitions` partitions (an existing one is left alone).
    pub async fn create_topic(&self, name: &str, partitions: i32) -> Result<()> {
        create_topic(&self.bootstrap(), name, partitions).await
    }

    /// The high watermark (the offset the next record gets) of every partition
    /// of `topic`, in partition order.
    pub async fn high_watermarks(&self, topic: &str) -> Result<Vec<i64>> {
        high_watermarks(&self.bootstrap(), topic).await
    }
}

/// The high watermark of every partition of `topic` on `bootstrap`, in partition order.
pub async fn high_watermarks(bootstrap: &str, topic: &str) -> Result<Vec<i64>> {
    let (bootstrap, topic) = (bootstrap.to_owned(), topic.to_owned());
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = client_config(&bootstrap).create()?;
        let md = consumer.fetch_metadata(Some(&topic), Duration::from_secs(10))?;
        let partitions = md
            .topics()
            .first()
            .map_or(0, |t| t.partitions().len() as i32);
        ensure!(partitions > 0, "{topic} has no partitions");
        (0..partitions)
            .map(|p| {
                let (_, high) = consumer
                    .fetch_watermarks(&topic, p, Duration::from_secs(10))
                    .with_context(|| format!("watermarks of {topic}/{p}"))?;
                Ok(high)
            })
            .collect()
    })
    .await?
}

impl Drop for Broker {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.dir.disable_cleanup(true);
            eprintln!("broker data and log kept in {}", self.dir.path().display());
        }
    }
}

/// A client configuration for `bootstrap`, with `fetch.wait.max.ms=10`.
pub fn client_config(bootstrap: &str) -> ClientConfig {
    let mut cfg = ClientConfig::new();
    cfg.set("bootstrap.servers", bootstrap)
        .set("fetch.wait.max.ms", "10")
        .set_log_level(RDKafkaLogLevel::Error);
    cfg
}

/// Creates `name` with `partitions` partitions and replication factor 1 on
/// `bootstrap`; an existing topic is left alone (Tansu does not create topics
/// on first use).
pub async fn create_topic(bootstrap: &str, name: &str, partitions: i32) -> Result<()> {
    let admin: AdminClient<DefaultClientContext> = client_config(bootstrap).create()?;
    let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    for result in admin
        .create_topics([&topic], &opts)
        .await
        .context("CreateTopics")?
    {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => bail!("creating topic {topic}: {code}"),
        }
    }
    Ok(())
}

/// Fetches cluster metadata once (blocking) and returns how many brokers it lists.
fn fetch_broker_count(bootstrap: &str) -> Result<usize> {
    let consumer: BaseConsumer = client_config(bootstrap).create()?;
    let md = consumer.fetch_metadata(None, Duration::from_secs(3))?;
    Ok(md.brokers().len())
}
