//! HTTP client for the orchestrator's API. Every failure becomes an
//! [`ApiError`] whose `Display` is one line fit for `error: ...`: an
//! unreachable orchestrator says so (and how to start one), a 4xx/5xx answer
//! carries the server's own `{"error": "..."}` message. [`workflows`] holds
//! the query and control calls, [`sse`] the `/watch` event stream.

mod sse;
mod workflows;

use std::time::Duration;

pub use sse::{SseFrame, SseParser, WatchStream};
pub use workflows::{ControlAction, ListQuery};

use reqwest::{Method, StatusCode, Url};
use serde_json::{json, Value};

/// Why an API call failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("invalid API URL '{url}': {reason}")]
    BadBaseUrl { url: String, reason: String },
    #[error("cannot reach the orchestrator at {base} ({reason}); is it running? (make run)")]
    Unreachable { base: String, reason: String },
    #[error("request to {url} timed out")]
    Timeout { url: String },
    #[error("request to {url} failed: {reason}")]
    Transport { url: String, reason: String },
    /// A non-success status; `message` is the server's `error` field when it sent one.
    #[error("{message}")]
    Server { status: StatusCode, message: String },
    #[error("unexpected response from {url}: {reason}")]
    BadResponse { url: String, reason: String },
}

impl ApiError {
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            ApiError::Server { status, .. } => Some(*status),
            _ => None,
        }
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

/// Range and page size of an events query.
#[derive(Clone, Copy, Debug, Default)]
pub struct EventRange {
    pub from: Option<u64>,
    pub to: Option<u64>,
    pub limit: Option<u64>,
}

