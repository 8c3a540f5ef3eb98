//! Schedules (ADR 0017, [`crate::schedules`]): create or replace one, list
//! them with their next run times, read, pause, resume and delete one. Every
//! replica serves them (they are folded from `<prefix>.schedules`); a
//! request first waits (bounded) until its replica has read that topic to its
//! end, so it sees changes made through any replica.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde_json::{json, Map, Value};
use weft_shared::event::now_ms;

use super::params::{self, Params};
use super::{catalog_with, ApiError, AppState};
use crate::schedules::runner::{Entry, Error, Scheduler};
use crate::schedules::{valid_name, Catchup, Overlap, Spec};

/// How many next run times a view shows.
const NEXT_RUNS: usize = 5;

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        match e {
            Error::Invalid(m) => ApiError::bad_request(m),
            Error::NotFound(n) => ApiError::not_found(format!("no schedule '{n}'")),
            Error::Unavailable(m) => ApiError::unavailable(m),
        }
    }
}

/// For the scheduler's overlap policy: waits (bounded) until this replica has
/// folded everything `partition` of `topic` held when called (see
/// [`super::applied::settle`]), so a run started a moment ago is seen; why not
/// otherwise (not owned, the broker did not answer, the partition lags).
pub(crate) async fn settle_partition(
    s: &AppState,
    topic: &str,
    partition: i32,
) -> Result<(), String> {
    super::applied::settle(s, topic, &[partition])
        .await
        .map_err(|e| e.message)
}

fn scheduler(s: Option<Extension<Arc<Scheduler>>>) -> Result<Arc<Scheduler>, ApiError> {
    s.map(|Extension(s)| s)
        .ok_or_else(|| ApiError::unavailable("schedules are not running on this replica"))
}

/// The JSON view of a schedule, with its next run times.
fn view(e: &Entry) -> Value {
    let s = &e.spec;
    let next: Vec<i64> = match (s.paused, s.timing()) {
        (false, Ok(t)) => t.ticks_after(now_ms().max(e.progress.last_tick_ms), NEXT_RUNS),
        _ => Vec::new(),
    };
    let mut v = serde_json::to_value(s).unwrap_or(Value::Null);
    v["progress"] = serde_json::to_value(&e.progress).unwrap_or(Value::Null);
    v["next_runs_ms"] = json!(next);
    v
}

fn enum_field<T: serde::de::DeserializeOwned>(
    f: &Map<String, Value>,
    name: &str,
    allowed: &str,
) -> Result<Option<T>, ApiError> {
    match f.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => serde_json::from_value(v.clone()).map(Some).map_err(|_| {
            ApiError::bad_request(format!("body field '{name}' must be one of {allowed}"))
        }),
    }
}

/// The spec a create request describes.
fn spec_of(f: &Map<String, Value>, now: i64) -> Result<Spec, ApiError> {
    let name = params::string_field(f, "name", 100)?
        .ok_or_else(|| ApiError::bad_request("body field 'name' is required"))?;
    valid_name(&name).map_err(|e| ApiError::bad_request(e.0))?;
    let workflow_type = params::string_field(f, "workflow_type", 100)?
        .ok_or_else(|| ApiError::bad_request("body field 'workflow_type' is required"))?;
    let every_ms = match f.get("every") {
        None | Some(Value::Null) => None,
        Some(Value::String(d)) => Some(
            humantime::parse_duration(d)
                .map_err(|e| {
                    ApiError::bad_request(format!(
                        "body field 'every': '{}': {e}",
                        params::truncate(d)
                    ))
                })?
                .as_millis() as i64,
        ),
        Some(Value::Number(n)) => Some(n.as_i64().ok_or_else(|| {
            ApiError::bad_request("body field 'every' must be a duration ('30s') or ms")
        })?),
        Some(_) => {
            return Err(ApiError::bad_request(
                "body field 'every' must be a duration ('30s') or ms",
            ))
        }
    };
    let version = match f.get("version") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            v.as_u64()
                .filter(|v| (1..=u64::from(u32::MAX)).contains(v))
                .ok_or_else(|| {
                    ApiError::bad_request("body field 'version' must be a positive integer")
                })? as u32,
        ),
    };
    let input = match f.get("input") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(m)) => m.clone(),
        Some(_) => {
            return Err(ApiError::bad_request(
                "body field 'input' must be a JSON object",
            ))
        }
    };
    weft_shared::data::data_map_from_json(&Value::Object(input.clone()), "input")
        .map_err(|e| ApiError::bad_request(format!("body field 'input' is invalid: {e}")))?;
    let catchup_limit = match f.get("catchup_limit") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            v.as_u64()
                .filter(|n| (1..=1000).contains(n))
                .ok_or_else(|| {
                    ApiError::bad_request("body field 'catchup_limit' must be 1 to 1000")
                })? as u32,
        ),
    };
    let spec = Spec {
        name,
        workflow_type,
        version,
        input,
        cron: params::string_field(f, "cron", 200)?,
        timezone: params::string_field(f, "timezone", 100)?,
        every_ms,
        catchup: enum_field::<Catchup>(f, "catchup", "skip, one, all")?.unwrap_or_default(),
        catchup_limit,
        overlap: enum_field::<Overlap>(f, "overlap", "allow, skip, cancel_previous")?
            .unwrap_or_default(),
        paused: matches!(f.get("paused"), Some(Value::Bool(true))),
        start_after_ms: now,
        updated_at_ms: now,
    };
    spec.timing().map_err(|e| ApiError::bad_request(e.0))?;
    Ok(spec)
}

