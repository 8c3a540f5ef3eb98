//! The orchestrator's HTTP API: definitions, starting and controlling
//! instances, reading and querying them (state, history, state at a
//! sequence, replay, a live event stream), the operational endpoints
//! `/healthz`, `/readyz` and `/metrics`, traces and per-type analytics, and
//! its own OpenAPI description.
//!
//! Every route is listed once, in [`ROUTES`]: the router is built from that
//! list, and a test checks it against the checked-in OpenAPI document
//! (`orchestrator/openapi.json`), so neither can drift from the other.
//!
//! Modules: [`ops`] (health, metrics, admin), [`defs`] (definitions),
//! [`lifecycle`] (deprecate, delete, diff of definitions), [`archive`] (archival), [`schedules`],
//! [`workflows`] (start, get, list), [`history`] (events, state at, replay),
//! [`control`] (cancel, pause, resume, signals), [`watch`] (server-sent
//! events), [`insight`] (traces and analytics), [`openapi`] (the document), [`params`] (request parsing),
//! [`views`] (JSON shapes), [`error`]; [`serve`] (connections, TLS and header timeouts, [`tls`]); [`applied`] (read your writes); [`dlq`] (dead letters); [`forward`] sends requests about an
//! instance whose partition another replica owns to that replica.

mod applied;
mod archive;
pub mod auth;
mod auth_jwt;
mod auth_limits;
pub mod auth_policy;
mod auth_route;
mod children;
mod control;
mod defs;
mod dlq;
mod error;
pub mod forward;
mod history;
mod insight;
mod lifecycle;
mod nodes;
pub mod openapi;
mod ops;
mod params;
mod placement;
mod scatter;
pub(crate) mod schedules;
mod sealing;
pub mod serve;
pub mod tls;
mod types;
mod views;
mod watch;
mod workflows;

use std::sync::Arc;

use axum::http::{Method, Uri};
use axum::routing::{delete, get, post, MethodRouter};
use axum::Router;
use rdkafka::producer::FutureProducer;
use tokio::sync::{broadcast, watch as watch_channel};
use weft_shared::{Topics, WorkflowEvent};

pub use error::ApiError;
pub use insight::SERVICE_NAME as TRACE_SERVICE_NAME;

use crate::definitions::{Catalog, Registry};
use crate::metrics::Metrics;
use crate::status::Status;
use crate::store::Store;

/// Applied history events as the partition processors commit them (see
/// [`crate::partition::Shared::events_tx`]); `/watch` streams subscribe to it.
pub type EventFeed = broadcast::Sender<Arc<WorkflowEvent>>;

/// How many applied events a slow `/watch` stream may fall behind before it
/// reloads from the store.
pub const EVENT_FEED_CAPACITY: usize = 4096;

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
    /// Applied events, for `/watch`.
    pub events: EventFeed,
    /// Becomes `true` when the orchestrator shuts down: open streams end.
    pub shutdown: watch_channel::Receiver<bool>,
}

/// One route of the API: method, path (axum syntax, which is also the
/// OpenAPI path template) and its handler.
pub struct Route {
    pub method: Method,
    pub path: &'static str,
    handler: fn() -> MethodRouter<AppState>,
}

const fn route(
    method: Method,
    path: &'static str,
    handler: fn() -> MethodRouter<AppState>,
) -> Route {
    Route {
        method,
        path,
        handler,
    }
}

