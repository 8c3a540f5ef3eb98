//! Layered configuration of the orchestrator and worker binaries. Layers, lowest
//! precedence first: the embedded defaults (`shared/default.toml`), an optional
//! TOML file, `WEFT_*` environment variables, and explicit overrides from
//! command-line flags. Unknown keys are rejected in every layer, naming the key
//! and the layer it came from; see [`load`].

mod layers;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::model::string_enum;

/// The embedded defaults: every configuration key with its default value.
pub const DEFAULT_TOML: &str = include_str!("../default.toml");

/// Environment variables that start with `WEFT_` but are not configuration keys.
pub const IGNORED_ENV: &[&str] = &[
    "WEFT_CONFIG",
    "WEFT_API",
    "WEFT_CACHE_DIR",
    "WEFT_TANSU_BIN",
    "WEFT_LOG",
    // The `ledger` built-in's fallback directory, read by the worker's handler.
    "WEFT_LEDGER_DIR",
];

/// Prefixes of environment variables that are not configuration keys.
pub const IGNORED_ENV_PREFIXES: &[&str] = &["WEFT_TEST_", "WEFT_BENCH_"];

string_enum!(
    /// Whether producers use Kafka transactions.
    TransactionsMode {
        Auto = "auto",
        On = "on",
        Off = "off",
    }
);

string_enum!(
    /// Whether workarounds for development brokers (Tansu) are on: rejoining
    /// a group whose rebalance never finishes, and the worker's orphan watch.
    /// `auto` turns them on for a broker detected as Tansu, off for Kafka.
    BrokerWorkarounds {
        Auto = "auto",
        On = "on",
        Off = "off",
    }
);

string_enum!(
    /// The format of log lines.
    LogFormat {
        Text = "text",
        Json = "json",
    }
);

/// The whole configuration of a Weft process.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WeftConfig {
    /// Broker connection and topic layout.
    pub kafka: KafkaSettings,
    /// Settings of the orchestrator binary.
    pub orchestrator: OrchestratorSettings,
    /// How the orchestrator's HTTP API is reached.
    pub api: ApiSettings,
    /// Settings of the worker binary.
    pub worker: WorkerSettings,
    /// Logging.
    pub log: LogSettings,
    /// Keys of the workflow secrets' envelope encryption.
    pub secrets: SecretsSettings,
    /// Authentication and authorization of the HTTP API.
    pub auth: AuthSettings,
}

/// The `[secrets]` section: where the key-encryption keys of workflow
/// secrets come from (see [`crate::secrets::Keyring`]). `Debug` redacts `keys`.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretsSettings {
    /// A file of `key_id=base64` lines, or a directory with one file per key
    /// id (a mounted Kubernetes Secret); empty: none.
    pub keys_file: String,
    /// `key_id=base64` pairs separated by commas (usually `WEFT_SECRETS_KEYS`); a secret.
    pub keys: String,
    /// The key id new secrets are sealed with; empty: the only key loaded.
    pub active_key: String,
}

impl fmt::Debug for SecretsSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let SecretsSettings {
            keys_file,
            keys,
            active_key,
        } = self;
        f.debug_struct("SecretsSettings")
            .field("keys_file", keys_file)
            .field("keys", &redact_nonempty(keys))
            .field("active_key", active_key)
            .finish()
    }
}

fn redact_nonempty(s: &str) -> &str {
    if s.is_empty() {
        ""
    } else {
        REDACTED
    }
}

/// The `[auth]` section: who may call the HTTP API (see ADR 0015).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSettings {
    /// Whether requests must authenticate; off logs a warning at start.
    pub enabled: bool,
    /// The policy: namespaces, roles, and hashed bearer tokens (TOML).
    pub policy_file: String,
    /// A JWKS file whose keys verify JWT bearer tokens; empty: no JWT.
    pub jwks_file: String,
    /// The `iss` a JWT must carry; empty: any.
    pub jwt_issuer: String,
    /// The `aud` a JWT must carry; empty: any.
    pub jwt_audience: String,
}

/// What every printed or logged configuration shows instead of a secret.
pub const REDACTED: &str = "<redacted>";

/// Whether the librdkafka property `name` holds a secret (a password, a client
/// secret, key material), never to be printed or logged:
/// `sasl.password`, `ssl.key.password`, `ssl.keystore.password`,
/// `sasl.oauthbearer.client.secret`, `ssl.key.pem`, `sasl.oauthbearer.config`, ...
pub fn is_secret_property(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    ["password", "secret", "credential", "private"]
        .iter()
        .any(|w| n.contains(w))
        || n.contains("key.pem")
        || n.contains("keystore.")
        || n == "ssl_key"
        || n == "sasl.oauthbearer.config"
}

