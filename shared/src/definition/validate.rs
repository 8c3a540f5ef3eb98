//! Structural checks of a [`WorkflowDefinition`]: the type name, task names,
//! dependencies (known, not self, no cycle), compensation targets and retry
//! policies. Every [`DefinitionError`] names the problem and where it is; the
//! parser reuses the same error type for syntax and field errors.

use std::collections::{BTreeMap, BTreeSet, HashMap};

mod structure;

use super::parse::DefinitionFormat;
use super::WorkflowDefinition;
use crate::model::RetryConfiguration;

/// Why a workflow definition was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DefinitionError {
    /// The document is not well-formed YAML or JSON.
    #[error("invalid {format}: {message}")]
    Syntax {
        format: DefinitionFormat,
        message: String,
    },
    /// A field is unknown, missing, of the wrong type or has a bad value.
    #[error("{path}: {message}")]
    InvalidField { path: String, message: String },
    /// The workflow type is not `[a-z0-9_-]{1,100}`.
    #[error("workflow type '{workflow_type}' is invalid: use 1-100 of [a-z0-9_-]")]
    InvalidType { workflow_type: String },
    /// The definition has no tasks.
    #[error("no tasks")]
    NoTasks,
    /// A task name is not `[A-Za-z0-9_-]{1,100}`.
    #[error("task name '{name}' (tasks[{index}]) is invalid: use 1-100 of [A-Za-z0-9_-]")]
    InvalidTaskName { index: usize, name: String },
    /// Two tasks share a name.
    #[error("duplicate task name '{name}' (tasks[{first}] and tasks[{second}])")]
    DuplicateTask {
        name: String,
        first: usize,
        second: usize,
    },
    /// A task has an empty handler.
    #[error("task '{task}' has an empty handler")]
    EmptyHandler { task: String },
    /// A task depends on itself.
    #[error("task '{task}' depends on itself")]
    SelfDependency { task: String },
    /// A task lists the same dependency twice.
    #[error("task '{task}' lists dependency '{dependency}' more than once")]
    DuplicateDependency { task: String, dependency: String },
    /// A task depends on a task that does not exist.
    #[error("task '{task}' depends on unknown task '{dependency}'")]
    UnknownDependency { task: String, dependency: String },
    /// The dependencies form a cycle; `path` runs in execution order and ends
    /// where it starts (`a -> b -> a`: b waits for a, a waits for b).
    #[error("dependency cycle: {}", path.join(" -> "))]
    Cycle { path: Vec<String> },
    /// A compensation names a task that does not exist.
    #[error("compensation task '{compensation}' of '{task}' does not exist")]
    UnknownCompensation { task: String, compensation: String },
    /// A task names itself as its compensation.
    #[error("task '{task}' cannot be its own compensation")]
    SelfCompensation { task: String },
    /// A group or `wait` task is malformed.
    #[error("task '{task}': {message}")]
    InvalidTask { task: String, message: String },
    /// `max_attempts` is 0 (`path` is `retry` or `tasks[i] (name).retry`).
    #[error("{path}.max_attempts must be at least 1")]
    RetryAttempts { path: String },
    /// `max_delay` is below `base_delay`.
    #[error(
        "{path}.max_delay ({max_delay_ms}ms) must not be less than base_delay ({base_delay_ms}ms)"
    )]
    RetryDelays {
        path: String,
        base_delay_ms: u64,
        max_delay_ms: u64,
    },
}

/// Checks everything structural about `def`; the first problem found wins.
pub fn validate(def: &WorkflowDefinition) -> Result<(), DefinitionError> {
    if !valid_name(&def.workflow_type, false) {
        return Err(DefinitionError::InvalidType {
            workflow_type: def.workflow_type.clone(),
        });
    }
    if def.tasks.is_empty() {
        return Err(DefinitionError::NoTasks);
    }
    let mut index: HashMap<&str, usize> = HashMap::new();
    for (i, task) in def.tasks.iter().enumerate() {
        if !valid_name(&task.name, true) {
            return Err(DefinitionError::InvalidTaskName {
                index: i,
                name: task.name.clone(),
            });
        }
        if let Some(&first) = index.get(task.name.as_str()) {
            return Err(DefinitionError::DuplicateTask {
                name: task.name.clone(),
                first,
                second: i,
            });
        }
        index.insert(&task.name, i);
    }
    for task in &def.tasks {
        if task.handler.trim().is_empty() {
            return Err(DefinitionError::EmptyHandler {
                task: task.name.clone(),
            });
        }
        let mut seen = BTreeSet::new();
        for dep in &task.dependencies {
            let dependency = dep.task_name.clone();
            if dep.task_name == task.name {
                return Err(DefinitionError::SelfDependency {
                    task: task.name.clone(),
                });
            }
            if !index.contains_key(dep.task_name.as_str()) {
                let task = task.name.clone();
                return Err(DefinitionError::UnknownDependency { task, dependency });
            }
            if !seen.insert(dep.task_name.as_str()) {
                let task = task.name.clone();
                return Err(DefinitionError::DuplicateDependency { task, dependency });
            }
        }
        if let Some(comp) = &task.compensation {
            if comp == &task.name {
                return Err(DefinitionError::SelfCompensation {
                    task: task.name.clone(),
                });
            }
            if !index.contains_key(comp.as_str()) {
                return Err(DefinitionError::UnknownCompensation {
                    task: task.name.clone(),
                    compensation: comp.clone(),
                });
            }
        }
    }
    if let Some(level) = def.metadata.get(crate::fsm::isolation::ISOLATION_KEY) {
        level.parse::<crate::model::IsolationLevel>().map_err(|e| {
            DefinitionError::InvalidField {
                path: format!("metadata.{}", crate::fsm::isolation::ISOLATION_KEY),
                message: e.to_string(),
            }
        })?;
    }
    check_retry(&def.default_retry, "retry")?;
    for (i, task) in def.tasks.iter().enumerate() {
        check_retry(
            &task.retry_config,
            &format!("tasks[{i}] ({}).retry", task.name),
        )?;
    }
    let tasks_topic = crate::Topics::default().tasks(&def.workflow_type);
    let context = crate::lanes::ContextLimits::of_metadata(&def.metadata).map_err(|e| {
        DefinitionError::InvalidField {
            path: "context".into(),
            message: e.to_string(),
        }
    })?;
    for (i, task) in def.tasks.iter().enumerate() {
        let path = format!("tasks[{i}] ({})", task.name);
        let req = crate::lanes::Requirements::of_task(task)
            .and_then(|req| req.checked_topic(&tasks_topic).map(|_| req))
            .map_err(|e| DefinitionError::InvalidField {
                path: path.clone(),
                message: e.to_string(),
            })?;
        if let Some(message) = context.refuses(&task.name, &req) {
            return Err(DefinitionError::InvalidField { path, message });
        }
    }
    if let Some(path) = find_cycle(def) {
        return Err(DefinitionError::Cycle { path });
    }
    structure::check(def)
}

