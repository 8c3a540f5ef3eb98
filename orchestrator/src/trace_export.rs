//! Pushes the trace of every workflow that ends on this replica to an
//! OpenTelemetry collector (`orchestrator.otlp_endpoint`, OTLP/HTTP JSON on
//! `POST <endpoint>/v1/traces`). The partition owner hands over an instance
//! once the batch that ended it is committed and only while live (a replay or
//! rebuild does not push again); a queue of [`QUEUE`] instances and one
//! request at a time keep a slow collector from holding up decisions — what
//! does not fit is counted as a failure and stays available from
//! `GET /v1/workflows/{type}/{id}/trace`.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use weft_shared::event::now_ms;
use weft_shared::fsm::DefinitionLookup;
use weft_shared::ids::InstanceId;
use weft_shared::observe::{otlp, trace};

use crate::definitions::Registry;
use crate::metrics::Metrics;
use crate::store::Store;

/// Ended instances waiting to be exported.
pub const QUEUE: usize = 10_000;
/// How long the collector may take to answer one export.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// Hands ended instances to the export task.
#[derive(Clone)]
pub struct TraceExporter {
    tx: mpsc::Sender<(String, InstanceId)>,
    metrics: Arc<Metrics>,
}

impl TraceExporter {
    /// Starts the export task for `endpoint` (a base URL).
    pub fn start(
        endpoint: &str,
        store: Store,
        registry: Arc<Registry>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        let url = format!("{}/v1/traces", endpoint.trim().trim_end_matches('/'));
        tracing::info!(%url, "pushing the traces of ended workflows");
        tokio::spawn(run(rx, url, store, registry, metrics.clone()));
        Self { tx, metrics }
    }

    /// Queues the trace of an instance that just ended.
    pub fn ended(&self, workflow_type: &str, id: InstanceId) {
        if self.tx.try_send((workflow_type.to_owned(), id)).is_err() {
            self.metrics.trace_export_failures.inc();
            tracing::warn!(workflow_type, instance_id = %id, "trace export queue full; trace not pushed");
        }
    }
}

async fn run(
    mut rx: mpsc::Receiver<(String, InstanceId)>,
    url: String,
    store: Store,
    registry: Arc<Registry>,
    metrics: Arc<Metrics>,
) {
    let http = reqwest::Client::new();
    while let Some((ty, id)) = rx.recv().await {
        match export(&http, &url, &store, &registry, &ty, id).await {
            Ok(spans) => {
                metrics.traces_exported.inc();
                tracing::debug!(workflow_type = %ty, instance_id = %id, spans, "trace pushed");
            }
            Err(why) => {
                metrics.trace_export_failures.inc();
                tracing::warn!(workflow_type = %ty, instance_id = %id, %url, error = %why, "trace not pushed");
            }
        }
    }
}

async fn export(
    http: &reqwest::Client,
    url: &str,
    store: &Store,
    registry: &Registry,
    ty: &str,
    id: InstanceId,
) -> Result<usize, String> {
    let state = store
        .instance(ty, id)
        .map_err(|e| e.to_string())?
        .ok_or("instance not in the projection")?;
    let history = store
        .events(ty, id, 1, None, usize::MAX)
        .map_err(|e| e.to_string())?;
    let catalog = registry.catalog();
    let t = trace::build(&history, catalog.get(ty, state.definition_version))
        .map_err(|e| e.to_string())?;
    let body = otlp::export_request(&t, crate::api::TRACE_SERVICE_NAME, now_ms());
    let answer = http
        .post(url)
        .json(&body)
        .timeout(EXPORT_TIMEOUT)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if !answer.status().is_success() {
        let status = answer.status();
        let text = answer.text().await.unwrap_or_default();
        return Err(format!(
            "collector answered {status}: {}",
            text.chars().take(200).collect::<String>()
        ));
    }
    Ok(t.spans.len())
}
