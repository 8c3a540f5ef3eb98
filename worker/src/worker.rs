//! [`Worker`] and [`WorkerBuilder`]: register handlers (plain, serde-typed,
//! or the built-in kinds), check the configuration, then `run` until the
//! shutdown future resolves.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;
use weft_shared::config::WeftConfig;
use weft_shared::telemetry::node_id_or_default;

use crate::builtins;
use crate::context::TaskContext;
use crate::error::{TaskError, WorkerError};
use crate::handler::{Handler, Registry, Typed};
use crate::metrics::Metrics;

/// Builds a [`Worker`].
pub struct WorkerBuilder {
    config: WeftConfig,
    registry: Registry,
    builtins: bool,
    orphan_watch: (Duration, Duration),
    idle_watch: (Duration, Duration),
}

impl WorkerBuilder {
    /// Registers `handler` for tasks whose `handler` is `name` (replacing an earlier one).
    pub fn handler(mut self, name: impl Into<String>, handler: impl Handler) -> Self {
        self.registry.insert(name, Arc::new(handler));
        self
    }

    /// Registers a serde-typed handler: `In` is deserialized from the workflow
    /// input overlaid with the task parameters, `Out` must serialize to a map.
    pub fn typed_handler<In, Out, F, Fut>(self, name: impl Into<String>, f: F) -> Self
    where
        In: DeserializeOwned + Send + 'static,
        Out: Serialize + Send + 'static,
        F: Fn(TaskContext, In) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Out, TaskError>> + Send + 'static,
    {
        self.handler(name, Typed::<In, Out, F>::new(f))
    }

    /// Adds the built-in kinds (`noop`, `sleep`, `http`, `shell`, `fail`,
    /// `flaky`, `ledger`, `choose`) under
    /// any names not taken by registered handlers.
    pub fn with_builtins(mut self) -> Self {
        self.builtins = true;
        self
    }

    /// How often the orphan watch (a development-broker workaround) looks,
    /// and after how long without progress it calls a partition orphaned;
    /// defaults [`CHECK_EVERY`](crate::orphans::CHECK_EVERY) and
    /// [`ORPHAN_AFTER`](crate::orphans::ORPHAN_AFTER). For tests.
    #[doc(hidden)]
    pub fn orphan_watch(mut self, check_every: Duration, orphan_after: Duration) -> Self {
        self.orphan_watch = (check_every, orphan_after);
        self
    }

    /// How often the idle watch (a development-broker workaround) looks, and
    /// after how long without a live owner a partition makes a member that
    /// was assigned nothing rejoin; defaults
    /// [`CHECK_EVERY`](crate::unowned::CHECK_EVERY) and
    /// [`UNOWNED_AFTER`](crate::unowned::UNOWNED_AFTER). For tests.
    #[doc(hidden)]
    pub fn idle_watch(mut self, check_every: Duration, unowned_after: Duration) -> Self {
        self.idle_watch = (check_every, unowned_after);
        self
    }

    /// Checks the configuration and returns the worker.
    pub fn build(self) -> Result<Worker, WorkerError> {
        let mut registry = self.registry;
        if self.builtins {
            let http = builtins::Http::from_settings(&self.config.worker)
                .map_err(|e| WorkerError::Config(e.to_string()))?;
            builtins::register_with(&mut registry, self.config.worker.enable_shell, http);
            registry.insert_if_absent(
                "workflow",
                std::sync::Arc::new(builtins::ChildWorkflow::new(self.config.kafka.clone())),
            );
        }
        let keyring = weft_shared::secrets::Keyring::from_settings(&self.config.secrets)
            .map_err(|e| WorkerError::Config(e.to_string()))?;
        registry.set_keyring(keyring);
        let w = &self.config.worker;
        if registry.is_empty() {
            return Err(WorkerError::Config(
                "no handlers registered (add handlers or with_builtins())".into(),
            ));
        }
        if w.concurrency == 0 {
            return Err(WorkerError::Config(
                "worker.concurrency must be at least 1".into(),
            ));
        }
        if w.group_id.trim().is_empty() {
            return Err(WorkerError::Config(
                "worker.group_id must not be empty".into(),
            ));
        }
        if let Some(bad) = w.types.iter().find(|t| !valid_type(t)) {
            return Err(WorkerError::Config(format!(
                "worker.types: '{bad}' is not a workflow type (letters, digits, '_' and '-')"
            )));
        }
        let node_id = node_id_or_default(&w.node_id, "worker");
        Ok(Worker {
            config: self.config,
            node_id,
            registry,
            metrics: Metrics::new(),
            orphan_watch: self.orphan_watch,
            idle_watch: self.idle_watch,
        })
    }
}

fn valid_type(t: &str) -> bool {
    !t.is_empty()
        && t.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// A configured worker, ready to run.
pub struct Worker {
    pub(crate) config: WeftConfig,
    pub(crate) node_id: String,
    pub(crate) registry: Registry,
    pub(crate) metrics: Metrics,
    /// The orphan watch's check interval and orphan time.
    pub(crate) orphan_watch: (Duration, Duration),
    /// The idle watch's check interval and unowned time.
    pub(crate) idle_watch: (Duration, Duration),
}

impl Worker {
    /// Starts building a worker from `config` (its `kafka` and `worker` sections).
    pub fn builder(config: WeftConfig) -> WorkerBuilder {
        WorkerBuilder {
            config,
            registry: Registry::default(),
            builtins: false,
            orphan_watch: (crate::orphans::CHECK_EVERY, crate::orphans::ORPHAN_AFTER),
            idle_watch: (crate::unowned::CHECK_EVERY, crate::unowned::UNOWNED_AFTER),
        }
    }

    /// The id this worker announces (configured, or `worker-<host>-<pid>`).
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// The registered handler names, sorted.
    pub fn handler_names(&self) -> Vec<String> {
        self.registry.names()
    }

    /// The worker's metrics (also served on `/metrics`).
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    pub fn config(&self) -> &WeftConfig {
        &self.config
    }

    /// Consumes task records and runs them until `shutdown` resolves, then
    /// drains: in-flight tasks get `worker.shutdown_grace_ms` to finish, done
    /// offsets are committed and the consumer leaves its group.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) -> Result<(), WorkerError> {
        crate::runtime::run(self, shutdown).await
    }
}
