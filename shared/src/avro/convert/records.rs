//! Conversions of the top-level records: `WorkflowEvent`, `TaskDispatch`,
//! `WorkflowSnapshot`, `WorkflowDefinition`, `NodeRecord`, `TaskControl` and
//! `TaskHeartbeat`. Fields are listed in the order of the schemas.

use apache_avro::types::Value;

use super::{record, ts, Fields, FromAvro, ToAvro};
use crate::avro::error::CodecError;
use crate::control::{TaskControl, TaskHeartbeat};
use crate::definition::WorkflowDefinition;
use crate::dispatch::TaskDispatch;
use crate::event::{WorkflowEvent, WorkflowEventType};
use crate::node::NodeRecord;
use crate::snapshot::WorkflowSnapshot;

/// `event_type` is an Avro `string` holding the wire name (`workflow.created`),
/// checked against the taxonomy on decode.
impl ToAvro for WorkflowEventType {
    fn to_avro(&self) -> Value {
        Value::String(self.as_str().to_owned())
    }
}

impl FromAvro for WorkflowEventType {
    fn from_avro(value: Value) -> Result<Self, CodecError> {
        String::from_avro(value)?
            .parse()
            .map_err(|source| CodecError::UnknownEnumValue {
                path: String::new(),
                source,
            })
    }
}

impl ToAvro for WorkflowEvent {
    fn to_avro(&self) -> Value {
        record([
            ("event_id", self.event_id.to_avro()),
            ("event_type", self.event_type.to_avro()),
            ("workflow_type", self.workflow_type.to_avro()),
            ("instance_id", self.instance_id.to_avro()),
            ("sequence_number", self.sequence_number.to_avro()),
            ("causation_id", self.causation_id.to_avro()),
            ("correlation_chain", self.correlation_chain.to_avro()),
            ("timestamp_ms", ts(self.timestamp_ms)),
            ("data", self.data.to_avro()),
            ("metadata", self.metadata.to_avro()),
            ("idempotency_key", self.idempotency_key.to_avro()),
            ("source_node_id", self.source_node_id.to_avro()),
        ])
    }
}

impl FromAvro for WorkflowEvent {
    fn from_avro(value: Value) -> Result<Self, CodecError> {
        let mut f = Fields::new(value)?;
        Ok(Self {
            event_id: f.take("event_id")?,
            event_type: f.take("event_type")?,
            workflow_type: f.take("workflow_type")?,
            instance_id: f.take("instance_id")?,
            sequence_number: f.take("sequence_number")?,
            causation_id: f.take("causation_id")?,
            correlation_chain: f.take("correlation_chain")?,
            timestamp_ms: f.take("timestamp_ms")?,
            data: f.take("data")?,
            metadata: f.take("metadata")?,
            idempotency_key: f.take("idempotency_key")?,
            source_node_id: f.take("source_node_id")?,
        })
    }
}

impl ToAvro for TaskDispatch {
    fn to_avro(&self) -> Value {
        record([
            ("workflow_type", self.workflow_type.to_avro()),
            ("instance_id", self.instance_id.to_avro()),
            ("definition_version", self.definition_version.to_avro()),
            ("task_id", self.task_id.to_avro()),
            ("task_name", self.task_name.to_avro()),
            ("task_type", self.task_type.to_avro()),
            ("handler", self.handler.to_avro()),
            ("attempt", self.attempt.to_avro()),
            ("execution_id", self.execution_id.to_avro()),
            ("input", self.input.to_avro()),
            ("parameters", self.parameters.to_avro()),
            ("upstream", self.upstream.to_avro()),
            ("execution_semantics", self.execution_semantics.to_avro()),
            ("priority", self.priority.to_avro()),
            ("timeout_config", self.timeout_config.to_avro()),
            ("idempotency_key", self.idempotency_key.to_avro()),
            ("scheduled_event_id", self.scheduled_event_id.to_avro()),
            ("correlation_chain", self.correlation_chain.to_avro()),
            ("scheduled_at_ms", ts(self.scheduled_at_ms)),
            ("not_before_ms", ts(self.not_before_ms)),
            ("deadline_ms", ts(self.deadline_ms)),
            ("traceparent", self.traceparent.to_avro()),
        ])
    }
}

