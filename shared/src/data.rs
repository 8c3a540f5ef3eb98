//! `WorkflowData`: the values allowed in workflow contexts, event data and task
//! input/output — a string, integer, float, boolean, list of strings, or a flat
//! map of scalars — and their conversion to and from JSON with errors that name
//! the offending path.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

/// A scalar inside a [`WorkflowData::Map`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Scalar {
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
}

/// One value of workflow data (the protocol's `WorkflowData` union).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum WorkflowData {
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    List(Vec<String>),
    Map(BTreeMap<String, Scalar>),
}

/// A map of named values: event data, task input and output, context data.
pub type DataMap = BTreeMap<String, WorkflowData>;

/// A JSON value that is not valid workflow data.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{path}: {problem}")]
pub struct DataError {
    pub path: String,
    pub problem: String,
}

impl From<&str> for WorkflowData {
    fn from(s: &str) -> Self {
        WorkflowData::Str(s.to_owned())
    }
}
impl From<String> for WorkflowData {
    fn from(s: String) -> Self {
        WorkflowData::Str(s)
    }
}
impl From<i64> for WorkflowData {
    fn from(v: i64) -> Self {
        WorkflowData::Int(v)
    }
}
impl From<bool> for WorkflowData {
    fn from(v: bool) -> Self {
        WorkflowData::Bool(v)
    }
}

impl WorkflowData {
    pub fn as_str(&self) -> Option<&str> {
        match self {
            WorkflowData::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_i64(&self) -> Option<i64> {
        match self {
            WorkflowData::Int(v) => Some(*v),
            _ => None,
        }
    }

    pub fn to_json(&self) -> Json {
        match self {
            WorkflowData::Bool(b) => Json::Bool(*b),
            WorkflowData::Int(i) => Json::from(*i),
            WorkflowData::Float(f) => Json::from(*f),
            WorkflowData::Str(s) => Json::String(s.clone()),
            WorkflowData::List(l) => Json::Array(l.iter().cloned().map(Json::String).collect()),
            WorkflowData::Map(m) => Json::Object(
                m.iter()
                    .map(|(k, v)| (k.clone(), scalar_to_json(v)))
                    .collect(),
            ),
        }
    }

    /// Converts a JSON value, naming `path` in the error when it does not fit.
    pub fn from_json(value: &Json, path: &str) -> Result<Self, DataError> {
        let err = |problem: &str| DataError {
            path: path.to_owned(),
            problem: problem.to_owned(),
        };
        Ok(match value {
            Json::Null => return Err(err("null is not allowed in workflow data")),
            Json::Bool(b) => WorkflowData::Bool(*b),
            Json::Number(n) => match n.as_i64() {
                Some(i) => WorkflowData::Int(i),
                None => WorkflowData::Float(n.as_f64().ok_or_else(|| err("number out of range"))?),
            },
            Json::String(s) => WorkflowData::Str(s.clone()),
            Json::Array(items) => WorkflowData::List(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, v)| match v {
                        Json::String(s) => Ok(s.clone()),
                        _ => Err(DataError {
                            path: format!("{path}[{i}]"),
                            problem: "lists may hold only strings".into(),
                        }),
                    })
                    .collect::<Result<_, _>>()?,
            ),
            Json::Object(obj) => WorkflowData::Map(
                obj.iter()
                    .map(|(k, v)| {
                        let p = format!("{path}.{k}");
                        let s =
                            match v {
                                Json::Bool(b) => Scalar::Bool(*b),
                                Json::Number(n) => match n.as_i64() {
                                    Some(i) => Scalar::Int(i),
                                    None => Scalar::Float(n.as_f64().unwrap_or(0.0)),
                                },
                                Json::String(s) => Scalar::Str(s.clone()),
                                _ => return Err(DataError {
                                    path: p,
                                    problem:
                                        "nested maps may hold only strings, numbers and booleans"
                                            .into(),
                                }),
                            };
                        Ok((k.clone(), s))
                    })
                    .collect::<Result<_, _>>()?,
            ),
        })
    }
}

fn scalar_to_json(s: &Scalar) -> Json {
    match s {
        Scalar::Bool(b) => Json::Bool(*b),
        Scalar::Int(i) => Json::from(*i),
        Scalar::Float(f) => Json::from(*f),
        Scalar::Str(s) => Json::String(s.clone()),
    }
}

/// Converts a JSON object into a [`DataMap`]; `what` names it in errors ("input").
pub fn data_map_from_json(value: &Json, what: &str) -> Result<DataMap, DataError> {
    match value {
        Json::Object(obj) => obj
            .iter()
            .map(|(k, v)| {
                Ok((
                    k.clone(),
                    WorkflowData::from_json(v, &format!("{what}.{k}"))?,
                ))
            })
            .collect(),
        Json::Null => Ok(DataMap::new()),
        _ => Err(DataError {
            path: what.to_owned(),
            problem: "expected a JSON object".into(),
        }),
    }
}

/// Converts a [`DataMap`] into a JSON object.
pub fn data_map_to_json(map: &DataMap) -> Json {
    Json::Object(map.iter().map(|(k, v)| (k.clone(), v.to_json())).collect())
}

/// Serialises any serde value into a [`DataMap`] (via JSON); used by the SDK for typed output.
pub fn to_data_map<T: Serialize>(value: &T, what: &str) -> Result<DataMap, DataError> {
    let json = serde_json::to_value(value).map_err(|e| DataError {
        path: what.to_owned(),
        problem: e.to_string(),
    })?;
    data_map_from_json(&json, what)
}

/// Deserialises a [`DataMap`] into any serde value (via JSON); used by the SDK for typed input.
pub fn from_data_map<T: for<'de> Deserialize<'de>>(
    map: &DataMap,
    what: &str,
) -> Result<T, DataError> {
    serde_json::from_value(data_map_to_json(map)).map_err(|e| DataError {
        path: what.to_owned(),
        problem: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_round_trip_of_every_variant() {
        let v = json!({"s": "x", "i": 3, "f": 1.5, "b": true, "l": ["a", "b"], "m": {"k": 1, "z": "q"}});
        let map = data_map_from_json(&v, "input").unwrap();
        assert_eq!(map.len(), 6);
        assert_eq!(data_map_to_json(&map), v);
    }

    #[test]
    fn errors_name_the_path() {
        let err = data_map_from_json(&json!({"a": {"b": {"c": 1}}}), "input").unwrap_err();
        assert_eq!(err.path, "input.a.b");
        let err = data_map_from_json(&json!({"l": ["x", 1]}), "input").unwrap_err();
        assert_eq!(err.path, "input.l[1]");
        let err = data_map_from_json(&json!([1]), "input").unwrap_err();
        assert_eq!(err.path, "input");
    }
}
