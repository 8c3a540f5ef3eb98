//! A strict, bounded Avro binary reader: decodes one datum of a schema into a
//! [`Value`], with errors that name the field and the byte offset.
//!
//! Why not `apache_avro::from_avro_datum` (0.21): it turns a string cut short
//! by the end of the input into `Value::Null` instead of an error, and it
//! reserves array capacity from the declared item count before reading any
//! item, so a five-byte body declaring 2^29 items makes it request 28 GB and
//! abort the process. Records come from a topic anyone may write to; this
//! reader checks every length and count against the bytes that remain. Tests
//! check it against `apache_avro` on valid input.
//!
//! `uuid` strings are returned as `Value::String`; `convert` parses them so
//! that an invalid one is reported with its field.

use std::collections::HashMap;

use apache_avro::schema::{Name, Schema};
use apache_avro::types::Value;

use super::error::CodecError;

/// The named types of a schema, by full name, for resolving references.
pub(crate) type Names = HashMap<String, Schema>;

/// Collects every named type defined in `schema`.
pub(crate) fn collect_names(schema: &Schema, out: &mut Names) {
    match schema {
        Schema::Record(r) => {
            out.insert(r.name.fullname(None), schema.clone());
            r.fields.iter().for_each(|f| collect_names(&f.schema, out));
        }
        Schema::Enum(e) => {
            out.insert(e.name.fullname(None), schema.clone());
        }
        Schema::Fixed(f) => {
            out.insert(f.name.fullname(None), schema.clone());
        }
        Schema::Array(a) => collect_names(&a.items, out),
        Schema::Map(m) => collect_names(&m.types, out),
        Schema::Union(u) => u.variants().iter().for_each(|v| collect_names(v, out)),
        _ => {}
    }
}

/// Reads one datum of `schema` from `buf` starting at `start`; returns it with
/// the offset just past it.
pub(crate) fn read_datum(
    schema: &Schema,
    names: &Names,
    buf: &[u8],
    start: usize,
) -> Result<(Value, usize), CodecError> {
    let mut r = Reader {
        buf,
        pos: start,
        names,
    };
    let value = r.value(schema)?;
    Ok((value, r.pos))
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    names: &'a Names,
}

impl<'a> Reader<'a> {
    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn truncated(&self, needed: usize) -> CodecError {
        CodecError::Truncated {
            path: String::new(),
            offset: self.pos,
            needed,
            len: self.buf.len(),
        }
    }

    fn corrupt(&self, offset: usize, problem: String) -> CodecError {
        CodecError::Corrupt {
            path: String::new(),
            offset,
            problem,
        }
    }

    fn take(&mut self, n: usize) -> Result<&[u8], CodecError> {
        if n > self.remaining() {
            return Err(self.truncated(n - self.remaining()));
        }
        let start = self.pos;
        self.pos += n;
        Ok(&self.buf[start..self.pos])
    }

