//! Conversions of the nested protocol records: `TimeoutConfiguration`,
//! `RetryConfiguration`, `TaskDependency`, `TaskConfiguration`, `ErrorInfo`,
//! `TaskResult`, `CompensationAction` and `WorkflowContext`. Fields are listed
//! in the order of the schemas.

use apache_avro::types::Value;

use super::{opt_ts, record, ts, Fields, FromAvro, ToAvro};
use crate::avro::error::CodecError;
use crate::model::{
    CompensationAction, ErrorInfo, RetryConfiguration, TaskConfiguration, TaskDependency,
    TaskResult, TimeoutConfiguration, WorkflowContext,
};

impl ToAvro for TimeoutConfiguration {
    fn to_avro(&self) -> Value {
        record([
            ("execution_timeout_ms", self.execution_timeout_ms.to_avro()),
            ("heartbeat_timeout_ms", self.heartbeat_timeout_ms.to_avro()),
            ("response_timeout_ms", self.response_timeout_ms.to_avro()),
            ("cleanup_timeout_ms", self.cleanup_timeout_ms.to_avro()),
            ("grace_period_ms", self.grace_period_ms.to_avro()),
        ])
    }
}

impl FromAvro for TimeoutConfiguration {
    fn from_avro(value: Value) -> Result<Self, CodecError> {
        let mut f = Fields::new(value)?;
        Ok(Self {
            execution_timeout_ms: f.take("execution_timeout_ms")?,
            heartbeat_timeout_ms: f.take("heartbeat_timeout_ms")?,
            response_timeout_ms: f.take("response_timeout_ms")?,
            cleanup_timeout_ms: f.take("cleanup_timeout_ms")?,
            grace_period_ms: f.take("grace_period_ms")?,
        })
    }
}

impl ToAvro for RetryConfiguration {
    fn to_avro(&self) -> Value {
        record([
            ("max_attempts", self.max_attempts.to_avro()),
            ("backoff_strategy", self.backoff_strategy.to_avro()),
            ("base_delay_ms", self.base_delay_ms.to_avro()),
            ("max_delay_ms", self.max_delay_ms.to_avro()),
            ("jitter", self.jitter.to_avro()),
            ("retry_on", self.retry_on.to_avro()),
            ("stop_on", self.stop_on.to_avro()),
            ("custom_delays_ms", self.custom_delays_ms.to_avro()),
        ])
    }
}

impl FromAvro for RetryConfiguration {
    fn from_avro(value: Value) -> Result<Self, CodecError> {
        let mut f = Fields::new(value)?;
        Ok(Self {
            max_attempts: f.take("max_attempts")?,
            backoff_strategy: f.take("backoff_strategy")?,
            base_delay_ms: f.take("base_delay_ms")?,
            max_delay_ms: f.take("max_delay_ms")?,
            jitter: f.take("jitter")?,
            retry_on: f.take("retry_on")?,
            stop_on: f.take("stop_on")?,
            custom_delays_ms: f.take("custom_delays_ms")?,
        })
    }
}

impl ToAvro for TaskDependency {
    fn to_avro(&self) -> Value {
        record([
            ("task_name", self.task_name.to_avro()),
            ("condition", self.condition.to_avro()),
        ])
    }
}

impl FromAvro for TaskDependency {
    fn from_avro(value: Value) -> Result<Self, CodecError> {
        let mut f = Fields::new(value)?;
        Ok(Self {
            task_name: f.take("task_name")?,
            condition: f.take("condition")?,
        })
    }
}

impl ToAvro for TaskConfiguration {
    fn to_avro(&self) -> Value {
        record([
            ("name", self.name.to_avro()),
            ("task_type", self.task_type.to_avro()),
            ("handler", self.handler.to_avro()),
            ("description", self.description.to_avro()),
            ("dependencies", self.dependencies.to_avro()),
            ("parameters", self.parameters.to_avro()),
            ("constraints", self.constraints.to_avro()),
            ("timeout_config", self.timeout_config.to_avro()),
            ("retry_config", self.retry_config.to_avro()),
            ("execution_semantics", self.execution_semantics.to_avro()),
            ("priority", self.priority.to_avro()),
            ("tags", self.tags.to_avro()),
            (
                "resource_requirements",
                self.resource_requirements.to_avro(),
            ),
            ("node_selector", self.node_selector.to_avro()),
            ("compensation", self.compensation.to_avro()),
        ])
    }
}

impl FromAvro for TaskConfiguration {
    fn from_avro(value: Value) -> Result<Self, CodecError> {
        let mut f = Fields::new(value)?;
        Ok(Self {
            name: f.take("name")?,
            task_type: f.take("task_type")?,
            handler: f.take("handler")?,
            description: f.take("description")?,
            dependencies: f.take("dependencies")?,
            parameters: f.take("parameters")?,
            constraints: f.take("constraints")?,
            timeout_config: f.take("timeout_config")?,
            retry_config: f.take("retry_config")?,
            execution_semantics: f.take("execution_semantics")?,
            priority: f.take("priority")?,
            tags: f.take("tags")?,
            resource_requirements: f.take("resource_requirements")?,
            node_selector: f.take("node_selector")?,
            compensation: f.take("compensation")?,
        })
    }
}

