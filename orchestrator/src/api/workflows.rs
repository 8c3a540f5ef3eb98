//! Workflow instances: start one (idempotently), read one, and list/query
//! the instances of a type by state(s) and creation time, paged with a cursor
//! (served from the store's secondary indexes).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde_json::{json, Value};
use weft_shared::data::data_map_from_json;
use weft_shared::event::{now_ms, META_DEFINITION_VERSION, META_SOURCE_KIND};
use weft_shared::fsm::{DefinitionLookup, InstanceState};
use weft_shared::ids::{EventId, InstanceId};
use weft_shared::lanes::{ContextLimits, NodeCapabilities, Requirements, SLOTS};
use weft_shared::state::WorkflowState;
use weft_shared::{WorkflowEvent, WorkflowEventType};

use super::applied::{self, instance_or_wait};
use super::control::publish;
use super::forward::Forwarder;
use super::params::{self, Params};
use super::scatter;
use super::{catalog_with, unknown_instance, views, ApiError, AppState};
use crate::store;

/// Default and largest page of `GET /v1/workflows`.
const LIST_DEFAULT_LIMIT: u64 = 50;
const LIST_MAX_LIMIT: u64 = 1000;

pub async fn start(
    State(s): State<AppState>,
    Path(ty): Path<String>,
    keyring: Option<Extension<Arc<weft_shared::secrets::Keyring>>>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let catalog = s.registry.catalog();
    let fields = params::json_object(
        &body,
        Some(&["input", "idempotency_key", "secrets", "version", "context"]),
    )?;
    // The latest version not deprecated, or the one asked for (see `lifecycle`).
    let def = super::lifecycle::startable(&s, &catalog, &ty, fields.get("version"))?;
    let context = start_context(fields.get("context"), def)?;
    let input = match fields.get("input") {
        None | Some(Value::Null) => Value::Object(Default::default()),
        Some(v @ Value::Object(_)) => v.clone(),
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "body field 'input' must be a JSON object, not {}",
                params::kind(other)
            )))
        }
    };
    let mut input = data_map_from_json(&input, "input")
        .map_err(|e| ApiError::bad_request(format!("body field 'input' is invalid: {e}")))?;
    let key =
        match fields.get("idempotency_key") {
            None | Some(Value::Null) => None,
            Some(Value::String(k)) if !k.is_empty() && k.len() <= 256 => Some(k.clone()),
            Some(_) => return Err(ApiError::bad_request(
                "body field 'idempotency_key' must be a non-empty string of at most 256 characters",
            )),
        };
    let instance_id = match &key {
        Some(k) => InstanceId::for_idempotency_key(&ty, k),
        None => InstanceId::random(),
    };
    let keyring = keyring.as_ref().map(|Extension(k)| k);
    super::sealing::seal_into(keyring, &ty, instance_id, &fields, &mut input)?;
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
        .insert(META_SOURCE_KIND.into(), "input".into());
    event.metadata.extend(context.to_metadata());
    let at = publish(&s, &event).await?;
    tracing::info!(workflow_type = %ty, instance_id = %instance_id, version = def.version, partition = at.partition, offset = at.offset, "workflow start requested");
    // Accepted, not applied yet: a read of the id waits for the apply (see `applied`).
    let body = json!({
        "instance_id": instance_id,
        "workflow_type": ty,
        "definition_version": def.version,
        "state": "accepted",
        "partition": at.partition,
        "offset": at.offset,
    });
    Ok((StatusCode::ACCEPTED, Json(body)).into_response())
}