    /// A zig-zag varint of at most 10 bytes.
    fn long(&mut self) -> Result<i64, CodecError> {
        let start = self.pos;
        let mut n: u64 = 0;
        for shift in (0..70).step_by(7) {
            let byte = self.take(1)?[0];
            if shift == 63 && byte > 1 {
                return Err(self.corrupt(start, "varint overflows 64 bits".into()));
            }
            n |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok((n >> 1) as i64 ^ -((n & 1) as i64));
            }
        }
        Err(self.corrupt(start, "varint longer than 10 bytes".into()))
    }

    fn int(&mut self) -> Result<i32, CodecError> {
        let start = self.pos;
        let v = self.long()?;
        i32::try_from(v).map_err(|_| self.corrupt(start, format!("{v} does not fit an Avro int")))
    }

    /// A length or index that must be non-negative.
    fn len(&mut self, what: &str) -> Result<usize, CodecError> {
        let start = self.pos;
        let v = self.long()?;
        usize::try_from(v).map_err(|_| self.corrupt(start, format!("negative {what} {v}")))
    }

    fn string(&mut self) -> Result<String, CodecError> {
        let len = self.len("string length")?;
        let start = self.pos;
        let bytes = self.take(len)?.to_vec();
        String::from_utf8(bytes)
            .map_err(|e| self.corrupt(start, format!("string is not valid UTF-8 ({e})")))
    }

    /// The item count of the next array or map block (0 at the end); skips the
    /// byte size of blocks written with a negative count.
    fn block_count(&mut self) -> Result<usize, CodecError> {
        let start = self.pos;
        let count = self.long()?;
        if count < 0 {
            self.len("block size")?;
        }
        let count = usize::try_from(count.unsigned_abs())
            .map_err(|_| self.corrupt(start, format!("block count {count} is too large")))?;
        // Every item of Weft's schemas takes at least one byte.
        if count > self.remaining() {
            return Err(self.truncated(count - self.remaining()));
        }
        Ok(count)
    }

    fn value(&mut self, schema: &Schema) -> Result<Value, CodecError> {
        Ok(match schema {
            Schema::Null => Value::Null,
            Schema::Boolean => {
                let start = self.pos;
                match self.take(1)?[0] {
                    0 => Value::Boolean(false),
                    1 => Value::Boolean(true),
                    b => {
                        return Err(self
                            .corrupt(start, format!("boolean byte {b:#04x} is neither 0 nor 1")))
                    }
                }
            }
            Schema::Int => Value::Int(self.int()?),
            Schema::Long => Value::Long(self.long()?),
            Schema::TimestampMillis => Value::TimestampMillis(self.long()?),
            Schema::Double => Value::Double(f64::from_le_bytes(self.fixed::<8>()?)),
            Schema::Float => Value::Float(f32::from_le_bytes(self.fixed::<4>()?)),
            Schema::String | Schema::Uuid => Value::String(self.string()?),
            Schema::Bytes => {
                let len = self.len("bytes length")?;
                Value::Bytes(self.take(len)?.to_vec())
            }
            Schema::Enum(e) => {
                let start = self.pos;
                let index = self.len("enum index")?;
                let symbol = e.symbols.get(index).ok_or_else(|| {
                    let problem = format!(
                        "enum index {index} is not a {} (it has {} symbols)",
                        e.name.name,
                        e.symbols.len()
                    );
                    self.corrupt(start, problem)
                })?;
                Value::Enum(index as u32, symbol.clone())
            }
            Schema::Union(u) => {
                let start = self.pos;
                let index = self.len("union branch")?;
                let branch = u.variants().get(index).ok_or_else(|| {
                    let problem = format!(
                        "union branch {index} does not exist (the union has {})",
                        u.variants().len()
                    );
                    self.corrupt(start, problem)
                })?;
                Value::Union(index as u32, Box::new(self.value(branch)?))
            }
            Schema::Array(a) => {
                let mut items = Vec::new();
                loop {
                    let count = self.block_count()?;
                    if count == 0 {
                        break;
                    }
                    items.reserve(count);
                    for _ in 0..count {
                        let i = items.len();
                        items.push(
                            self.value(&a.items)
                                .map_err(|e| e.within(&format!("[{i}]")))?,
                        );
                    }
                }
                Value::Array(items)
            }
            Schema::Map(m) => {
                let mut entries = HashMap::new();
                loop {
                    let count = self.block_count()?;
                    if count == 0 {
                        break;
                    }
                    for _ in 0..count {
                        let key = self.string()?;
                        let value = self
                            .value(&m.types)
                            .map_err(|e| e.within(&format!("[{key:?}]")))?;
                        entries.insert(key, value);
                    }
                }
                Value::Map(entries)
            }
            Schema::Record(r) => {
                let mut fields = Vec::with_capacity(r.fields.len());
                for f in &r.fields {
                    let v = self.value(&f.schema).map_err(|e| e.within(&f.name))?;
                    fields.push((f.name.clone(), v));
                }
                Value::Record(fields)
            }
            Schema::Ref { name } => {
                let resolved = self.resolve(name)?;
                self.value(resolved)?
            }
            other => {
                return Err(self.corrupt(
                    self.pos,
                    format!("schema type {other:?} is not supported by Weft's reader"),
                ))
            }
        })
    }

    fn fixed<const N: usize>(&mut self) -> Result<[u8; N], CodecError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn resolve(&self, name: &Name) -> Result<&'a Schema, CodecError> {
        let names: &'a Names = self.names;
        names.get(&name.fullname(None)).ok_or_else(|| {
            self.corrupt(
                self.pos,
                format!("schema refers to undefined type {}", name.fullname(None)),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(schema: &str, bytes: &[u8]) -> Result<Value, CodecError> {
        let schema = Schema::parse_str(schema).unwrap();
        let mut names = Names::new();
        collect_names(&schema, &mut names);
        let (value, end) = read_datum(&schema, &names, bytes, 0)?;
        assert_eq!(end, bytes.len());
        Ok(value)
    }

    #[test]
    fn blocks_with_a_byte_size_are_read() {
        // Two blocks: -2 items (4 bytes: "a", "b"), then 1 item ("c"), then the end.
        let bytes = [0x03, 0x08, 0x02, b'a', 0x02, b'b', 0x02, 0x02, b'c', 0x00];
        let value = read(r#"{"type":"array","items":"string"}"#, &bytes).unwrap();
        let strings = ["a", "b", "c"].map(|s| Value::String(s.into()));
        assert_eq!(value, Value::Array(strings.to_vec()));
    }

    #[test]
    fn references_to_named_types_resolve() {
        let schema = r#"{"type":"record","name":"R","namespace":"n","fields":[
            {"name":"a","type":{"type":"enum","name":"E","symbols":["x","y"]}},
            {"name":"b","type":"E"}]}"#;
        let value = read(schema, &[0x02, 0x00]).unwrap();
        let fields = vec![
            ("a".to_owned(), Value::Enum(1, "y".into())),
            ("b".to_owned(), Value::Enum(0, "x".into())),
        ];
        assert_eq!(value, Value::Record(fields));
    }

    #[test]
    fn malformed_input_is_rejected_not_misread() {
        let overlong = [0xff; 11];
        let err = read(r#""long""#, &overlong).unwrap_err();
        assert!(err.to_string().contains("varint"), "{err}");
        let err = read(r#""boolean""#, &[2]).unwrap_err();
        assert!(err.to_string().contains("neither 0 nor 1"), "{err}");
        let err = read(r#""string""#, &[0x03]).unwrap_err();
        assert!(
            err.to_string().contains("negative string length -2"),
            "{err}"
        );
        let err = read(r#""string""#, &[0x02, 0xff]).unwrap_err();
        assert!(err.to_string().contains("UTF-8"), "{err}");
        let err = read(r#""int""#, &[0x80, 0x80, 0x80, 0x80, 0x10]).unwrap_err();
        assert!(
            err.to_string().contains("does not fit an Avro int"),
            "{err}"
        );
        let err = read(r#""double""#, &[0; 7]).unwrap_err();
        assert!(
            matches!(err, CodecError::Truncated { needed: 1, .. }),
            "{err:?}"
        );
    }
}
