//! The children a parent instance started (ADR 0019), derived from its state
//! and definition alone: a `workflow` task's attempt `n` starts exactly one
//! child, whose id derives from `(child type, parent, task, n)`. So the
//! children of an instance are known on any replica from the log, with no
//! index to keep (a rebuilt projection answers the same).

use crate::data::WorkflowData;
use crate::definition::WorkflowDefinition;
use crate::fsm::InstanceState;
use crate::ids::InstanceId;

/// The handler name of the child-workflow built-in.
pub const CHILD_HANDLER: &str = "workflow";

/// The child that attempt `attempt` of the parent's task `task` starts.
pub fn child_instance_id(
    child_type: &str,
    parent: InstanceId,
    task: &str,
    attempt: u32,
) -> InstanceId {
    InstanceId::for_idempotency_key(child_type, &format!("child:{parent}:{task}:{attempt}"))
}

/// A child an attempt of the parent may have started.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChildRef {
    pub workflow_type: String,
    pub instance_id: InstanceId,
    /// The parent's task and attempt that started it.
    pub task: String,
    pub attempt: u32,
}

/// Every child the attempts dispatched so far of `parent`'s `workflow` tasks
/// may have started, by task (definition order), then attempt. An attempt
/// whose worker never sent the start has no child: look each one up.
pub fn children_of(parent: &InstanceState, def: &WorkflowDefinition) -> Vec<ChildRef> {
    let mut out = Vec::new();
    for cfg in &def.tasks {
        if cfg.handler != CHILD_HANDLER {
            continue;
        }
        let Some(WorkflowData::Str(child_type)) = cfg.parameters.get("workflow_type") else {
            continue;
        };
        let Some(rt) = parent.tasks.get(&cfg.name) else {
            continue;
        };
        for attempt in 1..=rt.attempt {
            out.push(ChildRef {
                workflow_type: child_type.clone(),
                instance_id: child_instance_id(child_type, parent.instance_id, &cfg.name, attempt),
                task: cfg.name.clone(),
                attempt,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::DataMap;
    use crate::event::WorkflowEventType as T;
    use crate::fsm::tests::{Defs, Driver};
    use crate::model::{RetryConfiguration, TaskConfiguration};

    #[test]
    fn each_dispatched_attempt_of_a_workflow_task_names_one_child() {
        let mut spawn = TaskConfiguration::new("spawn", CHILD_HANDLER);
        spawn
            .parameters
            .insert("workflow_type".into(), WorkflowData::Str("kid".into()));
        spawn.retry_config = RetryConfiguration {
            max_attempts: 2,
            base_delay_ms: 10,
            ..Default::default()
        };
        let other = TaskConfiguration::new("other", "noop");
        let mut d = Driver::new(Defs(vec![WorkflowDefinition::new(
            "mom",
            vec![spawn, other],
        )]));
        d.input(T::WorkflowCreated, None, DataMap::new());
        let def = d.defs.0[0].clone();
        let first = children_of(d.wf(), &def);
        assert_eq!(first.len(), 1, "{first:?}");
        assert_eq!(first[0].workflow_type, "kid");
        assert_eq!(first[0].task, "spawn");
        assert_eq!(first[0].attempt, 1);
        assert_eq!(
            first[0].instance_id,
            child_instance_id("kid", d.id, "spawn", 1)
        );
        d.input(T::TaskStarted, Some(("spawn", 1)), DataMap::new());
        d.fail_task("spawn", 1);
        d.fire_due();
        let both = children_of(d.wf(), &def);
        assert_eq!(both.len(), 2, "{both:?}");
        assert_eq!(both[1].attempt, 2);
        assert_ne!(both[0].instance_id, both[1].instance_id);
    }
}
