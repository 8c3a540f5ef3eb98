//! `WorkflowData` as the Avro union
//! `["string","long","double","boolean",{"type":"array","items":"string"},
//! {"type":"map","values":["string","long","double","boolean"]}]`: each variant
//! is the branch of the same index; a map's scalars use the first four branches.

use apache_avro::types::Value;

use super::{shape, FromAvro, ToAvro};
use crate::avro::error::CodecError;
use crate::data::{Scalar, WorkflowData};

const STRING: u32 = 0;
const LONG: u32 = 1;
const DOUBLE: u32 = 2;
const BOOLEAN: u32 = 3;
const ARRAY: u32 = 4;
const MAP: u32 = 5;

fn branch(index: u32, value: Value) -> Value {
    Value::Union(index, Box::new(value))
}

impl ToAvro for Scalar {
    fn to_avro(&self) -> Value {
        match self {
            Scalar::Str(s) => branch(STRING, Value::String(s.clone())),
            Scalar::Int(i) => branch(LONG, Value::Long(*i)),
            Scalar::Float(f) => branch(DOUBLE, Value::Double(*f)),
            Scalar::Bool(b) => branch(BOOLEAN, Value::Boolean(*b)),
        }
    }
}

impl FromAvro for Scalar {
    fn from_avro(value: Value) -> Result<Self, CodecError> {
        match value {
            Value::Union(_, inner) => match *inner {
                Value::String(s) => Ok(Scalar::Str(s)),
                Value::Long(i) => Ok(Scalar::Int(i)),
                Value::Double(f) => Ok(Scalar::Float(f)),
                Value::Boolean(b) => Ok(Scalar::Bool(b)),
                other => Err(shape("a string, long, double or boolean", &other)),
            },
            other => Err(shape("a scalar union", &other)),
        }
    }
}

impl ToAvro for WorkflowData {
    fn to_avro(&self) -> Value {
        match self {
            WorkflowData::Str(s) => branch(STRING, Value::String(s.clone())),
            WorkflowData::Int(i) => branch(LONG, Value::Long(*i)),
            WorkflowData::Float(f) => branch(DOUBLE, Value::Double(*f)),
            WorkflowData::Bool(b) => branch(BOOLEAN, Value::Boolean(*b)),
            WorkflowData::List(items) => branch(ARRAY, items.to_avro()),
            WorkflowData::Map(map) => branch(MAP, map.to_avro()),
        }
    }
}

impl FromAvro for WorkflowData {
    fn from_avro(value: Value) -> Result<Self, CodecError> {
        let Value::Union(index, inner) = value else {
            return Err(shape("a WorkflowData union", &value));
        };
        match (index, *inner) {
            (STRING, Value::String(s)) => Ok(WorkflowData::Str(s)),
            (LONG, Value::Long(i)) => Ok(WorkflowData::Int(i)),
            (DOUBLE, Value::Double(f)) => Ok(WorkflowData::Float(f)),
            (BOOLEAN, Value::Boolean(b)) => Ok(WorkflowData::Bool(b)),
            (ARRAY, list @ Value::Array(_)) => Vec::from_avro(list).map(WorkflowData::List),
            (MAP, map @ Value::Map(_)) => FromAvro::from_avro(map).map(WorkflowData::Map),
            (_, other) => Err(shape("a WorkflowData branch", &other)),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[test]
    fn every_variant_takes_its_branch() {
        let map = BTreeMap::from([("k".to_owned(), Scalar::Bool(true))]);
        let cases = [
            (WorkflowData::Str("s".into()), STRING),
            (WorkflowData::Int(-3), LONG),
            (WorkflowData::Float(0.5), DOUBLE),
            (WorkflowData::Bool(false), BOOLEAN),
            (WorkflowData::List(vec!["a".into()]), ARRAY),
            (WorkflowData::Map(map), MAP),
        ];
        for (data, index) in cases {
            let value = data.to_avro();
            assert!(
                matches!(value, Value::Union(i, _) if i == index),
                "{data:?}"
            );
            assert_eq!(WorkflowData::from_avro(value).unwrap(), data);
        }
    }

    #[test]
    fn a_mismatched_branch_is_an_error() {
        let err = WorkflowData::from_avro(branch(LONG, Value::String("x".into()))).unwrap_err();
        assert!(matches!(err, CodecError::Shape { .. }), "{err}");
    }
}