/// `POST /v1/schedules`: create or replace (201 new, 200 replaced).
pub async fn put(
    State(s): State<AppState>,
    sch: Option<Extension<Arc<Scheduler>>>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let sch = scheduler(sch)?;
    let f = params::json_object(
        &body,
        Some(&[
            "name",
            "workflow_type",
            "version",
            "input",
            "cron",
            "timezone",
            "every",
            "catchup",
            "catchup_limit",
            "overlap",
            "paused",
        ]),
    )?;
    let mut spec = spec_of(&f, now_ms())?;
    catalog_with(&s, &spec.workflow_type)?;
    sch.caught_up().await;
    let existing = sch.get(&spec.name);
    if let Some(e) = &existing {
        // A replaced schedule keeps its place: no tick already due is fired again or lost.
        spec.start_after_ms = e.spec.start_after_ms;
    }
    sch.put(spec.clone()).await?;
    tracing::info!(schedule = %spec.name, workflow_type = %spec.workflow_type, replaced = existing.is_some(), "schedule saved");
    let entry = sch
        .get(&spec.name)
        .ok_or_else(|| ApiError::unavailable("the schedule was not read back"))?;
    let code = if existing.is_some() {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((code, Json(view(&entry))).into_response())
}

/// `GET /v1/schedules`.
pub async fn list(
    sch: Option<Extension<Arc<Scheduler>>>,
    params: Params,
) -> Result<Json<Value>, ApiError> {
    params.allow(&[])?;
    let sch = scheduler(sch)?;
    sch.caught_up().await;
    let items: Vec<Value> = sch.list().iter().map(view).collect();
    Ok(Json(json!({ "items": items })))
}

/// `GET /v1/schedules/{name}`.
pub async fn get(
    sch: Option<Extension<Arc<Scheduler>>>,
    Path(name): Path<String>,
    params: Params,
) -> Result<Json<Value>, ApiError> {
    params.allow(&[])?;
    let sch = scheduler(sch)?;
    sch.caught_up().await;
    let e = sch.get(&name).ok_or(Error::NotFound(name))?;
    Ok(Json(view(&e)))
}

/// `POST /v1/schedules/{name}/pause`.
pub async fn pause(
    sch: Option<Extension<Arc<Scheduler>>>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let sch = scheduler(sch)?;
    sch.caught_up().await;
    let e = sch.set_paused(&name, true).await?;
    Ok(Json(view(&e)))
}

/// `POST /v1/schedules/{name}/resume`.
pub async fn resume(
    sch: Option<Extension<Arc<Scheduler>>>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let sch = scheduler(sch)?;
    sch.caught_up().await;
    let e = sch.set_paused(&name, false).await?;
    Ok(Json(view(&e)))
}

/// `DELETE /v1/schedules/{name}`.
pub async fn delete(
    sch: Option<Extension<Arc<Scheduler>>>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let sch = scheduler(sch)?;
    sch.caught_up().await;
    sch.delete(&name).await?;
    Ok(Json(json!({ "name": name, "deleted": true })))
}
