//! Explicit conversions between the domain types and
//! [`apache_avro::types::Value`]: [`ToAvro`] builds the value of a schema
//! (records with their fields in schema order, unions and enums with their
//! indexes), [`FromAvro`] reads a decoded value back, checking what the Avro
//! schema cannot (UUIDs, enum names, ranges) and naming the field at fault.
//!
//! This file holds the primitives and containers; `data` the `WorkflowData`
//! union, `model` the nested protocol records, `records` the top-level ones.

mod data;
mod model;
mod records;

use std::collections::{BTreeMap, HashMap};

use apache_avro::types::Value;
use uuid::Uuid;

use super::error::CodecError;

/// A domain value that has an Avro value.
pub(crate) trait ToAvro {
    fn to_avro(&self) -> Value;
}

/// A domain value that can be read from a decoded Avro value.
pub(crate) trait FromAvro: Sized {
    fn from_avro(value: Value) -> Result<Self, CodecError>;
}

/// A short description of a value's kind, for [`CodecError::Shape`].
fn kind(value: &Value) -> String {
    let s = format!("{value:?}");
    match s.find('(') {
        Some(i) => s[..i].to_owned(),
        None => s,
    }
}

pub(crate) fn shape(expected: &'static str, found: &Value) -> CodecError {
    CodecError::Shape {
        path: String::new(),
        expected,
        found: kind(found),
    }
}

/// An epoch-milliseconds timestamp (`long` with `logicalType: timestamp-millis`).
pub(crate) fn ts(ms: i64) -> Value {
    Value::TimestampMillis(ms)
}

/// An optional timestamp: `["null", timestamp-millis]`.
pub(crate) fn opt_ts(ms: Option<i64>) -> Value {
    match ms {
        None => Value::Union(0, Box::new(Value::Null)),
        Some(ms) => Value::Union(1, Box::new(ts(ms))),
    }
}

/// Field-by-name access to a decoded record.
pub(crate) struct Fields(Vec<(String, Value)>);

impl Fields {
    pub(crate) fn new(value: Value) -> Result<Self, CodecError> {
        match value {
            Value::Record(fields) => Ok(Fields(fields)),
            other => Err(shape("a record", &other)),
        }
    }

    /// Takes field `name` and converts it; errors are prefixed with the name.
    pub(crate) fn take<T: FromAvro>(&mut self, name: &'static str) -> Result<T, CodecError> {
        let slot = self
            .0
            .iter_mut()
            .find(|(n, _)| n == name)
            .map(|(_, v)| std::mem::replace(v, Value::Null));
        match slot {
            Some(v) => T::from_avro(v).map_err(|e| e.within(name)),
            None => Err(CodecError::Shape {
                path: name.to_owned(),
                expected: "a field of the schema",
                found: "no such field".to_owned(),
            }),
        }
    }
}

/// Builds a record value from `(field name, value)` pairs in schema order.
pub(crate) fn record<const N: usize>(fields: [(&str, Value); N]) -> Value {
    Value::Record(fields.into_iter().map(|(n, v)| (n.to_owned(), v)).collect())
}

impl ToAvro for String {
    fn to_avro(&self) -> Value {
        Value::String(self.clone())
    }
}
impl FromAvro for String {
    fn from_avro(value: Value) -> Result<Self, CodecError> {
        match value {
            Value::String(s) => Ok(s),
            other => Err(shape("a string", &other)),
        }
    }
}

impl ToAvro for bool {
    fn to_avro(&self) -> Value {
        Value::Boolean(*self)
    }
}
impl FromAvro for bool {
    fn from_avro(value: Value) -> Result<Self, CodecError> {
        match value {
            Value::Boolean(b) => Ok(b),
            other => Err(shape("a boolean", &other)),
        }
    }
}

impl ToAvro for i64 {
    fn to_avro(&self) -> Value {
        Value::Long(*self)
    }
}
impl FromAvro for i64 {
    /// Also reads `timestamp-millis` longs.
    fn from_avro(value: Value) -> Result<Self, CodecError> {
        match value {
            Value::Long(v) | Value::TimestampMillis(v) => Ok(v),
            other => Err(shape("a long", &other)),
        }
    }
}

impl ToAvro for f64 {
    fn to_avro(&self) -> Value {
        Value::Double(*self)
    }
}
impl FromAvro for f64 {
    fn from_avro(value: Value) -> Result<Self, CodecError> {
        match value {
            Value::Double(v) => Ok(v),
            other => Err(shape("a double", &other)),
        }
    }
}

impl ToAvro for u32 {
    fn to_avro(&self) -> Value {
        Value::Long(i64::from(*self))
    }
}
impl FromAvro for u32 {
    fn from_avro(value: Value) -> Result<Self, CodecError> {
        let v = i64::from_avro(value)?;
        u32::try_from(v).map_err(|_| CodecError::OutOfRange {
            path: String::new(),
            value: v,
            expected: "0..=4294967295",
        })
    }
}