/// The task names in an order that respects every dependency; ties go to the
/// task written first. Tasks on a cycle (never in a validated definition) and
/// the tasks waiting for them are left out.
pub fn topological_order(def: &WorkflowDefinition) -> Vec<&str> {
    let graph = Graph::new(def);
    let mut waiting: Vec<usize> = graph.deps.iter().map(Vec::len).collect();
    let mut ready: BTreeSet<usize> = (0..waiting.len()).filter(|&i| waiting[i] == 0).collect();
    let mut order = Vec::with_capacity(def.tasks.len());
    while let Some(i) = ready.pop_first() {
        order.push(def.tasks[i].name.as_str());
        for &d in &graph.dependents[i] {
            waiting[d] -= 1;
            if waiting[d] == 0 {
                ready.insert(d);
            }
        }
    }
    order
}

fn check_retry(retry: &RetryConfiguration, path: &str) -> Result<(), DefinitionError> {
    if retry.max_attempts < 1 {
        return Err(DefinitionError::RetryAttempts { path: path.into() });
    }
    if retry.max_delay_ms < retry.base_delay_ms {
        return Err(DefinitionError::RetryDelays {
            path: path.into(),
            base_delay_ms: retry.base_delay_ms,
            max_delay_ms: retry.max_delay_ms,
        });
    }
    Ok(())
}

/// `[a-z0-9_-]{1,100}`, or `[A-Za-z0-9_-]{1,100}` when `upper` is allowed.
fn valid_name(name: &str, upper: bool) -> bool {
    (1..=100).contains(&name.len())
        && name.bytes().all(|b| {
            b.is_ascii_lowercase()
                || b.is_ascii_digit()
                || b == b'_'
                || b == b'-'
                || (upper && b.is_ascii_uppercase())
        })
}

/// Task indices with edges both ways; unknown names and duplicate edges are dropped.
struct Graph {
    /// `deps[i]`: the tasks `i` waits for.
    deps: Vec<Vec<usize>>,
    /// `dependents[i]`: the tasks waiting for `i`, in written order.
    dependents: Vec<Vec<usize>>,
}

impl Graph {
    fn new(def: &WorkflowDefinition) -> Self {
        let mut index = BTreeMap::new();
        for (i, t) in def.tasks.iter().enumerate() {
            index.entry(t.name.as_str()).or_insert(i);
        }
        let n = def.tasks.len();
        let mut deps = vec![Vec::new(); n];
        let mut dependents = vec![Vec::new(); n];
        for (i, t) in def.tasks.iter().enumerate() {
            for d in &t.dependencies {
                if let Some(&j) = index.get(d.task_name.as_str()) {
                    if !deps[i].contains(&j) {
                        deps[i].push(j);
                        dependents[j].push(i);
                    }
                }
            }
        }
        Self { deps, dependents }
    }
}

/// A cycle in execution order, rotated to start at its first-written task, or
/// `None`. Depth-first from each task in written order, dependents in written order.
fn find_cycle(def: &WorkflowDefinition) -> Option<Vec<String>> {
    let graph = Graph::new(def);
    let n = def.tasks.len();
    // 0 = unvisited, 1 = on the stack, 2 = done.
    let mut mark = vec![0u8; n];
    for root in 0..n {
        if mark[root] != 0 {
            continue;
        }
        let mut stack: Vec<(usize, usize)> = vec![(root, 0)];
        mark[root] = 1;
        while let Some(top) = stack.last_mut() {
            let node = top.0;
            if let Some(&child) = graph.dependents[node].get(top.1) {
                top.1 += 1;
                match mark[child] {
                    0 => {
                        mark[child] = 1;
                        stack.push((child, 0));
                    }
                    1 => {
                        let start = stack.iter().position(|&(s, _)| s == child)?;
                        let mut cycle: Vec<usize> =
                            stack[start..].iter().map(|&(s, _)| s).collect();
                        let first = (0..cycle.len()).min_by_key(|&k| cycle[k]).unwrap_or(0);
                        cycle.rotate_left(first);
                        cycle.push(cycle[0]);
                        return Some(
                            cycle
                                .into_iter()
                                .map(|i| def.tasks[i].name.clone())
                                .collect(),
                        );
                    }
                    _ => {}
                }
            } else {
                mark[node] = 2;
                stack.pop();
            }
        }
    }
    None
}

#[cfg(test)]
mod tests;
