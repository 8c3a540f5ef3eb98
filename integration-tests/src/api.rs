//! A small client of the orchestrator's HTTP API for tests: every call returns
//! the response body as `serde_json::Value`, and a non-2xx answer is an error
//! carrying the status and body. [`ApiClient::send`] gives the raw status for
//! tests of bad requests; [`ApiClient::watch`] reads a `/watch` event stream
//! to its end.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

/// A client of one orchestrator's API (`http://127.0.0.1:<port>`).
#[derive(Clone, Debug)]
pub struct ApiClient {
    base: String,
    http: reqwest::Client,
}

/// A raw answer: status and body (JSON if it parses, else a JSON string).
#[derive(Clone, Debug)]
pub struct ApiResponse {
    pub status: StatusCode,
    pub body: Value,
}

impl ApiClient {
    /// A client for `base_url` (no trailing slash), with a 30 s request timeout.
    pub fn new(base_url: impl Into<String>) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .expect("building an HTTP client");
        Self {
            base: base_url.into().trim_end_matches('/').to_string(),
            http,
        }
    }

    /// A client for `base_url` sending with `http` (e.g. one trusting a test
    /// CA and presenting a client certificate, for an https:// API).
    pub fn with_http(base_url: impl Into<String>, http: reqwest::Client) -> Self {
        Self {
            base: base_url.into().trim_end_matches('/').to_string(),
            http,
        }
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// Sends a request with an optional body (and its content type) and returns
    /// status and body whatever the status.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<(&str, String)>,
    ) -> Result<ApiResponse> {
        self.send_with(method, path, &[], body).await
    }

    /// Like [`send`](Self::send), with extra request headers.
    pub async fn send_with(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<(&str, String)>,
    ) -> Result<ApiResponse> {
        let url = format!("{}{path}", self.base);
        let mut req = self.http.request(method.clone(), &url);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some((content_type, body)) = body {
            req = req
                .header(reqwest::header::CONTENT_TYPE, content_type)
                .body(body);
        }
        let resp = req
            .send()
            .await
            .with_context(|| format!("{method} {url}"))?;
        let status = resp.status();
        let text = resp
            .text()
            .await
            .with_context(|| format!("reading the body of {method} {url}"))?;
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        Ok(ApiResponse { status, body })
    }

    /// Like [`send`](Self::send), but a non-2xx status is an error.
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<(&str, String)>,
    ) -> Result<Value> {
        let what = format!("{method} {}{path}", self.base);
        let resp = self.send(method, path, body).await?;
        if !resp.status.is_success() {
            bail!("{what} answered {}: {}", resp.status, resp.body);
        }
        Ok(resp.body)
    }

    /// `POST /v1/definitions` with a YAML (or JSON) definition.
    pub async fn register_definition(&self, yaml: &str) -> Result<Value> {
        self.call(
            Method::POST,
            "/v1/definitions",
            Some(("application/yaml", yaml.to_string())),
        )
        .await
    }

    /// `GET /v1/definitions/{type}`: the latest version.
    pub async fn definition(&self, workflow_type: &str) -> Result<Value> {
        self.call(
            Method::GET,
            &format!("/v1/definitions/{workflow_type}"),
            None,
        )
        .await
    }

    /// `POST /v1/workflows/{type}` with `{"input": input, "idempotency_key": key}`.
    pub async fn start(
        &self,
        workflow_type: &str,
        input: Value,
        idempotency_key: Option<&str>,
    ) -> Result<Value> {
        let mut body = json!({ "input": input });
        if let Some(key) = idempotency_key {
            body["idempotency_key"] = Value::String(key.to_string());
        }
        self.call(
            Method::POST,
            &format!("/v1/workflows/{workflow_type}"),
            Some(("application/json", body.to_string())),
        )
        .await
    }

    /// `GET /v1/workflows/{type}/{id}`.
    pub async fn get(&self, workflow_type: &str, id: &str) -> Result<Value> {
        self.call(
            Method::GET,
            &format!("/v1/workflows/{workflow_type}/{id}"),
            None,
        )
        .await
    }

    /// `GET /v1/workflows/{type}/{id}/events`.
    pub async fn events(&self, workflow_type: &str, id: &str) -> Result<Value> {
        self.call(
            Method::GET,
            &format!("/v1/workflows/{workflow_type}/{id}/events"),
            None,
        )
        .await
    }

    /// `GET /v1/workflows?<query>` (the query string without `?`).
    pub async fn list(&self, query: &str) -> Result<Value> {
        self.call(Method::GET, &format!("/v1/workflows?{query}"), None)
            .await
    }

    /// `POST /v1/workflows/{type}/{id}/<action>` (`cancel`, `pause`, `resume`,
    /// `signals/NAME`) with a JSON body and an optional `Idempotency-Key`;
    /// status and body whatever the status.
    pub async fn control(
        &self,
        workflow_type: &str,
        id: &str,
        action: &str,
        body: Value,
        idempotency_key: Option<&str>,
    ) -> Result<ApiResponse> {
        let headers: Vec<(&str, &str)> = idempotency_key
            .map(|k| ("Idempotency-Key", k))
            .into_iter()
            .collect();
        self.send_with(
            Method::POST,
            &format!("/v1/workflows/{workflow_type}/{id}/{action}"),
            &headers,
            Some(("application/json", body.to_string())),
        )
        .await
    }

    /// Reads `GET /v1/workflows/{type}/{id}/watch[?from=N]` until the server
    /// closes it (or `deadline` passes, an error) and returns its frames as
    /// `(event name, data JSON)`.
    pub async fn watch(
        &self,
        workflow_type: &str,
        id: &str,
        from: Option<u64>,
        deadline: Duration,
    ) -> Result<Vec<(String, Value)>> {
        let mut url = format!("{}/v1/workflows/{workflow_type}/{id}/watch", self.base);
        if let Some(from) = from {
            url.push_str(&format!("?from={from}"));
        }
        let read = async {
            let mut resp = reqwest::Client::new()
                .get(&url)
                .send()
                .await
                .with_context(|| format!("GET {url}"))?;
            if !resp.status().is_success() {
                bail!(
                    "GET {url} answered {}: {}",
                    resp.status(),
                    resp.text().await?
                );
            }
            let mut text = String::new();
            while let Some(chunk) = resp.chunk().await.context("reading the event stream")? {
                text.push_str(&String::from_utf8_lossy(&chunk));
            }
            Ok(text)
        };
        let text = tokio::time::timeout(deadline, read)
            .await
            .with_context(|| format!("the stream {url} did not end within {deadline:?}"))??;
        Ok(sse_frames(&text))
    }

    /// Like [`watch`](Self::watch), but sends on `first_frame` as soon as the
    /// first complete frame has arrived, so that a test can act on the
    /// workflow while it is being watched (and so prove the stream is live).
    pub async fn watch_live(
        &self,
        workflow_type: &str,
        id: &str,
        first_frame: tokio::sync::oneshot::Sender<()>,
        deadline: Duration,
    ) -> Result<Vec<(String, Value)>> {
        let url = format!("{}/v1/workflows/{workflow_type}/{id}/watch", self.base);
        let read = async {
            let mut resp = reqwest::Client::new()
                .get(&url)
                .send()
                .await
                .with_context(|| format!("GET {url}"))?;
            if !resp.status().is_success() {
                bail!(
                    "GET {url} answered {}: {}",
                    resp.status(),
                    resp.text().await?
                );
            }
            let mut first_frame = Some(first_frame);
            let mut text = String::new();
            while let Some(chunk) = resp.chunk().await.context("reading the event stream")? {
                text.push_str(&String::from_utf8_lossy(&chunk));
                if text.replace("\r\n", "\n").contains("\n\n") {
                    if let Some(tx) = first_frame.take() {
                        let _ = tx.send(());
                    }
                }
            }
            Ok(text)
        };
        let text = tokio::time::timeout(deadline, read)
            .await
            .with_context(|| format!("the stream {url} did not end within {deadline:?}"))??;
        Ok(sse_frames(&text))
    }

    /// The sum of the samples of metric `name` on `/metrics` (0 when absent).
    pub async fn metric(&self, name: &str) -> Result<f64> {
        Ok(metric_sum(&self.metrics().await?, name).unwrap_or(0.0))
    }

    /// `GET /readyz` answered 200.
    pub async fn is_ready(&self) -> bool {
        self.send(Method::GET, "/readyz", None)
            .await
            .is_ok_and(|r| r.status == StatusCode::OK)
    }

    /// `GET /metrics` as text.
    pub async fn metrics(&self) -> Result<String> {
        match self.call(Method::GET, "/metrics", None).await? {
            Value::String(s) => Ok(s),
            other => Ok(other.to_string()),
        }
    }
}