impl ToAvro for u64 {
    /// Saturates at `i64::MAX`, the largest Avro `long`.
    fn to_avro(&self) -> Value {
        Value::Long(i64::try_from(*self).unwrap_or(i64::MAX))
    }
}
impl FromAvro for u64 {
    fn from_avro(value: Value) -> Result<Self, CodecError> {
        let v = i64::from_avro(value)?;
        u64::try_from(v).map_err(|_| CodecError::OutOfRange {
            path: String::new(),
            value: v,
            expected: "a non-negative number",
        })
    }
}

impl ToAvro for Uuid {
    fn to_avro(&self) -> Value {
        Value::Uuid(*self)
    }
}
impl FromAvro for Uuid {
    /// Reads the string `read` returns for a `uuid` (or a `Value::Uuid`).
    fn from_avro(value: Value) -> Result<Self, CodecError> {
        match value {
            Value::Uuid(u) => Ok(u),
            Value::String(s) => Uuid::try_parse(&s).map_err(|_| CodecError::InvalidUuid {
                path: String::new(),
                value: s.chars().take(64).collect(),
            }),
            other => Err(shape("a UUID string", &other)),
        }
    }
}

impl<T: ToAvro> ToAvro for Option<T> {
    /// The union `["null", T]`.
    fn to_avro(&self) -> Value {
        match self {
            None => Value::Union(0, Box::new(Value::Null)),
            Some(v) => Value::Union(1, Box::new(v.to_avro())),
        }
    }
}
impl<T: FromAvro> FromAvro for Option<T> {
    fn from_avro(value: Value) -> Result<Self, CodecError> {
        match value {
            Value::Union(0, inner) if *inner == Value::Null => Ok(None),
            Value::Union(1, inner) => T::from_avro(*inner).map(Some),
            Value::Null => Ok(None),
            other => Err(shape("a [\"null\", T] union", &other)),
        }
    }
}

impl<T: ToAvro> ToAvro for Vec<T> {
    fn to_avro(&self) -> Value {
        Value::Array(self.iter().map(ToAvro::to_avro).collect())
    }
}
impl<T: FromAvro> FromAvro for Vec<T> {
    fn from_avro(value: Value) -> Result<Self, CodecError> {
        match value {
            Value::Array(items) => items
                .into_iter()
                .enumerate()
                .map(|(i, v)| T::from_avro(v).map_err(|e| e.within(&format!("[{i}]"))))
                .collect(),
            other => Err(shape("an array", &other)),
        }
    }
}

impl<T: ToAvro> ToAvro for BTreeMap<String, T> {
    fn to_avro(&self) -> Value {
        Value::Map(
            self.iter()
                .map(|(k, v)| (k.clone(), v.to_avro()))
                .collect::<HashMap<_, _>>(),
        )
    }
}
impl<T: FromAvro> FromAvro for BTreeMap<String, T> {
    fn from_avro(value: Value) -> Result<Self, CodecError> {
        match value {
            Value::Map(entries) => entries
                .into_iter()
                .map(|(k, v)| match T::from_avro(v) {
                    Ok(v) => Ok((k, v)),
                    Err(e) => Err(e.within(&format!("[{k:?}]"))),
                })
                .collect(),
            other => Err(shape("a map", &other)),
        }
    }
}

/// Implements the conversions of typed ids (`uuid` strings).
macro_rules! uuid_ids {
    ($($ty:ty),+) => {$(
        impl ToAvro for $ty {
            fn to_avro(&self) -> Value {
                self.0.to_avro()
            }
        }
        impl FromAvro for $ty {
            fn from_avro(value: Value) -> Result<Self, CodecError> {
                Uuid::from_avro(value).map(Self)
            }
        }
    )+};
}

uuid_ids!(
    crate::ids::InstanceId,
    crate::ids::EventId,
    crate::ids::TaskId,
    crate::ids::ExecutionId,
    crate::ids::CorrelationId
);

/// Implements the conversions of protocol enums (Avro enums whose symbols are
/// the wire names, in `ALL` order).
macro_rules! avro_enums {
    ($($ty:ty),+) => {$(
        impl ToAvro for $ty {
            fn to_avro(&self) -> Value {
                let index = <$ty>::ALL.iter().position(|v| v == self).unwrap_or_default();
                Value::Enum(index as u32, self.as_str().to_owned())
            }
        }
        impl FromAvro for $ty {
            fn from_avro(value: Value) -> Result<Self, CodecError> {
                match value {
                    Value::Enum(_, symbol) | Value::String(symbol) => symbol
                        .parse()
                        .map_err(|source| CodecError::UnknownEnumValue { path: String::new(), source }),
                    other => Err(shape("an enum symbol", &other)),
                }
            }
        }
    )+};
}

avro_enums!(
    crate::model::TaskType,
    crate::model::ExecutionSemantics,
    crate::model::TaskPriority,
    crate::model::IsolationLevel,
    crate::model::BackoffStrategy,
    crate::model::DependencyCondition,
    crate::state::TaskState,
    crate::state::WorkflowState,
    crate::node::HealthStatus,
    crate::control::ControlAction
);

#[cfg(test)]
mod tests;
