//! The HTTP API surface and the `weft` CLI against a real orchestrator on
//! Tansu: every documented operation answers one of its documented statuses
//! and real bodies match the OpenAPI schemas; malformed requests get a 4xx
//! naming the field; list/query pages, state at a sequence, replay and the
//! live `/watch` stream agree with the history; control endpoints check the
//! instance's state; the CLI's query, watch and control commands work end to end.
//!
//! Modules: `documented` (the OpenAPI document against the router and real
//! answers), `malformed` (4xx naming the field), `live` (queries, replay,
//! watch, control and the CLI); `support` has the schema checks and the CLI runner.

mod common;
#[path = "api_surface/documented.rs"]
mod documented;
#[path = "api_surface/live.rs"]
mod live;
#[path = "api_surface/malformed.rs"]
mod malformed;
#[path = "api_surface/support.rs"]
mod support;
