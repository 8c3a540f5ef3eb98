//! The API's OpenAPI 3.1 description, checked in as `orchestrator/openapi.json`
//! and served at `GET /v1/openapi.json`. The tests below fail when a route of
//! [`ROUTES`](super::ROUTES) is missing from the document or the document
//! describes a route the router does not serve; the integration tests check
//! real responses against its schemas.

use axum::http::header;
use axum::response::{IntoResponse, Response};

/// The document, as checked in.
pub const OPENAPI_JSON: &str = include_str!("../../openapi.json");

/// The HTTP methods an OpenAPI path item can describe.
pub const OPERATION_METHODS: &[&str] = &[
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

pub async fn serve() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI_JSON).into_response()
}

/// `(METHOD, path)` of every operation the document describes, sorted.
pub fn documented_operations(doc: &serde_json::Value) -> Vec<(String, String)> {
    let mut ops: Vec<(String, String)> = doc["paths"]
        .as_object()
        .into_iter()
        .flatten()
        .flat_map(|(path, item)| {
            OPERATION_METHODS
                .iter()
                .filter(|m| item.get(**m).is_some())
                .map(move |m| (m.to_uppercase(), path.clone()))
        })
        .collect();
    ops.sort();
    ops
}

/// `(METHOD, path)` of every route the router serves, sorted.
pub fn routed_operations() -> Vec<(String, String)> {
    let mut ops: Vec<(String, String)> = super::ROUTES
        .iter()
        .map(|r| (r.method.as_str().to_owned(), r.path.to_owned()))
        .collect();
    ops.sort();
    ops
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use serde_json::Value;

    use super::*;

    fn doc() -> Value {
        serde_json::from_str(OPENAPI_JSON).expect("openapi.json is JSON")
    }

    #[test]
    fn every_route_is_documented_and_every_documented_route_exists() {
        let documented: BTreeSet<_> = documented_operations(&doc()).into_iter().collect();
        let routed: BTreeSet<_> = routed_operations().into_iter().collect();
        let undocumented: Vec<_> = routed.difference(&documented).collect();
        let unrouted: Vec<_> = documented.difference(&routed).collect();
        assert!(
            undocumented.is_empty() && unrouted.is_empty(),
            "routes missing from openapi.json: {undocumented:?}; documented but not routed: {unrouted:?}"
        );
        assert_eq!(
            routed.len(),
            super::super::ROUTES.len(),
            "a route is listed twice"
        );
    }

    #[test]
    fn the_router_builds_from_the_route_list() {
        // Panics on overlapping (same path and method) or malformed routes.
        let _ = super::super::routes();
    }

    #[test]
    fn document_is_openapi_3_1_and_complete() {
        let doc = doc();
        assert!(doc["openapi"].as_str().unwrap_or("").starts_with("3.1"));
        for (path, item) in doc["paths"].as_object().unwrap() {
            let templated: BTreeSet<&str> = path
                .split('/')
                .filter_map(|seg| seg.strip_prefix('{')?.strip_suffix('}'))
                .collect();
            for m in OPERATION_METHODS {
                let Some(op) = item.get(*m) else { continue };
                let what = format!("{} {path}", m.to_uppercase());
                assert!(op["operationId"].is_string(), "{what}: no operationId");
                assert!(op["summary"].is_string(), "{what}: no summary");
                let responses = op["responses"]
                    .as_object()
                    .unwrap_or_else(|| panic!("{what}: no responses"));
                assert!(!responses.is_empty(), "{what}: no responses");
                let declared: BTreeSet<&str> = item["parameters"]
                    .as_array()
                    .into_iter()
                    .chain(op["parameters"].as_array())
                    .flatten()
                    .filter_map(|p| resolve(&doc, p))
                    .filter(|p| p["in"] == "path")
                    .filter_map(|p| p["name"].as_str())
                    .collect();
                assert_eq!(declared, templated, "{what}: path parameters");
            }
        }
    }

    fn resolve<'a>(doc: &'a Value, v: &'a Value) -> Option<&'a Value> {
        match v.get("$ref").and_then(Value::as_str) {
            Some(r) => doc.pointer(r.strip_prefix('#')?),
            None => Some(v),
        }
    }

    #[test]
    fn every_reference_resolves() {
        fn walk(doc: &Value, v: &Value, at: &str) {
            match v {
                Value::Object(m) => {
                    if let Some(Value::String(r)) = m.get("$ref") {
                        let target = r.strip_prefix('#').and_then(|p| doc.pointer(p));
                        assert!(target.is_some(), "{at}: dangling $ref {r}");
                    }
                    for (k, child) in m {
                        walk(doc, child, &format!("{at}/{k}"));
                    }
                }
                Value::Array(items) => {
                    for (i, child) in items.iter().enumerate() {
                        walk(doc, child, &format!("{at}/{i}"));
                    }
                }
                _ => {}
            }
        }
        let doc = doc();
        walk(&doc, &doc, "");
    }
}
