//! JSON views of instances and events for the HTTP API (their schemas are in
//! `orchestrator/openapi.json`: `Instance`, `InstanceSummary`, `Event`).

use serde_json::{json, Value};
use weft_shared::data::data_map_to_json;
use weft_shared::fsm::InstanceState;
use weft_shared::model::ErrorInfo;
use weft_shared::{WorkflowDefinition, WorkflowEvent};

fn error_json(e: &ErrorInfo) -> Value {
    json!({
        "error_type": e.error_type,
        "message": e.message,
        "retryable": e.retryable,
        "task": e.task_name,
        "attempt": e.attempt,
        "timestamp_ms": e.timestamp_ms,
    })
}

/// One instance with every task of its definition (pending ones included).
pub fn instance(s: &InstanceState, def: Option<&WorkflowDefinition>) -> Value {
    let mut names: Vec<&str> = def
        .map(|d| d.tasks.iter().map(|t| t.name.as_str()).collect())
        .unwrap_or_default();
    for name in s.tasks.keys() {
        if !names.contains(&name.as_str()) {
            names.push(name);
        }
    }
    let tasks: Vec<Value> = names
        .iter()
        .map(|name| {
            let t = s.task(name);
            json!({
                "name": name,
                "state": t.state,
                "attempt": t.attempt,
                "node_id": t.node_id,
                "scheduled_at_ms": t.scheduled_at_ms,
                "started_at_ms": t.started_at_ms,
                "finished_at_ms": t.finished_at_ms,
                "output": t.output.as_ref().map(data_map_to_json),
                "error": t.error.as_ref().map(error_json),
                "resource_usage": t.resource_usage,
                "usage_scope": t.usage_scope,
                "metrics": t.metrics,
                "checkpoint": t.checkpoint.as_ref().map(data_map_to_json),
                "checkpoints": t.checkpoints,
            })
        })
        .collect();
    json!({
        "instance_id": s.instance_id,
        "workflow_type": s.workflow_type,
        "definition_version": s.definition_version,
        "state": s.state,
        "sequence_number": s.last_seq,
        "created_at_ms": s.created_at_ms,
        "updated_at_ms": s.updated_at_ms,
        "input": data_map_to_json(&s.input),
        "tasks": tasks,
        "error": s.error.as_ref().map(error_json),
        "error_history": s.error_history.iter().map(error_json).collect::<Vec<_>>(),
    })
}

/// One history event.
pub fn event(e: &WorkflowEvent) -> Value {
    json!({
        "event_id": e.event_id,
        "event_type": e.event_type,
        "workflow_type": e.workflow_type,
        "instance_id": e.instance_id,
        "sequence_number": e.sequence_number,
        "causation_id": e.causation_id,
        "correlation_chain": e.correlation_chain,
        "timestamp_ms": e.timestamp_ms,
        "data": data_map_to_json(&e.data),
        "metadata": e.metadata,
        "idempotency_key": e.idempotency_key,
        "source_node_id": e.source_node_id,
    })
}

/// One instance in a list: its identity, state and times, without tasks.
pub fn summary(s: &InstanceState) -> Value {
    json!({
        "instance_id": s.instance_id,
        "workflow_type": s.workflow_type,
        "definition_version": s.definition_version,
        "state": s.state,
        "sequence_number": s.last_seq,
        "created_at_ms": s.created_at_ms,
        "updated_at_ms": s.updated_at_ms,
        "error": s.error.as_ref().map(error_json),
    })
}