/// The start request's `context` (`capabilities`, `resource_limits`),
/// checked against every task of `def`: a task asking for a capability the
/// context does not allow, or for more of a resource than its limit, is a 400.
fn start_context(
    given: Option<&Value>,
    def: &weft_shared::WorkflowDefinition,
) -> Result<ContextLimits, ApiError> {
    let bad =
        |why: String| ApiError::bad_request(format!("body field 'context' is invalid: {why}"));
    let fields = match given {
        None | Some(Value::Null) => return Ok(ContextLimits::default()),
        Some(Value::Object(m)) => m,
        Some(other) => {
            return Err(bad(format!(
                "expected an object, not {}",
                params::kind(other)
            )))
        }
    };
    if let Some(k) = fields
        .keys()
        .find(|k| !["capabilities", "resource_limits"].contains(&k.as_str()))
    {
        return Err(bad(format!(
            "unknown field '{k}' (expected capabilities, resource_limits)"
        )));
    }
    let capabilities: Vec<String> = match fields.get("capabilities") {
        None | Some(Value::Null) => Vec::new(),
        Some(v) => serde_json::from_value(v.clone())
            .map_err(|_| bad("'capabilities' must be a list of strings".into()))?,
    };
    let limits: std::collections::BTreeMap<String, i64> = match fields.get("resource_limits") {
        None | Some(Value::Null) => Default::default(),
        Some(v) => serde_json::from_value(v.clone())
            .map_err(|_| bad("'resource_limits' must map resource names to integers".into()))?,
    };
    let resources: Vec<String> = limits.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let node =
        NodeCapabilities::declared(&capabilities, &resources, 1).map_err(|e| bad(e.to_string()))?;
    let mut resource_limits = node.capacity;
    if !limits.contains_key(SLOTS) {
        resource_limits.remove(SLOTS);
    }
    let context = ContextLimits {
        capabilities: node.capabilities,
        resource_limits,
    };
    for task in &def.tasks {
        let req = Requirements::of_task(task).unwrap_or_default();
        if let Some(why) = context.refuses(&task.name, &req) {
            return Err(ApiError::bad_request(format!(
                "{}@{} cannot start in this context: {why}",
                def.workflow_type, def.version
            )));
        }
    }
    Ok(context)
}

/// `GET /v1/workflows/{ty}/{id}`: an id not in the projection yet is looked
/// up again once its partition has folded what was accepted before the read
/// (bounded; see [`applied`](super::applied)), so a start is never "not found".
pub async fn get(
    State(s): State<AppState>,
    fw: Option<Extension<Arc<Forwarder>>>,
    Path((ty, id)): Path<(String, String)>,
    params: Params,
) -> Result<Json<Value>, ApiError> {
    params.allow(&[])?;
    let id = params::instance_id(&id)?;
    let catalog = catalog_with(&s, &ty)?;
    let state = instance_or_wait(&s, fw.as_ref(), &ty, id)
        .await?
        .ok_or_else(|| unknown_instance(&ty, id))?;
    Ok(Json(views::instance(
        &state,
        catalog.get(&ty, state.definition_version),
    )))
}

/// `GET /v1/workflows?type=T&state=S&state=S2&created_after=..&limit=N&cursor=C`:
/// this replica's partitions merged with the same page from the owners of the
/// others (see [`scatter`]). With `settle=true` (passed on to the peers) every
/// replica first waits until its partitions have folded every write accepted
/// before (see [`applied::settle`]), else answers 503: a list a decision is
/// made on (a type's delete) misses no instance whose start was accepted.
pub async fn list(
    State(s): State<AppState>,
    fw: Option<Extension<Arc<Forwarder>>>,
    headers: HeaderMap,
    uri: Uri,
    params: Params,
) -> Result<Json<Value>, ApiError> {
    params.allow(&[
        "type",
        "state",
        "created_after",
        "limit",
        "cursor",
        "settle",
    ])?;
    let query = list_query(&params)?;
    catalog_with(&s, &query.workflow_type)?;
    let plan = match &fw {
        Some(Extension(fw)) => Some(scatter::plan(fw, &query.workflow_type, &headers).await?),
        None => None,
    };
    if settle_param(&params)? {
        let topic = s.topics.events(&query.workflow_type);
        let partitions = plan
            .as_ref()
            .and_then(scatter::Plan::owned_partitions)
            .unwrap_or_else(|| applied::owned_partitions(&s, &topic));
        applied::settle(&s, &topic, &partitions).await?;
    }
    let keep = |st: &InstanceState| match (&fw, &plan) {
        (Some(Extension(fw)), Some(plan)) => plan.keeps(fw, st),
        _ => true,
    };
    let page = s
        .store
        .query_workflows_where(&query, &keep)
        .map_err(|e| match e {
            e @ store::Error::BadCursor(_) => {
                ApiError::bad_request(format!("query parameter 'cursor': {e}"))
            }
            other => ApiError::from(other),
        })?;
    let items: Vec<Value> = page.items.iter().map(views::summary).collect();
    let local = json!({ "items": items, "next_cursor": page.next_cursor });
    let (Some(Extension(fw)), Some(plan)) = (fw, plan) else {
        return Ok(Json(local));
    };
    if plan.peers.is_empty() {
        return Ok(Json(local));
    }
    let mut pages = scatter::gather(
        &fw,
        &plan.peers,
        "/v1/workflows",
        uri.query().unwrap_or(""),
        &headers,
    )
    .await?;
    pages.push(local);
    let (items, next_cursor) = scatter::merge(pages, query.limit);
    Ok(Json(json!({ "items": items, "next_cursor": next_cursor })))
}

