//! The protocol's value types: task classification, execution semantics,
//! priorities, isolation, retry and timeout policies, dependencies, task
//! configuration and results, errors and compensation records, and the
//! workflow context. Field names follow the protocol reference.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::data::DataMap;
use crate::ids::{CorrelationId, ExecutionId, InstanceId, TaskId};
use crate::state::TaskState;

macro_rules! string_enum {
    ($(#[$doc:meta])* $name:ident { $($variant:ident = $s:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, ::serde::Serialize, ::serde::Deserialize)]
        pub enum $name {
            $(#[serde(rename = $s)] $variant),+
        }

        impl $name {
            /// Every value, in protocol order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The protocol's wire name.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $s),+ }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl std::str::FromStr for $name {
            type Err = crate::model::UnknownVariant;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($s => Ok($name::$variant),)+
                    _ => Err(crate::model::UnknownVariant {
                        kind: stringify!($name),
                        value: s.to_owned(),
                        allowed: vec![$($s),+].join(", "),
                    }),
                }
            }
        }
    };
}
pub(crate) use string_enum;

/// A string that is not one of an enum's wire names.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("unknown {kind} '{value}' (expected one of: {allowed})")]
pub struct UnknownVariant {
    pub kind: &'static str,
    pub value: String,
    pub allowed: String,
}

string_enum!(
    /// Task classification for execution strategy.
    TaskType {
        Compute = "compute",
        Effect = "effect",
        Decision = "decision",
        Wait = "wait",
        Parallel = "parallel",
        Sequential = "sequential",
    }
);

string_enum!(
    /// Execution guarantees for task processing.
    ExecutionSemantics {
        AtMostOnce = "at_most_once",
        AtLeastOnce = "at_least_once",
        ExactlyOnce = "exactly_once",
    }
);

string_enum!(
    /// Dispatch priority of a task.
    TaskPriority {
        Low = "low",
        Normal = "normal",
        High = "high",
        Critical = "critical",
    }
);

string_enum!(
    /// Transaction isolation level of a workflow context.
    IsolationLevel {
        ReadUncommitted = "read_uncommitted",
        ReadCommitted = "read_committed",
        RepeatableRead = "repeatable_read",
        Serializable = "serializable",
    }
);

string_enum!(
    /// How the delay between retry attempts grows.
    BackoffStrategy {
        Fixed = "fixed",
        Linear = "linear",
        Exponential = "exponential",
        Custom = "custom",
    }
);

string_enum!(
    /// What a dependency edge waits for.
    DependencyCondition {
        Completed = "completed",
        Finished = "finished",
        Failed = "failed",
    }
);

// string_enum! cannot carry #[default], so the default is written out.
#[allow(clippy::derivable_impls)]
impl Default for ExecutionSemantics {
    fn default() -> Self {
        ExecutionSemantics::AtLeastOnce
    }
}
// string_enum! cannot carry #[default], so the default is written out.
#[allow(clippy::derivable_impls)]
impl Default for TaskPriority {
    fn default() -> Self {
        TaskPriority::Normal
    }
}
// string_enum! cannot carry #[default], so the default is written out.
#[allow(clippy::derivable_impls)]
impl Default for IsolationLevel {
    fn default() -> Self {
        IsolationLevel::ReadCommitted
    }
}
// string_enum! cannot carry #[default], so the default is written out.
#[allow(clippy::derivable_impls)]
impl Default for TaskType {
    fn default() -> Self {
        TaskType::Compute
    }
}
// string_enum! cannot carry #[default], so the default is written out.
#[allow(clippy::derivable_impls)]
impl Default for DependencyCondition {
    fn default() -> Self {
        DependencyCondition::Completed
    }
}

/// Retry behaviour (the protocol's `RetryConfiguration`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetryConfiguration {
    /// Attempts in all, the first included; 1 means no retry.
    pub max_attempts: u32,
    pub backoff_strategy: BackoffStrategy,
    pub base_delay_ms: u64,
    pub max_delay_ms: u64,
    pub jitter: bool,
    /// Error types that are retried; empty means every error not in `stop_on`.
    pub retry_on: Vec<String>,
    /// Error types that are never retried.
    pub stop_on: Vec<String>,
    /// Delays for the `custom` strategy, one per retry (the last repeats).
    pub custom_delays_ms: Vec<u64>,
}

