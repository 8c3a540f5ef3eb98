//! The `http` kind: one HTTP request from the parameters `url` (required),
//! `method` (default GET), `body` (string) and `headers` (map). Output
//! `{status, body}` (body cut at 64 KiB). 5xx, 429 and connection errors are
//! retryable (`http_status_<code>`, `http_error`); other non-2xx statuses are
//! terminal `http_status_<code>`. Requests go over rustls; only hosts of
//! `worker.http_allow_hosts` are reached (terminal `http_host_not_allowed`,
//! redirects elsewhere fail). Header values and the body may hold
//! `{{secret:NAME}}`, replaced by secret `NAME` when the task names it in its
//! `secrets` parameter (terminal `invalid_parameters` otherwise).

use std::sync::Arc;

use weft_shared::config::WorkerSettings;
use weft_shared::data::{DataMap, Scalar, WorkflowData};

use crate::builtins::{truncate_utf8, MAX_OUTPUT_BYTES};
use crate::context::TaskContext;
use crate::error::TaskError;
use crate::handler::{Handler, HandlerFuture};

/// Makes HTTP requests with one shared connection pool, over rustls (the
/// built-in web roots plus `worker.http_ca_file`), to the hosts of
/// `worker.http_allow_hosts` only (redirects included).
pub struct Http {
    client: reqwest::Client,
    allow: Arc<AllowList>,
}

/// Why the `http` kind cannot be set up (a start-up error).
#[derive(Debug, thiserror::Error)]
pub enum HttpSetupError {
    #[error("worker.http_ca_file {path}: {message}")]
    Ca { path: String, message: String },
    #[error("worker.http_allow_hosts: '{0}' is not a host, *.domain or host:port")]
    BadHost(String),
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
}

/// The hosts `http` tasks may reach; empty allows every host.
#[derive(Debug, Default)]
pub struct AllowList(Vec<(String, Option<u16>)>);

impl AllowList {
    pub fn parse(entries: &[String]) -> Result<Self, HttpSetupError> {
        let mut out = Vec::new();
        for raw in entries {
            let e = raw.trim().to_ascii_lowercase();
            let (host, port) = match e.rsplit_once(':') {
                Some((h, p)) => (
                    h.to_owned(),
                    Some(
                        p.parse::<u16>()
                            .map_err(|_| HttpSetupError::BadHost(raw.clone()))?,
                    ),
                ),
                None => (e.clone(), None),
            };
            let name = host.strip_prefix("*.").unwrap_or(&host);
            let ok = !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-');
            if !ok {
                return Err(HttpSetupError::BadHost(raw.clone()));
            }
            out.push((host, port));
        }
        Ok(Self(out))
    }

    /// Whether `url` may be requested.
    pub fn allows(&self, url: &reqwest::Url) -> bool {
        if self.0.is_empty() {
            return true;
        }
        let Some(host) = url.host_str().map(str::to_ascii_lowercase) else {
            return false;
        };
        let port = url.port_or_known_default();
        self.0.iter().any(|(h, p)| {
            let host_ok = match h.strip_prefix("*.") {
                Some(domain) => host.ends_with(&format!(".{domain}")),
                None => *h == host,
            };
            host_ok && p.is_none_or(|p| Some(p) == port)
        })
    }
}

impl Http {
    /// Any host, the built-in roots only.
    pub fn new() -> Self {
        Self::build(AllowList::default(), Vec::new()).expect("a default rustls client builds")
    }

