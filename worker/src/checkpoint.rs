//! Saving checkpoints from a running handler ([`crate::TaskContext::save_checkpoint`]):
//! each one is checked against the size limit, numbered within the attempt,
//! and appended to the workflow's events topic as `task.checkpointed`
//! (see [`crate::events::checkpoint_event`]); the call returns once the
//! broker has it, so a handler that goes on after it may rely on the next
//! attempt starting from there. Contexts made for tests keep what they save
//! in memory instead.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use weft_shared::data::DataMap;
use weft_shared::TaskDispatch;

use crate::error::TaskError;
use crate::events::checkpoint_event;
use crate::execute::Shared;
use crate::results::{publish, Published};

/// Where a context's checkpoints go.
#[derive(Clone, Default)]
pub(crate) enum Checkpointer {
    /// Nowhere: saving one fails (`checkpoint_unavailable`).
    #[default]
    None,
    /// To the events topic, for this attempt.
    Kafka(Arc<Sink>),
    /// Kept in memory (contexts for tests).
    Memory(Arc<Mutex<Vec<DataMap>>>),
}

impl std::fmt::Debug for Checkpointer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Checkpointer::None => "Checkpointer::None",
            Checkpointer::Kafka(_) => "Checkpointer::Kafka",
            Checkpointer::Memory(_) => "Checkpointer::Memory",
        })
    }
}

/// Publishes one attempt's checkpoints.
pub(crate) struct Sink {
    shared: Arc<Shared>,
    dispatch: TaskDispatch,
    seq: AtomicU32,
}

impl Checkpointer {
    /// Checkpoints of `dispatch`'s attempt, published by this worker.
    pub(crate) fn kafka(shared: Arc<Shared>, dispatch: &TaskDispatch) -> Self {
        Checkpointer::Kafka(Arc::new(Sink {
            shared,
            dispatch: dispatch.clone(),
            seq: AtomicU32::new(0),
        }))
    }

    /// Saves `data`; its number within the attempt when it was saved.
    pub(crate) async fn save(&self, data: DataMap) -> Result<u32, TaskError> {
        weft_shared::checkpoint::check_size(&data)
            .map_err(|why| TaskError::terminal("checkpoint_too_large", why))?;
        match self {
            Checkpointer::None => Err(TaskError::terminal(
                "checkpoint_unavailable",
                "this context cannot save checkpoints",
            )),
            Checkpointer::Memory(saved) => {
                let mut v = saved
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                v.push(data);
                Ok(u32::try_from(v.len()).unwrap_or(u32::MAX))
            }
            Checkpointer::Kafka(sink) => {
                let seq = sink.seq.fetch_add(1, Ordering::SeqCst) + 1;
                let d = &sink.dispatch;
                let event = checkpoint_event(d, seq, data, &sink.shared.node_id);
                match publish(&sink.shared, &event, &d.traceparent, false, None).await {
                    Published::Yes => {
                        tracing::debug!(seq, "checkpoint saved");
                        Ok(seq)
                    }
                    _ => Err(TaskError::retryable(
                        "checkpoint_not_saved",
                        "the worker is stopping; the checkpoint was not saved",
                    )),
                }
            }
        }
    }

    /// What a test context saved so far.
    pub(crate) fn saved(&self) -> Vec<DataMap> {
        match self {
            Checkpointer::Memory(saved) => saved
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone(),
            _ => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_shared::data::WorkflowData;

    #[tokio::test]
    async fn memory_keeps_checkpoints_and_the_limit_is_enforced() {
        let c = Checkpointer::Memory(Arc::default());
        let step = DataMap::from([("next_step".to_owned(), WorkflowData::Int(1))]);
        assert_eq!(c.save(step.clone()).await.unwrap(), 1);
        assert_eq!(c.saved(), vec![step]);
        let big = DataMap::from([(
            "blob".to_owned(),
            WorkflowData::Str("x".repeat(weft_shared::checkpoint::MAX_CHECKPOINT_BYTES)),
        )]);
        let e = c.save(big).await.unwrap_err();
        assert_eq!(e.error_type, "checkpoint_too_large");
        assert!(!e.retryable);
        assert!(e.message.contains("over the limit"), "{}", e.message);
        let none = Checkpointer::None.save(DataMap::new()).await.unwrap_err();
        assert_eq!(none.error_type, "checkpoint_unavailable");
    }
}
