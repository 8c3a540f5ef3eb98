//! The DLQ of a workflow type: list its dead-lettered records (one per
//! source, with the reason, how many copies and whether it was redriven),
//! show one (headers and the decoded value), redrive one back to its topic
//! once (as it was, or fixed). See [`crate::dlq`].

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use weft_shared::avro::AvroRecord;
use weft_shared::WorkflowEvent;

use super::params::{self, Params};
use super::{catalog_with, ApiError, AppState};
use crate::dlq::{self, redrive, Entry, Redrive};

/// Default and largest page of `GET /v1/dlq/{ty}`.
const DEFAULT_LIMIT: u64 = 100;
const MAX_LIMIT: u64 = 10_000;

impl From<dlq::Error> for ApiError {
    fn from(e: dlq::Error) -> Self {
        match e {
            dlq::Error::NotFound(what) => ApiError::not_found(format!("no DLQ record at {what}")),
            dlq::Error::BadRequest(m) => ApiError::bad_request(m),
            e
            @ (dlq::Error::Kafka(_) | dlq::Error::Timeout { .. } | dlq::Error::Unavailable(_)) => {
                ApiError::unavailable(e.to_string())
            }
        }
    }
}

async fn read_entries(s: &AppState, ty: &str) -> Result<Vec<Entry>, ApiError> {
    let topic = s.topics.dlq(ty);
    let records = dlq::read::read_topic_async(s.registry.kafka(), &topic, None).await?;
    Ok(dlq::entries(&records))
}

/// `GET /v1/dlq/{ty}?state=dead|redriven|all&reason=CLASS&limit=N`.
pub async fn list(
    State(s): State<AppState>,
    Path(ty): Path<String>,
    params: Params,
) -> Result<Json<Value>, ApiError> {
    params.allow(&["state", "reason", "limit"])?;
    catalog_with(&s, &ty)?;
    let state = params.one("state")?.unwrap_or("all");
    if !matches!(state, "dead" | "redriven" | "all") {
        return Err(ApiError::bad_request(format!(
            "query parameter 'state': '{}' is not dead, redriven or all",
            params::truncate(state)
        )));
    }
    let reason = params.one("reason")?;
    let limit = params.int("limit", 1, MAX_LIMIT)?.unwrap_or(DEFAULT_LIMIT) as usize;
    let entries = read_entries(&s, &ty).await?;
    let mut by_reason = serde_json::Map::new();
    for e in &entries {
        let n = by_reason
            .entry(dlq::reason_class(&e.reason))
            .or_insert(json!(0));
        *n = json!(n.as_u64().unwrap_or(0) + 1);
    }
    let redriven = |e: &Entry| matches!(e.redrive, Redrive::Done { .. });
    let matching: Vec<&Entry> = entries
        .iter()
        .filter(|e| match state {
            "dead" => !redriven(e),
            "redriven" => redriven(e),
            _ => true,
        })
        .filter(|e| reason.is_none_or(|r| dlq::reason_class(&e.reason) == r || e.reason == r))
        .collect();
    let items: Vec<Value> = matching
        .iter()
        .take(limit)
        .map(|e| dlq::view(e, false))
        .collect();
    Ok(Json(json!({
        "workflow_type": ty,
        "topic": s.topics.dlq(&ty),
        "total": matching.len(),
        "items": items,
        "by_reason": by_reason,
    })))
}

fn coordinates(partition: &str, offset: &str) -> Result<(i32, i64), ApiError> {
    let p = partition
        .parse::<i32>()
        .ok()
        .filter(|p| *p >= 0)
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "path parameter 'partition': '{}' is not a partition number",
                params::truncate(partition)
            ))
        })?;
    let o = offset
        .parse::<i64>()
        .ok()
        .filter(|o| *o >= 0)
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "path parameter 'offset': '{}' is not an offset",
                params::truncate(offset)
            ))
        })?;
    Ok((p, o))
}

/// `GET /v1/dlq/{ty}/{partition}/{offset}`: one record, whichever copy of its source.
pub async fn show(
    State(s): State<AppState>,
    Path((ty, partition, offset)): Path<(String, String, String)>,
    params: Params,
) -> Result<Json<Value>, ApiError> {
    params.allow(&[])?;
    catalog_with(&s, &ty)?;
    let (p, o) = coordinates(&partition, &offset)?;
    let topic = s.topics.dlq(&ty);
    let records = dlq::read::read_topic_async(s.registry.kafka(), &topic, Some(p)).await?;
    let record = records
        .iter()
        .find(|r| r.offset == o && !r.headers.contains_key(dlq::MARKER))
        .ok_or_else(|| ApiError::not_found(format!("{ty}: no DLQ record at {p}/{o}")))?;
    let source = record
        .headers
        .get(weft_shared::topics::headers::DLQ_SOURCE)
        .cloned()
        .unwrap_or_default();
    let entry = dlq::entries(&records)
        .into_iter()
        .find(|e| e.source == source)
        .ok_or_else(|| ApiError::not_found(format!("{ty}: {p}/{o} is not a DLQ record")))?;
    let mut v = dlq::view(&entry, true);
    // Name the record asked for, not the first copy of its source.
    v["id"] = json!(format!("{p}/{o}"));
    v["partition"] = json!(p);
    v["offset"] = json!(o);
    Ok(Json(v))
}

/// `POST /v1/dlq/{ty}/{partition}/{offset}/redrive` with an optional body
/// `{"event": {...}}`: the fixed event to send instead of the record's value.
pub async fn redrive(
    State(s): State<AppState>,
    Path((ty, partition, offset)): Path<(String, String, String)>,
    body: Bytes,
) -> Result<Response, ApiError> {
    catalog_with(&s, &ty)?;
    let (p, o) = coordinates(&partition, &offset)?;
    let fields = params::json_object(&body, Some(&["event"]))?;
    let value = match fields.get("event") {
        None | Some(Value::Null) => None,
        Some(v) => {
            let e: WorkflowEvent = serde_json::from_value(v.clone()).map_err(|e| {
                ApiError::bad_request(format!("body field 'event' is not a workflow event: {e}"))
            })?;
            if e.workflow_type != ty {
                return Err(ApiError::bad_request(format!(
                    "body field 'event': workflow_type '{}' is not '{ty}'",
                    params::truncate(&e.workflow_type)
                )));
            }
            Some(e.encode())
        }
    };
    let fixed = value.is_some();
    let outcome = redrive::redrive(redrive::Request {
        settings: s.registry.kafka(),
        producer: &s.producer,
        topics: &s.topics,
        workflow_type: &ty,
        partition: p,
        offset: o,
        value,
    })
    .await?;
    let (status, body) = match outcome {
        redrive::Outcome::Redriven { id, to } => (
            StatusCode::OK,
            json!({ "outcome": "redriven", "redrive_id": id, "to": to, "fixed": fixed }),
        ),
        redrive::Outcome::AlreadyRedriven { id, to } => (
            StatusCode::OK,
            json!({ "outcome": "already_redriven", "redrive_id": id, "to": to }),
        ),
        redrive::Outcome::InProgress { id } => (
            StatusCode::CONFLICT,
            json!({ "outcome": "in_progress", "redrive_id": id,
                    "error": format!("another redrive ({id}) of this record is under way") }),
        ),
    };
    Ok((status, Json(body)).into_response())
}
