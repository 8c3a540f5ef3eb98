//! Queries over instances (list, state at a sequence, replay, trace), a
//! type's analytics, and the control calls (cancel, pause, resume, signal).

use reqwest::Url;
use serde_json::{json, Value};

use super::{ApiResult, Client, EventRange};

/// `GET /v1/workflows` filters.
#[derive(Clone, Debug, Default)]
pub struct ListQuery {
    pub workflow_type: String,
    pub states: Vec<String>,
    /// Epoch milliseconds or RFC 3339, passed through.
    pub created_after: Option<String>,
    pub limit: Option<u64>,
    pub cursor: Option<String>,
}

/// A control request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ControlAction {
    Cancel { reason: Option<String> },
    Pause,
    Resume,
    Signal { name: String, data: Value },
}

impl ControlAction {
    /// The verb, as in the URL (`cancel`, `pause`, `resume`, `signal`).
    pub fn verb(&self) -> &'static str {
        match self {
            ControlAction::Cancel { .. } => "cancel",
            ControlAction::Pause => "pause",
            ControlAction::Resume => "resume",
            ControlAction::Signal { .. } => "signal",
        }
    }
}

impl Client {
    /// `GET /v1/workflows?type=..&state=..&created_after=..&limit=..&cursor=..`.
    pub async fn list_workflows(&self, q: &ListQuery) -> ApiResult<Value> {
        let url = self.list_url(q);
        self.send(url.clone(), self.http.get(url)).await
    }

    fn list_url(&self, q: &ListQuery) -> Url {
        let limit = q.limit.map(|l| l.to_string());
        let mut query: Vec<(&str, &str)> = vec![("type", q.workflow_type.as_str())];
        query.extend(q.states.iter().map(|s| ("state", s.as_str())));
        query.extend(
            q.created_after
                .iter()
                .map(|c| ("created_after", c.as_str())),
        );
        query.extend(limit.iter().map(|l| ("limit", l.as_str())));
        query.extend(q.cursor.iter().map(|c| ("cursor", c.as_str())));
        self.url(&["v1", "workflows"], &query)
    }

    /// `GET /v1/workflows/{type}/{id}/state[?at=SEQ]`.
    pub async fn state_at(
        &self,
        workflow_type: &str,
        instance_id: &str,
        at: Option<u64>,
    ) -> ApiResult<Value> {
        let at = at.map(|a| a.to_string());
        let query: Vec<(&str, &str)> = at.iter().map(|a| ("at", a.as_str())).collect();
        let url = self.url(
            &["v1", "workflows", workflow_type, instance_id, "state"],
            &query,
        );
        self.send(url.clone(), self.http.get(url)).await
    }

    /// `GET /v1/workflows/{type}/{id}/trace?format=otlp|spans`.
    /// `GET /v1/workflows/{ty}/{id}/children`.
    pub async fn children(&self, workflow_type: &str, instance_id: &str) -> ApiResult<Value> {
        let url = self.url(
            &["v1", "workflows", workflow_type, instance_id, "children"],
            &[],
        );
        self.send(url.clone(), self.http.get(url)).await
    }

    pub async fn trace(
        &self,
        workflow_type: &str,
        instance_id: &str,
        otlp: bool,
    ) -> ApiResult<Value> {
        let format = if otlp { "otlp" } else { "spans" };
        let url = self.url(
            &["v1", "workflows", workflow_type, instance_id, "trace"],
            &[("format", format)],
        );
        self.send(url.clone(), self.http.get(url)).await
    }

    /// `GET /v1/analytics/{type}?min_samples&slow_ms`.
    pub async fn analytics(
        &self,
        workflow_type: &str,
        min_samples: Option<u64>,
        slow_ms: Option<u64>,
    ) -> ApiResult<Value> {
        let (min, slow) = (
            min_samples.map(|n| n.to_string()),
            slow_ms.map(|n| n.to_string()),
        );
        let mut query: Vec<(&str, &str)> = Vec::new();
        query.extend(min.iter().map(|n| ("min_samples", n.as_str())));
        query.extend(slow.iter().map(|n| ("slow_ms", n.as_str())));
        let url = self.url(&["v1", "analytics", workflow_type], &query);
        self.send(url.clone(), self.http.get(url)).await
    }

    /// `POST /v1/workflows/{type}/{id}/replay?from&to&limit`.
    pub async fn replay(
        &self,
        workflow_type: &str,
        instance_id: &str,
        range: EventRange,
    ) -> ApiResult<Value> {
        let url = self.url(
            &["v1", "workflows", workflow_type, instance_id, "replay"],
            &[],
        );
        let url = with_range(url, range);
        self.send(url.clone(), self.http.post(url)).await
    }

    /// `POST /v1/workflows/{type}/{id}/{cancel|pause|resume|signals/NAME}`.
    pub async fn control(
        &self,
        workflow_type: &str,
        instance_id: &str,
        action: &ControlAction,
        idempotency_key: Option<&str>,
    ) -> ApiResult<Value> {
        let base = ["v1", "workflows", workflow_type, instance_id];
        let (url, body) = match action {
            ControlAction::Cancel { reason } => {
                let body = match reason {
                    Some(r) => json!({ "reason": r }),
                    None => json!({}),
                };
                (self.url(&[&base[..], &["cancel"]].concat(), &[]), body)
            }
            ControlAction::Pause => (self.url(&[&base[..], &["pause"]].concat(), &[]), json!({})),
            ControlAction::Resume => (self.url(&[&base[..], &["resume"]].concat(), &[]), json!({})),
            ControlAction::Signal { name, data } => (
                self.url(&[&base[..], &["signals", name.as_str()]].concat(), &[]),
                data.clone(),
            ),
        };
        let mut req = self.http.post(url.clone()).json(&body);
        if let Some(key) = idempotency_key {
            req = req.header("Idempotency-Key", key);
        }
        self.send(url, req).await
    }
}

/// `url` with `from`, `to` and `limit` of `range` appended.
pub(crate) fn with_range(mut url: Url, range: EventRange) -> Url {
    let params: Vec<(&str, String)> = [
        ("from", range.from),
        ("to", range.to),
        ("limit", range.limit),
    ]
    .into_iter()
    .filter_map(|(k, v)| v.map(|v| (k, v.to_string())))
    .collect();
    if !params.is_empty() {
        url.query_pairs_mut().extend_pairs(params);
    }
    url
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_urls_repeat_states_and_encode_values() {
        let c = Client::new("http://h:1").unwrap();
        let q = ListQuery {
            workflow_type: "demo".into(),
            states: vec!["running".into(), "failed".into()],
            created_after: Some("2024-05-01T12:00:00Z".into()),
            limit: Some(5),
            cursor: Some("c1.00ff".into()),
        };
        assert_eq!(
            c.list_url(&q).as_str(),
            "http://h:1/v1/workflows?type=demo&state=running&state=failed&created_after=2024-05-01T12%3A00%3A00Z&limit=5&cursor=c1.00ff"
        );
    }

    #[test]
    fn ranges_are_appended() {
        let c = Client::new("http://h:1").unwrap();
        let u = c.url(&["v1", "workflows", "d", "i", "replay"], &[]);
        let u = with_range(
            u,
            EventRange {
                from: Some(2),
                to: None,
                limit: Some(9),
            },
        );
        assert_eq!(
            u.as_str(),
            "http://h:1/v1/workflows/d/i/replay?from=2&limit=9"
        );
    }
}