impl ToAvro for ErrorInfo {
    fn to_avro(&self) -> Value {
        record([
            ("error_type", self.error_type.to_avro()),
            ("message", self.message.to_avro()),
            ("retryable", self.retryable.to_avro()),
            ("task_name", self.task_name.to_avro()),
            ("attempt", self.attempt.to_avro()),
            ("timestamp_ms", ts(self.timestamp_ms)),
            ("details", self.details.to_avro()),
        ])
    }
}

impl FromAvro for ErrorInfo {
    fn from_avro(value: Value) -> Result<Self, CodecError> {
        let mut f = Fields::new(value)?;
        Ok(Self {
            error_type: f.take("error_type")?,
            message: f.take("message")?,
            retryable: f.take("retryable")?,
            task_name: f.take("task_name")?,
            attempt: f.take("attempt")?,
            timestamp_ms: f.take("timestamp_ms")?,
            details: f.take("details")?,
        })
    }
}

impl ToAvro for TaskResult {
    fn to_avro(&self) -> Value {
        record([
            ("task_id", self.task_id.to_avro()),
            ("task_name", self.task_name.to_avro()),
            ("execution_id", self.execution_id.to_avro()),
            ("attempt", self.attempt.to_avro()),
            ("state", self.state.to_avro()),
            ("result_data", self.result_data.to_avro()),
            ("error", self.error.to_avro()),
            ("start_time_ms", ts(self.start_time_ms)),
            ("end_time_ms", opt_ts(self.end_time_ms)),
            ("duration_ms", self.duration_ms.to_avro()),
            ("node_id", self.node_id.to_avro()),
            ("resource_usage", self.resource_usage.to_avro()),
            ("metrics", self.metrics.to_avro()),
            ("checkpoints", self.checkpoints.to_avro()),
        ])
    }
}

impl FromAvro for TaskResult {
    fn from_avro(value: Value) -> Result<Self, CodecError> {
        let mut f = Fields::new(value)?;
        Ok(Self {
            task_id: f.take("task_id")?,
            task_name: f.take("task_name")?,
            execution_id: f.take("execution_id")?,
            attempt: f.take("attempt")?,
            state: f.take("state")?,
            result_data: f.take("result_data")?,
            error: f.take("error")?,
            start_time_ms: f.take("start_time_ms")?,
            end_time_ms: f.take("end_time_ms")?,
            duration_ms: f.take("duration_ms")?,
            node_id: f.take("node_id")?,
            resource_usage: f.take("resource_usage")?,
            metrics: f.take("metrics")?,
            checkpoints: f.take("checkpoints")?,
        })
    }
}

impl ToAvro for CompensationAction {
    fn to_avro(&self) -> Value {
        record([
            ("task_name", self.task_name.to_avro()),
            ("compensation_task", self.compensation_task.to_avro()),
            ("state", self.state.to_avro()),
            ("attempt", self.attempt.to_avro()),
            ("error", self.error.to_avro()),
            ("timestamp_ms", ts(self.timestamp_ms)),
        ])
    }
}

impl FromAvro for CompensationAction {
    fn from_avro(value: Value) -> Result<Self, CodecError> {
        let mut f = Fields::new(value)?;
        Ok(Self {
            task_name: f.take("task_name")?,
            compensation_task: f.take("compensation_task")?,
            state: f.take("state")?,
            attempt: f.take("attempt")?,
            error: f.take("error")?,
            timestamp_ms: f.take("timestamp_ms")?,
        })
    }
}

impl ToAvro for WorkflowContext {
    fn to_avro(&self) -> Value {
        record([
            ("workflow_type", self.workflow_type.to_avro()),
            ("instance_id", self.instance_id.to_avro()),
            ("correlation_id", self.correlation_id.to_avro()),
            ("isolation_level", self.isolation_level.to_avro()),
            ("data", self.data.to_avro()),
            ("secrets", self.secrets.to_avro()),
            ("capabilities", self.capabilities.to_avro()),
            ("resource_limits", self.resource_limits.to_avro()),
            ("timeout_config", self.timeout_config.to_avro()),
            ("retry_config", self.retry_config.to_avro()),
        ])
    }
}

impl FromAvro for WorkflowContext {
    fn from_avro(value: Value) -> Result<Self, CodecError> {
        let mut f = Fields::new(value)?;
        Ok(Self {
            workflow_type: f.take("workflow_type")?,
            instance_id: f.take("instance_id")?,
            correlation_id: f.take("correlation_id")?,
            isolation_level: f.take("isolation_level")?,
            data: f.take("data")?,
            secrets: f.take("secrets")?,
            capabilities: f.take("capabilities")?,
            resource_limits: f.take("resource_limits")?,
            timeout_config: f.take("timeout_config")?,
            retry_config: f.take("retry_config")?,
        })
    }
}
