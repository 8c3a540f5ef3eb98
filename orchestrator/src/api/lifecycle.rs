//! The lifecycle of definitions (see [`crate::definitions::lifecycle`]):
//! which version a start runs (the latest not deprecated, or the one asked
//! for), deprecating and reinstating a version, deleting a type when none of
//! its instances runs, and the difference between two versions.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Uri};
use axum::{Extension, Json};
use serde_json::{json, Map, Value};
use weft_shared::fsm::DefinitionLookup;
use weft_shared::state::WorkflowState;
use weft_shared::WorkflowDefinition;

use super::forward::Forwarder;
use super::params::{self, Params};
use super::{unknown_type, ApiError, AppState};
use crate::definitions::lifecycle::{Action, Change, Lifecycle};
use crate::definitions::Catalog;

/// The definition a start request runs: version `asked` if given (it must
/// exist, be neither deprecated nor deleted), else the latest version that is
/// not deprecated.
pub(super) fn startable<'c>(
    s: &AppState,
    catalog: &'c Catalog,
    ty: &str,
    asked: Option<&Value>,
) -> Result<&'c WorkflowDefinition, ApiError> {
    let latest = catalog.latest(ty).ok_or_else(|| unknown_type(ty))?;
    let life = s.registry.lifecycle();
    if life.type_deleted(ty, latest.version).is_some() {
        return Err(ApiError::not_found(format!(
            "workflow type '{ty}' was deleted: register a definition to start it again"
        )));
    }
    match asked {
        None | Some(Value::Null) => (1..=latest.version)
            .rev()
            .filter(|v| life.deprecation(ty, *v).is_none() && !life.deleted(ty, *v))
            .find_map(|v| catalog.get(ty, v))
            .ok_or_else(|| {
                ApiError::conflict(format!(
                    "every version of '{ty}' is deprecated: reinstate one or register a new one"
                ))
            }),
        Some(v) => {
            let version = v
                .as_u64()
                .filter(|v| (1..=u64::from(u32::MAX)).contains(v))
                .ok_or_else(|| {
                    ApiError::bad_request("body field 'version' must be a positive integer")
                })? as u32;
            let def = catalog
                .get(ty, version)
                .ok_or_else(|| ApiError::not_found(format!("no definition {ty}@{version}")))?;
            if life.deleted(ty, version) {
                return Err(ApiError::conflict(format!("{ty}@{version} was deleted")));
            }
            if let Some(d) = life.deprecation(ty, version) {
                let why = d
                    .reason
                    .as_deref()
                    .map(|r| format!(" ({r})"))
                    .unwrap_or_default();
                return Err(ApiError::conflict(format!(
                    "{ty}@{version} is deprecated{why}: it takes no new starts"
                )));
            }
            Ok(def)
        }
    }
}

/// Adds the lifecycle of `def` to its JSON view.
pub(super) fn annotate(mut view: Value, def: &WorkflowDefinition, life: &Lifecycle) -> Value {
    let (ty, v) = (&def.workflow_type, def.version);
    if let Some(obj) = view.as_object_mut() {
        let dep = life.deprecation(ty, v);
        obj.insert("deprecated".into(), json!(dep.is_some()));
        if let Some(d) = dep {
            obj.insert("deprecated_at_ms".into(), json!(d.at_ms));
            obj.insert("deprecation_reason".into(), json!(d.reason));
        }
        obj.insert("deleted".into(), json!(life.deleted(ty, v)));
    }
    view
}

fn version_param(raw: &str, name: &str) -> Result<u32, ApiError> {
    raw.parse::<u32>().ok().filter(|v| *v >= 1).ok_or_else(|| {
        ApiError::bad_request(format!(
            "'{name}': '{}' is not a positive integer",
            params::truncate(raw)
        ))
    })
}

