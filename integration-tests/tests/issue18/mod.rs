//! Helpers shared by the issue 18 tests (read your writes, DLQ, definition
//! lifecycle, schedules).

#![allow(dead_code)]

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::Result;
use reqwest::Method;
use weft_integration_tests::{wait_until, ApiClient, TestCluster};

/// Waits until the replicas together own every partition of
/// `weft.<ty>.events` once, each at least one, all live: ownership has
/// settled after the registration created the topic (requests in between may
/// meet a rebalance and answer 503).
pub async fn wait_spread(cluster: &TestCluster, apis: &[ApiClient], ty: &str) -> Result<()> {
    let topic = format!("weft.{ty}.events");
    let total = weft_integration_tests::broker::high_watermarks(&cluster.bootstrap(), &topic)
        .await?
        .len();
    let prefix = format!("{topic}/");
    wait_until(
        &format!("the replicas share every partition of {topic}, all live"),
        Duration::from_secs(60),
        Duration::from_millis(100),
        || async {
            let mut seen = BTreeSet::new();
            let mut claims = 0;
            for api in apis {
                let Ok(r) = api.send(Method::GET, "/readyz", None).await else {
                    return false;
                };
                let Some(mine) = r.body["partitions"].as_object().cloned() else {
                    return false;
                };
                let mine: Vec<_> = mine
                    .into_iter()
                    .filter(|(k, _)| k.starts_with(&prefix))
                    .collect();
                if mine.is_empty() || mine.iter().any(|(_, live)| live != true) {
                    return false;
                }
                claims += mine.len();
                seen.extend(mine.into_iter().map(|(k, _)| k));
            }
            claims == total && seen.len() == total
        },
    )
    .await
}

/// Task `name` of an instance view.
pub fn task<'v>(inst: &'v serde_json::Value, name: &str) -> Option<&'v serde_json::Value> {
    inst["tasks"].as_array()?.iter().find(|t| t["name"] == name)
}

/// The ids of the instances of `ty` (up to 1,000), as `GET /v1/workflows` lists them.
pub async fn instance_ids(api: &ApiClient, ty: &str) -> Result<Vec<String>> {
    let v = api.list(&format!("type={ty}&limit=1000")).await?;
    Ok(v["items"]
        .as_array()
        .ok_or_else(|| anyhow::anyhow!("no items in {v}"))?
        .iter()
        .filter_map(|i| i["instance_id"].as_str().map(str::to_owned))
        .collect())
}

/// `GET /v1/schedules/{name}`: the schedule, its progress and next runs (200 expected).
pub async fn schedule(api: &ApiClient, name: &str) -> Result<serde_json::Value> {
    let r = api
        .send(Method::GET, &format!("/v1/schedules/{name}"), None)
        .await?;
    anyhow::ensure!(r.status == reqwest::StatusCode::OK, "{r:?}");
    Ok(r.body)
}
