//! What the decider reads off a definition beyond its task list: which group
//! each task belongs to (a `parallel` or `sequential` task lists its members
//! in `parameters.tasks`), which tasks are compensations (they run only while
//! a saga compensates), and the parameters of `wait` tasks.

use std::collections::{BTreeMap, BTreeSet};

use crate::data::WorkflowData;
use crate::definition::WorkflowDefinition;
use crate::model::{TaskConfiguration, TaskType};

/// Structure of one definition, as the decider needs it.
#[derive(Default)]
pub(crate) struct Plan<'a> {
    /// Group of each member task.
    group_of: BTreeMap<&'a str, &'a str>,
    /// Members of each group, in declared order.
    members: BTreeMap<&'a str, Vec<&'a str>>,
    /// Tasks named as some task's compensation.
    compensations: BTreeSet<&'a str>,
}

impl<'a> Plan<'a> {
    pub(crate) fn new(def: Option<&'a WorkflowDefinition>) -> Self {
        let mut plan = Plan::default();
        let Some(def) = def else { return plan };
        for t in &def.tasks {
            if is_group(t) {
                let members = group_members(t);
                for m in &members {
                    plan.group_of.insert(m, t.name.as_str());
                }
                plan.members.insert(t.name.as_str(), members);
            }
            if let Some(c) = &t.compensation {
                plan.compensations.insert(c.as_str());
            }
        }
        plan
    }

    pub(crate) fn group_of(&self, task: &str) -> Option<&'a str> {
        self.group_of.get(task).copied()
    }

    pub(crate) fn members(&self, group: &str) -> &[&'a str] {
        self.members.get(group).map(Vec::as_slice).unwrap_or(&[])
    }

    /// A compensation task runs only while the workflow compensates.
    pub(crate) fn is_compensation(&self, task: &str) -> bool {
        self.compensations.contains(task)
    }

    /// The groups enclosing `task`, innermost first.
    pub(crate) fn ancestors(&self, task: &str) -> Vec<&'a str> {
        let mut out = Vec::new();
        let mut cur = task;
        while let Some(g) = self.group_of(cur) {
            if out.contains(&g) {
                break;
            }
            out.push(g);
            cur = g;
        }
        out
    }
}

/// Whether `t` is a group (its members run under it; it is never dispatched).
pub(crate) fn is_group(t: &TaskConfiguration) -> bool {
    matches!(t.task_type, TaskType::Parallel | TaskType::Sequential)
}

/// A group's members: `parameters.tasks`, a list of task names.
pub(crate) fn group_members(t: &TaskConfiguration) -> Vec<&str> {
    match t.parameters.get("tasks") {
        Some(WorkflowData::List(names)) => names.iter().map(String::as_str).collect(),
        _ => Vec::new(),
    }
}

/// A `wait` task's signal name (`parameters.signal`), if it waits for one.
pub(crate) fn wait_signal(t: &TaskConfiguration) -> Option<&str> {
    match t.parameters.get("signal") {
        Some(WorkflowData::Str(s)) if !s.is_empty() => Some(s),
        _ => None,
    }
}

/// A `wait` task's duration (`parameters.duration_ms`, or `parameters.duration`
/// like `"500ms"`, `"5s"`, `"2m"`, `"1h"`), or its signal's deadline.
pub(crate) fn wait_duration_ms(t: &TaskConfiguration) -> Option<u64> {
    match t.parameters.get("duration_ms") {
        Some(WorkflowData::Int(ms)) if *ms >= 0 => return Some(*ms as u64),
        _ => {}
    }
    match t.parameters.get("duration") {
        Some(WorkflowData::Int(ms)) if *ms >= 0 => Some(*ms as u64),
        Some(WorkflowData::Str(s)) => parse_duration_ms(s),
        _ => None,
    }
}

/// `"250ms"`, `"5s"`, `"2m"`, `"1h"` or a bare number of ms.
pub(crate) fn parse_duration_ms(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().ok()?;
    let factor = match unit.trim() {
        "" | "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        _ => return None,
    };
    n.checked_mul(factor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration_ms("250ms"), Some(250));
        assert_eq!(parse_duration_ms("5s"), Some(5_000));
        assert_eq!(parse_duration_ms("2m"), Some(120_000));
        assert_eq!(parse_duration_ms("40"), Some(40));
        assert_eq!(parse_duration_ms("5 parsecs"), None);
    }
}
