//! Operational endpoints: liveness, readiness (which partitions are still
//! replaying), Prometheus metrics and the projection digest used to compare a
//! rebuilt projection with a live one.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::{ApiError, AppState};

pub async fn healthz() -> &'static str {
    "ok"
}

pub async fn readyz(State(s): State<AppState>) -> Response {
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

pub async fn metrics(State(s): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        s.metrics.render(),
    )
        .into_response()
}

pub async fn projection_digest(State(s): State<AppState>) -> Result<Json<Value>, ApiError> {
    let (records, digest) = s.store.digest()?;
    Ok(Json(json!({ "records": records, "digest": digest })))
}
