//! Every documented operation answers the status this test expects of it (pinned
//! per operation, and documented), and real bodies (successes, errors, stream
//! frames) match the OpenAPI schemas.

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::common::{wait_all_completed, DIAMOND};
use crate::support::{check, component, openapi, start, validate, wait_state, with_cluster, LONG};

/// The status each documented operation must answer when called below: on a
/// completed `diamond` instance, except `pause` and `signals/{name}` on a
/// running `long` one; POSTs carry `{}`.
const EXPECTED: &[(&str, &str, u16)] = &[
    ("get", "/healthz", 200),
    ("get", "/readyz", 200),
    ("get", "/metrics", 200),
    ("get", "/v1/openapi.json", 200),
    ("get", "/v1/admin/projection-digest", 200),
    ("post", "/v1/definitions", 400), // `{}` is no definition
    ("get", "/v1/definitions", 200),
    ("get", "/v1/nodes", 200),
    ("get", "/v1/definitions/{ty}", 200),
    ("get", "/v1/definitions/{ty}/{version}", 200),
    ("get", "/v1/definitions/{ty}/tasks/{task}/placement", 200), // task `A` of diamond
    ("get", "/v1/workflows", 200),
    ("post", "/v1/workflows/{ty}", 202), // `{}`: a start with no input
    ("get", "/v1/workflows/{ty}/{id}", 200),
    ("get", "/v1/workflows/{ty}/{id}/events", 200),
    ("get", "/v1/workflows/{ty}/{id}/state", 200),
    ("post", "/v1/workflows/{ty}/{id}/replay", 200),
    ("get", "/v1/workflows/{ty}/{id}/watch", 200),
    ("get", "/v1/workflows/{ty}/{id}/trace", 200),
    ("get", "/v1/workflows/{ty}/{id}/children", 200), // none: diamond starts no child
    ("get", "/v1/analytics/{ty}", 200),
    ("post", "/v1/workflows/{ty}/{id}/cancel", 409), // it completed
    ("post", "/v1/workflows/{ty}/{id}/resume", 409), // it is not paused
    ("post", "/v1/workflows/{ty}/{id}/pause", 202),
    ("post", "/v1/workflows/{ty}/{id}/signals/{name}", 202),
    ("get", "/v1/definitions/{ty}/diff", 400), // `from` is required
    ("post", "/v1/definitions/{ty}/{version}/deprecate", 200), // reinstated right after
    ("post", "/v1/definitions/{ty}/{version}/reinstate", 200),
    ("post", "/v1/admin/archive", 400), // `{}` names no type
    ("get", "/v1/archive/{ty}/{id}", 200),
    ("post", "/v1/schedules", 400), // `{}` names no schedule
    ("get", "/v1/schedules", 200),
    ("get", "/v1/schedules/{name}", 404), // no schedule 'go'
    ("post", "/v1/schedules/{name}/pause", 404),
    ("post", "/v1/schedules/{name}/resume", 404),
    ("get", "/v1/dlq/{ty}", 200),
    ("get", "/v1/dlq/{ty}/{partition}/{offset}", 400), // the template's braces are no numbers
    ("post", "/v1/dlq/{ty}/{partition}/{offset}/redrive", 400),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_operation_answers_as_documented() -> Result<()> {
    with_cluster(|api| async move {
        let doc = openapi();
        let served = api.send(Method::GET, "/v1/openapi.json", None).await?;
        ensure!(
            served.status == StatusCode::OK && served.body == doc,
            "the served document is not the checked-in one"
        );

        let r = api
            .send(
                Method::POST,
                "/v1/definitions",
                Some(("application/yaml", DIAMOND.into())),
            )
            .await?;
        ensure!(r.status == StatusCode::CREATED, "{r:?}");
        check(&doc, &Method::POST, "/v1/definitions", &r)?;
        api.register_definition(LONG).await?;
        let mut ids = Vec::new();
        for n in 0..3 {
            let r = api
                .send(
                    Method::POST,
                    "/v1/workflows/diamond",
                    Some(("application/json", json!({"input": {"n": n}}).to_string())),
                )
                .await?;
            check(&doc, &Method::POST, "/v1/workflows/{ty}", &r)?;
            ids.push(
                r.body["instance_id"]
                    .as_str()
                    .context("instance_id")?
                    .to_owned(),
            );
        }
        wait_all_completed(&api, &ids, Duration::from_secs(90)).await?;
        let long = start(&api, "long").await?;
        wait_state(&api, "long", &long, "running").await?;

        // Every documented operation, with real values: the status must be documented, the body match.
        let done = &ids[0];
        let mut seen = BTreeSet::new();
        for (path, item) in doc["paths"].as_object().context("paths")? {
            for method in ["get", "post"] {
                if item.get(method).is_none() {
                    continue;
                }
                seen.insert(format!("{method} {path}"));
                let m: Method = method.to_uppercase().parse()?;
                let id = if path.ends_with("/pause") || path.contains("/signals/") {
                    &long
                } else {
                    done
                };
                let url = path
                    .replace("{ty}", if id == &long { "long" } else { "diamond" })
                    .replace("{id}", id)
                    .replace("{version}", "1")
                    .replace("{name}", "go")
                    .replace("{task}", "A");
                let body = (m == Method::POST).then(|| ("application/json", "{}".to_string()));
                let url = if path == "/v1/workflows" {
                    format!("{url}?type=diamond")
                } else {
                    url
                };
                let r = api.send(m.clone(), &url, body).await?;
                let expected = EXPECTED
                    .iter()
                    .find(|(em, ep, _)| *em == method && *ep == path.as_str())
                    .map(|e| e.2)
                    .with_context(|| format!("{method} {path} is documented but has no expected status here"))?;
                ensure!(
                    r.status.as_u16() == expected,
                    "{method} {url} answered {}, expected {expected}: {}",
                    r.status,
                    r.body
                );
                let documented = &item[method]["responses"][r.status.as_str()];
                ensure!(
                    documented.is_object(),
                    "{method} {url} answered an undocumented {}: {}",
                    r.status,
                    r.body
                );
                let json_response = documented["content"]["application/json"].is_object()
                    || documented["$ref"].is_string();
                if json_response {
                    check(&doc, &m, path, &r)?;
                }
            }
        }
        let pinned: BTreeSet<String> = EXPECTED.iter().map(|(m, p, _)| format!("{m} {p}")).collect();
        ensure!(
            seen == pinned,
            "documented operations and the pinned ones differ: only documented {:?}, only pinned {:?}",
            seen.difference(&pinned).collect::<Vec<_>>(),
            pinned.difference(&seen).collect::<Vec<_>>()
        );

        // Paged and ranged reads, and documented errors.
        let get = |p: String| {
            let api = api.clone();
            async move { api.send(Method::GET, &p, None).await }
        };
        let r = get(format!("/v1/workflows/diamond/{done}/events?limit=2")).await?;
        check(&doc, &Method::GET, "/v1/workflows/{ty}/{id}/events", &r)?;
        ensure!(
            r.body["next_from"] == 3,
            "next_from of a 2-event page: {}",
            r.body
        );
        let r = get(format!("/v1/workflows/diamond/{done}/state?at=2")).await?;
        check(&doc, &Method::GET, "/v1/workflows/{ty}/{id}/state", &r)?;
        ensure!(r.body["sequence_number"] == 2, "{}", r.body);
        let r = api
            .send(
                Method::POST,
                &format!("/v1/workflows/diamond/{done}/replay?from=3&to=5"),
                None,
            )
            .await?;
        check(&doc, &Method::POST, "/v1/workflows/{ty}/{id}/replay", &r)?;
        ensure!(
            r.body["events"].as_array().map(Vec::len) == Some(3)
                && r.body["state"]["sequence_number"] == 5,
            "{}",
            r.body
        );
        let r = get("/v1/workflows?type=diamond&state=completed&limit=2".into()).await?;
        check(&doc, &Method::GET, "/v1/workflows", &r)?;
        ensure!(r.body["next_cursor"].is_string(), "{}", r.body);
        let r = get("/v1/workflows?type=diamond&limit=0".into()).await?;
        ensure!(r.status == StatusCode::BAD_REQUEST, "{r:?}");
        check(&doc, &Method::GET, "/v1/workflows", &r)?;
        let r = api
            .control("long", &long, "cancel", json!({"reason": "test"}), None)
            .await?;
        ensure!(r.status == StatusCode::ACCEPTED, "{r:?}");
        check(&doc, &Method::POST, "/v1/workflows/{ty}/{id}/cancel", &r)?;
        wait_state(&api, "long", &long, "cancelled").await?;

        // The stream's frames carry documented events.
        let frames = api
            .watch("diamond", done, None, Duration::from_secs(30))
            .await?;
        let event_schema = component(&doc, "Event");
        for (name, data) in &frames[..frames.len() - 1] {
            ensure!(name == "event", "unexpected frame {name}: {data}");
            validate(&event_schema, data, "a watch frame")?;
        }
        ensure!(
            frames.last().map(|f| f.0.as_str()) == Some("end"),
            "{frames:?}"
        );
        Ok(())
    })
    .await
}
