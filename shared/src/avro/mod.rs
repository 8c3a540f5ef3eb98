//! The Avro wire contract: Weft's public protocol is Kafka topics whose values
//! are Avro records of the schemas in the repository's `schemas/` directory
//! (namespace `io.weft.v1`). This module embeds those schemas and encodes and
//! decodes the domain records with them.
//!
//! Every record value uses Avro *single-object encoding*: the marker `C3 01`,
//! the 8-byte little-endian CRC-64-AVRO (Rabin) fingerprint of the schema's
//! Parsing Canonical Form, then the Avro binary datum. A reader finds the
//! writer's schema from the fingerprint, so a record written with any other
//! schema is rejected with a [`CodecError`] that names the fingerprint.
//!
//! The conversions between domain structs and [`apache_avro::types::Value`] are
//! explicit (see `convert`), field by field in schema order; `WorkflowData`
//! variants map to the branches of the union by index. `apache_avro` parses
//! the schemas; `fingerprint` computes their fingerprints (see there why not
//! `apache_avro`); the datum itself is written by
//! `write` (deterministic: map entries sorted by key, so the same struct always
//! gives the same bytes, which the golden-bytes tests pin down) and read by
//! `read` (strict and bounded, with errors naming field and byte offset). Tests
//! check both against `apache_avro`'s own reader and writer.
//!
//! Range conventions: unsigned fields (`attempt`, `version`, `sequence_number`,
//! delays) are Avro `long`s. Decoding rejects negative or out-of-range values;
//! encoding a `u64` above `i64::MAX` saturates at `i64::MAX`.
//!
//! Confluent schema-registry framing (`00` + 4-byte big-endian schema id + datum)
//! is out of scope for now. It would plug in next to `codec`: a second framing
//! that maps registry ids to the schemas of `schemas::ENTRIES`, chosen by the
//! first byte of the record (`C3` here, `00` there), with the datum conversions
//! of `convert` shared unchanged.

mod codec;
mod convert;
mod error;
mod fingerprint;
mod read;
mod schemas;
mod write;

pub use codec::{schema_name_of, HEADER_LEN, SINGLE_OBJECT_MARKER};
pub use error::CodecError;
pub use schemas::{fingerprint_of, schema_json, SCHEMA_NAMES};

/// A domain record with an Avro schema of its own: it can be written to and
/// read from a Kafka record value in single-object encoding.
pub trait AvroRecord: Sized {
    /// The schema's record name (`WorkflowEvent`, …); its full name is
    /// `io.weft.v1.<SCHEMA_NAME>`.
    const SCHEMA_NAME: &'static str;

    /// The single-object encoding of `self`; deterministic.
    fn encode(&self) -> Vec<u8>;

    /// Decodes a single-object encoded record, checking the marker, the schema
    /// fingerprint and every value the Avro schema cannot constrain.
    fn decode(bytes: &[u8]) -> Result<Self, CodecError>;
}

macro_rules! avro_record {
    ($($ty:ty => $name:literal),+ $(,)?) => {$(
        impl AvroRecord for $ty {
            const SCHEMA_NAME: &'static str = $name;

            fn encode(&self) -> Vec<u8> {
                codec::encode_record(Self::SCHEMA_NAME, self)
            }

            fn decode(bytes: &[u8]) -> Result<Self, CodecError> {
                codec::decode_record(Self::SCHEMA_NAME, bytes)
            }
        }
    )+};
}

avro_record!(
    crate::event::WorkflowEvent => "WorkflowEvent",
    crate::dispatch::TaskDispatch => "TaskDispatch",
    crate::snapshot::WorkflowSnapshot => "WorkflowSnapshot",
    crate::definition::WorkflowDefinition => "WorkflowDefinition",
    crate::node::NodeRecord => "NodeRecord",
    crate::control::TaskControl => "TaskControl",
    crate::control::TaskHeartbeat => "TaskHeartbeat",
);