async fn change(
    s: &AppState,
    ty: &str,
    version: &str,
    action: Action,
    body: &[u8],
) -> Result<Json<Value>, ApiError> {
    let version = version_param(version, "path parameter 'version'")?;
    let fields = params::json_object(body, Some(&["reason"]))?;
    let reason = params::string_field(&fields, "reason", 1000)?;
    let catalog = s.registry.catalog();
    catalog
        .get(ty, version)
        .ok_or_else(|| ApiError::not_found(format!("no definition {ty}@{version}")))?;
    s.registry
        .change_lifecycle(Change::new(ty, action, Some(version), reason))
        .await
        .map_err(|e| ApiError::unavailable(e.to_string()))?;
    tracing::info!(workflow_type = %ty, version, action = ?action, "definition lifecycle changed");
    let def = catalog.get(ty, version).expect("checked above");
    let view = serde_json::to_value(def).map_err(ApiError::internal)?;
    Ok(Json(annotate(view, def, &s.registry.lifecycle())))
}

/// `POST /v1/definitions/{ty}/{version}/deprecate` with an optional `{"reason": ...}`.
pub async fn deprecate(
    State(s): State<AppState>,
    Path((ty, version)): Path<(String, String)>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    change(&s, &ty, &version, Action::Deprecate, &body).await
}

/// `POST /v1/definitions/{ty}/{version}/reinstate`.
pub async fn reinstate(
    State(s): State<AppState>,
    Path((ty, version)): Path<(String, String)>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    change(&s, &ty, &version, Action::Reinstate, &body).await
}

/// `DELETE /v1/definitions/{ty}`: refused (409) while any instance of the type
/// has not ended, on any replica. A start is answered (202) before its
/// partition's processor has folded it, so the list this decides on is a
/// settled one (`settle=true`, passed on to every peer): each replica first
/// folds everything its partitions of the type held when it was asked, and a
/// replica that cannot (its processor lags, a rebalance) makes the delete a
/// 503 rather than a delete that misses a start.
pub async fn delete(
    State(s): State<AppState>,
    fw: Option<Extension<Arc<Forwarder>>>,
    headers: HeaderMap,
    Path(ty): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let catalog = s.registry.catalog();
    let latest = catalog
        .latest(&ty)
        .ok_or_else(|| unknown_type(&ty))?
        .version;
    let states: Vec<&str> = WorkflowState::ALL
        .iter()
        .filter(|st| !st.is_terminal())
        .map(|st| st.as_str())
        .collect();
    let mut pairs = vec![("type", ty.as_str()), ("limit", "5"), ("settle", "true")];
    pairs.extend(states.iter().map(|st| ("state", *st)));
    let query = pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&");
    let uri: Uri = format!("/v1/workflows?{query}")
        .parse()
        .map_err(ApiError::internal)?;
    let Json(running) = super::workflows::list(
        State(s.clone()),
        fw,
        headers,
        uri,
        Params::from_pairs(&pairs),
    )
    .await
    .map_err(|e| ApiError {
        message: format!("cannot delete '{ty}' now: {}", e.message),
        ..e
    })?;
    let items = running["items"].as_array().cloned().unwrap_or_default();
    if !items.is_empty() {
        let ids: Vec<String> = items
            .iter()
            .map(|i| {
                format!(
                    "{} ({})",
                    i["instance_id"].as_str().unwrap_or("?"),
                    i["state"].as_str().unwrap_or("?")
                )
            })
            .collect();
        return Err(ApiError::conflict(format!(
            "cannot delete '{ty}': instances have not ended: {}{}",
            ids.join(", "),
            if running["next_cursor"].is_null() {
                ""
            } else {
                ", ..."
            }
        )));
    }
    s.registry
        .change_lifecycle(Change::new(&ty, Action::Delete, None, None))
        .await
        .map_err(|e| ApiError::unavailable(e.to_string()))?;
    tracing::info!(workflow_type = %ty, through_version = latest, "workflow type deleted");
    Ok(Json(
        json!({ "workflow_type": ty, "deleted_through_version": latest }),
    ))
}

