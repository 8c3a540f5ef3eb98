//! Listing (and summing analytics) across replicas. A replica's projections hold the partitions it
//! owns (plus what is left of partitions it owned before), so one replica
//! alone cannot answer `GET /v1/workflows`. The replica asked lists the
//! instances of the partitions it owns and asks the owner of every other
//! partition of the type for the same page, then merges the pages by
//! (created_at, id): the order the cursors point into, which is the same on
//! every replica. A sub-request carries `x-weft-forwarded-by` and is answered
//! from the owner's own partitions only. A partition with no known owner, or an
//! owner that does not answer, makes the list a 503 with `Retry-After` (as for a
//! single instance): a list never leaves out instances without saying so.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;

use axum::http::{header, HeaderMap};
use serde_json::Value;
use weft_shared::event::now_ms;
use weft_shared::fsm::InstanceState;
use weft_shared::ids::InstanceId;

use super::forward::{Forwarder, FORWARDED_BY, FORWARDED_SUBJECT};
use super::ApiError;
use crate::status::scope;
use crate::store;

/// Which instances of a type this replica answers for, and whom else to ask.
pub struct Plan {
    /// `None`: keys do not decide partitions, so the local store is the answer.
    owned: Option<(i32, HashSet<i32>)>,
    /// `(node id, API base URL)` of the owners of the other partitions.
    pub peers: Vec<(String, String)>,
}

impl Plan {
    /// Whether this replica answers for partition `p`.
    pub fn owns(&self, p: i32) -> bool {
        self.owned
            .as_ref()
            .is_none_or(|(_, owned)| owned.contains(&p))
    }

    /// The partitions this replica answers for (`None`: keys do not decide
    /// partitions, so every partition it owns).
    pub fn owned_partitions(&self) -> Option<Vec<i32>> {
        let mut ps: Vec<i32> = self.owned.as_ref()?.1.iter().copied().collect();
        ps.sort_unstable();
        Some(ps)
    }

    /// Whether `s` belongs to a partition this replica owns.
    pub fn keeps(&self, fw: &Forwarder, s: &InstanceState) -> bool {
        let (Some((count, owned)), Some(partitioner)) = (&self.owned, fw.partitioner) else {
            return true;
        };
        let key = s.instance_id.to_string();
        owned.contains(&partitioner.partition(key.as_bytes(), *count))
    }
}

/// Plans a list of `workflow_type`: this replica's partitions, and (unless the
/// request is itself a sub-request) the owners of the others.
pub async fn plan(
    fw: &Forwarder,
    workflow_type: &str,
    headers: &HeaderMap,
) -> Result<Plan, ApiError> {
    let topic = fw.topics.events(workflow_type);
    let (Some(_), Some(count)) = (fw.partitioner, fw.counts.get(&topic).await) else {
        return Ok(Plan {
            owned: None,
            peers: Vec::new(),
        });
    };
    let mut owned = HashSet::new();
    let mut peers = BTreeMap::new();
    let mut unowned = Vec::new();
    let sub_request = headers.contains_key(FORWARDED_BY);
    for p in 0..count {
        let sc = scope(&topic, p);
        if fw.status.owns(&sc).is_some() {
            owned.insert(p);
        } else if sub_request {
            continue;
        } else if let Some(o) = fw.replicas.owner(&sc, now_ms(), &fw.node_id) {
            peers.insert(o.node_id, o.api_url);
        } else {
            unowned.push(sc);
        }
    }
    if !unowned.is_empty() {
        return Err(ApiError::unavailable(format!(
            "no replica owns {} right now (a rebalance is in progress), so a list would be incomplete; try again shortly",
            unowned.join(", ")
        )));
    }
    Ok(Plan {
        owned: Some((count, owned)),
        peers: peers.into_iter().collect(),
    })
}

/// The answer of each peer to `GET path?query` (a sub-request: the peer
/// answers for its own partitions only), sent with the caller's credentials
/// from `headers` (its `Authorization`, or the certificate names the guard
/// put in `X-Weft-Forwarded-Subject`), which the peer checks again.
pub async fn gather(
    fw: &Arc<Forwarder>,
    peers: &[(String, String)],
    path: &str,
    query: &str,
    headers: &HeaderMap,
) -> Result<Vec<Value>, ApiError> {
    let caller = caller(headers);
    let asks = peers.iter().map(|(node, url)| {
        let caller = caller.clone();
        let url = format!("{}{path}?{query}", url.trim_end_matches('/'));
        let fw = fw.clone();
        async move {
            let failed = |why: String| {
                tracing::warn!(%url, owner = %node, error = %why, "a peer's part of a scattered request failed");
                ApiError::unavailable(format!(
                    "replica {node} did not answer its part ({why}); try again shortly"
                ))
            };
            let answer = peer_get(&fw, &url, caller)
                .send()
                .await
                .map_err(|e| failed(e.to_string()))?;
            let status = answer.status();
            let body: Value = answer.json().await.map_err(|e| failed(e.to_string()))?;
            if !status.is_success() {
                return Err(failed(format!("{status}: {}", body["error"])));
            }
            Ok(body)
        }
    });
    futures::future::try_join_all(asks).await
}

