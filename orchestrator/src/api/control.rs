//! Control of a running instance: cancel, pause, resume and named signals.
//! Each appends an *input* event to the instance's events topic (keyed by the
//! instance id, `weft.source_kind=input`) after checking the local projection
//! (unknown instance → 404, a state the request makes no sense in → 409); the
//! decider applies it like any other input. An `Idempotency-Key` header makes
//! the request repeatable: the key becomes the event's idempotency key and
//! its id is derived from it, so a retried request is applied once.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use rdkafka::producer::future_producer::Delivery;
use rdkafka::producer::FutureRecord;
use serde_json::{json, Map, Value};
use weft_shared::avro::AvroRecord;
use weft_shared::data::{data_map_from_json, DataMap, WorkflowData};
use weft_shared::event::{now_ms, META_SOURCE_KIND};
use weft_shared::fsm::meta;
use weft_shared::ids::{EventId, InstanceId};
use weft_shared::kafka::headers;
use weft_shared::state::WorkflowState;
use weft_shared::topics::headers as h;
use weft_shared::{WorkflowEvent, WorkflowEventType as T};

use super::applied::{instance_or_wait, wait_applied, CONTROL_WAIT};
use super::forward::Forwarder;
use super::params::{self, truncate};
use super::{catalog_with, unknown_instance, ApiError, AppState};

/// The request header whose value becomes the event's idempotency key.
pub const IDEMPOTENCY_KEY_HEADER: &str = "idempotency-key";

/// Appends an input event to its instance's events topic and waits for the
/// ack; returns where the broker put it.
pub(super) async fn publish(s: &AppState, event: &WorkflowEvent) -> Result<Delivery, ApiError> {
    let payload = event.encode();
    let topic = s.topics.events(&event.workflow_type);
    let key = event.instance_id.to_string();
    let hdrs = headers(&[
        (h::EVENT_TYPE, event.event_type.as_str()),
        (h::IDEMPOTENCY_KEY, &event.idempotency_key),
    ]);
    let record = FutureRecord::to(&topic)
        .key(&key)
        .payload(&payload)
        .headers(hdrs);
    s.producer
        .send(record, Duration::from_secs(10))
        .await
        .map_err(|(e, _)| {
            ApiError::unavailable(format!("could not append {}: {e}", event.event_type))
        })
}

/// What a control request asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Action {
    Cancel,
    Pause,
    Resume,
    Signal,
}

impl Action {
    fn name(self) -> &'static str {
        match self {
            Action::Cancel => "cancel",
            Action::Pause => "pause",
            Action::Resume => "resume",
            Action::Signal => "signal",
        }
    }

    fn event_type(self) -> T {
        match self {
            Action::Cancel => T::WorkflowCancelled,
            Action::Pause => T::WorkflowPaused,
            Action::Resume => T::WorkflowResumed,
            Action::Signal => T::DependencyResolved,
        }
    }
}

/// Why `action` cannot be applied to a workflow in `state`, if it cannot.
fn conflict(action: Action, state: WorkflowState) -> Option<String> {
    if state.is_terminal() {
        return Some(format!(
            "cannot {} the workflow: it is already {state}",
            action.name()
        ));
    }
    match (action, state) {
        (Action::Pause, WorkflowState::Paused) => {
            Some("cannot pause the workflow: it is already paused".into())
        }
        (Action::Resume, s) if s != WorkflowState::Paused => {
            Some(format!("cannot resume the workflow: it is {s}, not paused"))
        }
        _ => None,
    }
}

/// The `Idempotency-Key` header, if sent (1..=256 visible characters).
fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(v) = headers.get(IDEMPOTENCY_KEY_HEADER) else {
        return Ok(None);
    };
    match v.to_str() {
        Ok(k) if !k.trim().is_empty() && k.len() <= 256 => Ok(Some(k.to_owned())),
        _ => Err(ApiError::bad_request(
            "header 'Idempotency-Key' must be 1 to 256 visible ASCII characters",
        )),
    }
}

