//! The security layers of the HTTP API, put around the router by
//! [`secure`] (ADR 0015):
//!
//! - limits: request line and headers over `api.max_header_bytes` get 431,
//!   bodies over `api.max_body_bytes` 413, bodies slower than
//!   `api.body_timeout_ms` 408;
//! - who is calling ([`auth_policy`](super::auth_policy) tokens, JWTs
//!   verified by [`auth_jwt`](super::auth_jwt), or a client certificate
//!   verified in the TLS handshake, see [`tls`](super::tls); a bearer token
//!   wins over a certificate) and whether their roles allow
//!   what the route needs ([`auth_route`](super::auth_route)): 401 without
//!   valid credentials, 403 naming the missing role. With `auth.enabled`
//!   off (the default) every caller is `anonymous` with every role, and a
//!   warning is logged at start;
//! - per-caller rate limits on starts and signals ([`auth_limits`](super::auth_limits)),
//!   counted by the replica that serves the request (a forwarded one by its owner only);
//! - an audit line (target `weft::audit`) for every call that changes
//!   something: who, how they authenticated, what, which type and instance,
//!   the answer's status — logged once, by the replica that served it (a
//!   forwarded request carries the caller's credentials and is checked again
//!   by the owner);
//! - the secrets keyring start requests seal with (an [`axum::Extension`]).

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use serde_json::json;
use weft_shared::config::WeftConfig;
use weft_shared::secrets::Keyring;

use super::auth_jwt::JwtVerifier;
use super::auth_limits::{RateLimiter, RateTicket};
use super::auth_policy::{Grant, Identity, Policy, PolicyError, Role, ALL};
use super::auth_route::{classify, instance_of, Need, Scope};
use super::forward::{CallerCert, FORWARDED_BY, FORWARDED_SUBJECT, SERVED_BY};
use super::tls::{replica_subjects, PeerCert};

/// Why the API's security could not be set up (a start-up error).
#[derive(Debug, thiserror::Error)]
pub enum SecurityError {
    #[error("secrets keys: {0}")]
    Keys(#[from] weft_shared::secrets::KeyringError),
    #[error(transparent)]
    Policy(#[from] PolicyError),
    #[error("auth.jwks_file: {0}")]
    Jwks(String),
    #[error("auth.enabled is true but neither auth.policy_file nor auth.jwks_file is set: nobody could call the API")]
    NoCredentials,
    #[error(transparent)]
    Tls(#[from] super::tls::TlsError),
}

/// What the guard layer knows.
struct Guard {
    enabled: bool,
    policy: Policy,
    jwt: Option<JwtVerifier>,
    node_id: String,
    /// Subjects of replicas' certificates, whose forwarded caller names are believed.
    replicas: Vec<String>,
    limiter: Arc<RateLimiter>,
    max_header_bytes: usize,
    max_body_bytes: usize,
    body_timeout: Duration,
}

/// `app` with the security layers `config` asks for.
pub fn secure(app: Router, config: &WeftConfig, node_id: &str) -> Result<Router, SecurityError> {
    let keyring = Keyring::from_settings(&config.secrets)?;
    if keyring.is_empty() {
        tracing::info!("no secrets keys: start requests with secrets are refused");
    } else {
        tracing::info!(key_ids = ?keyring.ids(), active = keyring.active().map(|(id, _)| id), "secrets keys loaded");
    }
    let a = &config.auth;
    let policy = match a.policy_file.trim() {
        "" => Policy::parse("").expect("an empty policy parses"),
        path => Policy::load(path)?,
    };
    let jwt = match a.jwks_file.trim() {
        "" => None,
        path => Some(
            JwtVerifier::load(path, &a.jwt_issuer, &a.jwt_audience, &policy.roles_claim)
                .map_err(SecurityError::Jwks)?,
        ),
    };
    if a.enabled {
        if a.policy_file.trim().is_empty() && jwt.is_none() {
            return Err(SecurityError::NoCredentials);
        }
        tracing::info!(policy = %a.policy_file, jwks = %a.jwks_file, "API authentication is on");
    } else {
        tracing::warn!("API authentication is off (auth.enabled=false): anyone who can reach the API may read, start, cancel and register anything");
    }
    let api = &config.api;
    let guard = Arc::new(Guard {
        enabled: a.enabled,
        policy,
        jwt,
        node_id: node_id.to_owned(),
        replicas: replica_subjects(api)?,
        limiter: Arc::new(RateLimiter::per_minute(api.rate_limit_per_minute)),
        max_header_bytes: api.max_header_bytes,
        max_body_bytes: api.max_body_bytes,
        body_timeout: Duration::from_millis(api.body_timeout_ms.max(1)),
    });
    Ok(app
        .layer(axum::Extension(Arc::new(keyring)))
        .layer(DefaultBodyLimit::max(api.max_body_bytes))
        .layer(axum::middleware::from_fn_with_state(guard, guard_layer)))
}

pub(super) fn refuse(status: StatusCode, message: impl Into<String>) -> Response {
    let mut resp = (status, Json(json!({ "error": message.into() }))).into_response();
    if status == StatusCode::UNAUTHORIZED {
        resp.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"weft\""),
        );
    }
    resp
}

impl Guard {
    /// The client-certificate names the caller goes by: those of the
    /// connection's verified certificate or, when that is a replica's and the
    /// request names a forwarded caller, the forwarded caller's.
    fn certificate_names(&self, req: &Request) -> Option<Vec<String>> {
        let peer = req.extensions().get::<PeerCert>()?;
        let from_replica = peer.names.iter().any(|n| self.replicas.contains(n));
        let forwarded: Vec<String> = req
            .headers()
            .get_all(FORWARDED_SUBJECT)
            .iter()
            .filter_map(|v| v.to_str().ok().map(str::to_owned))
            .collect();
        if from_replica && !forwarded.is_empty() {
            Some(forwarded)
        } else {
            Some(peer.names.clone())
        }
    }

