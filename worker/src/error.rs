//! Errors of the worker SDK: [`TaskError`], what a handler returns when a task
//! attempt fails (it becomes the `task.failed` event), and [`WorkerError`], why
//! a worker could not be built or could not run.

use weft_shared::data::{DataMap, WorkflowData};
use weft_shared::model::ErrorInfo;

/// A failed task attempt: a stable `error_type` (matched by the task's
/// `retry_on` / `stop_on`), a human message, and whether a retry can succeed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{error_type}: {message}")]
pub struct TaskError {
    pub error_type: String,
    pub message: String,
    pub retryable: bool,
}

impl TaskError {
    /// An error a later attempt may not hit (a timeout, a 503, a lost connection).
    pub fn retryable(error_type: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            error_type: error_type.into(),
            message: message.into(),
            retryable: true,
        }
    }

    /// An error every attempt will hit (bad input, a 404, a missing handler).
    pub fn terminal(error_type: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            error_type: error_type.into(),
            message: message.into(),
            retryable: false,
        }
    }

    /// The `data` of the `task.failed` event: `{error_type, message, retryable}`.
    pub fn to_event_data(&self) -> DataMap {
        DataMap::from([
            (
                "error_type".to_owned(),
                WorkflowData::Str(self.error_type.clone()),
            ),
            (
                "message".to_owned(),
                WorkflowData::Str(self.message.clone()),
            ),
            ("retryable".to_owned(), WorkflowData::Bool(self.retryable)),
        ])
    }
}

impl From<TaskError> for ErrorInfo {
    fn from(e: TaskError) -> Self {
        ErrorInfo::new(e.error_type, e.message, e.retryable)
    }
}

impl From<&ErrorInfo> for TaskError {
    fn from(e: &ErrorInfo) -> Self {
        Self {
            error_type: e.error_type.clone(),
            message: e.message.clone(),
            retryable: e.retryable,
        }
    }
}

/// Why a worker could not be built or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// The configuration cannot run (no handlers, zero concurrency, …).
    #[error("invalid worker configuration: {0}")]
    Config(String),
    /// A Kafka client could not be created or initialised.
    #[error("kafka: {context}: {source}")]
    Kafka {
        context: &'static str,
        #[source]
        source: rdkafka::error::KafkaError,
    },
    /// The HTTP endpoint (`worker.http_addr`) could not be bound.
    #[error("could not serve http on {addr}: {source}")]
    Http {
        addr: String,
        #[source]
        source: std::io::Error,
    },
}

impl WorkerError {
    pub(crate) fn kafka(context: &'static str) -> impl FnOnce(rdkafka::error::KafkaError) -> Self {
        move |source| WorkerError::Kafka { context, source }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_error_maps_to_error_info_and_event_data() {
        let e = TaskError::retryable("http_status_503", "service unavailable");
        assert_eq!(e.to_string(), "http_status_503: service unavailable");
        let data = e.to_event_data();
        assert_eq!(data["retryable"], WorkflowData::Bool(true));
        let info: ErrorInfo = e.clone().into();
        assert_eq!(info.error_type, "http_status_503");
        assert!(info.retryable);
        assert_eq!(TaskError::from(&info), e);
        assert!(!TaskError::terminal("x", "y").retryable);
    }
}