/// `GET /v1/definitions/{ty}/diff?from=A&to=B` (`to` defaults to the latest).
pub async fn diff(
    State(s): State<AppState>,
    Path(ty): Path<String>,
    params: Params,
) -> Result<Json<Value>, ApiError> {
    params.allow(&["from", "to"])?;
    let catalog = s.registry.catalog();
    let latest = catalog
        .latest(&ty)
        .ok_or_else(|| unknown_type(&ty))?
        .version;
    let from = match params.one("from")? {
        Some(raw) => version_param(raw, "query parameter 'from'")?,
        None => return Err(ApiError::bad_request("query parameter 'from' is required")),
    };
    let to = match params.one("to")? {
        Some(raw) => version_param(raw, "query parameter 'to'")?,
        None => latest,
    };
    let get = |v: u32| {
        catalog
            .get(&ty, v)
            .ok_or_else(|| ApiError::not_found(format!("no definition {ty}@{v}")))
            .and_then(|d| comparable(d).map_err(ApiError::internal))
    };
    let (a, b) = (get(from)?, get(to)?);
    let mut changes = Vec::new();
    compare("", &a, &b, &mut changes);
    Ok(Json(
        json!({ "workflow_type": ty, "from": from, "to": to, "changes": changes }),
    ))
}

/// A definition as JSON, without what every version has of its own (version,
/// registration time, key), with `tasks` as a map by name.
fn comparable(def: &WorkflowDefinition) -> Result<Value, serde_json::Error> {
    let mut v = serde_json::to_value(def)?;
    if let Some(obj) = v.as_object_mut() {
        for k in ["version", "registered_at_ms", "key"] {
            obj.remove(k);
        }
        if let Some(Value::Array(tasks)) = obj.remove("tasks") {
            let by_name: Map<String, Value> = tasks
                .into_iter()
                .map(|t| (t["name"].as_str().unwrap_or("?").to_owned(), t))
                .collect();
            obj.insert("tasks".into(), Value::Object(by_name));
        }
    }
    Ok(v)
}

/// Appends the differences between `a` and `b` under `path` (dotted) to `out`.
fn compare(path: &str, a: &Value, b: &Value, out: &mut Vec<Value>) {
    let at = |k: &str| {
        if path.is_empty() {
            k.to_owned()
        } else {
            format!("{path}.{k}")
        }
    };
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: BTreeMap<&String, ()> = x.keys().chain(y.keys()).map(|k| (k, ())).collect();
            for k in keys.keys() {
                match (x.get(*k), y.get(*k)) {
                    (Some(va), Some(vb)) => compare(&at(k), va, vb, out),
                    (Some(va), None) if !va.is_null() => {
                        out.push(json!({ "path": at(k), "change": "removed", "from": va }))
                    }
                    (None, Some(vb)) if !vb.is_null() => {
                        out.push(json!({ "path": at(k), "change": "added", "to": vb }))
                    }
                    _ => {}
                }
            }
        }
        _ if a != b => out.push(json!({ "path": path, "change": "changed", "from": a, "to": b })),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn differences_name_their_path() {
        let a = json!({"description": "x", "tasks": {"a": {"handler": "noop", "retry": {"max_attempts": 3}}, "b": {"handler": "noop"}}});
        let b = json!({"description": "y", "tasks": {"a": {"handler": "noop", "retry": {"max_attempts": 5}}, "c": {"handler": "sleep"}}});
        let mut out = Vec::new();
        compare("", &a, &b, &mut out);
        let paths: Vec<(&str, &str)> = out
            .iter()
            .map(|c| (c["path"].as_str().unwrap(), c["change"].as_str().unwrap()))
            .collect();
        assert_eq!(
            paths,
            vec![
                ("description", "changed"),
                ("tasks.a.retry.max_attempts", "changed"),
                ("tasks.b", "removed"),
                ("tasks.c", "added"),
            ]
        );
        let mut none = Vec::new();
        compare("", &a, &a, &mut none);
        assert!(none.is_empty());
    }
}
