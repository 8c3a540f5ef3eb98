//! Requests about one instance go to the replica that owns its partition.
//!
//! Only the owner of an events partition has the instance's projection, so a
//! request to `/v1/workflows/{ty}/{id}` or anything under it (history, state,
//! replay, control endpoints, `/watch` streams) that reaches another replica
//! is forwarded over HTTP (HTTPS when the API is served over TLS, see
//! [`super::tls::forward_client`]) to the owner, whose answer (a stream
//! included) is passed back as it comes; the caller's `Authorization` or
//! certificate names ([`FORWARDED_SUBJECT`]) go with it. The partition is the one the producers chose for
//! the instance id (see [`crate::partitioner`]); the owner is this replica if
//! its [`Status`] has the partition, else whoever the replica announcements
//! ([`Replicas`]) name. A forwarded request carries [`FORWARDED_BY`] and is
//! never forwarded again. An owner that is unknown, unreachable or still
//! replaying gets the client a 503 with `Retry-After`. Every answer carries
//! [`SERVED_BY`]: the node id of the replica that produced it.
//!
//! The layer finds its [`Forwarder`] in the request extensions (the
//! orchestrator adds it around the router); without one it serves every
//! request locally.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use weft_shared::event::now_ms;
use weft_shared::ids::InstanceId;
use weft_shared::Topics;

use crate::definitions::Registry;
use crate::partitioner::{PartitionCounts, Partitioner};
use crate::replicas::Replicas;
use crate::status::{scope, Status};

/// Set on a forwarded request to the node id of the replica that forwarded it.
pub const FORWARDED_BY: HeaderName = HeaderName::from_static("x-weft-forwarded-by");
/// Set on every answer to the node id of the replica that produced it.
pub const SERVED_BY: HeaderName = HeaderName::from_static("x-weft-served-by");
/// Set on a forwarded request, once per name, to the client-certificate
/// names of the caller (mTLS); the owner believes it only from a replica's
/// certificate (`api.tls_replica_subjects`).
pub const FORWARDED_SUBJECT: HeaderName = HeaderName::from_static("x-weft-forwarded-subject");

/// The certificate names the guard authenticated a request's caller by
/// (the caller's own, or those a replica forwarded); forwarded on.
#[derive(Clone, Debug)]
pub struct CallerCert(pub Vec<String>);

/// Largest request body forwarded.
const MAX_BODY: usize = 16 << 20;
/// How long an owner may take to start answering (a stream then runs on).
pub(super) const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);
/// Headers of one hop only (RFC 9110 §7.6.1), never copied across.
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// What the forwarding layer needs.
pub struct Forwarder {
    pub node_id: String,
    pub topics: Topics,
    pub registry: Arc<Registry>,
    pub status: Arc<Status>,
    pub replicas: Arc<Replicas>,
    /// `None` when keys do not decide partitions (then everything is local).
    pub partitioner: Option<Partitioner>,
    pub counts: Arc<PartitionCounts>,
    http: reqwest::Client,
}

