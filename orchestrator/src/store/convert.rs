//! The mapping between the projection's [`InstanceState`] and the protocol's
//! [`WorkflowSnapshot`], lossless in both directions so that a restore from a
//! snapshot folds on exactly as the live projection would.
//!
//! What the protocol record has a place for goes there: identity, state,
//! sequence number, times, the input (as the context's data), the error
//! history, one `TaskResult` per task that left `pending` (state, attempt,
//! output, error, start and end), the compensation log, and, given the
//! definition, its tasks and default timeouts and retry policy. The root event
//! of the instance is the context's correlation id; the context's
//! `isolation_level` is the definition's, and its `secrets` hold the input's
//! sealed envelope (`weft.secrets`, ciphertext only). Everything else the state
//! holds (a task's scheduled event and times, timers, unconsumed signals, the
//! error that ended the workflow, and any field added later) travels as JSON
//! in `checkpoint_data["weft.state"]`, with the mapped fields left out.

use std::collections::{BTreeMap, HashSet};

use serde_json::{Map, Value};
use weft_shared::fsm::InstanceState;
use weft_shared::ids::{CorrelationId, ExecutionId, TaskId};
use weft_shared::model::{CompensationAction, TaskResult, WorkflowContext};
use weft_shared::{DataMap, WorkflowData, WorkflowDefinition, WorkflowSnapshot};

use super::{Error, Result};

/// `checkpoint_data` key of the state's unmapped fields (JSON).
pub const STATE_KEY: &str = "weft.state";

/// `checkpoint_data` key prefix of a task's last checkpoint (JSON), by task name.
pub const CHECKPOINT_PREFIX: &str = "weft.checkpoint.";

/// Top-level state fields carried by the snapshot's own fields.
const MAPPED: &[&str] = &[
    "workflow_type",
    "instance_id",
    "definition_version",
    "state",
    "last_seq",
    "created_event_id",
    "created_at_ms",
    "updated_at_ms",
    "input",
    "error_history",
];
/// Task runtime fields carried by its `TaskResult`.
const TASK_MAPPED: &[&str] = &["state", "attempt", "output", "error", "finished_at_ms"];

/// The protocol snapshot of `s`; `definition` (the instance's version) fills
/// in the task configurations and the context's timeout and retry defaults.
pub fn to_snapshot(s: &InstanceState, definition: Option<&WorkflowDefinition>) -> WorkflowSnapshot {
    // Definition order first, then tasks the definition does not name.
    let in_definition: HashSet<&str> = definition
        .map(|d| d.tasks.iter().map(|t| t.name.as_str()).collect())
        .unwrap_or_default();
    let names: Vec<&String> = definition
        .into_iter()
        .flat_map(|d| d.tasks.iter().map(|t| &t.name))
        .filter(|n| s.tasks.contains_key(*n))
        .chain(
            s.tasks
                .keys()
                .filter(|n| !in_definition.contains(n.as_str())),
        )
        .collect();
    let results = names
        .into_iter()
        .map(|name| {
            let t = &s.tasks[name];
            let task_id = TaskId::of(s.instance_id, name);
            TaskResult {
                task_id,
                task_name: name.clone(),
                execution_id: ExecutionId::of(task_id, t.attempt),
                attempt: t.attempt,
                state: t.state,
                result_data: t.output.clone(),
                error: t.error.clone(),
                start_time_ms: t.started_at_ms.or(t.scheduled_at_ms).unwrap_or(0),
                end_time_ms: t.finished_at_ms,
                duration_ms: t.started_at_ms.zip(t.finished_at_ms).map(|(a, b)| b - a),
                node_id: t.node_id.clone().unwrap_or_default(),
                resource_usage: t.resource_usage.clone(),
                metrics: t.metrics.clone(),
                checkpoints: t.checkpoint.clone().into_iter().collect(),
            }
        })
        .collect();
    let mut rest = match serde_json::to_value(s).expect("instance state serialises") {
        Value::Object(m) => m,
        _ => unreachable!("an instance state serialises to an object"),
    };
    for k in MAPPED {
        rest.remove(*k);
    }
    if let Some(Value::Object(tasks)) = rest.get_mut("tasks") {
        for t in tasks.values_mut().filter_map(Value::as_object_mut) {
            for k in TASK_MAPPED {
                t.remove(*k);
            }
        }
    }
    let compensation_log: Vec<CompensationAction> = rest
        .get("compensations")
        .and_then(|v| serde_json::from_value(v.clone()).ok())
        .unwrap_or_default();
    let mut checkpoint_data = DataMap::new();
    checkpoint_data.insert(
        STATE_KEY.into(),
        WorkflowData::Str(Value::Object(rest).to_string()),
    );
    // Each task's last checkpoint, for tools (the state above holds it too).
    for (name, t) in &s.tasks {
        if let Some(cp) = &t.checkpoint {
            checkpoint_data.insert(
                format!("{CHECKPOINT_PREFIX}{name}"),
                WorkflowData::Str(weft_shared::data::data_map_to_json(cp).to_string()),
            );
        }
    }
    let context = definition
        .and_then(|d| weft_shared::lanes::ContextLimits::of_metadata(&d.metadata).ok())
        .unwrap_or_default();
    WorkflowSnapshot {
        workflow_type: s.workflow_type.clone(),
        instance_id: s.instance_id,
        definition_version: s.definition_version,
        sequence_number: s.last_seq,
        state: s.state,
        context: WorkflowContext {
            workflow_type: s.workflow_type.clone(),
            instance_id: s.instance_id,
            correlation_id: CorrelationId(s.created_event_id.0),
            isolation_level: definition
                .map(weft_shared::fsm::isolation::level_of)
                .unwrap_or_default(),
            data: s.input.clone(),
            // Only ever the sealed envelope (ciphertext, ADR 0014): the
            // orchestrator holds no key to open it.
            secrets: weft_shared::secrets::sealed_in(&s.input)
                .map(|sealed| {
                    BTreeMap::from([(
                        weft_shared::secrets::SECRETS_KEY.to_owned(),
                        sealed.to_owned(),
                    )])
                })
                .unwrap_or_default(),
            capabilities: context.capabilities.into_iter().collect(),
            resource_limits: context.resource_limits,
            timeout_config: definition
                .map(|d| d.timeout_config.clone())
                .unwrap_or_default(),
            retry_config: definition
                .map(|d| d.default_retry.clone())
                .unwrap_or_default(),
        },
        tasks: definition.map(|d| d.tasks.clone()).unwrap_or_default(),
        results,
        error_history: s.error_history.clone(),
        compensation_log,
        created_at_ms: s.created_at_ms,
        updated_at_ms: s.updated_at_ms,
        checkpoint_data,
        resource_usage: total_usage(s),
    }
}

