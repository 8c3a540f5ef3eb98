//! An instance's history: a page of its events (`from`/`to`/`limit`, with
//! `next_from` when more follow), its state as it was at a sequence number
//! (`Store::reconstruct`), and a read-only replay that returns a range of
//! events with the state folded from them.

use axum::extract::{Path, State};
use axum::Json;
use serde_json::{json, Value};
use weft_shared::fsm::{evolve, DefinitionLookup, InstanceState};
use weft_shared::ids::InstanceId;
use weft_shared::WorkflowEvent;

use super::params::{self, Params, SeqRange};
use super::{catalog_with, unknown_instance, views, ApiError, AppState};
use crate::store::Store;

/// Default and largest page of `/events`.
const EVENTS_DEFAULT_LIMIT: u64 = 1_000;
const EVENTS_MAX_LIMIT: u64 = 10_000;
/// Default and largest number of events one `/replay` folds.
const REPLAY_MAX_LIMIT: u64 = 10_000;

/// Events of `range`, and the sequence number to continue from when the page
/// was full and more events follow.
pub(super) fn page(
    store: &Store,
    ty: &str,
    id: InstanceId,
    range: SeqRange,
) -> Result<(Vec<WorkflowEvent>, Option<u64>), ApiError> {
    let mut events = store.events(ty, id, range.from, range.to, range.limit + 1)?;
    let next_from = if events.len() > range.limit {
        events.pop().map(|e| e.sequence_number)
    } else {
        None
    };
    Ok((events, next_from))
}

fn current(s: &AppState, ty: &str, id: InstanceId) -> Result<InstanceState, ApiError> {
    s.store
        .instance(ty, id)?
        .ok_or_else(|| unknown_instance(ty, id))
}

fn beyond_end(name: &str, seq: u64, last: u64) -> ApiError {
    ApiError::bad_request(format!(
        "query parameter '{name}': {seq} is beyond the instance's last event ({last})"
    ))
}

/// `GET /v1/workflows/{ty}/{id}/events?from&to&limit`.
pub async fn events(
    State(s): State<AppState>,
    Path((ty, id)): Path<(String, String)>,
    params: Params,
) -> Result<Json<Value>, ApiError> {
    params.allow(&["from", "to", "limit"])?;
    let id = params::instance_id(&id)?;
    let range = params::seq_range(&params, EVENTS_DEFAULT_LIMIT, EVENTS_MAX_LIMIT)?;
    catalog_with(&s, &ty)?;
    let (events, next_from) = page(&s.store, &ty, id, range)?;
    if events.is_empty() {
        current(&s, &ty, id)?;
    }
    Ok(Json(json!({
        "events": events.iter().map(views::event).collect::<Vec<_>>(),
        "next_from": next_from,
    })))
}

/// `GET /v1/workflows/{ty}/{id}/state?at=SEQ`: the state after event `at`
/// (the current state without `at`).
pub async fn state_at(
    State(s): State<AppState>,
    Path((ty, id)): Path<(String, String)>,
    params: Params,
) -> Result<Json<Value>, ApiError> {
    params.allow(&["at"])?;
    let id = params::instance_id(&id)?;
    let at = params.int("at", 1, u64::MAX)?;
    let catalog = catalog_with(&s, &ty)?;
    let now = current(&s, &ty, id)?;
    let state = match at {
        None => now,
        Some(at) if at > now.last_seq => return Err(beyond_end("at", at, now.last_seq)),
        Some(at) if at == now.last_seq => now,
        Some(at) => s
            .store
            .reconstruct(&ty, id, at)?
            .ok_or_else(|| unknown_instance(&ty, id))?,
    };
    Ok(Json(views::instance(
        &state,
        catalog.get(&ty, state.definition_version),
    )))
}

/// `POST /v1/workflows/{ty}/{id}/replay?from&to&limit`: folds events
/// `from..=to` onto the state before `from` and returns both. Changes nothing.
pub async fn replay(
    State(s): State<AppState>,
    Path((ty, id)): Path<(String, String)>,
    params: Params,
) -> Result<Json<Value>, ApiError> {
    params.allow(&["from", "to", "limit"])?;
    let id = params::instance_id(&id)?;
    let range = params::seq_range(&params, REPLAY_MAX_LIMIT, REPLAY_MAX_LIMIT)?;
    let catalog = catalog_with(&s, &ty)?;
    let now = current(&s, &ty, id)?;
    if range.from > now.last_seq {
        return Err(beyond_end("from", range.from, now.last_seq));
    }
    let (events, next_from) = page(&s.store, &ty, id, range)?;
    let mut state = if range.from > 1 {
        s.store.reconstruct(&ty, id, range.from - 1)?
    } else {
        None
    };
    for e in &events {
        state = Some(evolve(state, e).map_err(|err| {
            ApiError::internal(format!(
                "the stored history of {ty} {id} does not fold at sequence {}: {err}",
                e.sequence_number
            ))
        })?);
    }
    tracing::debug!(workflow_type = %ty, instance_id = %id, from = range.from, events = events.len(), "replayed history");
    let state_json = state
        .as_ref()
        .map(|st| views::instance(st, catalog.get(&ty, st.definition_version)));
    Ok(Json(json!({
        "from": range.from,
        "to": events.last().map(|e| e.sequence_number),
        "events": events.iter().map(views::event).collect::<Vec<_>>(),
        "next_from": next_from,
        "state": state_json,
    })))
}