impl FromAvro for TaskDispatch {
    fn from_avro(value: Value) -> Result<Self, CodecError> {
        let mut f = Fields::new(value)?;
        Ok(Self {
            workflow_type: f.take("workflow_type")?,
            instance_id: f.take("instance_id")?,
            definition_version: f.take("definition_version")?,
            task_id: f.take("task_id")?,
            task_name: f.take("task_name")?,
            task_type: f.take("task_type")?,
            handler: f.take("handler")?,
            attempt: f.take("attempt")?,
            execution_id: f.take("execution_id")?,
            input: f.take("input")?,
            parameters: f.take("parameters")?,
            upstream: f.take("upstream")?,
            execution_semantics: f.take("execution_semantics")?,
            priority: f.take("priority")?,
            timeout_config: f.take("timeout_config")?,
            idempotency_key: f.take("idempotency_key")?,
            scheduled_event_id: f.take("scheduled_event_id")?,
            correlation_chain: f.take("correlation_chain")?,
            scheduled_at_ms: f.take("scheduled_at_ms")?,
            not_before_ms: f.take("not_before_ms")?,
            deadline_ms: f.take("deadline_ms")?,
            traceparent: f.take("traceparent")?,
        })
    }
}

impl ToAvro for WorkflowSnapshot {
    fn to_avro(&self) -> Value {
        record([
            ("workflow_type", self.workflow_type.to_avro()),
            ("instance_id", self.instance_id.to_avro()),
            ("definition_version", self.definition_version.to_avro()),
            ("sequence_number", self.sequence_number.to_avro()),
            ("state", self.state.to_avro()),
            ("context", self.context.to_avro()),
            ("tasks", self.tasks.to_avro()),
            ("results", self.results.to_avro()),
            ("error_history", self.error_history.to_avro()),
            ("compensation_log", self.compensation_log.to_avro()),
            ("created_at_ms", ts(self.created_at_ms)),
            ("updated_at_ms", ts(self.updated_at_ms)),
            ("checkpoint_data", self.checkpoint_data.to_avro()),
            ("resource_usage", self.resource_usage.to_avro()),
        ])
    }
}

impl FromAvro for WorkflowSnapshot {
    fn from_avro(value: Value) -> Result<Self, CodecError> {
        let mut f = Fields::new(value)?;
        Ok(Self {
            workflow_type: f.take("workflow_type")?,
            instance_id: f.take("instance_id")?,
            definition_version: f.take("definition_version")?,
            sequence_number: f.take("sequence_number")?,
            state: f.take("state")?,
            context: f.take("context")?,
            tasks: f.take("tasks")?,
            results: f.take("results")?,
            error_history: f.take("error_history")?,
            compensation_log: f.take("compensation_log")?,
            created_at_ms: f.take("created_at_ms")?,
            updated_at_ms: f.take("updated_at_ms")?,
            checkpoint_data: f.take("checkpoint_data")?,
            resource_usage: f.take("resource_usage")?,
        })
    }
}

impl ToAvro for WorkflowDefinition {
    fn to_avro(&self) -> Value {
        record([
            ("workflow_type", self.workflow_type.to_avro()),
            ("version", self.version.to_avro()),
            ("description", self.description.to_avro()),
            ("tasks", self.tasks.to_avro()),
            ("timeout_config", self.timeout_config.to_avro()),
            ("default_retry", self.default_retry.to_avro()),
            ("default_input", self.default_input.to_avro()),
            ("tags", self.tags.to_avro()),
            ("metadata", self.metadata.to_avro()),
            ("registered_at_ms", ts(self.registered_at_ms)),
        ])
    }
}