/// `properties` with the value of every secret ([`is_secret_property`])
/// replaced by [`REDACTED`].
pub fn redacted_properties(properties: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    properties
        .iter()
        .map(|(k, v)| {
            let shown = if is_secret_property(k) {
                REDACTED.to_owned()
            } else {
                v.clone()
            };
            (k.clone(), shown)
        })
        .collect()
}

/// The `[kafka]` section. Its `Debug` redacts secret properties.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSettings {
    /// Broker list (`host:port`, comma-separated).
    pub bootstrap: String,
    /// Prefix of every topic name.
    pub topic_prefix: String,
    /// Partitions of topics Weft creates.
    pub partitions: i32,
    /// Replication factor of topics Weft creates (-1: the broker's default).
    pub replication_factor: i32,
    /// Kafka transactions for exactly-once output.
    pub transactions: TransactionsMode,
    /// `fetch.wait.max.ms` of consumers.
    pub fetch_wait_max_ms: u32,
    /// Workarounds for development brokers (see [`BrokerWorkarounds`]).
    pub broker_workarounds: BrokerWorkarounds,
    /// librdkafka properties passed as-is (`security.protocol`, `sasl.*`, `ssl.*`, ...).
    pub properties: BTreeMap<String, String>,
}

impl fmt::Debug for KafkaSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Exhaustive: a new field must be added here (and redacted if secret).
        let KafkaSettings {
            bootstrap,
            topic_prefix,
            partitions,
            replication_factor,
            transactions,
            fetch_wait_max_ms,
            broker_workarounds,
            properties,
        } = self;
        f.debug_struct("KafkaSettings")
            .field("bootstrap", bootstrap)
            .field("topic_prefix", topic_prefix)
            .field("partitions", partitions)
            .field("replication_factor", replication_factor)
            .field("transactions", transactions)
            .field("fetch_wait_max_ms", fetch_wait_max_ms)
            .field("broker_workarounds", broker_workarounds)
            .field("properties", &redacted_properties(properties))
            .finish()
    }
}

/// The `[orchestrator]` section.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrchestratorSettings {
    /// Node id; empty means derived from the host name at start-up.
    pub node_id: String,
    /// Directory of the local state store.
    pub data_dir: PathBuf,
    /// Address of the HTTP API, metrics and health endpoints.
    pub http_addr: String,
    /// Kafka consumer group of orchestrators.
    pub group_id: String,
    /// Most records processed per batch.
    pub batch_max: usize,
    /// A snapshot of an instance is taken every this many events (0: never).
    pub snapshot_every: u64,
    /// OpenTelemetry collector base URL the traces of ended workflows are
    /// pushed to (OTLP/HTTP JSON); empty: none.
    pub otlp_endpoint: String,
    /// How long a task no live worker can run waits before it is reported (ms).
    pub unschedulable_after_ms: u64,
}

/// The `[api]` section.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiSettings {
    /// Base URL other orchestrator replicas forward requests to; empty means
    /// `http://<orchestrator.http_addr>` (see [`ApiSettings::advertised`]).
    pub advertise_url: String,
    /// Largest request body accepted (bytes).
    pub max_body_bytes: usize,
    /// Largest request line plus headers accepted (bytes).
    pub max_header_bytes: usize,
    /// Starts and signals per caller and minute (0: no limit).
    pub rate_limit_per_minute: u32,
    /// How long a client may take to send a request body (ms).
    pub body_timeout_ms: u64,
    /// How long a client may take to send the request line and headers, and
    /// to finish the TLS handshake (ms); the connection is closed after it.
    pub header_timeout_ms: u64,
    /// The API's certificate chain (PEM); empty: plain HTTP.
    pub tls_cert_file: String,
    /// The API certificate's private key (PEM).
    pub tls_key_file: String,
    /// The CA whose client certificates are accepted (mTLS); empty: none.
    pub tls_client_ca_file: String,
    /// With a client CA: whether a handshake without a client certificate is refused.
    pub tls_require_client_cert: bool,
    /// The CA trusted for other replicas' server certificates when forwarding;
    /// empty: `tls_client_ca_file`.
    pub tls_ca_file: String,
    /// The certificate a replica presents when forwarding; empty: `tls_cert_file`.
    pub tls_forward_cert_file: String,
    /// Its key; empty: `tls_key_file`.
    pub tls_forward_key_file: String,
    /// Subjects of replicas' forwarding certificates; empty: this replica's own.
    pub tls_replica_subjects: Vec<String>,
}