impl Forwarder {
    /// `http` is the client requests go to other replicas with
    /// ([`super::tls::forward_client`]: https when the API is served over TLS).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        http: reqwest::Client,
        node_id: String,
        topics: Topics,
        registry: Arc<Registry>,
        status: Arc<Status>,
        replicas: Arc<Replicas>,
        partitioner: Option<Partitioner>,
        counts: Arc<PartitionCounts>,
    ) -> Self {
        Self {
            node_id,
            topics,
            registry,
            status,
            replicas,
            partitioner,
            counts,
            http,
        }
    }

    /// The HTTP client for requests to other replicas.
    pub(super) fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// The status scope of the partition holding the instance the path names;
    /// `None` for any other request (served here).
    async fn partition_of(&self, path: &str) -> Option<String> {
        let mut segments = path.trim_start_matches('/').split('/');
        let (Some("v1"), Some("workflows"), Some(ty), Some(id)) = (
            segments.next(),
            segments.next(),
            segments.next(),
            segments.next(),
        ) else {
            return None;
        };
        let id: InstanceId = id.parse().ok()?;
        if !self.registry.catalog().contains_type(ty) {
            return None;
        }
        let topic = self.topics.events(ty);
        let partitions = self.counts.get(&topic).await?;
        let key = id.to_string();
        let p = self.partitioner?.partition(key.as_bytes(), partitions);
        Some(scope(&topic, p))
    }

    fn unavailable(&self, message: String, partition: &str, owner: Option<&str>) -> Response {
        let body = json!({ "error": message, "partition": partition, "owner": owner });
        let mut resp = (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response();
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        resp
    }

    /// Sends `req` to `base_url` and streams the answer back.
    async fn proxy(&self, base_url: &str, owner: &str, partition: &str, req: Request) -> Response {
        let (parts, body) = req.into_parts();
        let body = match axum::body::to_bytes(body, MAX_BODY).await {
            Ok(b) => b,
            Err(e) => {
                let msg = format!("request body unreadable or over {MAX_BODY} bytes: {e}");
                return (StatusCode::PAYLOAD_TOO_LARGE, Json(json!({ "error": msg })))
                    .into_response();
            }
        };
        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let url = format!("{}{path}", base_url.trim_end_matches('/'));
        let mut headers = strip(&parts.headers);
        headers.remove(header::HOST);
        headers.remove(header::CONTENT_LENGTH);
        if let Ok(v) = HeaderValue::from_str(&self.node_id) {
            headers.insert(FORWARDED_BY, v);
        }
        // The mTLS caller's certificate names, vouched for by this replica's
        // own certificate; a client's header of that name never passes.
        headers.remove(FORWARDED_SUBJECT);
        if let Some(CallerCert(names)) = parts.extensions.get::<CallerCert>() {
            for v in names.iter().filter_map(|n| HeaderValue::from_str(n).ok()) {
                headers.append(FORWARDED_SUBJECT, v);
            }
        }
        let sent = self
            .http
            .request(parts.method.clone(), &url)
            .headers(headers)
            .body(body)
            .send();
        let answer = match tokio::time::timeout(ANSWER_TIMEOUT, sent).await {
            Ok(Ok(a)) => a,
            Ok(Err(e)) => {
                tracing::warn!(%url, owner, error = %e, "forwarding to the owner failed");
                return self.unavailable(
                    format!("the owner {owner} of {partition} cannot be reached: {e}"),
                    partition,
                    Some(owner),
                );
            }
            Err(_) => {
                tracing::warn!(%url, owner, "the owner did not answer in time");
                return self.unavailable(
                    format!(
                        "the owner {owner} of {partition} did not answer within {ANSWER_TIMEOUT:?}"
                    ),
                    partition,
                    Some(owner),
                );
            }
        };
        tracing::debug!(method = %parts.method, %url, owner, status = answer.status().as_u16(), "request forwarded");
        let mut resp = Response::new(Body::empty());
        *resp.status_mut() = answer.status();
        *resp.headers_mut() = strip(answer.headers());
        *resp.body_mut() = Body::from_stream(answer.bytes_stream());
        resp
    }
}

/// `headers` without the hop-by-hop ones.
fn strip(headers: &HeaderMap) -> HeaderMap {
    let mut out = headers.clone();
    for h in &HOP_BY_HOP {
        out.remove(h);
    }
    out
}

/// The middleware: serves, forwards or refuses a request (see the module doc).
pub async fn forward(req: Request, next: Next) -> Response {
    let Some(fw) = req.extensions().get::<Arc<Forwarder>>().cloned() else {
        return next.run(req).await;
    };
    let mut resp = route(&fw, req, next).await;
    if !resp.headers().contains_key(SERVED_BY) {
        if let Ok(v) = HeaderValue::from_str(&fw.node_id) {
            resp.headers_mut().insert(SERVED_BY, v);
        }
    }
    resp
}

async fn route(fw: &Forwarder, req: Request, next: Next) -> Response {
    let Some(partition) = fw.partition_of(req.uri().path()).await else {
        return next.run(req).await;
    };
    if let Some(mine) = fw.status.owns(&partition) {
        if mine.live {
            return next.run(req).await;
        }
        return fw.unavailable(
            format!("{partition} is replaying on this replica; try again shortly"),
            &partition,
            Some(&fw.node_id),
        );
    }
    if let Some(from) = req.headers().get(FORWARDED_BY) {
        let from = from.to_str().unwrap_or("?").to_owned();
        tracing::info!(%partition, %from, "forwarded request for a partition this replica does not own");
        return fw.unavailable(
            format!("{partition} is not owned by {} (forwarded by {from}); ownership is moving, try again shortly", fw.node_id),
            &partition,
            None,
        );
    }
    match fw.replicas.owner(&partition, now_ms(), &fw.node_id) {
        Some(owner) if owner.live => {
            fw.proxy(&owner.api_url, &owner.node_id, &partition, req)
                .await
        }
        Some(owner) => fw.unavailable(
            format!("{partition} is replaying on {}; try again shortly", owner.node_id),
            &partition,
            Some(&owner.node_id),
        ),
        None => fw.unavailable(
            format!("no replica owns {partition} right now (a rebalance is in progress); try again shortly"),
            &partition,
            None,
        ),
    }
}
