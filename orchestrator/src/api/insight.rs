//! Tracing and analytics endpoints. `GET /v1/workflows/{ty}/{id}/trace` is an
//! instance's trace built from its history: OTLP/JSON by default (post it to
//! any OpenTelemetry collector), or Weft's own span list with
//! `format=spans`. `GET /v1/analytics/{ty}` is the type's report — success
//! rate, duration percentiles, per-task figures, the bottleneck task and
//! insights — summed over every partition: this replica's own, and each
//! peer's for the partitions it owns (like a list, see [`super::scatter`]).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::{Extension, Json};
use serde_json::{json, Value};
use weft_shared::event::now_ms;
use weft_shared::fsm::DefinitionLookup;
use weft_shared::observe::analytics::{Thresholds, TypeStats};
use weft_shared::observe::{otlp, trace};

use super::forward::{Forwarder, FORWARDED_BY};
use super::params::{self, Params};
use super::{catalog_with, scatter, unknown_instance, ApiError, AppState};

/// `service.name` of served and pushed traces.
pub const SERVICE_NAME: &str = "weft";

/// `GET /v1/workflows/{ty}/{id}/trace?format=otlp|spans`.
pub async fn trace(
    State(s): State<AppState>,
    Path((ty, id)): Path<(String, String)>,
    params: Params,
) -> Result<Json<Value>, ApiError> {
    params.allow(&["format"])?;
    let id = params::instance_id(&id)?;
    let spans = match params.one("format")? {
        None | Some("otlp") => false,
        Some("spans") => true,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "query parameter 'format': '{}' is not one of otlp, spans",
                params::truncate(other)
            )))
        }
    };
    let catalog = catalog_with(&s, &ty)?;
    let state = s
        .store
        .instance(&ty, id)?
        .ok_or_else(|| unknown_instance(&ty, id))?;
    let history = s.store.events(&ty, id, 1, None, usize::MAX)?;
    let def = catalog.get(&ty, state.definition_version);
    let t = trace::build(&history, def)
        .map_err(|e| ApiError::internal(format!("history of {id} cannot be folded: {e}")))?;
    if spans {
        return Ok(Json(serde_json::to_value(&t).map_err(ApiError::internal)?));
    }
    Ok(Json(otlp::export_request(&t, SERVICE_NAME, now_ms())))
}

/// `GET /v1/analytics/{ty}?min_samples&slow_ms`.
pub async fn analytics(
    State(s): State<AppState>,
    fw: Option<Extension<Arc<Forwarder>>>,
    headers: HeaderMap,
    Path(ty): Path<String>,
    params: Params,
) -> Result<Json<Value>, ApiError> {
    params.allow(&["min_samples", "slow_ms"])?;
    let mut th = Thresholds::default();
    if let Some(n) = params.int("min_samples", 1, 1_000_000_000)? {
        th.min_samples = n;
    }
    if let Some(ms) = params.int("slow_ms", 1, u64::MAX >> 11)? {
        th.slow_workflow_ms = ms as f64;
    }
    catalog_with(&s, &ty)?;
    let topic = s.topics.events(&ty);
    let mut parts: BTreeMap<i32, TypeStats> = BTreeMap::new();
    let plan = match &fw {
        Some(Extension(fw)) => Some(scatter::plan(fw, &ty, &headers).await?),
        None => None,
    };
    for (p, stats) in s.store.analytics_of_topic(&topic)? {
        let mine = plan.as_ref().is_none_or(|plan| plan.owns(p));
        if mine {
            parts.insert(p, stats);
        }
    }
    if headers.contains_key(FORWARDED_BY) {
        // A peer asks for this replica's partitions, to sum them itself.
        return Ok(Json(json!({ "partitions": parts })));
    }
    if let (Some(Extension(fw)), Some(plan)) = (&fw, &plan) {
        if !plan.peers.is_empty() {
            let path = format!("/v1/analytics/{ty}");
            for answer in scatter::gather(fw, &plan.peers, &path, "", &headers).await? {
                let theirs: BTreeMap<i32, TypeStats> =
                    serde_json::from_value(answer["partitions"].clone()).map_err(|e| {
                        ApiError::internal(format!("a peer's analytics are malformed: {e}"))
                    })?;
                for (p, stats) in theirs {
                    // A partition that moved between two sub-requests counts once.
                    parts.entry(p).or_insert(stats);
                }
            }
        }
    }
    let mut total = TypeStats::default();
    for stats in parts.values() {
        total.merge(stats);
    }
    let mut report = serde_json::to_value(total.report(&ty, &th)).map_err(ApiError::internal)?;
    report["partitions"] = json!(parts.len());
    Ok(Json(report))
}