impl ApiSettings {
    /// Whether the API is served over TLS.
    pub fn tls(&self) -> bool {
        !self.tls_cert_file.trim().is_empty()
    }

    /// The base URL to advertise for an API listening on `http_addr`.
    pub fn advertised(&self, http_addr: &str) -> String {
        let url = self.advertise_url.trim().trim_end_matches('/');
        if url.is_empty() {
            let scheme = if self.tls() { "https" } else { "http" };
            format!("{scheme}://{http_addr}")
        } else {
            url.to_owned()
        }
    }
}

/// The `[worker]` section.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerSettings {
    /// Node id; empty means derived from the host name at start-up.
    pub node_id: String,
    /// Kafka consumer group of workers.
    pub group_id: String,
    /// Tasks run at the same time.
    pub concurrency: usize,
    /// Workflow types served; empty means every type.
    pub types: Vec<String>,
    /// Capabilities offered besides the handlers: names and `key=value` labels.
    pub capabilities: Vec<String>,
    /// Resource capacities as `name=amount`.
    pub resources: Vec<String>,
    /// Whether the built-in `shell` handler may run commands.
    pub enable_shell: bool,
    /// Hosts the built-in `http` handler may call; empty: any.
    pub http_allow_hosts: Vec<String>,
    /// Extra CA certificates (PEM) the `http` handler trusts.
    pub http_ca_file: String,
    /// Address of the metrics and health endpoints.
    pub http_addr: String,
    /// How long running tasks may take to finish on shutdown, in milliseconds.
    pub shutdown_grace_ms: u64,
}

/// The `[log]` section.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    /// Log filter: a level or `tracing` directives.
    pub level: String,
    /// Log line format.
    pub format: LogFormat,
}

/// Where a configuration value came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    /// The embedded defaults.
    Default,
    /// A configuration file.
    File(PathBuf),
    /// An environment variable.
    Env(String),
    /// An explicit override (a command-line flag).
    Override,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Default => f.write_str("in the built-in defaults"),
            Origin::File(path) => write!(f, "in {}", path.display()),
            Origin::Env(var) => write!(f, "from {var}"),
            Origin::Override => f.write_str("from the command line"),
        }
    }
}

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The configuration file could not be read.
    #[error("cannot read configuration file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The configuration file is not valid TOML.
    #[error("invalid TOML in {}: {message}", path.display())]
    Toml { path: PathBuf, message: String },
    /// A file or override names a key that does not exist.
    #[error("unknown configuration key '{key}' {origin}")]
    UnknownKey { key: String, origin: Origin },
    /// A `WEFT_*` environment variable matches no key.
    #[error("unknown environment variable {var} (no such configuration key)")]
    UnknownEnv { var: String },
    /// A `WEFT_*` environment variable's value is not UTF-8.
    #[error("environment variable {var} is not valid UTF-8")]
    NotUnicode { var: String },
    /// A value does not fit its key's type.
    #[error("invalid value '{value}' for {key} {origin}: {expected}")]
    InvalidValue {
        key: String,
        value: String,
        origin: Origin,
        expected: String,
    },
    /// The merged configuration breaks a rule (`kafka.partitions` ≥ 1, ...).
    #[error("invalid configuration: {key} {message} (got '{value}' {origin})")]
    Invalid {
        key: String,
        message: String,
        value: String,
        origin: Origin,
    },
}

/// Loads the configuration: defaults, then `file`, then the `WEFT_*` entries of
/// `env`, then `overrides` (`("kafka.bootstrap", "host:9092")`); later layers win.
pub fn load(
    file: Option<&Path>,
    env: impl IntoIterator<Item = (String, String)>,
    overrides: &[(String, String)],
) -> Result<WeftConfig, ConfigError> {
    let mut merged = layers::Merged::new()?;
    if let Some(path) = file {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let table: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| ConfigError::Toml {
                path: path.to_owned(),
                message: e.to_string().trim_end().to_owned(),
            })?;
        merged.apply_file(table, path)?;
    }
    let mut env: Vec<(String, String)> = env
        .into_iter()
        .filter(|(k, _)| k.starts_with("WEFT_"))
        .collect();
    env.sort();
    for (var, value) in &env {
        merged.apply_env(var, value)?;
    }
    for (key, value) in overrides {
        merged.apply_override(key, value)?;
    }
    let config = merged.build()?;
    config.check(|key| merged.origin(key))?;
    Ok(config)
}

