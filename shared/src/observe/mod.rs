//! Observability derived from history: what changed between two states of an
//! instance ([`transitions`]), the trace of a workflow as spans per workflow,
//! state and task attempt ([`trace`], encoded as OTLP JSON by [`otlp`]), and
//! per-type analytics — success rates, durations and bottleneck insights —
//! kept as mergeable aggregates ([`analytics`]); and the children a parent
//! started ([`children`]).
//!
//! Everything here is a pure function of events and states, so a trace or an
//! aggregate rebuilt from the topics equals the one built live.

pub mod analytics;
pub mod children;
pub mod otlp;
pub mod trace;

use crate::fsm::InstanceState;
use crate::state::{TaskState, WorkflowState};

/// One state change an event caused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Transition {
    /// The workflow moved (`from` is `None` when the instance was created).
    Workflow {
        from: Option<WorkflowState>,
        to: WorkflowState,
    },
    /// A task moved, or started a new attempt (then `from` is the state the
    /// previous attempt was left in).
    Task {
        task: String,
        attempt: u32,
        from: TaskState,
        to: TaskState,
    },
}

/// The transitions between `prev` (none: before `workflow.created`) and `next`,
/// workflow first, then tasks by name.
pub fn transitions(prev: Option<&InstanceState>, next: &InstanceState) -> Vec<Transition> {
    let mut out = Vec::new();
    let before = prev.map(|p| p.state);
    if before != Some(next.state) {
        out.push(Transition::Workflow {
            from: before,
            to: next.state,
        });
    }
    for (name, rt) in &next.tasks {
        let old = prev.and_then(|p| p.tasks.get(name));
        let (from, old_attempt) = old.map_or((TaskState::Pending, 0), |o| (o.state, o.attempt));
        if from != rt.state || old_attempt != rt.attempt {
            out.push(Transition::Task {
                task: name.clone(),
                attempt: rt.attempt,
                from,
                to: rt.state,
            });
        }
    }
    out
}

/// A stable 64-bit hash (FNV-1a) of `parts`, for span ids that must be the
/// same on every replica and after every rebuild.
pub(crate) fn stable_hash(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for b in part.iter().chain(std::iter::once(&0xff)) {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_child;
