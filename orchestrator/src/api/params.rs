//! Request parsing whose errors name the offending part: query parameters
//! ([`Params`], which also knows repeated keys such as `state=a&state=b`),
//! path segments (ids, names) and JSON object bodies ([`json_object`]).

use axum::extract::{FromRequestParts, Query};
use axum::http::request::Parts;
use serde_json::{Map, Value};
use weft_shared::ids::InstanceId;

use super::ApiError;

/// The query string as ordered `(name, value)` pairs.
#[derive(Debug, Default)]
pub struct Params(Vec<(String, String)>);

impl<S: Send + Sync> FromRequestParts<S> for Params {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        let Query(pairs) =
            Query::<Vec<(String, String)>>::try_from_uri(&parts.uri).map_err(|e| {
                ApiError::bad_request(format!("invalid query string: {}", e.body_text()))
            })?;
        Ok(Params(pairs))
    }
}

impl Params {
    /// Parameters built in code (tests, and handlers that call another handler).
    pub fn from_pairs(pairs: &[(&str, &str)]) -> Self {
        Params(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    /// Rejects any parameter not in `allowed`.
    pub fn allow(&self, allowed: &[&str]) -> Result<&Self, ApiError> {
        if let Some((name, _)) = self.0.iter().find(|(k, _)| !allowed.contains(&k.as_str())) {
            return Err(ApiError::bad_request(format!(
                "unknown query parameter '{name}' (expected one of: {})",
                allowed.join(", ")
            )));
        }
        Ok(self)
    }

    /// The single value of `name`, if given (twice is an error).
    pub fn one(&self, name: &str) -> Result<Option<&str>, ApiError> {
        let mut values = self.0.iter().filter(|(k, _)| k == name);
        let first = values.next().map(|(_, v)| v.as_str());
        if values.next().is_some() {
            return Err(ApiError::bad_request(format!(
                "query parameter '{name}' is given more than once"
            )));
        }
        Ok(first)
    }

    /// Every value of `name`, comma-separated lists split, empty items dropped.
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(k, _)| k == name)
            .flat_map(|(_, v)| v.split(','))
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .collect()
    }

    /// An integer in `min..=max`.
    pub fn int(&self, name: &str, min: u64, max: u64) -> Result<Option<u64>, ApiError> {
        let Some(raw) = self.one(name)? else {
            return Ok(None);
        };
        match raw.trim().parse::<u64>() {
            Ok(n) if (min..=max).contains(&n) => Ok(Some(n)),
            _ => Err(ApiError::bad_request(format!(
                "query parameter '{name}': '{}' is not an integer between {min} and {max}",
                truncate(raw)
            ))),
        }
    }
}

/// The `from`/`to`/`limit` range of a history read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SeqRange {
    pub from: u64,
    pub to: Option<u64>,
    pub limit: usize,
}

/// Parses `from` (≥ 1, default 1), `to` (≥ `from`) and `limit` (1..=`max_limit`).
pub fn seq_range(p: &Params, default_limit: u64, max_limit: u64) -> Result<SeqRange, ApiError> {
    let from = p.int("from", 1, u64::MAX)?.unwrap_or(1);
    let to = p.int("to", 1, u64::MAX)?;
    if let Some(to) = to.filter(|to| *to < from) {
        return Err(ApiError::bad_request(format!(
            "query parameter 'to': {to} is before 'from' ({from})"
        )));
    }
    let limit = p.int("limit", 1, max_limit)?.unwrap_or(default_limit);
    Ok(SeqRange {
        from,
        to,
        limit: limit as usize,
    })
}

/// Parses the `{id}` path segment.
pub fn instance_id(raw: &str) -> Result<InstanceId, ApiError> {
    raw.parse().map_err(|e: weft_shared::ids::IdError| {
        ApiError::bad_request(format!("path parameter 'id': {e}"))
    })
}

/// Parses an epoch-milliseconds integer or an RFC 3339 UTC timestamp
/// (`2024-05-01T12:00:00Z`, fractional seconds allowed).
pub fn timestamp_ms(name: &str, raw: &str) -> Result<i64, ApiError> {
    let raw = raw.trim();
    if let Ok(ms) = raw.parse::<i64>() {
        if ms >= 0 {
            return Ok(ms);
        }
    } else if let Ok(t) = humantime::parse_rfc3339(raw) {
        if let Ok(d) = t.duration_since(std::time::UNIX_EPOCH) {
            return i64::try_from(d.as_millis()).map_err(|_| {
                ApiError::bad_request(format!("query parameter '{name}' is too far in the future"))
            });
        }
    }
    Err(ApiError::bad_request(format!(
        "query parameter '{name}': '{}' is neither epoch milliseconds nor an RFC 3339 UTC time like 2024-05-01T12:00:00Z",
        truncate(raw)
    )))
}

