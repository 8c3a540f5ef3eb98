//! The web console, served by every orchestrator at `/ui`.
//!
//! A small single-page application in plain JavaScript (no build step, no
//! framework, nothing fetched from elsewhere at run time): every asset is
//! compiled into the binary with `include_str!` and served from memory. The
//! page talks only to the public HTTP API (`/v1/...`) of the orchestrator that
//! served it, with the bearer token the user pasted, if any, on every request.
//! The pages (workflow types, instances, one instance, definitions, nodes) are
//! described in `docs/ui.md`.

use axum::extract::Path;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;

/// One embedded file: its name under `/ui/`, content type and content.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static str,
}

const fn asset(name: &'static str, content_type: &'static str, body: &'static str) -> Asset {
    Asset {
        name,
        content_type,
        body,
    }
}

const JS: &str = "text/javascript; charset=utf-8";

/// Every file of the console.
const ASSETS: &[Asset] = &[
    asset(
        "index.html",
        "text/html; charset=utf-8",
        include_str!("assets/index.html"),
    ),
    asset(
        "app.css",
        "text/css; charset=utf-8",
        include_str!("assets/app.css"),
    ),
    asset("util.js", JS, include_str!("assets/util.js")),
    asset("api.js", JS, include_str!("assets/api.js")),
    asset("types.js", JS, include_str!("assets/types.js")),
    asset("instances.js", JS, include_str!("assets/instances.js")),
    asset("graph.js", JS, include_str!("assets/graph.js")),
    asset("history.js", JS, include_str!("assets/history.js")),
    asset("waterfall.js", JS, include_str!("assets/waterfall.js")),
    asset("instance.js", JS, include_str!("assets/instance.js")),
    asset("definitions.js", JS, include_str!("assets/definitions.js")),
    asset("dlq.js", JS, include_str!("assets/dlq.js")),
    asset("nodes.js", JS, include_str!("assets/nodes.js")),
    asset("app.js", JS, include_str!("assets/app.js")),
];

/// The routes of the console: `/ui` (the page), `/ui/` and `/ui/{file}`.
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/ui", get(|| async { file("index.html") }))
        .route("/ui/", get(|| async { Redirect::permanent("/ui") }))
        .route(
            "/ui/{file}",
            get(|Path(name): Path<String>| async move { file(&name) }),
        )
}

/// The asset `name`, or a plain 404.
fn file(name: &str) -> Response {
    let Some(a) = ASSETS.iter().find(|a| a.name == name) else {
        return (
            StatusCode::NOT_FOUND,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!("no file /ui/{name} (the console is at /ui)"),
        )
            .into_response();
    };
    let mut resp = a.body.into_response();
    let headers = resp.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(a.content_type),
    );
    // Assets change with the binary only; revalidate so an upgrade shows at once.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::HeaderName::from_static("x-content-type-options"),
        HeaderValue::from_static("nosniff"),
    );
    // Nothing but this origin: no CDN, no inline script, no framing.
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; frame-ancestors 'none'",
        ),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_script_the_page_loads_is_embedded() {
        let index = ASSETS[0].body;
        for a in ASSETS.iter().filter(|a| a.name.ends_with(".js")) {
            assert!(
                index.contains(&format!("src=\"/ui/{}\"", a.name)),
                "index.html does not load {}",
                a.name
            );
        }
        for (i, _) in index.match_indices("src=\"/ui/") {
            let rest = &index[i + 9..];
            let name = &rest[..rest.find('"').unwrap()];
            assert!(
                ASSETS.iter().any(|a| a.name == name),
                "index.html loads /ui/{name}, which is not embedded"
            );
        }
    }

    #[test]
    fn nothing_is_fetched_from_another_origin() {
        // The SVG namespace is a name, not a fetch.
        const SVG_NS: &str = "http://www.w3.org/2000/svg";
        for a in ASSETS {
            let body = a.body.replace(SVG_NS, "");
            for needle in [
                "http://",
                "https://",
                "//cdn",
                "@import",
                "<link rel=\"preconnect",
            ] {
                assert!(
                    !body.contains(needle),
                    "{} mentions {needle}: the console must not load anything from elsewhere",
                    a.name
                );
            }
        }
    }

    #[test]
    fn unknown_files_are_404() {
        assert_eq!(file("nope.js").status(), StatusCode::NOT_FOUND);
        let ok = file("app.js");
        assert_eq!(ok.status(), StatusCode::OK);
        assert_eq!(ok.headers()[header::CONTENT_TYPE], JS);
    }
}