/// The input event for `action`, with its id and key derived from the
/// request's idempotency key when one was given.
fn input_event(
    action: Action,
    ty: &str,
    id: InstanceId,
    key: Option<&str>,
    data: DataMap,
    node_id: &str,
) -> WorkflowEvent {
    let (event_id, key) = match key {
        Some(k) => (
            EventId::derived(&[b"input", ty.as_bytes(), id.as_bytes(), k.as_bytes()]),
            k.to_owned(),
        ),
        None => {
            let e = EventId::random();
            (e, format!("{}:{e}", action.name()))
        }
    };
    let mut event = WorkflowEvent::new(action.event_type(), ty, id, key, now_ms());
    event.event_id = event_id;
    event.data = data;
    event.source_node_id = node_id.to_owned();
    event
        .metadata
        .insert(META_SOURCE_KIND.into(), "input".into());
    event
}

/// Checks the instance (waiting for the apply of a start it may have raced),
/// publishes the input event, waits (bounded) until it is folded and answers
/// 202; `applied` says whether a read now sees it.
#[allow(clippy::too_many_arguments)]
async fn submit(
    s: &AppState,
    fw: Option<Extension<Arc<Forwarder>>>,
    action: Action,
    ty: &str,
    raw_id: &str,
    headers: &HeaderMap,
    data: DataMap,
    metadata: &[(&str, &str)],
) -> Result<Response, ApiError> {
    let id = params::instance_id(raw_id)?;
    let key = idempotency_key(headers)?;
    catalog_with(s, ty)?;
    let state = instance_or_wait(s, fw.as_ref(), ty, id)
        .await?
        .ok_or_else(|| unknown_instance(ty, id))?;
    if let Some(why) = conflict(action, state.state) {
        return Err(ApiError::conflict(format!("{ty} {id}: {why}")));
    }
    let mut event = input_event(action, ty, id, key.as_deref(), data, &s.node_id);
    for (k, v) in metadata {
        event.metadata.insert((*k).into(), (*v).into());
    }
    let at = publish(s, &event).await?;
    let topic = s.topics.events(ty);
    let applied = wait_applied(s, &topic, at.partition, at.offset, CONTROL_WAIT).await?;
    tracing::info!(workflow_type = %ty, instance_id = %id, action = action.name(), event_id = %event.event_id, partition = at.partition, offset = at.offset, applied, "control input appended");
    let body = json!({
        "applied": applied,
        "event_id": event.event_id,
        "event_type": event.event_type,
        "instance_id": id,
        "workflow_type": ty,
        "idempotency_key": event.idempotency_key,
    });
    Ok((StatusCode::ACCEPTED, Json(body)).into_response())
}

/// The optional `{"reason": "..."}` body of cancel, pause and resume as event data.
fn reason_data(body: &[u8]) -> Result<DataMap, ApiError> {
    let fields = params::json_object(body, Some(&["reason"]))?;
    let mut data = DataMap::new();
    if let Some(reason) = params::string_field(&fields, "reason", 1000)? {
        data.insert("reason".into(), WorkflowData::Str(reason));
    }
    Ok(data)
}