impl WeftConfig {
    /// [`load`] with the process environment.
    pub fn from_process(
        file: Option<&Path>,
        overrides: &[(String, String)],
    ) -> Result<Self, ConfigError> {
        let mut env = Vec::new();
        for (name, value) in std::env::vars_os() {
            let Some(name) = name.to_str().filter(|n| n.starts_with("WEFT_")) else {
                continue;
            };
            let value = value.into_string().map_err(|_| ConfigError::NotUnicode {
                var: name.to_owned(),
            })?;
            env.push((name.to_owned(), value));
        }
        load(file, env, overrides)
    }

    /// The configuration as TOML (for `--dump-config`), with every secret
    /// property ([`is_secret_property`]) shown as [`REDACTED`]; loading it
    /// gives `self` back when it holds no secret.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(&self.redacted())
            .unwrap_or_else(|e| format!("# cannot render the configuration: {e}\n"))
    }

    /// A copy to print or log: secret properties replaced by [`REDACTED`].
    pub fn redacted(&self) -> WeftConfig {
        let mut c = self.clone();
        c.kafka.properties = redacted_properties(&self.kafka.properties);
        c.secrets.keys = redact_nonempty(&self.secrets.keys).to_owned();
        c
    }

    /// The rules no single value's type can express.
    fn check(&self, origin: impl Fn(&str) -> Origin) -> Result<(), ConfigError> {
        let fail = |key: &str, message: &str, value: &dyn fmt::Display| {
            Err(ConfigError::Invalid {
                key: key.to_owned(),
                message: message.to_owned(),
                value: value.to_string(),
                origin: origin(key),
            })
        };
        let k = &self.kafka;
        if k.bootstrap.trim().is_empty() {
            return fail("kafka.bootstrap", "must not be empty", &k.bootstrap);
        }
        let prefix_ok = (1..=100).contains(&k.topic_prefix.len())
            && k.topic_prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
        if !prefix_ok {
            return fail(
                "kafka.topic_prefix",
                "must be 1-100 of [A-Za-z0-9._-]",
                &k.topic_prefix,
            );
        }
        if k.partitions < 1 {
            return fail("kafka.partitions", "must be at least 1", &k.partitions);
        }
        if k.replication_factor < 1 && k.replication_factor != -1 {
            return fail(
                "kafka.replication_factor",
                "must be at least 1 (or -1 for the broker's default)",
                &k.replication_factor,
            );
        }
        if self.orchestrator.batch_max < 1 {
            return fail(
                "orchestrator.batch_max",
                "must be at least 1",
                &self.orchestrator.batch_max,
            );
        }
        let url = self.api.advertise_url.trim();
        if !(url.is_empty() || url.starts_with("http://") || url.starts_with("https://")) {
            return fail(
                "api.advertise_url",
                "must be empty or an http:// or https:// URL",
                &self.api.advertise_url,
            );
        }
        let otlp = self.orchestrator.otlp_endpoint.trim();
        if !(otlp.is_empty() || otlp.starts_with("http://")) {
            return fail(
                "orchestrator.otlp_endpoint",
                "must be empty or an http:// URL (the collector's OTLP/HTTP port, e.g. http://collector:4318)",
                &self.orchestrator.otlp_endpoint,
            );
        }
        if self.worker.concurrency < 1 {
            return fail(
                "worker.concurrency",
                "must be at least 1",
                &self.worker.concurrency,
            );
        }
        if let Err(e) = crate::lanes::NodeCapabilities::declared(
            &self.worker.capabilities,
            &[],
            self.worker.concurrency,
        ) {
            return fail(
                "worker.capabilities",
                &e.to_string(),
                &self.worker.capabilities.join(","),
            );
        }
        if let Err(e) = crate::lanes::NodeCapabilities::declared(
            &[],
            &self.worker.resources,
            self.worker.concurrency,
        ) {
            return fail(
                "worker.resources",
                &e.to_string(),
                &self.worker.resources.join(","),
            );
        }
        Ok(())
    }
}

impl Default for WeftConfig {
    /// The embedded defaults (a unit test checks they load).
    fn default() -> Self {
        load(None, Vec::new(), &[]).expect("the built-in defaults are valid")
    }
}

#[cfg(test)]
mod tests;