    /// The caller; `Ok(None)` without credentials.
    fn authenticate(
        &self,
        req: &Request,
        cert: Option<&[String]>,
    ) -> Result<Option<Identity>, String> {
        let Some(value) = req.headers().get(header::AUTHORIZATION) else {
            return Ok(cert.map(|names| self.policy.certificate(names)));
        };
        let value = value
            .to_str()
            .map_err(|_| "the Authorization header is not text")?;
        let Some(token) = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
        else {
            return Err("the Authorization header is not 'Bearer <token>'".into());
        };
        if let Some(id) = self.policy.token(token) {
            return Ok(Some(id));
        }
        match &self.jwt {
            Some(jwt) if token.matches('.').count() == 2 => jwt.verify(token).map(Some),
            _ => Err("the bearer token is not valid".into()),
        }
    }

    fn anonymous() -> Identity {
        Identity {
            name: "anonymous".into(),
            method: "anonymous",
            grants: vec![Grant {
                role: Role::Admin,
                namespace: ALL.into(),
            }],
        }
    }
}

/// The type a definition document (YAML or JSON) names.
fn definition_type(body: &[u8]) -> Option<String> {
    let v: serde_yaml_ng::Value = serde_yaml_ng::from_slice(body).ok()?;
    v.get("type")?.as_str().map(str::to_owned)
}

/// A request body read in full by [`buffer`].
#[derive(Clone)]
struct Buffered(axum::body::Bytes);

/// `req` with its body read in full within `api.body_timeout_ms` and
/// `api.max_body_bytes` (408 / 413 otherwise); a second call is free.
async fn buffer(g: &Guard, req: Request) -> Result<Request, Response> {
    if req.extensions().get::<Buffered>().is_some() {
        return Ok(req);
    }
    let (mut parts, body) = req.into_parts();
    let read =
        tokio::time::timeout(g.body_timeout, axum::body::to_bytes(body, g.max_body_bytes)).await;
    let bytes = match read {
        Ok(Ok(b)) => b,
        Ok(Err(_)) => {
            return Err(refuse(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "request body unreadable or over {} bytes (api.max_body_bytes)",
                    g.max_body_bytes
                ),
            ))
        }
        Err(_) => {
            return Err(refuse(
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "the request body was not received within {} ms (api.body_timeout_ms)",
                    g.body_timeout.as_millis()
                ),
            ))
        }
    };
    parts.extensions.insert(Buffered(bytes.clone()));
    Ok(Request::from_parts(parts, Body::from(bytes)))
}

