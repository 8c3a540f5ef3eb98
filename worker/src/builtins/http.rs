//! The `http` kind: one HTTP request from the parameters `url` (required),
//! `method` (default GET), `body` (string) and `headers` (map). Output
//! `{status, body}` (body cut at 64 KiB). 5xx, 429 and connection errors are
//! retryable (`http_status_<code>`, `http_error`); other non-2xx statuses are
//! terminal `http_status_<code>`. Header values and the body may hold
//! `{{secret:NAME}}`, replaced by secret `NAME` when the task names it in its
//! `secrets` parameter (terminal `invalid_parameters` otherwise).

use weft_shared::data::{DataMap, Scalar, WorkflowData};

use crate::builtins::{truncate_utf8, MAX_OUTPUT_BYTES};
use crate::context::TaskContext;
use crate::error::TaskError;
use crate::handler::{Handler, HandlerFuture};

/// Makes HTTP requests with one shared connection pool.
pub struct Http {
    client: reqwest::Client,
}

impl Http {
    pub fn new() -> Self {
        Self {
            client: reqwest::Client::new(),
        }
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
        Box::pin(async move {
            let request = build(&client, &ctx)?;
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
    ctx: &TaskContext,
) -> Result<reqwest::RequestBuilder, TaskError> {
    let invalid = |msg: String| TaskError::terminal("invalid_parameters", msg);
    let url = ctx
        .param_str("url")?
        .ok_or_else(|| invalid("http needs parameter 'url'".into()))?;
    let url = reqwest::Url::parse(url)
        .map_err(|e| invalid(format!("parameter 'url' ('{url}') is not a URL: {e}")))?;
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
}