pub async fn cancel(
    State(s): State<AppState>,
    fw: Option<Extension<Arc<Forwarder>>>,
    Path((ty, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let data = reason_data(&body)?;
    submit(&s, fw, Action::Cancel, &ty, &id, &headers, data, &[]).await
}

pub async fn pause(
    State(s): State<AppState>,
    fw: Option<Extension<Arc<Forwarder>>>,
    Path((ty, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let data = reason_data(&body)?;
    submit(&s, fw, Action::Pause, &ty, &id, &headers, data, &[]).await
}

pub async fn resume(
    State(s): State<AppState>,
    fw: Option<Extension<Arc<Forwarder>>>,
    Path((ty, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let data = reason_data(&body)?;
    submit(&s, fw, Action::Resume, &ty, &id, &headers, data, &[]).await
}

/// Whether `name` is a valid signal name: `[A-Za-z0-9_.-]{1,100}`.
fn valid_signal_name(name: &str) -> bool {
    (1..=100).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

pub async fn signal(
    State(s): State<AppState>,
    fw: Option<Extension<Arc<Forwarder>>>,
    Path((ty, id, name)): Path<(String, String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    if !valid_signal_name(&name) {
        return Err(ApiError::bad_request(format!(
            "path parameter 'name': '{}' is not a signal name ([A-Za-z0-9_.-], 1 to 100 characters)",
            truncate(&name)
        )));
    }
    let fields: Map<String, Value> = params::json_object(&body, None)?;
    let data = data_map_from_json(&Value::Object(fields), "body").map_err(|e| {
        ApiError::bad_request(format!("request body is not valid signal data: {e}"))
    })?;
    submit(
        &s,
        fw,
        Action::Signal,
        &ty,
        &id,
        &headers,
        data,
        &[(meta::SIGNAL, name.as_str())],
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use WorkflowState as W;

    #[test]
    fn conflicts_name_the_state() {
        for terminal in [
            W::Completed,
            W::Failed,
            W::Cancelled,
            W::Timeout,
            W::Compensated,
        ] {
            for action in [
                Action::Cancel,
                Action::Pause,
                Action::Resume,
                Action::Signal,
            ] {
                let why = conflict(action, terminal).expect("terminal conflicts");
                assert!(why.contains(terminal.as_str()), "{why}");
            }
        }
        assert!(conflict(Action::Pause, W::Paused)
            .unwrap()
            .contains("already paused"));
        assert!(conflict(Action::Resume, W::Running)
            .unwrap()
            .contains("running, not paused"));
        assert_eq!(conflict(Action::Resume, W::Paused), None);
        assert_eq!(conflict(Action::Cancel, W::Paused), None);
        assert_eq!(conflict(Action::Pause, W::Running), None);
        assert_eq!(conflict(Action::Signal, W::WaitingForDependency), None);
    }

    #[test]
    fn idempotency_key_derives_the_event() {
        let id = InstanceId::random();
        let a = input_event(Action::Cancel, "demo", id, Some("k1"), DataMap::new(), "n");
        let b = input_event(Action::Cancel, "demo", id, Some("k1"), DataMap::new(), "n");
        assert_eq!(
            (a.event_id, &a.idempotency_key),
            (b.event_id, &b.idempotency_key)
        );
        assert_eq!(a.idempotency_key, "k1");
        assert_eq!(a.event_type, T::WorkflowCancelled);
        assert_eq!(
            a.metadata.get(META_SOURCE_KIND).map(String::as_str),
            Some("input")
        );
        let c = input_event(Action::Pause, "demo", id, None, DataMap::new(), "n");
        let d = input_event(Action::Pause, "demo", id, None, DataMap::new(), "n");
        assert_ne!(c.event_id, d.event_id);
        assert!(c.idempotency_key.starts_with("pause:"));
    }

    #[test]
    fn bodies_and_names() {
        assert!(reason_data(b"").unwrap().is_empty());
        assert_eq!(
            reason_data(br#"{"reason":"ops"}"#).unwrap().get("reason"),
            Some(&WorkflowData::Str("ops".into()))
        );
        assert!(reason_data(br#"{"reason":1}"#)
            .unwrap_err()
            .message
            .contains("'reason'"));
        assert!(reason_data(br#"{"why":"x"}"#)
            .unwrap_err()
            .message
            .contains("'why'"));
        assert!(valid_signal_name("approved.v2"));
        assert!(!valid_signal_name("a b"));
        assert!(!valid_signal_name(""));
        let mut h = HeaderMap::new();
        h.insert(IDEMPOTENCY_KEY_HEADER, " ".parse().unwrap());
        assert!(idempotency_key(&h)
            .unwrap_err()
            .message
            .contains("Idempotency-Key"));
    }
}