/// Query parameter `settle`: `true` or `false` (the default).
fn settle_param(p: &Params) -> Result<bool, ApiError> {
    match p.one("settle")? {
        None | Some("false") => Ok(false),
        Some("true") => Ok(true),
        Some(other) => Err(ApiError::bad_request(format!(
            "query parameter 'settle': '{}' is not true or false",
            params::truncate(other)
        ))),
    }
}

/// The store query a list request asks for.
fn list_query(p: &Params) -> Result<store::Query, ApiError> {
    let workflow_type = match p.one("type")? {
        Some(ty) if !ty.is_empty() => ty.to_owned(),
        _ => {
            return Err(ApiError::bad_request(
                "query parameter 'type' is required (the workflow type to list)",
            ))
        }
    };
    let mut states = Vec::new();
    for raw in p.all("state") {
        let state: WorkflowState = raw
            .parse()
            .map_err(|e| ApiError::bad_request(format!("query parameter 'state': {e}")))?;
        if !states.contains(&state) {
            states.push(state);
        }
    }
    let created_after_ms = p
        .one("created_after")?
        .map(|raw| params::timestamp_ms("created_after", raw))
        .transpose()?;
    let limit = p
        .int("limit", 1, LIST_MAX_LIMIT)?
        .unwrap_or(LIST_DEFAULT_LIMIT) as usize;
    let cursor = match p.one("cursor")? {
        Some("") => return Err(ApiError::bad_request("query parameter 'cursor' is empty")),
        other => other.map(str::to_owned),
    };
    Ok(store::Query {
        workflow_type,
        states,
        created_after_ms,
        limit,
        cursor,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_parameters_are_parsed_and_named_in_errors() {
        let p = Params::from_pairs(&[
            ("type", "demo"),
            ("state", "running"),
            ("state", "failed,running"),
            ("created_after", "2024-05-01T12:00:00Z"),
            ("limit", "10"),
        ]);
        let q = list_query(&p).unwrap();
        assert_eq!(q.workflow_type, "demo");
        assert_eq!(
            q.states,
            vec![WorkflowState::Running, WorkflowState::Failed]
        );
        assert_eq!(q.created_after_ms, Some(1_714_564_800_000));
        assert_eq!((q.limit, q.cursor), (10, None));

        let err = |pairs: &[(&str, &str)]| {
            let mut all = vec![("type", "demo")];
            all.extend_from_slice(pairs);
            list_query(&Params::from_pairs(&all)).unwrap_err().message
        };
        assert!(list_query(&Params::default())
            .unwrap_err()
            .message
            .contains("'type' is required"));
        assert!(err(&[("state", "runing")]).contains("'state': unknown WorkflowState 'runing'"));
        assert!(err(&[("limit", "-3")]).contains("'limit'"));
        assert!(err(&[("limit", "0")]).contains("'limit'"));
        assert!(err(&[("created_after", "soon")]).contains("'created_after'"));
        assert!(err(&[("cursor", "")]).contains("'cursor'"));
        assert!(!settle_param(&p).unwrap());
        let settle = |v: &str| settle_param(&Params::from_pairs(&[("settle", v)]));
        assert!(settle("true").unwrap());
        assert!(!settle("false").unwrap());
        assert!(settle("yes").unwrap_err().message.contains("'settle'"));
    }
}
