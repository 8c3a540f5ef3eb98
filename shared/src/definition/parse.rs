//! Parsing of the user-facing workflow document (YAML or JSON) into a
//! [`WorkflowDefinition`]. The document is first read into a JSON value, then
//! each part is deserialised into strict raw structs (`deny_unknown_fields`) so
//! that every error carries its location (`tasks[2] (charge).timeout.execution`).
//! Durations are humantime strings (`100ms`, `30s`, `10m`) or integer milliseconds.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value as Json;

use super::validate::{validate, DefinitionError};
use super::WorkflowDefinition;
use crate::data::{data_map_from_json, DataMap};
use crate::model::{RetryConfiguration, TaskConfiguration, TaskDependency, TimeoutConfiguration};

/// The syntax of a workflow document.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DefinitionFormat {
    Yaml,
    Json,
}

impl DefinitionFormat {
    /// JSON when the first non-space character is `{`, else YAML.
    pub fn detect(text: &str) -> Self {
        if text.trim_start().starts_with('{') {
            DefinitionFormat::Json
        } else {
            DefinitionFormat::Yaml
        }
    }
}

impl fmt::Display for DefinitionFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DefinitionFormat::Yaml => "YAML",
            DefinitionFormat::Json => "JSON",
        })
    }
}

/// Parses and validates a workflow document; `format: None` auto-detects it.
/// The result has version 0 and `registered_at_ms` 0: the registry assigns both.
pub fn parse_definition(
    text: &str,
    format: Option<DefinitionFormat>,
) -> Result<WorkflowDefinition, DefinitionError> {
    let format = format.unwrap_or_else(|| DefinitionFormat::detect(text));
    let syntax = |message: String| DefinitionError::Syntax { format, message };
    let doc: Json = match format {
        DefinitionFormat::Json => serde_json::from_str(text).map_err(|e| syntax(e.to_string()))?,
        DefinitionFormat::Yaml => {
            serde_yaml_ng::from_str(text).map_err(|e| syntax(e.to_string()))?
        }
    };
    if !doc.is_object() {
        return Err(syntax(
            "the document must be a mapping with `type` and `tasks`".into(),
        ));
    }
    let def = convert(doc)?;
    validate(&def)?;
    Ok(def)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDefinition {
    #[serde(rename = "type")]
    workflow_type: String,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    input: Option<Json>,
    #[serde(default)]
    timeout: Option<Json>,
    #[serde(default)]
    retry: Option<Json>,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default)]
    metadata: BTreeMap<String, String>,
    #[serde(default)]
    context: Option<RawContext>,
    #[serde(default)]
    tasks: Vec<Json>,
}