impl FromAvro for WorkflowDefinition {
    fn from_avro(value: Value) -> Result<Self, CodecError> {
        let mut f = Fields::new(value)?;
        Ok(Self {
            workflow_type: f.take("workflow_type")?,
            version: f.take("version")?,
            description: f.take("description")?,
            tasks: f.take("tasks")?,
            timeout_config: f.take("timeout_config")?,
            default_retry: f.take("default_retry")?,
            default_input: f.take("default_input")?,
            tags: f.take("tags")?,
            metadata: f.take("metadata")?,
            registered_at_ms: f.take("registered_at_ms")?,
        })
    }
}

impl ToAvro for NodeRecord {
    fn to_avro(&self) -> Value {
        record([
            ("node_id", self.node_id.to_avro()),
            ("role", self.role.to_avro()),
            ("capabilities", self.capabilities.to_avro()),
            ("capacity_limits", self.capacity_limits.to_avro()),
            ("current_load", self.current_load.to_avro()),
            ("active_tasks", self.active_tasks.to_avro()),
            ("health", self.health.to_avro()),
            ("labels", self.labels.to_avro()),
            ("started_at_ms", ts(self.started_at_ms)),
            ("heartbeat_at_ms", ts(self.heartbeat_at_ms)),
        ])
    }
}

impl FromAvro for NodeRecord {
    fn from_avro(value: Value) -> Result<Self, CodecError> {
        let mut f = Fields::new(value)?;
        Ok(Self {
            node_id: f.take("node_id")?,
            role: f.take("role")?,
            capabilities: f.take("capabilities")?,
            capacity_limits: f.take("capacity_limits")?,
            current_load: f.take("current_load")?,
            active_tasks: f.take("active_tasks")?,
            health: f.take("health")?,
            labels: f.take("labels")?,
            started_at_ms: f.take("started_at_ms")?,
            heartbeat_at_ms: f.take("heartbeat_at_ms")?,
        })
    }
}

impl ToAvro for TaskControl {
    fn to_avro(&self) -> Value {
        record([
            ("action", self.action.to_avro()),
            ("workflow_type", self.workflow_type.to_avro()),
            ("instance_id", self.instance_id.to_avro()),
            ("task_name", self.task_name.to_avro()),
            ("attempt", self.attempt.to_avro()),
            ("execution_id", self.execution_id.to_avro()),
            ("grace_period_ms", self.grace_period_ms.to_avro()),
            ("reason", self.reason.to_avro()),
        ])
    }
}

impl FromAvro for TaskControl {
    fn from_avro(value: Value) -> Result<Self, CodecError> {
        let mut f = Fields::new(value)?;
        Ok(Self {
            action: f.take("action")?,
            workflow_type: f.take("workflow_type")?,
            instance_id: f.take("instance_id")?,
            task_name: f.take("task_name")?,
            attempt: f.take("attempt")?,
            execution_id: f.take("execution_id")?,
            grace_period_ms: f.take("grace_period_ms")?,
            reason: f.take("reason")?,
        })
    }
}

impl ToAvro for TaskHeartbeat {
    fn to_avro(&self) -> Value {
        record([
            ("workflow_type", self.workflow_type.to_avro()),
            ("instance_id", self.instance_id.to_avro()),
            ("task_name", self.task_name.to_avro()),
            ("attempt", self.attempt.to_avro()),
            ("execution_id", self.execution_id.to_avro()),
            ("node_id", self.node_id.to_avro()),
            ("at_ms", ts(self.at_ms)),
        ])
    }
}

impl FromAvro for TaskHeartbeat {
    fn from_avro(value: Value) -> Result<Self, CodecError> {
        let mut f = Fields::new(value)?;
        Ok(Self {
            workflow_type: f.take("workflow_type")?,
            instance_id: f.take("instance_id")?,
            task_name: f.take("task_name")?,
            attempt: f.take("attempt")?,
            execution_id: f.take("execution_id")?,
            node_id: f.take("node_id")?,
            at_ms: f.take("at_ms")?,
        })
    }
}
