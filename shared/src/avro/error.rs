//! [`CodecError`]: why a Kafka record value could not be decoded, worded so
//! that whoever produced the record can tell what to fix.

use crate::model::UnknownVariant;

/// A record value that is not a valid Weft record of the expected schema.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// Fewer bytes than the single-object header.
    #[error(
        "{schema} record is {len} bytes, shorter than the 10-byte Avro single-object header \
         (marker C3 01 + 8-byte schema fingerprint)"
    )]
    TooShort { schema: &'static str, len: usize },

    /// The record does not start with `C3 01`.
    #[error(
        "{schema} record does not start with the Avro single-object marker c3 01 but with {found}{hint}; \
         Weft records are single-object encoded (see schemas/README.md)"
    )]
    BadMarker {
        schema: &'static str,
        /// The first two bytes, in hex.
        found: String,
        /// A guess at what the record is instead, with a leading separator, or empty.
        hint: &'static str,
    },

    /// The fingerprint is that of another Weft schema.
    #[error(
        "expected a {expected} record but this is a {actual} record (schema fingerprint {fingerprint}); \
         was it produced to the wrong topic?"
    )]
    WrongSchema {
        expected: &'static str,
        actual: &'static str,
        fingerprint: String,
    },

    /// The fingerprint is of no schema this build knows.
    #[error(
        "unknown schema fingerprint {found} in a {expected} record: this build reads io.weft.v1.{expected} \
         with fingerprint {known}; the producer wrote with a different schema (compare its copy with \
         schemas/ and the fingerprint of its Parsing Canonical Form)"
    )]
    UnknownFingerprint {
        expected: &'static str,
        /// The fingerprint in the record, hex in wire order.
        found: String,
        /// The fingerprint this build expects, hex in wire order.
        known: String,
    },

    /// The record ends before its datum does.
    #[error(
        "{path}: the record ends at byte {len} but {needed} more bytes are needed at byte {offset}; \
         it was cut short or written with another schema"
    )]
    Truncated {
        path: String,
        offset: usize,
        needed: usize,
        len: usize,
    },

    /// The datum is not valid Avro of the schema.
    #[error("{path}: corrupt record at byte {offset}: {problem}")]
    Corrupt {
        path: String,
        offset: usize,
        problem: String,
    },

    /// Bytes remain after the record.
    #[error(
        "{schema} body has {count} unexpected bytes after the record; it was probably written with another schema"
    )]
    TrailingBytes { schema: &'static str, count: usize },

    /// A uuid field holds something other than a UUID.
    #[error("{path}: invalid UUID '{value}' (expected the 36-character form, e.g. 0191c3c8-6a3e-7f00-8000-000000000000)")]
    InvalidUuid { path: String, value: String },

    /// An enum field (or the `event_type` string) holds an unknown value.
    #[error("{path}: {source}")]
    UnknownEnumValue {
        path: String,
        #[source]
        source: UnknownVariant,
    },

    /// A number outside the field's range.
    #[error("{path}: {value} is out of range (expected {expected})")]
    OutOfRange {
        path: String,
        value: i64,
        expected: &'static str,
    },

    /// A record in the JSON form control records and task heartbeats had up
    /// to release 0.1 (still read for one release) that is not valid.
    #[error("invalid legacy JSON {schema} record: {problem}; this release writes Avro (schemas/)")]
    LegacyJson {
        schema: &'static str,
        problem: String,
    },

    /// A decoded value of an unexpected shape: the schema and the decoder disagree.
    #[error("{path}: found {found} where {expected} was expected (the schema and the decoder disagree; this is a Weft bug)")]
    Shape {
        path: String,
        expected: &'static str,
        found: String,
    },
}

impl CodecError {
    /// Prefixes the field path of a field-level error with `segment` (a field
    /// name, `[3]` or `["key"]`); other errors are returned unchanged.
    pub(crate) fn within(mut self, segment: &str) -> Self {
        if let CodecError::Truncated { path, .. }
        | CodecError::Corrupt { path, .. }
        | CodecError::InvalidUuid { path, .. }
        | CodecError::UnknownEnumValue { path, .. }
        | CodecError::OutOfRange { path, .. }
        | CodecError::Shape { path, .. } = &mut self
        {
            let sep = if path.is_empty() || path.starts_with('[') {
                ""
            } else {
                "."
            };
            *path = format!("{segment}{sep}{path}");
        }
        self
    }

    /// The field path of an error in the datum (`WorkflowEvent.instance_id`).
    pub fn path(&self) -> Option<&str> {
        match self {
            CodecError::Truncated { path, .. }
            | CodecError::Corrupt { path, .. }
            | CodecError::InvalidUuid { path, .. }
            | CodecError::UnknownEnumValue { path, .. }
            | CodecError::OutOfRange { path, .. }
            | CodecError::Shape { path, .. } => Some(path),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_compose_outwards() {
        let e = CodecError::OutOfRange {
            path: String::new(),
            value: -1,
            expected: "0..=4294967295",
        };
        let e = e
            .within("attempt")
            .within("[2]")
            .within("results")
            .within("WorkflowSnapshot");
        assert_eq!(e.path(), Some("WorkflowSnapshot.results[2].attempt"));
        assert_eq!(
            e.to_string(),
            "WorkflowSnapshot.results[2].attempt: -1 is out of range (expected 0..=4294967295)"
        );
    }
}
