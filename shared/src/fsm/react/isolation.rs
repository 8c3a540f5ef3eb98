//! What a task may read, by the workflow's `isolation_level` (ADR 0016),
//! decided here, where the dispatch is built, so nothing a task may not read
//! ever reaches its worker:
//!
//! | level | workflow input | other tasks' outputs |
//! |---|---|---|
//! | `read_uncommitted` | all | every task completed when it is scheduled, on any branch (timing-dependent) |
//! | `read_committed` (default) | all | its direct dependencies |
//! | `repeatable_read` | all | its whole causal past: every transitive dependency |
//! | `serializable` | only the keys its `reads` parameter lists | its direct dependencies |
//!
//! The level is the definition's `metadata.isolation_level`; the sealed
//! secrets (`weft.secrets`) always travel, since the worker opens only those
//! the task names.

use std::collections::{BTreeMap, BTreeSet};

use crate::data::{DataMap, WorkflowData};
use crate::definition::WorkflowDefinition;
use crate::fsm::InstanceState;
use crate::model::{IsolationLevel, TaskConfiguration};
use crate::secrets::SECRETS_KEY;

/// The definition metadata key naming the level.
pub const ISOLATION_KEY: &str = "isolation_level";
/// The task parameter listing the input keys a `serializable` task reads.
pub const READS_PARAMETER: &str = "reads";

/// The isolation level of `def` (the default when unset or unparsable: the
/// definition was validated at registration).
pub fn level_of(def: &WorkflowDefinition) -> IsolationLevel {
    def.metadata
        .get(ISOLATION_KEY)
        .and_then(|v| v.parse().ok())
        .unwrap_or_default()
}

fn names(v: Option<&WorkflowData>) -> Vec<String> {
    match v {
        Some(WorkflowData::List(l)) => l.clone(),
        Some(WorkflowData::Str(s)) => s
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect(),
        _ => Vec::new(),
    }
}

/// The input and upstream outputs `task` may read in `state`.
pub fn visible(
    level: IsolationLevel,
    state: &InstanceState,
    def: &WorkflowDefinition,
    task: &TaskConfiguration,
) -> (DataMap, BTreeMap<String, DataMap>) {
    let output = |name: &str| state.tasks.get(name).and_then(|t| t.output.clone());
    let direct = || -> BTreeMap<String, DataMap> {
        task.dependencies
            .iter()
            .filter_map(|d| Some((d.task_name.clone(), output(&d.task_name)?)))
            .collect()
    };
    match level {
        IsolationLevel::ReadCommitted => (state.input.clone(), direct()),
        IsolationLevel::ReadUncommitted => {
            let all = state
                .tasks
                .iter()
                .filter(|(name, _)| *name != &task.name)
                .filter_map(|(name, t)| Some((name.clone(), t.output.clone()?)))
                .collect();
            (state.input.clone(), all)
        }
        IsolationLevel::RepeatableRead => {
            let mut seen = BTreeSet::new();
            let mut stack: Vec<&str> = task
                .dependencies
                .iter()
                .map(|d| d.task_name.as_str())
                .collect();
            while let Some(name) = stack.pop() {
                if !seen.insert(name.to_owned()) {
                    continue;
                }
                if let Some(t) = def.task(name) {
                    stack.extend(t.dependencies.iter().map(|d| d.task_name.as_str()));
                }
            }
            let past = seen
                .into_iter()
                .filter_map(|n| Some((n.clone(), output(&n)?)))
                .collect();
            (state.input.clone(), past)
        }
        IsolationLevel::Serializable => {
            let reads = names(task.parameters.get(READS_PARAMETER));
            let input = state
                .input
                .iter()
                .filter(|(k, _)| k.as_str() == SECRETS_KEY || reads.iter().any(|r| r == *k))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            (input, direct())
        }
    }
}