impl Default for RetryConfiguration {
    fn default() -> Self {
        Self {
            max_attempts: 1,
            backoff_strategy: BackoffStrategy::Exponential,
            base_delay_ms: 1_000,
            max_delay_ms: 60_000,
            jitter: false,
            retry_on: Vec::new(),
            stop_on: Vec::new(),
            custom_delays_ms: Vec::new(),
        }
    }
}

impl RetryConfiguration {
    /// Whether an error of `error_type` after attempt `attempt` (1-based) may be retried.
    pub fn should_retry(&self, attempt: u32, error_type: &str, retryable: bool) -> bool {
        if !retryable || attempt >= self.max_attempts {
            return false;
        }
        if self.stop_on.iter().any(|s| s == error_type) {
            return false;
        }
        self.retry_on.is_empty() || self.retry_on.iter().any(|s| s == error_type)
    }

    /// The delay before attempt `attempt + 1`, without jitter (jitter is applied
    /// deterministically by the caller from a seed so replays agree).
    pub fn delay_ms(&self, attempt: u32) -> u64 {
        let n = u64::from(attempt.max(1));
        let raw = match self.backoff_strategy {
            BackoffStrategy::Fixed => self.base_delay_ms,
            BackoffStrategy::Linear => self.base_delay_ms.saturating_mul(n),
            BackoffStrategy::Exponential => self
                .base_delay_ms
                .saturating_mul(1u64.checked_shl((n - 1).min(62) as u32).unwrap_or(u64::MAX)),
            BackoffStrategy::Custom => {
                let i = (n as usize - 1).min(self.custom_delays_ms.len().saturating_sub(1));
                self.custom_delays_ms
                    .get(i)
                    .copied()
                    .unwrap_or(self.base_delay_ms)
            }
        };
        raw.min(self.max_delay_ms.max(self.base_delay_ms))
    }
}

/// Timeouts of different operations (the protocol's `TimeoutConfiguration`);
/// zero means no limit.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimeoutConfiguration {
    pub execution_timeout_ms: u64,
    pub heartbeat_timeout_ms: u64,
    pub response_timeout_ms: u64,
    pub cleanup_timeout_ms: u64,
    pub grace_period_ms: u64,
}

/// An edge of the task DAG: this task waits for `task_name`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskDependency {
    pub task_name: String,
    #[serde(default)]
    pub condition: DependencyCondition,
}

/// A task of a workflow definition (the protocol's `TaskConfiguration`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskConfiguration {
    pub name: String,
    pub task_type: TaskType,
    /// The handler a worker runs (a built-in kind such as `noop`, or an SDK handler name).
    pub handler: String,
    pub description: String,
    pub dependencies: Vec<TaskDependency>,
    pub parameters: DataMap,
    pub constraints: DataMap,
    pub timeout_config: TimeoutConfiguration,
    pub retry_config: RetryConfiguration,
    pub execution_semantics: ExecutionSemantics,
    pub priority: TaskPriority,
    pub tags: Vec<String>,
    pub resource_requirements: BTreeMap<String, i64>,
    pub node_selector: Option<BTreeMap<String, String>>,
    /// The task that undoes this one when the workflow compensates.
    pub compensation: Option<String>,
}

impl TaskConfiguration {
    /// A task with defaults for everything but its name and handler.
    pub fn new(name: impl Into<String>, handler: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            task_type: TaskType::Compute,
            handler: handler.into(),
            description: String::new(),
            dependencies: Vec::new(),
            parameters: DataMap::new(),
            constraints: DataMap::new(),
            timeout_config: TimeoutConfiguration::default(),
            retry_config: RetryConfiguration::default(),
            execution_semantics: ExecutionSemantics::default(),
            priority: TaskPriority::default(),
            tags: Vec::new(),
            resource_requirements: BTreeMap::new(),
            node_selector: None,
            compensation: None,
        }
    }

    /// Adds a dependency on `name` (builder style).
    pub fn after(mut self, name: &str) -> Self {
        self.dependencies.push(TaskDependency {
            task_name: name.to_owned(),
            condition: DependencyCondition::Completed,
        });
        self
    }
}