/// The instance's usage over its tasks' last attempts: CPU and wall time
/// added up, peak memory the largest.
fn total_usage(s: &InstanceState) -> BTreeMap<String, i64> {
    use weft_shared::usage::{CPU_MS, PEAK_RSS_KB, WALL_MS};
    let mut total = BTreeMap::new();
    for t in s.tasks.values() {
        for (k, v) in &t.resource_usage {
            let e = total.entry(k.clone()).or_insert(0i64);
            match k.as_str() {
                PEAK_RSS_KB => *e = (*e).max(*v),
                CPU_MS | WALL_MS => *e = e.saturating_add(*v),
                _ => {}
            }
        }
    }
    total.retain(|k, _| [CPU_MS, WALL_MS, PEAK_RSS_KB].contains(&k.as_str()));
    total
}

/// The instance state a snapshot holds (the inverse of [`to_snapshot`]). A
/// snapshot written by someone else (no `weft.state`) gives the state its
/// protocol fields describe.
pub fn from_snapshot(snap: &WorkflowSnapshot) -> Result<InstanceState> {
    let corrupt = |what: String| Error::CorruptSnapshot(format!("{}: {what}", snap.instance_id));
    let mut rest = match snap.checkpoint_data.get(STATE_KEY) {
        None => Map::new(),
        Some(WorkflowData::Str(json)) => match serde_json::from_str(json) {
            Ok(Value::Object(m)) => m,
            Ok(_) => return Err(corrupt(format!("{STATE_KEY} is not a JSON object"))),
            Err(e) => return Err(corrupt(format!("{STATE_KEY}: {e}"))),
        },
        Some(_) => return Err(corrupt(format!("{STATE_KEY} is not a string"))),
    };
    let mut old_tasks = match rest.remove("tasks") {
        Some(Value::Object(m)) => m,
        _ => Map::new(),
    };
    let mut tasks = Map::new();
    for r in &snap.results {
        let mut t = match old_tasks.remove(&r.task_name) {
            Some(Value::Object(m)) => m,
            _ => {
                // Not written by Weft: what the result says.
                let mut m = Map::new();
                if !r.node_id.is_empty() {
                    m.insert("node_id".into(), Value::String(r.node_id.clone()));
                }
                m.insert("started_at_ms".into(), r.start_time_ms.into());
                m
            }
        };
        t.insert("state".into(), json(&r.state));
        t.insert("attempt".into(), r.attempt.into());
        t.insert("output".into(), json(&r.result_data));
        t.insert("error".into(), json(&r.error));
        t.insert("finished_at_ms".into(), json(&r.end_time_ms));
        tasks.insert(r.task_name.clone(), Value::Object(t));
    }
    rest.insert("tasks".into(), Value::Object(tasks));
    if !rest.contains_key("compensations") && !snap.compensation_log.is_empty() {
        rest.insert("compensations".into(), json(&snap.compensation_log));
    }
    rest.insert("workflow_type".into(), json(&snap.workflow_type));
    rest.insert("instance_id".into(), json(&snap.instance_id));
    rest.insert("definition_version".into(), snap.definition_version.into());
    rest.insert("state".into(), json(&snap.state));
    rest.insert("last_seq".into(), snap.sequence_number.into());
    rest.insert(
        "created_event_id".into(),
        json(&snap.context.correlation_id),
    );
    rest.insert("created_at_ms".into(), snap.created_at_ms.into());
    rest.insert("updated_at_ms".into(), snap.updated_at_ms.into());
    rest.insert("input".into(), json(&snap.context.data));
    rest.insert("error_history".into(), json(&snap.error_history));
    serde_json::from_value(Value::Object(rest)).map_err(|e| corrupt(e.to_string()))
}

/// A protocol value as JSON.
fn json<T: serde::Serialize>(v: &T) -> Value {
    serde_json::to_value(v).expect("a protocol value serialises")
}
