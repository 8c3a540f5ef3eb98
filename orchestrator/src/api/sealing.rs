//! Secrets of a start request: `POST /v1/workflows/{ty}` may carry
//! `"secrets": {"name": "value", ...}`; they are sealed here, before the
//! `workflow.created` event exists, under the orchestrator's active key
//! (see `weft_shared::secrets`), and travel in the input as the envelope
//! only. A client that seals its own secrets may instead put the envelope in
//! the input's `weft.secrets`. No message here ever shows a secret's value.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{Map, Value};
use weft_shared::data::{DataMap, WorkflowData};
use weft_shared::ids::InstanceId;
use weft_shared::secrets::{self, Envelope, Keyring, SECRETS_KEY};

use super::params;
use super::ApiError;

/// The body field holding secrets in clear.
pub const FIELD: &str = "secrets";

/// Seals the body's `secrets` (if any) into `input`'s [`SECRETS_KEY`].
pub fn seal_into(
    keyring: Option<&Arc<Keyring>>,
    workflow_type: &str,
    instance_id: InstanceId,
    fields: &Map<String, Value>,
    input: &mut DataMap,
) -> Result<(), ApiError> {
    let given = match fields.get(FIELD) {
        None | Some(Value::Null) => None,
        Some(Value::Object(map)) => Some(map),
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "body field 'secrets' must be a JSON object of names to strings, not {}",
                params::kind(other)
            )))
        }
    };
    match (input.get(SECRETS_KEY), given) {
        (None, None) => return Ok(()),
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request(format!(
                "input field '{SECRETS_KEY}' (sealed secrets) and body field 'secrets' exclude each other"
            )))
        }
        (Some(WorkflowData::Str(sealed)), None) => {
            return Envelope::parse(sealed).map(drop).map_err(|e| {
                ApiError::bad_request(format!("input field '{SECRETS_KEY}': {e}"))
            })
        }
        (Some(_), None) => {
            return Err(ApiError::bad_request(format!(
                "input field '{SECRETS_KEY}' must be a sealed secrets envelope (a string)"
            )))
        }
        (None, Some(_)) => {}
    }
    let mut clear = BTreeMap::new();
    for (name, value) in given.into_iter().flatten() {
        let Value::String(v) = value else {
            return Err(ApiError::bad_request(format!(
                "body field 'secrets.{name}' must be a string, not {}",
                params::kind(value)
            )));
        };
        clear.insert(name.clone(), v.clone());
    }
    let Some(keyring) = keyring.filter(|k| !k.is_empty()) else {
        return Err(ApiError::bad_request(
            "this orchestrator has no secrets key, so it cannot accept secrets: set secrets.keys_file or WEFT_SECRETS_KEYS (see docs/security.md)",
        ));
    };
    let sealed = secrets::seal(keyring, workflow_type, &instance_id.to_string(), &clear)
        .map_err(|e| ApiError::bad_request(format!("body field 'secrets': {e}")))?;
    input.insert(SECRETS_KEY.to_owned(), WorkflowData::Str(sealed));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ring() -> Arc<Keyring> {
        let mut r = Keyring::default();
        r.insert("k1", [5; secrets::KEY_BYTES]).unwrap();
        Arc::new(r)
    }

    fn fields(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn secrets_are_sealed_into_the_input() {
        let id = InstanceId::random();
        let mut input = DataMap::new();
        let f = fields(json!({"secrets": {"token": "hunter2"}}));
        seal_into(Some(&ring()), "pay", id, &f, &mut input).unwrap();
        let WorkflowData::Str(sealed) = &input[SECRETS_KEY] else {
            panic!("not sealed")
        };
        assert!(sealed.starts_with("wsec1.k1.") && !sealed.contains("hunter2"));
        let open =
            secrets::open(&ring(), "pay", &id.to_string(), sealed, &["token".into()]).unwrap();
        assert_eq!(open["token"].expose(), "hunter2");
    }

    #[test]
    fn bad_secrets_are_refused_without_showing_values() {
        let id = InstanceId::random();
        let err = |f: Value, input: &mut DataMap, ring: Option<&Arc<Keyring>>| {
            seal_into(ring, "pay", id, &fields(f), input)
                .unwrap_err()
                .message
        };
        let r = ring();
        let m = err(json!({"secrets": {"n": 1}}), &mut DataMap::new(), Some(&r));
        assert!(m.contains("'secrets.n' must be a string"), "{m}");
        let m = err(
            json!({"secrets": ["hunter2"]}),
            &mut DataMap::new(),
            Some(&r),
        );
        assert!(!m.contains("hunter2"), "{m}");
        let m = err(
            json!({"secrets": {"a b": "hunter2"}}),
            &mut DataMap::new(),
            Some(&r),
        );
        assert!(m.contains("'a b'") && !m.contains("hunter2"), "{m}");
        let m = err(
            json!({"secrets": {"t": "hunter2"}}),
            &mut DataMap::new(),
            None,
        );
        assert!(m.contains("no secrets key"), "{m}");
        let mut sealed = DataMap::from([(SECRETS_KEY.to_owned(), "junk".into())]);
        let m = err(json!({}), &mut sealed, Some(&r));
        assert!(m.contains("malformed"), "{m}");
        let m = err(json!({"secrets": {"t": "x"}}), &mut sealed, Some(&r));
        assert!(m.contains("exclude each other"), "{m}");
        // A client-sealed envelope passes as it is.
        let env = secrets::seal(&r, "pay", &id.to_string(), &BTreeMap::new()).unwrap();
        let mut input = DataMap::from([(SECRETS_KEY.to_owned(), env.clone().into())]);
        seal_into(None, "pay", id, &Map::new(), &mut input).unwrap();
        assert_eq!(input[SECRETS_KEY], WorkflowData::Str(env));
    }
}