/// TLS material for an https:// API (see `crate::credentials::tls`).
#[derive(Clone, Default)]
pub struct Tls {
    /// A CA bundle (PEM) to trust besides the public roots.
    pub ca_pem: Option<Vec<u8>>,
    /// A client certificate and its key (PEM, concatenated), for mTLS.
    pub identity_pem: Option<Vec<u8>>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The identity holds a private key: never shown.
        f.debug_struct("Tls")
            .field("ca_pem", &self.ca_pem.as_ref().map(Vec::len))
            .field(
                "identity_pem",
                &self.identity_pem.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// A client for one orchestrator.
#[derive(Clone, Debug)]
pub struct Client {
    pub(crate) http: reqwest::Client,
    /// For long-lived streams (`weft watch`): a connect timeout, no total timeout.
    pub(crate) stream_http: reqwest::Client,
    base: Url,
    /// The base as the user spelled it (trailing `/` trimmed), for messages.
    display_base: String,
}

impl Client {
    /// A client for the API at `base` (e.g. `http://127.0.0.1:8080`).
    pub fn new(base: &str) -> ApiResult<Self> {
        Self::authenticated(base, None)
    }

    /// A client that sends `token` as `Authorization: Bearer <token>` (marked
    /// sensitive: never shown by the HTTP stack's logs).
    pub fn authenticated(base: &str, token: Option<&str>) -> ApiResult<Self> {
        Self::secured(base, token, &Tls::default())
    }

    /// A client with a token and TLS material (an extra CA to trust, a
    /// client certificate for mTLS).
    pub fn secured(base: &str, token: Option<&str>, tls: &Tls) -> ApiResult<Self> {
        let trimmed = base.trim().trim_end_matches('/');
        let bad = |reason: String| ApiError::BadBaseUrl {
            url: base.to_string(),
            reason,
        };
        let url = Url::parse(trimmed).map_err(|e| bad(e.to_string()))?;
        if !matches!(url.scheme(), "http" | "https") || url.cannot_be_a_base() {
            return Err(bad("expected an http:// or https:// URL".into()));
        }
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(token) = token {
            let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))
                .map_err(|_| bad("the API token holds characters a header cannot carry".into()))?;
            value.set_sensitive(true);
            headers.insert(reqwest::header::AUTHORIZATION, value);
        }
        let builder = || -> ApiResult<reqwest::ClientBuilder> {
            let mut b = reqwest::Client::builder().use_rustls_tls();
            if let Some(pem) = &tls.ca_pem {
                let certs = reqwest::Certificate::from_pem_bundle(pem)
                    .map_err(|e| bad(format!("--ca-cert: {}", error_chain(&e))))?;
                if certs.is_empty() {
                    return Err(bad("--ca-cert holds no PEM certificate".into()));
                }
                for c in certs {
                    b = b.add_root_certificate(c);
                }
            }
            if let Some(pem) = &tls.identity_pem {
                let id = reqwest::Identity::from_pem(pem).map_err(|e| {
                    bad(format!(
                        "--client-cert/--client-key: not a PEM certificate and key ({})",
                        error_chain(&e)
                    ))
                })?;
                b = b.identity(id);
            }
            Ok(b)
        };
        let http = builder()?
            .default_headers(headers.clone())
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(30))
            .user_agent(concat!("weft-cli/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| bad(error_chain(&e)))?;
        let stream_http = builder()?
            .default_headers(headers)
            .connect_timeout(Duration::from_secs(5))
            .user_agent(concat!("weft-cli/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| bad(error_chain(&e)))?;
        Ok(Self {
            http,
            stream_http,
            base: url,
            display_base: trimmed.to_string(),
        })
    }

    pub fn base(&self) -> &str {
        &self.display_base
    }

    /// `POST /v1/definitions`: register a definition document.
    pub async fn register_definition(&self, body: String, content_type: &str) -> ApiResult<Value> {
        let url = self.url(&["v1", "definitions"], &[]);
        let req = self
            .http
            .request(Method::POST, url.clone())
            .header(reqwest::header::CONTENT_TYPE, content_type)
            .body(body);
        self.send(url, req).await
    }

    /// `GET /v1/definitions/{type}[?version=N]`.
    pub async fn get_definition(
        &self,
        workflow_type: &str,
        version: Option<u32>,
    ) -> ApiResult<Value> {
        let version = version.map(|v| v.to_string());
        let query: Vec<(&str, &str)> = version.iter().map(|v| ("version", v.as_str())).collect();
        let url = self.url(&["v1", "definitions", workflow_type], &query);
        self.send(url.clone(), self.http.get(url)).await
    }

    /// `POST /v1/workflows/{type}`: start an instance.
    pub async fn start_workflow(
        &self,
        workflow_type: &str,
        input: Value,
        idempotency_key: Option<&str>,
        secrets: Option<Value>,
        version: Option<u32>,
    ) -> ApiResult<Value> {
        let url = self.url(&["v1", "workflows", workflow_type], &[]);
        let mut body = json!({ "input": input });
        if let Some(v) = version {
            body["version"] = Value::from(v);
        }
        if let Some(secrets) = secrets {
            body["secrets"] = secrets;
        }
        if let Some(key) = idempotency_key {
            body["idempotency_key"] = Value::from(key);
        }
        self.send(url.clone(), self.http.post(url).json(&body))
            .await
    }

    /// `GET /v1/workflows/{type}/{id}`; `None` when the server does not know
    /// the instance (yet: right after a start this is normal).
    pub async fn get_instance(
        &self,
        workflow_type: &str,
        instance_id: &str,
    ) -> ApiResult<Option<Value>> {
        let url = self.url(&["v1", "workflows", workflow_type, instance_id], &[]);
        match self.send(url.clone(), self.http.get(url)).await {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.status() == Some(StatusCode::NOT_FOUND) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `GET /v1/workflows/{type}/{id}/events`.
    pub async fn events(
        &self,
        workflow_type: &str,
        instance_id: &str,
        range: EventRange,
    ) -> ApiResult<Value> {
        let params: Vec<(&str, String)> = [
            ("from", range.from),
            ("to", range.to),
            ("limit", range.limit),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| (k, v.to_string())))
        .collect();
        let query: Vec<(&str, &str)> = params.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let url = self.url(
            &["v1", "workflows", workflow_type, instance_id, "events"],
            &query,
        );
        self.send(url.clone(), self.http.get(url)).await
    }

    /// The base URL plus percent-encoded path segments and a query.
    pub(crate) fn url(&self, segments: &[&str], query: &[(&str, &str)]) -> Url {
        let mut url = self.base.clone();
        url.path_segments_mut()
            .expect("checked in Client::new: the base URL can be a base")
            .pop_if_empty()
            .extend(segments);
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        url
    }

    pub(crate) async fn send(&self, url: Url, req: reqwest::RequestBuilder) -> ApiResult<Value> {
        let resp = req
            .send()
            .await
            .map_err(|e| self.transport_error(&url, &e))?;
        let status = resp.status();
        let text = resp
            .text()
            .await
            .map_err(|e| self.transport_error(&url, &e))?;
        if !status.is_success() {
            return Err(ApiError::Server {
                status,
                message: server_message(status, &text),
            });
        }
        if text.trim().is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&text).map_err(|e| ApiError::BadResponse {
            url: url.to_string(),
            reason: format!("not JSON ({e})"),
        })
    }

    pub(crate) fn transport_error(&self, url: &Url, e: &reqwest::Error) -> ApiError {
        if e.is_connect() {
            ApiError::Unreachable {
                base: self.display_base.clone(),
                reason: connect_reason(e),
            }
        } else if e.is_timeout() {
            ApiError::Timeout {
                url: url.to_string(),
            }
        } else {
            ApiError::Transport {
                url: url.to_string(),
                reason: error_chain(e),
            }
        }
    }
}

/// The message for a non-success answer: the body's `error` string if it has
/// one, else the status plus whatever text came back.
pub fn server_message(status: StatusCode, body: &str) -> String {
    if let Ok(v) = serde_json::from_str::<Value>(body) {
        if let Some(msg) = v
            .get("error")
            .and_then(Value::as_str)
            .filter(|m| !m.is_empty())
        {
            return msg.to_string();
        }
        if let Some(msg) = v
            .get("message")
            .and_then(Value::as_str)
            .filter(|m| !m.is_empty())
        {
            return msg.to_string();
        }
    }
    let body = body.trim();
    let mut line: String = body
        .lines()
        .next()
        .unwrap_or("")
        .chars()
        .take(200)
        .collect();
    if line.len() < body.len() {
        line.push('…');
    }
    if line.is_empty() {
        format!("the orchestrator answered {status}")
    } else {
        format!("the orchestrator answered {status}: {line}")
    }
}

/// Why a connection could not be made, in a few words ("connection refused").
fn connect_reason(e: &reqwest::Error) -> String {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    let mut last = None;
    while let Some(err) = source {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            return match io.kind() {
                std::io::ErrorKind::ConnectionRefused => "connection refused".into(),
                std::io::ErrorKind::TimedOut => "connection timed out".into(),
                _ => io.to_string(),
            };
        }
        last = Some(err);
        source = err.source();
    }
    if e.is_timeout() {
        return "connection timed out".into();
    }
    last.map(ToString::to_string)
        .unwrap_or_else(|| e.to_string())
}

/// An error and its causes on one line, skipping causes that repeat their parent.
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(err) = source {
        let s = err.to_string();
        if !out.contains(&s) {
            out.push_str(": ");
            out.push_str(&s);
        }
        source = err.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// A one-shot HTTP stub: accepts one connection, reads the request head
    /// (and body, by Content-Length), answers `response` verbatim and returns
    /// the request text.
    async fn stub(
        status: &str,
        content_type: &str,
        body: &str,
    ) -> (String, tokio::task::JoinHandle<String>) {
        let response = format!(
            "HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let handle = tokio::spawn(async move {
            let (mut sock, _) = listener.accept().await.unwrap();
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            loop {
                let n = sock.read(&mut chunk).await.unwrap();
                buf.extend_from_slice(&chunk[..n]);
                let text = String::from_utf8_lossy(&buf).to_string();
                if let Some(head_end) = text.find("\r\n\r\n") {
                    let len = text[..head_end]
                        .lines()
                        .find_map(|l| {
                            let (k, v) = l.split_once(':')?;
                            k.eq_ignore_ascii_case("content-length")
                                .then(|| v.trim().parse::<usize>().ok())?
                        })
                        .unwrap_or(0);
                    if buf.len() >= head_end + 4 + len {
                        break;
                    }
                }
                if n == 0 {
                    break;
                }
            }
            sock.write_all(response.as_bytes()).await.unwrap();
            sock.shutdown().await.ok();
            String::from_utf8_lossy(&buf).to_string()
        });
        (base, handle)
    }

    #[tokio::test]
    async fn connection_refused_names_the_orchestrator_and_how_to_start_it() {
        // Bind then drop: the port is (almost certainly) closed now.
        let addr = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap()
            .local_addr()
            .unwrap();
        let base = format!("http://{addr}/");
        let client = Client::new(&base).unwrap();
        let err = client.get_instance("demo", "x").await.unwrap_err();
        assert!(matches!(err, ApiError::Unreachable { .. }), "{err:?}");
        assert_eq!(
            err.to_string(),
            format!("cannot reach the orchestrator at http://{addr} (connection refused); is it running? (make run)")
        );
    }

    #[tokio::test]
    async fn a_4xx_error_body_becomes_the_message() {
        let (base, req) = stub(
            "400 Bad Request",
            "application/json",
            r#"{"error":"task b depends on unknown task z"}"#,
        )
        .await;
        let client = Client::new(&base).unwrap();
        let err = client
            .register_definition("name: demo\n".into(), "application/yaml")
            .await
            .unwrap_err();
        assert_eq!(err.status(), Some(StatusCode::BAD_REQUEST));
        assert_eq!(err.to_string(), "task b depends on unknown task z");
        let req = req.await.unwrap();
        assert!(
            req.starts_with("POST /v1/definitions HTTP/1.1\r\n"),
            "{req}"
        );
        assert!(
            req.to_ascii_lowercase()
                .contains("content-type: application/yaml"),
            "{req}"
        );
        assert!(req.ends_with("name: demo\n"), "{req}");
    }

    #[tokio::test]
    async fn a_404_instance_is_none_and_segments_are_encoded() {
        let (base, req) = stub(
            "404 Not Found",
            "application/json",
            r#"{"error":"not found"}"#,
        )
        .await;
        let client = Client::new(&base).unwrap();
        assert_eq!(client.get_instance("demo", "a b/c").await.unwrap(), None);
        let req = req.await.unwrap();
        assert!(
            req.starts_with("GET /v1/workflows/demo/a%20b%2Fc HTTP/1.1\r\n"),
            "{req}"
        );
    }

    #[tokio::test]
    async fn a_non_json_error_body_keeps_status_and_text() {
        let (base, _req) = stub("502 Bad Gateway", "text/plain", "upstream :(").await;
        let client = Client::new(&base).unwrap();
        let err = client.get_definition("demo", Some(2)).await.unwrap_err();
        assert_eq!(
            err.to_string(),
            "the orchestrator answered 502 Bad Gateway: upstream :("
        );
    }

    #[test]
    fn server_message_shapes() {
        let s = StatusCode::UNPROCESSABLE_ENTITY;
        assert_eq!(server_message(s, r#"{"error":"bad input"}"#), "bad input");
        assert_eq!(
            server_message(s, ""),
            "the orchestrator answered 422 Unprocessable Entity"
        );
        assert_eq!(
            server_message(s, r#"{"error":""}"#),
            r#"the orchestrator answered 422 Unprocessable Entity: {"error":""}"#
        );
    }

    #[test]
    fn urls_keep_a_base_path_and_encode_queries() {
        let c = Client::new("http://h:1/prefix/").unwrap();
        assert_eq!(c.base(), "http://h:1/prefix");
        let u = c.url(
            &["v1", "workflows", "demo", "i", "events"],
            &[("from", "3"), ("limit", "10")],
        );
        assert_eq!(
            u.as_str(),
            "http://h:1/prefix/v1/workflows/demo/i/events?from=3&limit=10"
        );
        assert!(matches!(
            Client::new("localhost:8080"),
            Err(ApiError::BadBaseUrl { .. })
        ));
        assert!(matches!(
            Client::new("not a url"),
            Err(ApiError::BadBaseUrl { .. })
        ));
    }
}
