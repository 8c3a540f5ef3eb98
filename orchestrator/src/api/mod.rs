//! The orchestrator's HTTP API: register and read definitions, start
//! instances (idempotently), read an instance and its history, and the
//! operational endpoints `/healthz`, `/readyz` and `/metrics`.

mod error;
mod views;

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde::Deserialize;
use serde_json::{json, Value};
use weft_shared::avro::AvroRecord;
use weft_shared::data::data_map_from_json;
use weft_shared::definition::{parse_definition, DefinitionFormat};
use weft_shared::event::{now_ms, META_DEFINITION_VERSION};
use weft_shared::fsm::DefinitionLookup;
use weft_shared::ids::{EventId, InstanceId};
use weft_shared::kafka::headers;
use weft_shared::topics::headers as h;
use weft_shared::{Topics, WorkflowEvent, WorkflowEventType};

pub use error::ApiError;

use crate::definitions::{self, Registry};
use crate::metrics::Metrics;
use crate::status::Status;
use crate::store::Store;

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    pub registry: Arc<Registry>,
    pub store: Store,
    pub producer: FutureProducer,
    pub topics: Topics,
    pub status: Arc<Status>,
    pub metrics: Arc<Metrics>,
    pub node_id: String,
}

/// The API router.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/v1/definitions", post(register_definition))
        .route("/v1/definitions/{ty}", get(latest_definition))
        .route("/v1/definitions/{ty}/{version}", get(definition_version))
        .route("/v1/workflows/{ty}", post(start_workflow))
        .route("/v1/workflows/{ty}/{id}", get(get_instance))
        .route("/v1/workflows/{ty}/{id}/events", get(get_events))
        .route("/v1/admin/projection-digest", get(projection_digest))
        .with_state(state)
}

async fn readyz(State(s): State<AppState>) -> Response {
    let (ready, replaying) = s.status.readiness();
    let body =
        json!({ "ready": ready, "replaying": replaying, "partitions": s.status.partitions() });
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(body)).into_response()
}

async fn metrics(State(s): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        s.metrics.render(),
    )
        .into_response()
}

async fn projection_digest(State(s): State<AppState>) -> Result<Json<Value>, ApiError> {
    let (records, digest) = s.store.digest()?;
    Ok(Json(json!({ "records": records, "digest": digest })))
}