    /// The `http` kind as `settings` configure it.
    pub fn from_settings(settings: &WorkerSettings) -> Result<Self, HttpSetupError> {
        let allow = AllowList::parse(&settings.http_allow_hosts)?;
        if allow.0.is_empty() {
            tracing::warn!("worker.http_allow_hosts is empty: http tasks may call any host");
        }
        let mut roots = Vec::new();
        let path = settings.http_ca_file.trim();
        if !path.is_empty() {
            let ca = |message: String| HttpSetupError::Ca {
                path: path.to_owned(),
                message,
            };
            let pem = std::fs::read(path).map_err(|e| ca(e.to_string()))?;
            roots = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| ca(e.to_string()))?;
            if roots.is_empty() {
                return Err(ca("no certificate in it".into()));
            }
        }
        Self::build(allow, roots)
    }

    fn build(allow: AllowList, roots: Vec<reqwest::Certificate>) -> Result<Self, HttpSetupError> {
        let allow = Arc::new(allow);
        let policy_allow = Arc::clone(&allow);
        let redirects = reqwest::redirect::Policy::custom(move |attempt| {
            if attempt.previous().len() >= 10 {
                attempt.error("more than 10 redirects")
            } else if policy_allow.allows(attempt.url()) {
                attempt.follow()
            } else {
                let host = attempt.url().host_str().unwrap_or("").to_owned();
                attempt.error(format!(
                    "redirect to host '{host}', which worker.http_allow_hosts does not list"
                ))
            }
        });
        let mut builder = reqwest::Client::builder()
            .use_rustls_tls()
            .redirect(redirects);
        for root in roots {
            builder = builder.add_root_certificate(root);
        }
        let client = builder
            .build()
            .map_err(|e| HttpSetupError::Client(e.to_string()))?;
        Ok(Self { client, allow })
    }
}

impl Default for Http {
    fn default() -> Self {
        Self::new()
    }
}

impl Handler for Http {
    fn call(&self, ctx: TaskContext) -> HandlerFuture {
        let client = self.client.clone();
        let allow = Arc::clone(&self.allow);
        Box::pin(async move {
            let request = build(&client, &allow, &ctx)?;
            tokio::select! {
                out = send(request) => out,
                () = ctx.cancel.cancelled() => {
                    Err(TaskError::retryable("cancelled", "request abandoned by worker shutdown"))
                }
            }
        })
    }
}

fn build(
    client: &reqwest::Client,
    allow: &AllowList,
    ctx: &TaskContext,
) -> Result<reqwest::RequestBuilder, TaskError> {
    let invalid = |msg: String| TaskError::terminal("invalid_parameters", msg);
    let url = ctx
        .param_str("url")?
        .ok_or_else(|| invalid("http needs parameter 'url'".into()))?;
    let url = reqwest::Url::parse(url)
        .map_err(|e| invalid(format!("parameter 'url' ('{url}') is not a URL: {e}")))?;
    if !allow.allows(&url) {
        return Err(TaskError::terminal(
            "http_host_not_allowed",
            format!(
                "host '{}' is not in worker.http_allow_hosts",
                url.host_str().unwrap_or("")
            ),
        ));
    }
    let method = ctx
        .param_str("method")?
        .unwrap_or("GET")
        .to_ascii_uppercase();
    let method = reqwest::Method::from_bytes(method.as_bytes()).map_err(|_| {
        invalid(format!(
            "parameter 'method' ('{method}') is not an HTTP method"
        ))
    })?;
    let mut request = client.request(method, url);
    match ctx.parameters.get("headers") {
        None => {}
        Some(WorkflowData::Map(headers)) => {
            for (name, value) in headers {
                let value = match value {
                    Scalar::Str(s) => s.clone(),
                    Scalar::Int(i) => i.to_string(),
                    Scalar::Float(f) => f.to_string(),
                    Scalar::Bool(b) => b.to_string(),
                };
                let value = fill_secrets(&value, ctx)?;
                let mut value = reqwest::header::HeaderValue::from_str(&value).map_err(|_| {
                    invalid(format!(
                        "header '{name}' has a value that is not a header value"
                    ))
                })?;
                value.set_sensitive(true);
                request = request.header(name.as_str(), value);
            }
        }
        Some(_) => {
            return Err(invalid(
                "parameter 'headers' must be a map of header names to values".into(),
            ))
        }
    }
    if let Some(body) = ctx.param_str("body")? {
        request = request.body(fill_secrets(body, ctx)?);
    }
    Ok(request)
}

