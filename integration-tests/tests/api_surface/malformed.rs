//! Malformed requests get a 4xx whose message names the parameter, path
//! segment, header or body field at fault; requests that make no sense for
//! the instance's state get 404/409 saying why.

use std::time::Duration;

use anyhow::{ensure, Result};
use reqwest::{Method, StatusCode};

use crate::common::{wait_all_completed, DIAMOND};
use crate::support::{start, with_cluster};

/// `(method, path, JSON body, expected status, text the message must contain)`;
/// `{w}` is a completed instance's path, `{unknown}` an id nobody started.
type Case = (
    &'static str,
    &'static str,
    Option<&'static str>,
    u16,
    &'static str,
);

#[rustfmt::skip]
const CASES: &[Case] = &[
    ("GET", "/v1/workflows/diamond/not-a-uuid", None, 400, "'id'"),
    ("GET", "{w}/events?limit=-1", None, 400, "'limit'"),
    ("GET", "{w}/events?limit=0", None, 400, "'limit'"),
    ("GET", "{w}/events?limit=100000", None, 400, "'limit'"),
    ("GET", "{w}/events?from=abc", None, 400, "'from'"),
    ("GET", "{w}/events?from=5&to=2", None, 400, "'to'"),
    ("GET", "{w}/events?frm=1", None, 400, "'frm'"),
    ("GET", "{w}/state?at=0", None, 400, "'at'"),
    ("GET", "{w}/trace?format=jaeger", None, 400, "'format'"),
    ("GET", "{w}/children?parent=1", None, 400, "'parent'"),
    ("GET", "/v1/analytics/diamond?min_samples=0", None, 400, "'min_samples'"),
    ("GET", "/v1/analytics/diamond?slow=5", None, 400, "'slow'"),
    ("GET", "/v1/analytics/nosuchtype", None, 404, "nosuchtype"),
    ("GET", "{w}/state?at=99999", None, 400, "'at'"),
    ("POST", "{w}/replay?from=x", None, 400, "'from'"),
    ("POST", "{w}/replay?from=99999", None, 400, "'from'"),
    ("GET", "{w}/watch?from=0", None, 400, "'from'"),
    ("GET", "/v1/workflows?type=diamond&state=runing", None, 400, "'state'"),
    ("GET", "/v1/workflows?type=diamond&limit=-5", None, 400, "'limit'"),
    ("GET", "/v1/workflows?type=diamond&cursor=garbage", None, 400, "'cursor'"),
    ("GET", "/v1/workflows?type=diamond&created_after=yesterday", None, 400, "'created_after'"),
    ("GET", "/v1/workflows?state=running", None, 400, "'type'"),
    ("GET", "/v1/workflows?type=nope", None, 404, "'nope'"),
    ("POST", "/v1/workflows/diamond", Some("{\"input\": "), 400, "not valid JSON"),
    ("POST", "/v1/workflows/diamond", Some("{\"input\": 5}"), 400, "'input'"),
    ("POST", "/v1/workflows/diamond", Some("{\"inputs\": {}}"), 400, "'inputs'"),
    ("POST", "/v1/workflows/diamond", Some("{\"idempotency_key\": 7}"), 400, "'idempotency_key'"),
    ("POST", "{w}/cancel", Some("{\"reason\": 5}"), 400, "'reason'"),
    ("POST", "{w}/cancel", Some("[1]"), 400, "JSON object"),
    ("POST", "{w}/pause", Some("{\"because\": \"x\"}"), 400, "'because'"),
    ("POST", "{w}/signals/bad%20name", Some("{}"), 400, "'name'"),
    ("POST", "{w}/signals/ok", Some("\"text\""), 400, "JSON object"),
    ("POST", "/v1/workflows/diamond/{unknown}/cancel", None, 404, "no workflow instance"),
    ("POST", "{w}/cancel", None, 409, "already completed"),
    ("POST", "{w}/pause", None, 409, "already completed"),
    ("POST", "{w}/resume", None, 409, "completed"),
    ("POST", "{w}/signals/go", None, 409, "completed"),
    ("GET", "/v1/definitions/diamond/x", None, 400, "'version'"),
    ("GET", "/v1/definitions/diamond?version=abc", None, 400, "'version'"),
    ("GET", "/v1/no/such/route", None, 404, "no route"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_get_4xx_naming_the_field() -> Result<()> {
    with_cluster(|api| async move {
        api.register_definition(DIAMOND).await?;
        let id = start(&api, "diamond").await?;
        wait_all_completed(&api, std::slice::from_ref(&id), Duration::from_secs(60)).await?;
        let w = format!("/v1/workflows/diamond/{id}");
        let unknown = uuid::Uuid::new_v4().to_string();
        let mut failures = Vec::new();
        for (method, path, body, status, needle) in CASES {
            let path = path.replace("{w}", &w).replace("{unknown}", &unknown);
            let method: Method = method.parse()?;
            let body = body.map(|b| ("application/json", b.to_string()));
            let r = api.send(method.clone(), &path, body).await?;
            let msg = r.body["error"].as_str().unwrap_or("");
            if r.status.as_u16() != *status || !msg.contains(needle) {
                failures.push(format!(
                    "{method} {path}: expected {status} naming {needle}, got {} {}",
                    r.status, r.body
                ));
            }
        }
        let blank_key = [("Idempotency-Key", " ")];
        let r = api
            .send_with(Method::POST, &format!("{w}/cancel"), &blank_key, None)
            .await?;
        if r.status != StatusCode::BAD_REQUEST || !r.body.to_string().contains("Idempotency-Key") {
            failures.push(format!("blank Idempotency-Key: {} {}", r.status, r.body));
        }
        ensure!(
            failures.is_empty(),
            "{} malformed requests were not rejected as expected:\n{}",
            failures.len(),
            failures.join("\n")
        );
        Ok(())
    })
    .await
}