async fn register_definition(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let text = std::str::from_utf8(&body)
        .map_err(|_| ApiError::bad_request("definition body is not UTF-8 text"))?;
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let format = if ct.contains("json") {
        Some(DefinitionFormat::Json)
    } else if ct.contains("yaml") {
        Some(DefinitionFormat::Yaml)
    } else {
        None
    };
    let def = parse_definition(text, format)
        .map_err(|e| ApiError::bad_request(format!("invalid definition: {e}")))?;
    let (def, created) = s.registry.register(def).await.map_err(|e| match e {
        definitions::Error::Invalid(_) | definitions::Error::ExactlyOnceUnsupported { .. } => {
            ApiError::bad_request(e.to_string())
        }
        other => ApiError::unavailable(other.to_string()),
    })?;
    let code = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let body = json!({ "workflow_type": def.workflow_type, "version": def.version, "key": def.key(), "created": created });
    Ok((code, Json(body)).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DefinitionQuery {
    version: Option<u32>,
}

async fn latest_definition(
    State(s): State<AppState>,
    Path(ty): Path<String>,
    query: Result<Query<DefinitionQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(q) =
        query.map_err(|e| ApiError::bad_request(format!("invalid query: {}", e.body_text())))?;
    if let Some(v) = q.version {
        return definition_version(State(s), Path((ty, v.to_string()))).await;
    }
    let catalog = s.registry.catalog();
    let def = catalog.latest(&ty).ok_or_else(|| unknown_type(&ty))?;
    Ok(Json(serde_json::to_value(def).map_err(ApiError::internal)?))
}

async fn definition_version(
    State(s): State<AppState>,
    Path((ty, version)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let version: u32 = version.parse().map_err(|_| {
        ApiError::bad_request(format!("version '{version}' is not a positive integer"))
    })?;
    let catalog = s.registry.catalog();
    let def = catalog
        .get(&ty, version)
        .ok_or_else(|| ApiError::not_found(format!("no definition {ty}@{version}")))?;
    Ok(Json(serde_json::to_value(def).map_err(ApiError::internal)?))
}

fn unknown_type(ty: &str) -> ApiError {
    ApiError::not_found(format!(
        "unknown workflow type '{ty}': register a definition first (POST /v1/definitions)"
    ))
}

fn parse_id(id: &str) -> Result<InstanceId, ApiError> {
    id.parse()
        .map_err(|e: weft_shared::ids::IdError| ApiError::bad_request(e.to_string()))
}

async fn start_workflow(
    State(s): State<AppState>,
    Path(ty): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let catalog = s.registry.catalog();
    let def = catalog.latest(&ty).ok_or_else(|| unknown_type(&ty))?;
    let req: Value = if body.is_empty() {
        json!({})
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::bad_request(format!("request body is not valid JSON: {e}")))?
    };
    let Value::Object(fields) = &req else {
        return Err(ApiError::bad_request(
            "request body must be a JSON object like {\"input\": {...}}",
        ));
    };
    if let Some(unknown) = fields
        .keys()
        .find(|k| !["input", "idempotency_key"].contains(&k.as_str()))
    {
        return Err(ApiError::bad_request(format!(
            "unknown field '{unknown}' (expected 'input', 'idempotency_key')"
        )));
    }
    let input = data_map_from_json(fields.get("input").unwrap_or(&Value::Null), "input")
        .map_err(|e| ApiError::bad_request(format!("invalid input: {e}")))?;
    let key = match fields.get("idempotency_key") {
        None | Some(Value::Null) => None,
        Some(Value::String(k)) if !k.is_empty() && k.len() <= 256 => Some(k.clone()),
        Some(_) => {
            return Err(ApiError::bad_request(
                "idempotency_key must be a non-empty string of at most 256 characters",
            ))
        }
    };
    let instance_id = match &key {
        Some(k) => InstanceId::for_idempotency_key(&ty, k),
        None => InstanceId::random(),
    };
    let mut event = WorkflowEvent::new(
        WorkflowEventType::WorkflowCreated,
        ty.clone(),
        instance_id,
        format!("create:{instance_id}"),
        now_ms(),
    );
    event.event_id = EventId::derived(&[b"created", instance_id.as_bytes()]);
    event.data = input;
    event.source_node_id = s.node_id.clone();
    event
        .metadata
        .insert(META_DEFINITION_VERSION.into(), def.version.to_string());
    event
        .metadata
        .insert(weft_shared::event::META_SOURCE_KIND.into(), "input".into());
    let payload = event.encode();
    let topic = s.topics.events(&ty);
    let key_str = instance_id.to_string();
    let hdrs = headers(&[
        (h::EVENT_TYPE, "workflow.created"),
        (h::IDEMPOTENCY_KEY, &event.idempotency_key),
    ]);
    let record = FutureRecord::to(&topic)
        .key(&key_str)
        .payload(&payload)
        .headers(hdrs);
    s.producer
        .send(record, Duration::from_secs(10))
        .await
        .map_err(|(e, _)| {
            ApiError::unavailable(format!("could not append workflow.created: {e}"))
        })?;
    let body = json!({ "instance_id": instance_id, "workflow_type": ty, "definition_version": def.version });
    Ok((StatusCode::ACCEPTED, Json(body)).into_response())
}

async fn get_instance(
    State(s): State<AppState>,
    Path((ty, id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let id = parse_id(&id)?;
    let catalog = s.registry.catalog();
    if !catalog.contains_type(&ty) {
        return Err(unknown_type(&ty));
    }
    let state = s
        .store
        .instance(&ty, id)?
        .ok_or_else(|| ApiError::not_found(format!("{ty}: no workflow instance {id}")))?;
    Ok(Json(views::instance(
        &state,
        catalog.get(&ty, state.definition_version),
    )))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EventsQuery {
    from: Option<u64>,
    to: Option<u64>,
    limit: Option<usize>,
}

async fn get_events(
    State(s): State<AppState>,
    Path((ty, id)): Path<(String, String)>,
    query: Result<Query<EventsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(q) =
        query.map_err(|e| ApiError::bad_request(format!("invalid query: {}", e.body_text())))?;
    let id = parse_id(&id)?;
    if !s.registry.catalog().contains_type(&ty) {
        return Err(unknown_type(&ty));
    }
    let limit = q.limit.unwrap_or(1_000).clamp(1, 10_000);
    let events = s.store.events(&ty, id, q.from.unwrap_or(1), q.to, limit)?;
    if events.is_empty() && s.store.instance(&ty, id)?.is_none() {
        return Err(ApiError::not_found(format!(
            "{ty}: no workflow instance {id}"
        )));
    }
    Ok(Json(
        json!({ "events": events.iter().map(views::event).collect::<Vec<_>>() }),
    ))
}