/// The sum of every sample of metric `name` (whatever its labels) in a
/// Prometheus text exposition; `None` when it has no sample.
pub fn metric_sum(text: &str, name: &str) -> Option<f64> {
    metric_sum_labelled(text, name, "")
}

/// [`metric_sum`] over the samples whose labels contain `label` (e.g.
/// `handler="sleep"`; empty: every sample).
pub fn metric_sum_labelled(text: &str, name: &str, label: &str) -> Option<f64> {
    let mut found = None;
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        if !label.is_empty() && !rest.split_once('}').is_some_and(|(l, _)| l.contains(label)) {
            continue;
        }
        let value = if rest.starts_with('{') {
            rest.rsplit_once('}').map(|(_, v)| v)
        } else if rest.starts_with(' ') {
            Some(rest)
        } else {
            None // another metric whose name starts with this one
        };
        if let Some(v) = value.and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok()) {
            *found.get_or_insert(0.0) += v;
        }
    }
    found
}

/// The `(event, data)` frames of a complete `text/event-stream` body
/// (comments skipped; data parsed as JSON, or kept as a string).
pub fn sse_frames(text: &str) -> Vec<(String, Value)> {
    text.replace("\r\n", "\n")
        .split("\n\n")
        .filter_map(|block| {
            let mut event = "message".to_string();
            let mut data = Vec::new();
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("event:") {
                    event = v.trim().to_string();
                } else if let Some(v) = line.strip_prefix("data:") {
                    data.push(v.strip_prefix(' ').unwrap_or(v));
                }
            }
            if data.is_empty() {
                return None;
            }
            let data = data.join("\n");
            let value = serde_json::from_str(&data).unwrap_or(Value::String(data));
            Some((event, value))
        })
        .collect()
}