/// `text` with every `{{secret:NAME}}` replaced by the task's secret `NAME`.
fn fill_secrets(text: &str, ctx: &TaskContext) -> Result<String, TaskError> {
    const OPEN: &str = "{{secret:";
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(OPEN) {
        out.push_str(&rest[..at]);
        let after = &rest[at + OPEN.len()..];
        let Some(end) = after.find("}}") else {
            return Err(TaskError::terminal(
                "invalid_parameters",
                "an unterminated '{{secret:' placeholder (expected {{secret:NAME}})",
            ));
        };
        let name = after[..end].trim();
        let value = ctx.secret(name).ok_or_else(|| {
            TaskError::terminal(
                "invalid_parameters",
                format!("placeholder {{{{secret:{name}}}}}: the task does not name secret '{name}' in its 'secrets' parameter"),
            )
        })?;
        out.push_str(value.expose());
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

async fn send(request: reqwest::RequestBuilder) -> Result<DataMap, TaskError> {
    let response = request.send().await.map_err(|e| {
        if e.is_builder() {
            TaskError::terminal("invalid_parameters", format!("invalid request: {e}"))
        } else if e.is_redirect() {
            let mut msg = e.to_string();
            let mut src = std::error::Error::source(&e);
            while let Some(s) = src {
                msg = format!("{msg}: {s}");
                src = s.source();
            }
            TaskError::terminal("http_redirect_refused", msg)
        } else {
            TaskError::retryable("http_error", format!("request failed: {e}"))
        }
    })?;
    let status = response.status();
    let body = response.bytes().await.map_err(|e| {
        TaskError::retryable(
            "http_error",
            format!("reading the response body failed: {e}"),
        )
    })?;
    let body = truncate_utf8(
        String::from_utf8_lossy(&body).into_owned(),
        MAX_OUTPUT_BYTES,
    );
    if status.is_success() {
        return Ok(DataMap::from([
            (
                "status".to_owned(),
                WorkflowData::Int(i64::from(status.as_u16())),
            ),
            ("body".to_owned(), WorkflowData::Str(body)),
        ]));
    }
    let error_type = format!("http_status_{}", status.as_u16());
    let message = format!("{status}: {}", truncate_utf8(body, 1024));
    if status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS {
        Err(TaskError::retryable(error_type, message))
    } else {
        Err(TaskError::terminal(error_type, message))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::{HeaderMap, Method, StatusCode};
    use axum::routing::{any, get};

    async fn server() -> String {
        let app = axum::Router::new()
            .route(
                "/echo",
                any(
                    |method: Method, headers: HeaderMap, body: String| async move {
                        let tag = headers
                            .get("x-tag")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("")
                            .to_owned();
                        format!("{method} {tag} {body}")
                    },
                ),
            )
            .route("/big", get(|| async { "x".repeat(MAX_OUTPUT_BYTES + 10) }))
            .route(
                "/busy",
                get(|| async { (StatusCode::SERVICE_UNAVAILABLE, "later") }),
            )
            .route(
                "/slow-down",
                get(|| async { (StatusCode::TOO_MANY_REQUESTS, "") }),
            )
            .route(
                "/missing",
                get(|| async { (StatusCode::NOT_FOUND, "no such thing") }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        format!("http://{addr}")
    }

    fn ctx(params: Vec<(&str, WorkflowData)>) -> TaskContext {
        let params = params.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
        TaskContext::for_test("http", DataMap::new(), params)
    }

    #[tokio::test]
    async fn sends_method_headers_and_body() {
        let base = server().await;
        let headers = WorkflowData::Map([("x-tag".to_owned(), Scalar::Str("t1".into()))].into());
        let out = Http::new()
            .call(ctx(vec![
                ("url", format!("{base}/echo").into()),
                ("method", "post".into()),
                ("body", "hello".into()),
                ("headers", headers),
            ]))
            .await
            .unwrap();
        assert_eq!(out["status"], WorkflowData::Int(200));
        assert_eq!(out["body"], WorkflowData::Str("POST t1 hello".into()));
        let out = Http::new()
            .call(ctx(vec![("url", format!("{base}/big").into())]))
            .await
            .unwrap();
        assert_eq!(out["body"].as_str().unwrap().len(), MAX_OUTPUT_BYTES);
    }

    #[tokio::test]
    async fn statuses_map_to_retryable_or_terminal_errors() {
        let base = server().await;
        let call =
            |path: &str| Http::new().call(ctx(vec![("url", format!("{base}{path}").into())]));
        let err = call("/busy").await.unwrap_err();
        assert_eq!(
            (err.error_type.as_str(), err.retryable),
            ("http_status_503", true)
        );
        let err = call("/slow-down").await.unwrap_err();
        assert_eq!(
            (err.error_type.as_str(), err.retryable),
            ("http_status_429", true)
        );
        let err = call("/missing").await.unwrap_err();
        assert_eq!(
            (err.error_type.as_str(), err.retryable),
            ("http_status_404", false)
        );
        assert!(err.message.contains("no such thing"), "{}", err.message);
    }

    #[tokio::test]
    async fn connection_errors_are_retryable_and_bad_urls_terminal() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let closed = listener.local_addr().unwrap();
        drop(listener);
        let err = Http::new()
            .call(ctx(vec![("url", format!("http://{closed}/").into())]))
            .await
            .unwrap_err();
        assert_eq!(
            (err.error_type.as_str(), err.retryable),
            ("http_error", true)
        );
        let err = Http::new()
            .call(ctx(vec![("url", "not a url".into())]))
            .await
            .unwrap_err();
        assert_eq!(
            (err.error_type.as_str(), err.retryable),
            ("invalid_parameters", false)
        );
        let err = Http::new().call(ctx(vec![])).await.unwrap_err();
        assert_eq!(err.error_type, "invalid_parameters");
    }

    #[tokio::test]
    async fn secret_placeholders_are_filled_from_the_named_secrets_only() {
        let base = server().await;
        let headers = WorkflowData::Map(
            [(
                "x-tag".to_owned(),
                Scalar::Str("Bearer {{secret:token}}".into()),
            )]
            .into(),
        );
        let mut c = ctx(vec![
            ("url", format!("{base}/echo").into()),
            ("method", "post".into()),
            ("body", "k={{secret:token}}".into()),
            ("headers", headers.clone()),
        ]);
        c.secrets.insert(
            "token".into(),
            weft_shared::secrets::SecretValue::new("S3CR3T"),
        );
        let out = Http::new().call(c).await.unwrap();
        assert_eq!(
            out["body"],
            WorkflowData::Str("POST Bearer S3CR3T k=S3CR3T".into())
        );
        let err = Http::new()
            .call(ctx(vec![
                ("url", format!("{base}/echo").into()),
                ("headers", headers),
            ]))
            .await
            .unwrap_err();
        assert_eq!(err.error_type, "invalid_parameters");
        assert!(err.message.contains("'token'"), "{}", err.message);
    }

    #[test]
    fn the_allow_list_matches_hosts_subdomains_and_ports() {
        let l = AllowList::parse(&[
            "API.example.com".into(),
            "*.corp.net".into(),
            "127.0.0.1:8443".into(),
        ])
        .unwrap();
        let ok = |u: &str| l.allows(&reqwest::Url::parse(u).unwrap());
        assert!(ok("https://api.example.com/x"));
        assert!(!ok("https://evil.api.example.com/x"));
        assert!(ok("https://a.b.corp.net/"));
        assert!(!ok("https://corp.net/"));
        assert!(!ok("https://corp.net.evil.com/"));
        assert!(ok("https://127.0.0.1:8443/"));
        assert!(!ok("https://127.0.0.1/"));
        assert!(AllowList::default().allows(&reqwest::Url::parse("http://any/").unwrap()));
        assert!(AllowList::parse(&["a b".into()]).is_err());
        assert!(AllowList::parse(&["h:port".into()]).is_err());
    }

    #[tokio::test]
    async fn hosts_outside_the_allow_list_are_refused_redirects_included() {
        let base = server().await;
        let port = reqwest::Url::parse(&base).unwrap().port().unwrap();
        let app = axum::Router::new().route(
            "/hop",
            get(move || async move {
                axum::response::Redirect::temporary(&format!("http://localhost:{port}/echo"))
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let hop = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        let settings = WorkerSettings {
            http_allow_hosts: vec!["127.0.0.1".into()],
            ..weft_shared::config::WeftConfig::default().worker
        };
        let http = Http::from_settings(&settings).unwrap();
        let out = http
            .call(ctx(vec![("url", format!("{base}/echo").into())]))
            .await
            .unwrap();
        assert_eq!(out["status"], WorkflowData::Int(200));
        let err = http
            .call(ctx(vec![(
                "url",
                format!("http://localhost:{port}/echo").into(),
            )]))
            .await
            .unwrap_err();
        assert_eq!(err.error_type, "http_host_not_allowed");
        assert!(
            !err.retryable && err.message.contains("'localhost'"),
            "{}",
            err.message
        );
        let err = http
            .call(ctx(vec![("url", format!("http://{hop}/hop").into())]))
            .await
            .unwrap_err();
        assert_eq!(err.error_type, "http_redirect_refused", "{}", err.message);
        assert!(err.message.contains("'localhost'"), "{}", err.message);
    }

    #[test]
    fn a_bad_ca_file_is_a_start_up_error() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("ca.pem");
        std::fs::write(&f, "not a certificate").unwrap();
        let settings = WorkerSettings {
            http_ca_file: f.display().to_string(),
            ..weft_shared::config::WeftConfig::default().worker
        };
        let err = Http::from_settings(&settings).err().unwrap().to_string();
        assert!(err.contains("http_ca_file"), "{err}");
    }

    /// `openssl s_server -www` with a certificate of the test CA
    /// (scripts/tls-test-material.sh), killed on drop.
    struct TlsServer(std::process::Child);

    impl Drop for TlsServer {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    #[tokio::test]
    async fn https_is_verified_with_rustls_against_the_configured_ca() {
        let dir = tempfile::tempdir().unwrap();
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../scripts/tls-test-material.sh"
        );
        let made = std::process::Command::new("bash")
            .arg(script)
            .arg(dir.path())
            .status()
            .unwrap();
        assert!(made.success(), "tls-test-material.sh failed");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let _server = TlsServer(
            std::process::Command::new("openssl")
                .args(["s_server", "-quiet", "-www", "-accept", &port.to_string()])
                .arg("-cert")
                .arg(dir.path().join("server.crt"))
                .arg("-key")
                .arg(dir.path().join("server.key"))
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap(),
        );
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            assert!(
                std::time::Instant::now() < deadline,
                "s_server did not start"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        let url = format!("https://localhost:{port}/");
        let trusted = Http::from_settings(&WorkerSettings {
            http_ca_file: dir.path().join("ca.crt").display().to_string(),
            http_allow_hosts: vec!["localhost".into()],
            ..weft_shared::config::WeftConfig::default().worker
        })
        .unwrap();
        let out = trusted
            .call(ctx(vec![("url", url.clone().into())]))
            .await
            .unwrap();
        assert_eq!(out["status"], WorkflowData::Int(200));
        // Without the CA the certificate is not trusted: no request is made.
        let err = Http::new()
            .call(ctx(vec![("url", url.into())]))
            .await
            .unwrap_err();
        assert_eq!(err.error_type, "http_error", "{}", err.message);
    }
}
