//! A deterministic Avro binary writer for the [`Value`] trees `convert`
//! builds. `apache_avro` writes `Value::Map` in `HashMap` order, which differs
//! from run to run; this writer emits map entries sorted by key and is
//! otherwise the plain Avro binary encoding (zig-zag varints, length-prefixed
//! strings, one block per array or map, union branch index before the value).
//! Tests check that `apache_avro` decodes everything written here back to the
//! same value.

use apache_avro::types::Value;

/// Appends the Avro binary encoding of `value` to `out`.
///
/// The value must be one `convert` built: records with their fields in schema
/// order, unions and enums with their indexes.
pub(crate) fn write_value(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Null => {}
        Value::Boolean(b) => out.push(u8::from(*b)),
        Value::Int(i) | Value::Date(i) | Value::TimeMillis(i) => write_long(i64::from(*i), out),
        Value::Long(i)
        | Value::TimestampMillis(i)
        | Value::TimestampMicros(i)
        | Value::TimestampNanos(i)
        | Value::LocalTimestampMillis(i)
        | Value::LocalTimestampMicros(i)
        | Value::LocalTimestampNanos(i)
        | Value::TimeMicros(i) => write_long(*i, out),
        Value::Float(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::Double(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::Bytes(b) => write_bytes(b, out),
        Value::String(s) => write_bytes(s.as_bytes(), out),
        Value::Uuid(u) => write_bytes(u.hyphenated().to_string().as_bytes(), out),
        Value::Fixed(_, b) => out.extend_from_slice(b),
        Value::Enum(index, _) => write_long(i64::from(*index), out),
        Value::Union(index, inner) => {
            write_long(i64::from(*index), out);
            write_value(inner, out);
        }
        Value::Array(items) => {
            if !items.is_empty() {
                write_long(len_i64(items.len()), out);
                items.iter().for_each(|v| write_value(v, out));
            }
            out.push(0);
        }
        Value::Map(entries) => {
            if !entries.is_empty() {
                write_long(len_i64(entries.len()), out);
                let mut sorted: Vec<_> = entries.iter().collect();
                sorted.sort_unstable_by(|a, b| a.0.cmp(b.0));
                for (k, v) in sorted {
                    write_bytes(k.as_bytes(), out);
                    write_value(v, out);
                }
            }
            out.push(0);
        }
        Value::Record(fields) => fields.iter().for_each(|(_, v)| write_value(v, out)),
        Value::Decimal(_) | Value::BigDecimal(_) | Value::Duration(_) => {
            unreachable!("Weft's schemas have no decimal or duration fields")
        }
    }
}

fn len_i64(len: usize) -> i64 {
    i64::try_from(len).unwrap_or(i64::MAX)
}

/// Zig-zag variable-length encoding of a `long` (and of an `int`).
fn write_long(v: i64, out: &mut Vec<u8>) {
    let mut n = ((v << 1) ^ (v >> 63)) as u64;
    while n >= 0x80 {
        out.push((n as u8 & 0x7f) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

fn write_bytes(b: &[u8], out: &mut Vec<u8>) {
    write_long(len_i64(b.len()), out);
    out.extend_from_slice(b);
}

#[cfg(test)]
mod tests {
    use super::*;
    use apache_avro::Schema;

    fn bytes(v: &Value) -> Vec<u8> {
        let mut out = Vec::new();
        write_value(v, &mut out);
        out
    }

    #[test]
    fn longs_match_the_spec_examples() {
        let cases: [(i64, &[u8]); 7] = [
            (0, &[0x00]),
            (-1, &[0x01]),
            (1, &[0x02]),
            (-64, &[0x7f]),
            (64, &[0x80, 0x01]),
            (
                i64::MAX,
                &[0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01],
            ),
            (
                i64::MIN,
                &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01],
            ),
        ];
        for (v, expected) in cases {
            assert_eq!(bytes(&Value::Long(v)), expected, "{v}");
        }
    }

    #[test]
    fn agrees_with_apache_avro_on_single_entry_containers() {
        let schema = Schema::parse_str(
            r#"{"type":"record","name":"R","fields":[
                {"name":"m","type":{"type":"map","values":["null","double"]}},
                {"name":"a","type":{"type":"array","items":"string"}},
                {"name":"e","type":{"type":"enum","name":"E","symbols":["x","y"]}},
                {"name":"b","type":"boolean"}]}"#,
        )
        .unwrap();
        let value = Value::Record(vec![
            (
                "m".into(),
                Value::Map(
                    [(
                        "k".to_owned(),
                        Value::Union(1, Box::new(Value::Double(1.5))),
                    )]
                    .into(),
                ),
            ),
            (
                "a".into(),
                Value::Array(vec![Value::String("héllo".into())]),
            ),
            ("e".into(), Value::Enum(1, "y".into())),
            ("b".into(), Value::Boolean(true)),
        ]);
        assert_eq!(
            bytes(&value),
            apache_avro::to_avro_datum(&schema, value.clone()).unwrap()
        );
    }

    #[test]
    fn maps_are_written_in_key_order() {
        let a = Value::Map((0..50).map(|i| (format!("k{i}"), Value::Long(i))).collect());
        let b = Value::Map(
            (0..50)
                .rev()
                .map(|i| (format!("k{i}"), Value::Long(i)))
                .collect(),
        );
        assert_eq!(bytes(&a), bytes(&b));
        let schema = Schema::parse_str(r#"{"type":"map","values":"long"}"#).unwrap();
        let decoded =
            apache_avro::from_avro_datum(&schema, &mut bytes(&a).as_slice(), None).unwrap();
        assert_eq!(decoded, a);
    }
}