async fn guard_layer(State(g): State<Arc<Guard>>, req: Request, next: Next) -> Response {
    let head: usize = req.uri().to_string().len()
        + req
            .headers()
            .iter()
            .map(|(k, v)| k.as_str().len() + v.len() + 4)
            .sum::<usize>();
    if head > g.max_header_bytes {
        return refuse(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            format!(
                "request line and headers take {head} bytes; at most {} (api.max_header_bytes)",
                g.max_header_bytes
            ),
        );
    }
    let too_long = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok())
        .is_some_and(|n| n > g.max_body_bytes);
    if too_long {
        return refuse(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "request body over {} bytes (api.max_body_bytes)",
                g.max_body_bytes
            ),
        );
    }
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let need = classify(&method, &path, req.uri().query());
    if need == Need::Open {
        return next.run(req).await;
    }
    let cert = g.certificate_names(&req);
    let who = match g.authenticate(&req, cert.as_deref()) {
        Ok(Some(id)) => id,
        Ok(None) if !g.enabled => Guard::anonymous(),
        Ok(None) => {
            return refuse(
                StatusCode::UNAUTHORIZED,
                "authentication required: send Authorization: Bearer <token> (weft --token / WEFT_TOKEN) or a client certificate (weft --client-cert)",
            )
        }
        Err(reason) if g.enabled => {
            tracing::info!(target: "weft::audit", %method, %path, %reason, "authentication failed");
            return refuse(StatusCode::UNAUTHORIZED, reason);
        }
        Err(_) => Guard::anonymous(),
    };
    let (mut req, ty, role, limited) = match need {
        Need::Open => unreachable!("handled above"),
        Need::Authenticated => (req, None, None, false),
        Need::Role {
            role,
            scope,
            limited,
        } => {
            let (req, ty) = match scope {
                Scope::Type(ty) => (req, Some(ty)),
                Scope::All => (req, None),
                Scope::BodyType => {
                    let req = match buffer(&g, req).await {
                        Ok(r) => r,
                        Err(resp) => return resp,
                    };
                    let ty = req
                        .extensions()
                        .get::<Buffered>()
                        .and_then(|b| definition_type(&b.0));
                    (req, ty)
                }
            };
            (req, ty, Some(role), limited)
        }
    };
    if let (true, Some(role)) = (g.enabled, role) {
        // A definition whose type does not parse: the handler answers 400; admin on every type is needed to get there.
        if !g.policy.allows(&who, role, ty.as_deref()) {
            let on = match &ty {
                Some(ty) => format!(
                    "workflow type '{ty}' (a grant {role}:<namespace> for one of: {})",
                    g.policy.namespaces_of(ty).join(", ")
                ),
                None => format!("every workflow type (a grant {role}:*)"),
            };
            tracing::info!(target: "weft::audit", caller = %who.name, %method, %path, missing_role = %role, "forbidden");
            return refuse(
                StatusCode::FORBIDDEN,
                format!("caller '{}' lacks role '{role}' on {on}", who.name),
            );
        }
    }
    if limited {
        // Charged by the replica that serves the request (auth_limits::charge).
        req.extensions_mut().insert(RateTicket {
            limiter: g.limiter.clone(),
            caller: who.name.clone(),
        });
    }
    // Downstream (forwarding, scattered lists) sees only the names the caller
    // was authenticated by, never a header a client sent.
    req.headers_mut().remove(FORWARDED_SUBJECT);
    if let Some(names) = cert {
        for v in names.iter().filter_map(|n| HeaderValue::from_str(n).ok()) {
            req.headers_mut().append(FORWARDED_SUBJECT, v);
        }
        req.extensions_mut().insert(CallerCert(names));
    }
    let audited = role.is_some_and(|r| r >= Role::Operator);
    let forwarded_by = req
        .headers()
        .get(FORWARDED_BY)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    if !matches!(method, Method::GET | Method::HEAD) {
        req = match buffer(&g, req).await {
            Ok(r) => r,
            Err(resp) => return resp,
        };
    }
    req.extensions_mut().insert(who.clone());
    let resp = next.run(req).await;
    let served_here = resp
        .headers()
        .get(SERVED_BY)
        .is_none_or(|v| v.as_bytes() == g.node_id.as_bytes());
    if audited && served_here {
        tracing::info!(
            target: "weft::audit",
            caller = %who.name,
            auth = %who.method,
            %method,
            %path,
            workflow_type = %ty.as_deref().unwrap_or(""),
            instance_id = %instance_of(&path).unwrap_or(""),
            status = resp.status().as_u16(),
            forwarded_by = %forwarded_by.as_deref().unwrap_or(""),
            "audit"
        );
    }
    resp
}