/// A GET of `url` at a peer, on the caller's behalf (`caller`: its credentials).
fn peer_get(fw: &Forwarder, url: &str, caller: HeaderMap) -> reqwest::RequestBuilder {
    fw.http()
        .get(url)
        .headers(caller)
        .header(FORWARDED_BY, fw.node_id.as_str())
        .header(header::ACCEPT, "application/json")
        .timeout(super::forward::ANSWER_TIMEOUT)
}

/// The caller's credentials in `headers`, to send on to a peer.
fn caller(headers: &HeaderMap) -> HeaderMap {
    let mut caller = HeaderMap::new();
    for name in [header::AUTHORIZATION, FORWARDED_SUBJECT] {
        for v in headers.get_all(&name) {
            caller.append(name.clone(), v.clone());
        }
    }
    caller
}

/// One instance `ty`/`id` as served by its owner `(node id, URL)` (a
/// sub-request with the caller's credentials); `None` when it answers 404.
pub async fn instance_at(
    fw: &Forwarder,
    (node, url): (&str, &str),
    ty: &str,
    id: &str,
    headers: &HeaderMap,
) -> Result<Option<Value>, ApiError> {
    let url = format!("{}/v1/workflows/{ty}/{id}", url.trim_end_matches('/'));
    let failed = |why: String| {
        tracing::warn!(%url, owner = %node, error = %why, "a peer did not answer for an instance");
        ApiError::unavailable(format!(
            "replica {node} did not answer for {ty} {id} ({why}); try again shortly"
        ))
    };
    let answer = peer_get(fw, &url, caller(headers))
        .send()
        .await
        .map_err(|e| failed(e.to_string()))?;
    let status = answer.status();
    if status == reqwest::StatusCode::NOT_FOUND {
        return Ok(None);
    }
    let body: Value = answer.json().await.map_err(|e| failed(e.to_string()))?;
    if !status.is_success() {
        return Err(failed(format!("{status}: {}", body["error"])));
    }
    Ok(Some(body))
}

/// Merges pages (each in (created_at, id) order, each at most `limit` long)
/// into one page of `limit` and its cursor.
pub fn merge(pages: Vec<Value>, limit: usize) -> (Vec<Value>, Option<String>) {
    let mut more = false;
    let mut seen = BTreeSet::new();
    let mut items: Vec<(i64, String, Value)> = Vec::new();
    for mut page in pages {
        more |= !page["next_cursor"].is_null();
        let Value::Array(list) = page["items"].take() else {
            continue;
        };
        for item in list {
            let id = item["instance_id"].as_str().unwrap_or_default().to_owned();
            let created = item["created_at_ms"].as_i64().unwrap_or_default();
            // An instance whose partition moved between two sub-requests.
            if seen.insert(id.clone()) {
                items.push((created, id, item));
            }
        }
    }
    // Hyphenated lower-case UUIDs sort like their bytes, the store's order.
    items.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
    more |= items.len() > limit;
    items.truncate(limit);
    let cursor = if more {
        items.last().and_then(|(created, id, _)| {
            let id: InstanceId = id.parse().ok()?;
            Some(store::cursor_after(*created, id))
        })
    } else {
        None
    };
    (items.into_iter().map(|(_, _, v)| v).collect(), cursor)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn item(created: i64, id: &str) -> Value {
        json!({ "instance_id": id, "created_at_ms": created })
    }

    const A: &str = "00000000-0000-4000-8000-00000000000a";
    const B: &str = "00000000-0000-4000-8000-00000000000b";
    const C: &str = "00000000-0000-4000-8000-00000000000c";

    #[test]
    fn pages_merge_in_store_order_and_resume_after_the_last_item() {
        let mine = json!({ "items": [item(1, A), item(3, C)], "next_cursor": null });
        let theirs = json!({ "items": [item(1, B), item(2, A)], "next_cursor": null });
        let (items, cursor) = merge(vec![mine, theirs], 3);
        let order: Vec<(i64, &str)> = items
            .iter()
            .map(|v| {
                (
                    v["created_at_ms"].as_i64().unwrap(),
                    v["instance_id"].as_str().unwrap(),
                )
            })
            .collect();
        // A twice (moved between sub-requests) counts once, at its first place.
        assert_eq!(order, vec![(1, A), (1, B), (3, C)]);
        assert_eq!(cursor, None, "everything fitted");

        let (items, cursor) = merge(
            vec![
                json!({ "items": [item(1, A), item(2, B)], "next_cursor": "c1.x" }),
                json!({ "items": [item(1, C)], "next_cursor": null }),
            ],
            2,
        );
        assert_eq!(items.len(), 2);
        let expected = store::cursor_after(1, C.parse().unwrap());
        assert_eq!(
            cursor,
            Some(expected),
            "resumes after the last item returned"
        );
    }
}
