//! Task checkpoints: a handler saves a data map while it runs; its worker
//! appends it as the input `task.checkpointed` (metadata `weft.task`,
//! `weft.attempt`, `weft.execution_id`, `weft.checkpoint_seq`; idempotency key
//! `<execution_id>:checkpoint:<seq>`); the orchestrator keeps the task's last
//! one in the projection and hands it to the task's next attempt in the
//! dispatch's `upstream` under [`UPSTREAM_KEY`], which no task can be named
//! (task names have no `.`), so the dispatch schema is unchanged (ADR 0023).

use crate::data::{data_map_to_json, DataMap};
use crate::ids::ExecutionId;

/// The largest checkpoint (its data map as JSON, bytes).
pub const MAX_CHECKPOINT_BYTES: usize = 64 * 1024;
/// The dispatch `upstream` entry that carries the task's last checkpoint.
pub const UPSTREAM_KEY: &str = "weft.checkpoint";
/// Metadata key of a checkpoint's number within its attempt (1, 2, …).
pub const META_SEQ: &str = "weft.checkpoint_seq";

/// The size limits count this: the checkpoint as JSON.
pub fn size_of(data: &DataMap) -> usize {
    data_map_to_json(data).to_string().len()
}

/// Why a checkpoint is refused, when it is.
pub fn check_size(data: &DataMap) -> Result<(), String> {
    let size = size_of(data);
    if size > MAX_CHECKPOINT_BYTES {
        return Err(format!(
            "checkpoint is {size} bytes as JSON, over the limit of {MAX_CHECKPOINT_BYTES}; keep a checkpoint to the position to resume from and put bulk data elsewhere"
        ));
    }
    Ok(())
}

/// The idempotency key of checkpoint `seq` of attempt `execution_id`.
pub fn idempotency_key(execution_id: ExecutionId, seq: u32) -> String {
    format!("{execution_id}:checkpoint:{seq}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::WorkflowData;

    #[test]
    fn size_limit_is_checked_on_the_json() {
        let small = DataMap::from([("next_step".to_owned(), WorkflowData::Int(3))]);
        assert!(check_size(&small).is_ok());
        assert_eq!(size_of(&small), r#"{"next_step":3}"#.len());
        let big = DataMap::from([(
            "blob".to_owned(),
            WorkflowData::Str("x".repeat(MAX_CHECKPOINT_BYTES)),
        )]);
        let e = check_size(&big).unwrap_err();
        assert!(e.contains("over the limit of 65536"), "{e}");
    }
}
