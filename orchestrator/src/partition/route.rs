//! Where the records of a task go: its lane's task topic (see
//! [`weft_shared::lanes`]), named by what the task's definition asks for.
//! Dispatches and control records of one task go to the same topic, keyed by
//! instance id like every record of the instance.

use std::collections::HashMap;

use weft_shared::lanes::Requirements;
use weft_shared::{Topics, WorkflowDefinition};

/// The lanes of the tasks this processor has routed, by definition version and task.
#[derive(Default)]
pub(crate) struct Routes {
    known: HashMap<(u32, String), (String, Requirements)>,
}

impl Routes {
    /// The task topic and requirements of `task` of `def` (the default lane
    /// when the definition or the task is unknown, or its requirements are
    /// invalid, which registration refuses).
    pub fn of(
        &mut self,
        topics: &Topics,
        workflow_type: &str,
        def: Option<&WorkflowDefinition>,
        task: &str,
    ) -> &(String, Requirements) {
        let version = def.map_or(0, |d| d.version);
        self.known
            .entry((version, task.to_owned()))
            .or_insert_with(|| {
                let req = def
                    .and_then(|d| d.task(task))
                    .and_then(|t| Requirements::of_task(t).ok())
                    .unwrap_or_default();
                (topics.lane(workflow_type, &req), req)
            })
    }
}
