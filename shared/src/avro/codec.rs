//! Avro single-object framing: `C3 01`, the schema's 8-byte fingerprint, then
//! the binary datum. Encoding goes through `write` (deterministic); decoding
//! checks the header, reads the datum with `read` and converts it.

use super::convert::{FromAvro, ToAvro};
use super::error::CodecError;
use super::schemas::{entry, entry_by_fingerprint, hex, Entry};
use super::{read, write};

/// The two bytes every single-object encoded record starts with.
pub const SINGLE_OBJECT_MARKER: [u8; 2] = [0xC3, 0x01];

/// Length of the single-object header: marker and fingerprint.
pub const HEADER_LEN: usize = 10;

/// The schema a single-object encoded record was written with, if it is one of
/// Weft's (`WorkflowEvent`, …); for tools that inspect raw records.
pub fn schema_name_of(bytes: &[u8]) -> Option<&'static str> {
    if bytes.len() < HEADER_LEN || bytes[..2] != SINGLE_OBJECT_MARKER {
        return None;
    }
    entry_by_fingerprint(&bytes[2..HEADER_LEN]).map(|e| e.name)
}

fn entry_of(name: &str) -> &'static Entry {
    entry(name).unwrap_or_else(|| panic!("no embedded schema named {name}"))
}

/// Encodes `record` with schema `name`.
pub(crate) fn encode_record<T: ToAvro>(name: &str, record: &T) -> Vec<u8> {
    let entry = entry_of(name);
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(&SINGLE_OBJECT_MARKER);
    out.extend_from_slice(&entry.fingerprint);
    write::write_value(&record.to_avro(), &mut out);
    out
}

/// Decodes a record of schema `name`.
pub(crate) fn decode_record<T: FromAvro>(name: &str, bytes: &[u8]) -> Result<T, CodecError> {
    let entry = entry_of(name);
    let schema = entry.name;
    if bytes.len() >= 2 && bytes[..2] != SINGLE_OBJECT_MARKER {
        return Err(bad_marker(schema, bytes));
    }
    if bytes.len() < HEADER_LEN {
        return Err(CodecError::TooShort {
            schema,
            len: bytes.len(),
        });
    }
    let fingerprint = &bytes[2..HEADER_LEN];
    if fingerprint != entry.fingerprint {
        return Err(match entry_by_fingerprint(fingerprint) {
            Some(other) => CodecError::WrongSchema {
                expected: schema,
                actual: other.name,
                fingerprint: hex(fingerprint),
            },
            None => CodecError::UnknownFingerprint {
                expected: schema,
                found: hex(fingerprint),
                known: hex(&entry.fingerprint),
            },
        });
    }
    let (value, end) = read::read_datum(&entry.schema, &entry.names, bytes, HEADER_LEN)
        .map_err(|e| e.within(schema))?;
    if end < bytes.len() {
        return Err(CodecError::TrailingBytes {
            schema,
            count: bytes.len() - end,
        });
    }
    T::from_avro(value).map_err(|e| e.within(schema))
}

fn bad_marker(schema: &'static str, bytes: &[u8]) -> CodecError {
    let hint = match bytes.first() {
        Some(0) => " (a Confluent schema-registry record? Weft does not read those)",
        Some(b'{') => " (JSON?)",
        _ => "",
    };
    CodecError::BadMarker {
        schema,
        found: hex(&bytes[..2]),
        hint,
    }
}