/// The body as a JSON object (empty body: `{}`), rejecting fields not in
/// `allowed` (`None`: any field is allowed).
pub fn json_object(body: &[u8], allowed: Option<&[&str]>) -> Result<Map<String, Value>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("request body is not valid JSON: {e}")))?;
    let Value::Object(fields) = value else {
        return Err(ApiError::bad_request(format!(
            "request body must be a JSON object, not {}",
            kind(&value)
        )));
    };
    if let Some(allowed) = allowed {
        if let Some(name) = fields.keys().find(|k| !allowed.contains(&k.as_str())) {
            return Err(ApiError::bad_request(format!(
                "unknown body field '{name}' (expected: {})",
                allowed.join(", ")
            )));
        }
    }
    Ok(fields)
}

/// An optional string field of a body object (at most `max` characters).
pub fn string_field(
    fields: &Map<String, Value>,
    name: &str,
    max: usize,
) -> Result<Option<String>, ApiError> {
    match fields.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.chars().count() <= max => Ok(Some(s.clone())),
        Some(Value::String(_)) => Err(ApiError::bad_request(format!(
            "body field '{name}' is longer than {max} characters"
        ))),
        Some(other) => Err(ApiError::bad_request(format!(
            "body field '{name}' must be a string, not {}",
            kind(other)
        ))),
    }
}

/// The JSON type of a value, for messages.
pub fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A user-supplied value shortened for an error message.
pub fn truncate(s: &str) -> String {
    let mut out: String = s.chars().take(64).collect();
    if out.len() < s.len() {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(e: ApiError) -> String {
        assert_eq!(e.status, axum::http::StatusCode::BAD_REQUEST);
        e.message
    }

    #[test]
    fn integers_name_the_parameter() {
        let p = Params::from_pairs(&[("limit", "-1"), ("from", "x")]);
        assert!(msg(p.int("limit", 1, 100).unwrap_err()).contains("'limit'"));
        assert!(msg(p.int("from", 1, 100).unwrap_err()).contains("'from': 'x'"));
        assert_eq!(
            Params::from_pairs(&[("limit", "7")])
                .int("limit", 1, 9)
                .unwrap(),
            Some(7)
        );
        let twice = Params::from_pairs(&[("limit", "1"), ("limit", "2")]);
        assert!(msg(twice.one("limit").unwrap_err()).contains("more than once"));
    }

    #[test]
    fn unknown_parameters_are_named() {
        let p = Params::from_pairs(&[("limt", "1")]);
        let m = msg(p.allow(&["limit"]).unwrap_err());
        assert!(m.contains("'limt'") && m.contains("limit"), "{m}");
    }

    #[test]
    fn ranges() {
        let p = Params::from_pairs(&[("from", "5"), ("to", "3")]);
        assert!(msg(seq_range(&p, 10, 100).unwrap_err()).contains("'to'"));
        let p = Params::from_pairs(&[("from", "2"), ("limit", "3")]);
        assert_eq!(
            seq_range(&p, 10, 100).unwrap(),
            SeqRange {
                from: 2,
                to: None,
                limit: 3
            }
        );
        let p = Params::from_pairs(&[("from", "0")]);
        assert!(msg(seq_range(&p, 10, 100).unwrap_err()).contains("'from'"));
    }

    #[test]
    fn repeated_and_comma_lists() {
        let p = Params::from_pairs(&[("state", "running"), ("state", "failed, paused")]);
        assert_eq!(p.all("state"), vec!["running", "failed", "paused"]);
    }

    #[test]
    fn timestamps() {
        assert_eq!(
            timestamp_ms("t", "1714564800123").unwrap(),
            1_714_564_800_123
        );
        assert_eq!(
            timestamp_ms("t", "2024-05-01T12:00:00.123Z").unwrap(),
            1_714_564_800_123
        );
        assert!(msg(timestamp_ms("created_after", "yesterday").unwrap_err())
            .contains("'created_after'"));
        assert!(timestamp_ms("t", "-5").is_err());
    }

    #[test]
    fn bodies() {
        assert!(json_object(b"", None).unwrap().is_empty());
        assert!(msg(json_object(b"{", None).unwrap_err()).contains("not valid JSON"));
        assert!(msg(json_object(b"[1]", None).unwrap_err()).contains("an array"));
        let m = msg(json_object(br#"{"reasn": "x"}"#, Some(&["reason"])).unwrap_err());
        assert!(m.contains("'reasn'"), "{m}");
        let f = json_object(br#"{"reason": 5}"#, Some(&["reason"])).unwrap();
        assert!(
            msg(string_field(&f, "reason", 10).unwrap_err()).contains("'reason' must be a string")
        );
    }

    #[test]
    fn ids() {
        assert!(msg(instance_id("nope").unwrap_err()).contains("path parameter 'id'"));
        assert!(instance_id("0191c3c8-6a3e-7f00-8000-000000000000").is_ok());
    }
}
