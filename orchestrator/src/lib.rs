//! The Weft orchestrator: owns partitions of the events topics, folds them
//! into RocksDB projections with the pure decider from `weft-shared`, publishes
//! decisions and task dispatches through a transactional outbox, and serves the
//! HTTP API. [`run`] starts all of it; the binary only parses arguments.

pub mod api;
pub mod archive;
pub mod definitions;
pub mod dlq;
pub mod engine;
pub mod heartbeats;
pub mod lane_metrics;
pub mod metrics;
pub mod partition;
pub mod partitioner;
pub mod protocol;
pub mod publisher;
pub mod replicas;
pub mod schedules;
pub mod status;
pub mod store;
pub mod trace_export;
pub mod ui;
pub mod unschedulable;

use std::sync::Arc;

use rdkafka::producer::FutureProducer;
use weft_shared::config::WeftConfig;
use weft_shared::kafka::{self, client_config, Role};
use weft_shared::telemetry::node_id_or_default;
use weft_shared::Topics;

/// Orchestrator errors.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Store(#[from] store::Error),
    #[error(transparent)]
    Kafka(#[from] kafka::Error),
    #[error("kafka: {0}")]
    Client(#[from] rdkafka::error::KafkaError),
    #[error(transparent)]
    Definitions(#[from] definitions::Error),
    #[error(transparent)]
    Security(#[from] api::auth::SecurityError),
    #[error("api tls: {0}")]
    Tls(#[from] api::tls::TlsError),
    #[error(transparent)]
    Broker(#[from] weft_shared::kafka_check::BrokerCheckError),
    #[error("cannot set up publishing: {0}")]
    Publish(String),
    #[error("cannot serve http on {addr}: {source}")]
    Http {
        addr: String,
        source: std::io::Error,
    },
    #[error("data directory {path}: {source}")]
    DataDir {
        path: String,
        source: std::io::Error,
    },
}

pub type Result<T> = std::result::Result<T, Error>;

/// Deletes the projections under `data_dir` (what `--rebuild` does): the next
/// [`run`] rebuilds them by replaying the topics.
pub fn discard_projections(data_dir: &std::path::Path) -> Result<()> {
    let dir = data_dir.join(PROJECTIONS_DIR);
    match std::fs::remove_dir_all(&dir) {
        Ok(()) => {
            tracing::warn!(path = %dir.display(), "projections discarded; rebuilding from the topics");
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(Error::DataDir {
            path: dir.display().to_string(),
            source,
        }),
    }
}

/// The projections' RocksDB directory inside the data directory.
const PROJECTIONS_DIR: &str = "projections";

/// Runs the orchestrator until `shutdown` resolves.
pub async fn run(
    mut config: WeftConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let node_id = node_id_or_default(&config.orchestrator.node_id, "orchestrator");
    let topics = Topics::new(config.kafka.topic_prefix.clone());
    let data_dir = config.orchestrator.data_dir.clone();
    std::fs::create_dir_all(&data_dir).map_err(|source| Error::DataDir {
        path: data_dir.display().to_string(),
        source,
    })?;
    // A secured broker that refuses us is a start-up error, not a hang.
    weft_shared::kafka_check::check_broker(&config.kafka).await?;
    let store = store::Store::open(&data_dir.join(PROJECTIONS_DIR))?
        .with_snapshot_every(config.orchestrator.snapshot_every);
    kafka::ensure_topics(&config.kafka, &kafka::global_topics(&topics)).await?;
    // `auto` becomes `on` or `off` here, once: everything below sees the resolved mode.
    config.kafka.transactions = weft_shared::transactions::resolve(&config.kafka).await;
    let producer: FutureProducer = client_config(&config.kafka, Role::Producer).create()?;
    let registry =
        definitions::Registry::try_new(config.kafka.clone(), topics.clone(), producer.clone())?;
    let status = Arc::new(status::Status::default());
    let replicas = Arc::new(replicas::Replicas::default());
    // The node registry: its view is fed by the one follower of the nodes topic (below).
    let nodes = Arc::new(protocol::KafkaNodeRegistry::with_producer(
        config.kafka.clone(),
        topics.clone(),
        producer.clone(),
    ));
    let metrics = Arc::new(metrics::Metrics::new());
    let (events_tx, _) = tokio::sync::broadcast::channel(api::EVENT_FEED_CAPACITY);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);

    let state = api::AppState {
        registry: registry.clone(),
        store: store.clone(),
        producer: producer.clone(),
        topics: topics.clone(),
        status: status.clone(),
        metrics: metrics.clone(),
        node_id: node_id.clone(),
        events: events_tx.clone(),
        shutdown: stop_rx.clone(),
    };
    let app = api::router(state.clone());
    let counts = Arc::new(partitioner::PartitionCounts::new(producer.clone()));
    // TLS problems (unreadable files, a key not matching) are start-up errors.
    let tls = api::tls::server_config(&config.api)?;
    let forward_client = api::tls::forward_client(&config.api)?;
    let forwarder = api::forward::Forwarder::new(
        forward_client,
        node_id.clone(),
        topics.clone(),
        registry.clone(),
        status.clone(),
        replicas.clone(),
        partitioner::Partitioner::from_settings(&config.kafka),
        counts.clone(),
    );
    let forwarder = Arc::new(forwarder);
    let app = app.layer(axum::Extension(forwarder.clone()));
    let app = app.layer(axum::Extension(
        nodes.clone() as Arc<dyn protocol::WorkflowNodeRegistry>
    ));
    let scheduler = schedules::runner::Scheduler::new(config.kafka.clone(), state, forwarder);
    tokio::spawn(scheduler.clone().run(stop_rx.clone()));
    let app = app.layer(axum::Extension(scheduler));
    let archiver = archive::Archiver::new(
        store.clone(),
        config.kafka.clone(),
        topics.clone(),
        producer.clone(),
    );
    tokio::spawn(archiver.clone().run(stop_rx.clone()));
    let app = app.layer(axum::Extension(archiver));
    let app = api::auth::secure(app, &config, &node_id)?;
    let addr = config.orchestrator.http_addr.clone();
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .map_err(|source| Error::Http {
            addr: addr.clone(),
            source,
        })?;
    tracing::info!(%addr, node_id = %node_id, tls = tls.is_some(), client_certificates = !config.api.tls_client_ca_file.trim().is_empty(), "http api listening");
    let http = tokio::spawn(api::serve::serve(
        listener,
        app,
        tls,
        std::time::Duration::from_millis(config.api.header_timeout_ms.max(1)),
        stop_rx.clone(),
    ));

    let announcer = tokio::spawn(
        replicas::tasks::Announcer {
            node_id: node_id.clone(),
            api_url: config.api.advertised(&addr),
            started_at_ms: weft_shared::event::now_ms(),
            status: status.clone(),
            producer: producer.clone(),
            topics: topics.clone(),
        }
        .run(stop_rx.clone()),
    );
    let replica_follower = tokio::spawn(replicas::tasks::follow(replicas.clone(), nodes.clone()));
    tokio::spawn(
        replicas::watchdog::Watchdog {
            node_id: node_id.clone(),
            topics: topics.clone(),
            registry: registry.clone(),
            status: status.clone(),
            replicas,
            counts,
        }
        .run(stop_rx.clone()),
    );
    tokio::spawn(dlq::counts::run(
        dlq::counts::gauge(&metrics.registry),
        registry.clone(),
        config.kafka.clone(),
        topics.clone(),
        stop_rx.clone(),
    ));
    tokio::spawn(lane_metrics::run(
        lane_metrics::LaneGauges::new(&metrics.registry),
        registry.clone(),
        nodes.clone(),
        config.kafka.clone(),
        config.worker.group_id.clone(),
        topics.clone(),
        stop_rx.clone(),
    ));
    let (loaded_tx, loaded_rx) = tokio::sync::oneshot::channel();
    let follower = tokio::spawn(registry.clone().follow(loaded_tx));
    let _ = loaded_rx.await;
    tracing::info!(
        types = registry.catalog().types().count(),
        "definitions loaded"
    );

    let heartbeats = Arc::new(heartbeats::HeartbeatTracker::default());
    let heartbeat_follower = tokio::spawn(heartbeats.clone().follow(
        config.kafka.clone(),
        topics.clone(),
        registry.clone(),
    ));
    let traces = Some(config.orchestrator.otlp_endpoint.trim())
        .filter(|e| !e.is_empty())
        .map(|e| {
            trace_export::TraceExporter::start(e, store.clone(), registry.clone(), metrics.clone())
        });
    let unschedulable = unschedulable::UnschedulableWatch::start(
        std::time::Duration::from_millis(config.orchestrator.unschedulable_after_ms),
        nodes.clone(),
        producer.clone(),
        topics.clone(),
    );
    let shared = partition::Shared {
        unschedulable: Some(unschedulable),
        traces,
        heartbeats,
        store,
        registry,
        producer,
        kafka: config.kafka.clone(),
        topics,
        metrics,
        status,
        batch_max: config.orchestrator.batch_max,
        events_tx,
    };
    let mut engine_stop = stop_rx;
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let result = engine::run(
        shared,
        config.kafka.clone(),
        config.orchestrator.group_id.clone(),
        async move {
            let _ = engine_stop.wait_for(|s| *s).await;
        },
    )
    .await;
    follower.abort();
    replica_follower.abort();
    heartbeat_follower.abort();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), announcer).await;
    let _ = http.await;
    tracing::info!("orchestrator stopped");
    result
}