/// What the workflow context allows its tasks (kept in the metadata).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawContext {
    #[serde(default)]
    capabilities: Vec<String>,
    #[serde(default)]
    resource_limits: BTreeMap<String, i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTask {
    name: String,
    #[serde(default)]
    handler: Option<String>,
    #[serde(default, rename = "type")]
    task_type: Option<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    depends_on: Vec<Json>,
    #[serde(default)]
    parameters: Option<Json>,
    #[serde(default)]
    constraints: Option<Json>,
    #[serde(default)]
    retry: Option<Json>,
    #[serde(default)]
    timeout: Option<Json>,
    #[serde(default)]
    semantics: Option<String>,
    #[serde(default)]
    priority: Option<String>,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default)]
    resources: BTreeMap<String, i64>,
    #[serde(default)]
    node_selector: Option<BTreeMap<String, String>>,
    /// Capabilities the task needs (kept as `constraints.capabilities`).
    #[serde(default)]
    requires: Vec<String>,
    #[serde(default)]
    compensation: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDependency {
    task: String,
    #[serde(default)]
    condition: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRetry {
    #[serde(default)]
    max_attempts: Option<u32>,
    #[serde(default)]
    backoff: Option<String>,
    #[serde(default)]
    base_delay: Option<Json>,
    #[serde(default)]
    max_delay: Option<Json>,
    #[serde(default)]
    jitter: Option<bool>,
    #[serde(default)]
    retry_on: Option<Vec<String>>,
    #[serde(default)]
    stop_on: Option<Vec<String>>,
    #[serde(default)]
    custom_delays: Option<Vec<Json>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTimeout {
    #[serde(default)]
    execution: Option<Json>,
    #[serde(default)]
    heartbeat: Option<Json>,
    #[serde(default)]
    response: Option<Json>,
    #[serde(default)]
    cleanup: Option<Json>,
    #[serde(default)]
    grace: Option<Json>,
}

fn field_error(path: &str, message: impl fmt::Display) -> DefinitionError {
    DefinitionError::InvalidField {
        path: path.to_owned(),
        message: message.to_string(),
    }
}

/// Deserialises `value` into `T`, naming `path` in the error. When the value is
/// a mapping and dropping one key makes it fit, the error names that key too
/// (an unknown key is named by serde's message already).
fn from_json<T: DeserializeOwned>(value: Json, path: &str) -> Result<T, DefinitionError> {
    let error = match T::deserialize(&value) {
        Ok(t) => return Ok(t),
        Err(e) => e,
    };
    let unknown = error.to_string().starts_with("unknown field");
    if let (Json::Object(map), false) = (&value, unknown) {
        for key in map.keys() {
            let mut without = map.clone();
            without.remove(key);
            if T::deserialize(&Json::Object(without)).is_ok() {
                return Err(field_error(&join(path, key), error));
            }
        }
    }
    let path = if path.is_empty() { "top level" } else { path };
    Err(field_error(path, error))
}

/// `path` joined with `field` (`tasks[0] (a)` + `retry` → `tasks[0] (a).retry`).
fn join(path: &str, field: &str) -> String {
    if path.is_empty() {
        field.to_owned()
    } else {
        format!("{path}.{field}")
    }
}

fn convert(doc: Json) -> Result<WorkflowDefinition, DefinitionError> {
    let raw: RawDefinition = from_json(doc, "")?;
    let default_input = data_map(raw.input, "input")?;
    let timeout_config = timeouts(raw.timeout, "")?;
    let default_retry = retry(raw.retry, &RetryConfiguration::default(), "")?;
    let tasks = raw
        .tasks
        .into_iter()
        .enumerate()
        .map(|(i, value)| task(i, value, &default_retry))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(WorkflowDefinition {
        workflow_type: raw.workflow_type,
        version: 0,
        description: raw.description.unwrap_or_default(),
        tasks,
        timeout_config,
        default_retry,
        default_input,
        tags: raw.tags,
        metadata: context_metadata(raw.metadata, raw.context)?,
        registered_at_ms: 0,
    })
}

/// The definition's metadata with its `context` limits added.
fn context_metadata(
    mut metadata: BTreeMap<String, String>,
    context: Option<RawContext>,
) -> Result<BTreeMap<String, String>, DefinitionError> {
    let Some(context) = context else {
        return Ok(metadata);
    };
    let resources: Vec<String> = context
        .resource_limits
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    let limits = crate::lanes::NodeCapabilities::declared(&context.capabilities, &resources, 1)
        .map_err(|e| field_error("context", e))?;
    let mut resource_limits = limits.capacity;
    if !context.resource_limits.contains_key(crate::lanes::SLOTS) {
        resource_limits.remove(crate::lanes::SLOTS);
    }
    let limits = crate::lanes::ContextLimits {
        capabilities: limits.capabilities,
        resource_limits,
    };
    metadata.extend(limits.to_metadata());
    Ok(metadata)
}

fn task(
    index: usize,
    value: Json,
    default_retry: &RetryConfiguration,
) -> Result<TaskConfiguration, DefinitionError> {
    let path = match value.get("name").and_then(Json::as_str) {
        Some(name) => format!("tasks[{index}] ({name})"),
        None => format!("tasks[{index}]"),
    };
    let raw: RawTask = from_json(value, &path)?;
    let mut t = TaskConfiguration::new(raw.name.clone(), raw.handler.unwrap_or(raw.name));
    if let Some(s) = raw.task_type {
        t.task_type = s
            .parse()
            .map_err(|e| field_error(&join(&path, "type"), e))?;
    }
    if let Some(s) = raw.semantics {
        t.execution_semantics = s
            .parse()
            .map_err(|e| field_error(&join(&path, "semantics"), e))?;
    }
    if let Some(s) = raw.priority {
        t.priority = s
            .parse()
            .map_err(|e| field_error(&join(&path, "priority"), e))?;
    }
    t.description = raw.description.unwrap_or_default();
    t.dependencies = raw
        .depends_on
        .into_iter()
        .enumerate()
        .map(|(i, d)| dependency(d, &format!("{path}.depends_on[{i}]")))
        .collect::<Result<_, _>>()?;
    t.parameters = data_map(raw.parameters, &join(&path, "parameters"))?;
    if t.task_type == crate::model::TaskType::Wait {
        // A wait's duration is kept in ms, whatever notation it was written in.
        if let Some(d) = t.parameters.remove("duration") {
            let json = d.to_json();
            let ms = duration_ms(&json, &join(&path, "parameters.duration"))?;
            t.parameters.insert(
                "duration_ms".into(),
                crate::data::WorkflowData::Int(ms as i64),
            );
        }
    }
    t.constraints = data_map(raw.constraints, &join(&path, "constraints"))?;
    if !raw.requires.is_empty() {
        let key = crate::lanes::CAPABILITIES_CONSTRAINT;
        let mut all = match t.constraints.remove(key) {
            Some(crate::data::WorkflowData::List(l)) => l,
            Some(crate::data::WorkflowData::Str(s)) => vec![s],
            Some(_) => {
                return Err(field_error(
                    &join(&path, "constraints.capabilities"),
                    "must be a list of capability names",
                ))
            }
            None => Vec::new(),
        };
        all.extend(raw.requires);
        all.sort();
        all.dedup();
        t.constraints
            .insert(key.to_owned(), crate::data::WorkflowData::List(all));
    }
    t.retry_config = retry(raw.retry, default_retry, &path)?;
    t.timeout_config = timeouts(raw.timeout, &path)?;
    t.tags = raw.tags;
    t.resource_requirements = raw.resources;
    t.node_selector = raw.node_selector;
    t.compensation = raw.compensation;
    Ok(t)
}

/// A dependency: a task name, or `{task, condition}`.
fn dependency(value: Json, path: &str) -> Result<TaskDependency, DefinitionError> {
    let raw = match value {
        Json::String(task) => RawDependency {
            task,
            condition: None,
        },
        other @ Json::Object(_) => from_json(other, path)?,
        other => {
            return Err(field_error(
                path,
                format!("expected a task name or {{task, condition}}, found {other}"),
            ))
        }
    };
    let condition = match raw.condition {
        Some(c) => c
            .parse()
            .map_err(|e| field_error(&join(path, "condition"), e))?,
        None => Default::default(),
    };
    Ok(TaskDependency {
        task_name: raw.task,
        condition,
    })
}

fn data_map(value: Option<Json>, path: &str) -> Result<DataMap, DefinitionError> {
    match value {
        None => Ok(DataMap::new()),
        Some(v) => data_map_from_json(&v, path).map_err(|e| field_error(&e.path, e.problem)),
    }
}

/// `value` (a retry block at `parent`) laid over `base`: missing fields keep `base`.
fn retry(
    value: Option<Json>,
    base: &RetryConfiguration,
    parent: &str,
) -> Result<RetryConfiguration, DefinitionError> {
    let mut r = base.clone();
    let Some(value) = value else { return Ok(r) };
    let path = join(parent, "retry");
    let raw: RawRetry = from_json(value, &path)?;
    if let Some(n) = raw.max_attempts {
        r.max_attempts = n;
    }
    if let Some(s) = raw.backoff {
        r.backoff_strategy = s
            .parse()
            .map_err(|e| field_error(&join(&path, "backoff"), e))?;
    }
    if let Some(v) = raw.base_delay {
        r.base_delay_ms = duration_ms(&v, &join(&path, "base_delay"))?;
    }
    if let Some(v) = raw.max_delay {
        r.max_delay_ms = duration_ms(&v, &join(&path, "max_delay"))?;
    }
    if let Some(j) = raw.jitter {
        r.jitter = j;
    }
    if let Some(v) = raw.retry_on {
        r.retry_on = v;
    }
    if let Some(v) = raw.stop_on {
        r.stop_on = v;
    }
    if let Some(v) = raw.custom_delays {
        r.custom_delays_ms = v
            .iter()
            .enumerate()
            .map(|(i, d)| duration_ms(d, &format!("{path}.custom_delays[{i}]")))
            .collect::<Result<_, _>>()?;
    }
    Ok(r)
}

fn timeouts(value: Option<Json>, parent: &str) -> Result<TimeoutConfiguration, DefinitionError> {
    let Some(value) = value else {
        return Ok(TimeoutConfiguration::default());
    };
    let path = join(parent, "timeout");
    let raw: RawTimeout = from_json(value, &path)?;
    let ms = |v: Option<Json>, field: &str| match v {
        None => Ok(0),
        Some(v) => duration_ms(&v, &join(&path, field)),
    };
    Ok(TimeoutConfiguration {
        execution_timeout_ms: ms(raw.execution, "execution")?,
        heartbeat_timeout_ms: ms(raw.heartbeat, "heartbeat")?,
        response_timeout_ms: ms(raw.response, "response")?,
        cleanup_timeout_ms: ms(raw.cleanup, "cleanup")?,
        grace_period_ms: ms(raw.grace, "grace")?,
    })
}

/// A duration in milliseconds: a non-negative integer, a string of digits, or
/// a humantime string such as `1m 30s`.
pub(crate) fn duration_ms(value: &Json, path: &str) -> Result<u64, DefinitionError> {
    let invalid = || field_error(path, format!("invalid duration {}", quoted(value)));
    match value {
        Json::Number(n) => n.as_u64().ok_or_else(invalid),
        Json::String(s) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => {
            s.parse().map_err(|_| invalid())
        }
        Json::String(s) => {
            let d = humantime::parse_duration(s.trim()).map_err(|_| invalid())?;
            u64::try_from(d.as_millis()).map_err(|_| invalid())
        }
        _ => Err(invalid()),
    }
}

/// A value for an error message: strings in single quotes, the rest as JSON.
fn quoted(value: &Json) -> String {
    match value {
        Json::String(s) => format!("'{s}'"),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests;