/// What went wrong (the protocol's `ErrorInfo`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorInfo {
    /// A stable classification matched by `retry_on` / `stop_on` (e.g. `http_status_503`).
    pub error_type: String,
    pub message: String,
    /// Whether the reporter thinks a retry can succeed.
    pub retryable: bool,
    pub task_name: Option<String>,
    pub attempt: Option<u32>,
    pub timestamp_ms: i64,
    pub details: BTreeMap<String, String>,
}

impl ErrorInfo {
    pub fn new(error_type: impl Into<String>, message: impl Into<String>, retryable: bool) -> Self {
        Self {
            error_type: error_type.into(),
            message: message.into(),
            retryable,
            task_name: None,
            attempt: None,
            timestamp_ms: 0,
            details: BTreeMap::new(),
        }
    }
}

/// A task execution result (the protocol's `TaskResult`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskResult {
    pub task_id: TaskId,
    pub task_name: String,
    pub execution_id: ExecutionId,
    pub attempt: u32,
    pub state: TaskState,
    pub result_data: Option<DataMap>,
    pub error: Option<ErrorInfo>,
    pub start_time_ms: i64,
    pub end_time_ms: Option<i64>,
    pub duration_ms: Option<i64>,
    pub node_id: String,
    pub resource_usage: BTreeMap<String, i64>,
    pub metrics: BTreeMap<String, f64>,
    pub checkpoints: Vec<DataMap>,
}

/// One compensation step of a saga (the protocol's `CompensationAction`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompensationAction {
    /// The completed task being undone.
    pub task_name: String,
    /// The task that undoes it.
    pub compensation_task: String,
    pub state: TaskState,
    pub attempt: u32,
    pub error: Option<ErrorInfo>,
    pub timestamp_ms: i64,
}

/// The execution environment of one instance (the protocol's `WorkflowContext`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WorkflowContext {
    pub workflow_type: String,
    pub instance_id: InstanceId,
    pub correlation_id: CorrelationId,
    pub isolation_level: IsolationLevel,
    pub data: DataMap,
    /// Secret references; never written to events in clear.
    pub secrets: BTreeMap<String, String>,
    pub capabilities: Vec<String>,
    pub resource_limits: BTreeMap<String, i64>,
    pub timeout_config: TimeoutConfiguration,
    pub retry_config: RetryConfiguration,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enums_parse_and_print_wire_names() {
        assert_eq!(
            "exactly_once".parse::<ExecutionSemantics>().unwrap(),
            ExecutionSemantics::ExactlyOnce
        );
        assert_eq!(TaskType::ALL.len(), 6);
        assert_eq!(ExecutionSemantics::ALL.len(), 3);
        let e = "sometimes".parse::<ExecutionSemantics>().unwrap_err();
        assert!(e
            .to_string()
            .contains("at_most_once, at_least_once, exactly_once"));
    }

    #[test]
    fn backoff_strategies() {
        let mut r = RetryConfiguration {
            max_attempts: 5,
            base_delay_ms: 100,
            max_delay_ms: 1_000,
            ..Default::default()
        };
        assert_eq!(
            [1, 2, 3, 4, 5].map(|a| r.delay_ms(a)),
            [100, 200, 400, 800, 1_000]
        );
        r.backoff_strategy = BackoffStrategy::Linear;
        assert_eq!([1, 2, 3].map(|a| r.delay_ms(a)), [100, 200, 300]);
        r.backoff_strategy = BackoffStrategy::Fixed;
        assert_eq!(r.delay_ms(4), 100);
        r.backoff_strategy = BackoffStrategy::Custom;
        r.custom_delays_ms = vec![5, 50];
        assert_eq!([1, 2, 3].map(|a| r.delay_ms(a)), [5, 50, 50]);
    }

    #[test]
    fn retry_on_and_stop_on() {
        let r = RetryConfiguration {
            max_attempts: 3,
            retry_on: vec!["io".into()],
            stop_on: vec!["fatal".into()],
            ..Default::default()
        };
        assert!(r.should_retry(1, "io", true));
        assert!(!r.should_retry(3, "io", true));
        assert!(!r.should_retry(1, "other", true));
        assert!(!r.should_retry(1, "io", false));
        let open = RetryConfiguration {
            max_attempts: 3,
            stop_on: vec!["fatal".into()],
            ..Default::default()
        };
        assert!(open.should_retry(1, "whatever", true));
        assert!(!open.should_retry(1, "fatal", true));
    }
}
