//! The orchestrator↔worker control plane beside the event log: task
//! heartbeats (worker → orchestrator, on `weft.<type>.heartbeats`) and control
//! records (orchestrator → worker, on the tasks topic with the
//! [`headers::CONTROL`](crate::topics::headers::CONTROL) header). Neither is
//! part of any workflow's history: a heartbeat only keeps an attempt's
//! heartbeat timeout from firing, and a cancel only tells a running handler to
//! stop — the history already says the task was cancelled.
//!
//! Both are Avro records of the public schemas `TaskHeartbeat` and
//! `TaskControl` (`schemas/task_heartbeat.avsc`, `schemas/task_control.avsc`),
//! single-object encoded like every other Weft record. Up to release 0.1 they
//! travelled as JSON; [`TaskHeartbeat::decode`] and [`TaskControl::decode`]
//! still read that form for one release (control records written by an older
//! orchestrator may wait in its outbox or on the tasks topic, heartbeats from
//! workers not yet upgraded), and `encode` writes only Avro.

use serde::{Deserialize, Serialize};

use crate::avro::{AvroRecord, CodecError};
use crate::ids::{ExecutionId, InstanceId};
use crate::model::string_enum;

/// "Attempt `attempt` of `task` is still running on `node_id`."
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskHeartbeat {
    pub workflow_type: String,
    pub instance_id: InstanceId,
    pub task_name: String,
    pub attempt: u32,
    pub execution_id: ExecutionId,
    pub node_id: String,
    /// Worker clock, epoch ms.
    pub at_ms: i64,
}

string_enum!(
    /// What a control record asks of the worker running an attempt. `cancel`:
    /// stop the attempt (cancel its token, wait up to `grace_period_ms`, then
    /// abort it) and publish no result.
    ControlAction {
        Cancel = "cancel",
    }
);

/// A control record on the tasks topic, keyed by instance id (so it lands on
/// the partition, hence the worker, that received the attempt's dispatch).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskControl {
    pub action: ControlAction,
    pub workflow_type: String,
    pub instance_id: InstanceId,
    pub task_name: String,
    pub attempt: u32,
    pub execution_id: ExecutionId,
    /// How long the handler may take to stop after the cancellation signal.
    pub grace_period_ms: u64,
    pub reason: String,
}

/// Which form a control-plane record was read from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WireForm {
    /// Avro single-object encoding (what this release writes).
    Avro,
    /// The JSON of releases up to 0.1 (read for one release).
    LegacyJson,
}

impl WireForm {
    /// The form of `bytes`: JSON when its first non-blank byte is `{`, Avro otherwise.
    pub fn of(bytes: &[u8]) -> Self {
        match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
            Some(b'{') => WireForm::LegacyJson,
            _ => WireForm::Avro,
        }
    }
}

/// Reads `bytes` as Avro, or as the legacy JSON form.
fn read_either<T>(bytes: &[u8]) -> Result<T, CodecError>
where
    T: AvroRecord + serde::de::DeserializeOwned,
{
    match WireForm::of(bytes) {
        WireForm::Avro => T::decode(bytes),
        WireForm::LegacyJson => serde_json::from_slice(bytes).map_err(|e| CodecError::LegacyJson {
            schema: T::SCHEMA_NAME,
            problem: e.to_string(),
        }),
    }
}

impl TaskHeartbeat {
    /// The Avro single-object encoding (schema `TaskHeartbeat`).
    pub fn encode(&self) -> Vec<u8> {
        <Self as AvroRecord>::encode(self)
    }

    /// Decodes a heartbeat: Avro, or the JSON form of releases up to 0.1.
    pub fn decode(bytes: &[u8]) -> Result<Self, CodecError> {
        read_either(bytes)
    }
}

impl TaskControl {
    /// The Avro single-object encoding (schema `TaskControl`).
    pub fn encode(&self) -> Vec<u8> {
        <Self as AvroRecord>::encode(self)
    }

    /// Decodes a control record: Avro, or the JSON form of releases up to 0.1.
    pub fn decode(bytes: &[u8]) -> Result<Self, CodecError> {
        read_either(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::TaskId;

    fn control() -> TaskControl {
        let id = InstanceId::random();
        TaskControl {
            action: ControlAction::Cancel,
            workflow_type: "orders".into(),
            instance_id: id,
            task_name: "charge".into(),
            attempt: 2,
            execution_id: ExecutionId::of(TaskId::of(id, "charge"), 2),
            grace_period_ms: 500,
            reason: "workflow cancelled".into(),
        }
    }

    #[test]
    fn control_is_avro_and_round_trips() {
        let c = control();
        let bytes = c.encode();
        assert_eq!(bytes[..2], crate::avro::SINGLE_OBJECT_MARKER);
        assert_eq!(crate::avro::schema_name_of(&bytes), Some("TaskControl"));
        assert_eq!(TaskControl::decode(&bytes).unwrap(), c);
    }

    /// What releases up to 0.1 wrote (`serde_json` of the same struct) still reads.
    #[test]
    fn legacy_json_forms_still_read() {
        let c = control();
        let json = format!(
            r#"{{"action":"cancel","workflow_type":"orders","instance_id":"{}","task_name":"charge","attempt":2,"execution_id":"{}","grace_period_ms":500,"reason":"workflow cancelled"}}"#,
            c.instance_id, c.execution_id
        );
        assert_eq!(WireForm::of(json.as_bytes()), WireForm::LegacyJson);
        assert_eq!(TaskControl::decode(json.as_bytes()).unwrap(), c);

        let hb = format!(
            r#"{{"workflow_type":"orders","instance_id":"{}","task_name":"charge","attempt":2,"execution_id":"{}","node_id":"w1","at_ms":1700000000000}}"#,
            c.instance_id, c.execution_id
        );
        let beat = TaskHeartbeat::decode(hb.as_bytes()).unwrap();
        assert_eq!(beat.execution_id, c.execution_id);
        assert_eq!(beat.at_ms, 1_700_000_000_000);
        assert_eq!(TaskHeartbeat::decode(&beat.encode()).unwrap(), beat);
    }

    #[test]
    fn bad_records_say_what_they_are() {
        let err = TaskControl::decode(b"{\"action\":\"explode\"}").unwrap_err();
        assert!(err.to_string().contains("legacy JSON TaskControl"), "{err}");
        let err = TaskHeartbeat::decode(&control().encode()).unwrap_err();
        assert!(
            err.to_string()
                .contains("expected a TaskHeartbeat record but this is a TaskControl"),
            "{err}"
        );
        assert!(TaskControl::decode(b"").is_err());
    }
}