/// Every route the API serves; the router is built from this list only.
pub const ROUTES: &[Route] = &[
    route(Method::GET, "/healthz", || get(ops::healthz)),
    route(Method::GET, "/readyz", || get(ops::readyz)),
    route(Method::GET, "/metrics", || get(ops::metrics)),
    route(Method::GET, "/v1/openapi.json", || get(openapi::serve)),
    route(Method::POST, "/v1/definitions", || post(defs::register)),
    route(Method::GET, "/v1/definitions", || get(types::list)),
    route(Method::GET, "/v1/definitions/{ty}", || get(defs::latest)),
    route(Method::DELETE, "/v1/definitions/{ty}", || {
        delete(lifecycle::delete)
    }),
    route(Method::GET, "/v1/definitions/{ty}/diff", || {
        get(lifecycle::diff)
    }),
    route(
        Method::POST,
        "/v1/definitions/{ty}/{version}/deprecate",
        || post(lifecycle::deprecate),
    ),
    route(
        Method::POST,
        "/v1/definitions/{ty}/{version}/reinstate",
        || post(lifecycle::reinstate),
    ),
    route(Method::GET, "/v1/definitions/{ty}/{version}", || {
        get(defs::version)
    }),
    route(
        Method::GET,
        "/v1/definitions/{ty}/tasks/{task}/placement",
        || get(placement::placement),
    ),
    route(Method::GET, "/v1/workflows", || get(workflows::list)),
    route(Method::POST, "/v1/workflows/{ty}", || {
        post(workflows::start)
    }),
    route(Method::GET, "/v1/workflows/{ty}/{id}", || {
        get(workflows::get)
    }),
    route(Method::GET, "/v1/workflows/{ty}/{id}/events", || {
        get(history::events)
    }),
    route(Method::GET, "/v1/workflows/{ty}/{id}/state", || {
        get(history::state_at)
    }),
    route(Method::POST, "/v1/workflows/{ty}/{id}/replay", || {
        post(history::replay)
    }),
    route(Method::GET, "/v1/workflows/{ty}/{id}/trace", || {
        get(insight::trace)
    }),
    route(Method::GET, "/v1/workflows/{ty}/{id}/children", || {
        get(children::list)
    }),
    route(Method::GET, "/v1/analytics/{ty}", || {
        get(insight::analytics)
    }),
    route(Method::GET, "/v1/workflows/{ty}/{id}/watch", || {
        get(watch::watch)
    }),
    route(Method::POST, "/v1/workflows/{ty}/{id}/cancel", || {
        post(control::cancel)
    }),
    route(Method::POST, "/v1/workflows/{ty}/{id}/pause", || {
        post(control::pause)
    }),
    route(Method::POST, "/v1/workflows/{ty}/{id}/resume", || {
        post(control::resume)
    }),
    route(
        Method::POST,
        "/v1/workflows/{ty}/{id}/signals/{name}",
        || post(control::signal),
    ),
    route(Method::GET, "/v1/nodes", || get(nodes::list)),
    route(Method::GET, "/v1/dlq/{ty}", || get(dlq::list)),
    route(Method::GET, "/v1/dlq/{ty}/{partition}/{offset}", || {
        get(dlq::show)
    }),
    route(
        Method::POST,
        "/v1/dlq/{ty}/{partition}/{offset}/redrive",
        || post(dlq::redrive),
    ),
    route(Method::POST, "/v1/admin/archive", || post(archive::archive)),
    route(Method::POST, "/v1/schedules", || post(schedules::put)),
    route(Method::GET, "/v1/schedules", || get(schedules::list)),
    route(Method::GET, "/v1/schedules/{name}", || get(schedules::get)),
    route(Method::DELETE, "/v1/schedules/{name}", || {
        delete(schedules::delete)
    }),
    route(Method::POST, "/v1/schedules/{name}/pause", || {
        post(schedules::pause)
    }),
    route(Method::POST, "/v1/schedules/{name}/resume", || {
        post(schedules::resume)
    }),
    route(Method::GET, "/v1/archive/{ty}/{id}", || {
        get(archive::history)
    }),
    route(Method::GET, "/v1/admin/projection-digest", || {
        get(ops::projection_digest)
    }),
];

/// The API router.
pub fn router(state: AppState) -> Router {
    routes()
        .merge(crate::ui::router())
        .fallback(no_route)
        .layer(axum::middleware::from_fn(auth_limits::charge))
        .layer(axum::middleware::from_fn(forward::forward))
        .with_state(state)
}

/// Every route of [`ROUTES`] (same-path routes merge by method).
fn routes() -> Router<AppState> {
    ROUTES.iter().fold(Router::new(), |r, route| {
        r.route(route.path, (route.handler)())
    })
}

async fn no_route(method: Method, uri: Uri) -> ApiError {
    ApiError::not_found(format!(
        "no route {method} {} (GET /v1/openapi.json lists them)",
        uri.path()
    ))
}

/// The catalog, if `ty` is a registered workflow type; 404 otherwise.
fn catalog_with(s: &AppState, ty: &str) -> Result<Arc<Catalog>, ApiError> {
    let catalog = s.registry.catalog();
    if catalog.contains_type(ty) {
        Ok(catalog)
    } else {
        Err(unknown_type(ty))
    }
}

fn unknown_type(ty: &str) -> ApiError {
    ApiError::not_found(format!(
        "unknown workflow type '{ty}': register a definition first (POST /v1/definitions)"
    ))
}

fn unknown_instance(ty: &str, id: impl std::fmt::Display) -> ApiError {
    ApiError::not_found(format!("{ty}: no workflow instance {id}"))
}
