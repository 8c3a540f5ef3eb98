//! Checks of the task types that shape a workflow rather than run a handler:
//! groups (`parallel` / `sequential`, members in `parameters.tasks`) and
//! `wait` tasks (a `signal` to wait for and/or a `duration_ms`).

use std::collections::{BTreeMap, BTreeSet};

use super::DefinitionError;
use crate::data::WorkflowData;
use crate::definition::WorkflowDefinition;
use crate::model::TaskType;

fn invalid(task: &str, message: impl Into<String>) -> DefinitionError {
    DefinitionError::InvalidTask {
        task: task.to_owned(),
        message: message.into(),
    }
}

/// Every group lists existing tasks, each task belongs to at most one group,
/// groups do not contain themselves, and every `wait` says what it waits for.
pub(super) fn check(def: &WorkflowDefinition) -> Result<(), DefinitionError> {
    let names: BTreeSet<&str> = def.tasks.iter().map(|t| t.name.as_str()).collect();
    let compensations: BTreeSet<&str> = def
        .tasks
        .iter()
        .filter_map(|t| t.compensation.as_deref())
        .collect();
    let mut parent: BTreeMap<&str, &str> = BTreeMap::new();
    for t in &def.tasks {
        match t.task_type {
            TaskType::Parallel | TaskType::Sequential => {
                let members = match t.parameters.get("tasks") {
                    Some(WorkflowData::List(m)) => m,
                    _ => {
                        return Err(invalid(
                            &t.name,
                            format!(
                                "a {} group lists its members in parameters.tasks",
                                t.task_type
                            ),
                        ))
                    }
                };
                for m in members {
                    if !names.contains(m.as_str()) {
                        return Err(invalid(&t.name, format!("member '{m}' does not exist")));
                    }
                    if compensations.contains(m.as_str()) {
                        return Err(invalid(
                            &t.name,
                            format!("member '{m}' is a compensation task"),
                        ));
                    }
                    if let Some(other) = parent.insert(m, &t.name) {
                        return Err(invalid(
                            &t.name,
                            format!("member '{m}' already belongs to group '{other}'"),
                        ));
                    }
                }
            }
            TaskType::Wait => {
                let signal = matches!(t.parameters.get("signal"), Some(WorkflowData::Str(s)) if !s.is_empty());
                let duration = matches!(t.parameters.get("duration_ms"), Some(WorkflowData::Int(ms)) if *ms >= 0);
                if !signal && !duration {
                    return Err(invalid(
                        &t.name,
                        "a wait task needs parameters.signal and/or parameters.duration",
                    ));
                }
            }
            _ => {}
        }
    }
    // No group may (transitively) contain itself.
    for start in parent.keys() {
        let mut seen = BTreeSet::from([*start]);
        let mut cur = *start;
        while let Some(p) = parent.get(cur) {
            if !seen.insert(p) {
                return Err(invalid(p, "groups contain each other"));
            }
            cur = p;
        }
    }
    Ok(())
}
