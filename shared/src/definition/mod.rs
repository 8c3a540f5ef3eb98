//! Workflow definitions: a named, versioned DAG of tasks. Users write them in
//! YAML or JSON (see `parse`); `validate` checks the DAG and names the problem
//! and where. Definitions are kept in the compacted `weft.definitions` topic
//! keyed `<type>@<version>`; a running instance keeps the version it started with.

mod parse;
mod validate;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::data::DataMap;
use crate::model::{RetryConfiguration, TaskConfiguration, TimeoutConfiguration};

pub use parse::{parse_definition, DefinitionFormat};
pub use validate::topological_order;
pub use validate::{validate, DefinitionError};

/// A validated workflow definition.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WorkflowDefinition {
    /// The workflow type: `[a-z0-9_-]{1,100}`; names the topics.
    pub workflow_type: String,
    /// Assigned at registration: 1 for the first version, then +1.
    pub version: u32,
    pub description: String,
    /// Tasks in the order written; names are unique.
    pub tasks: Vec<TaskConfiguration>,
    /// Whole-workflow timeouts (execution timeout → state `timeout`).
    pub timeout_config: TimeoutConfiguration,
    /// Default retry policy for tasks that set none.
    pub default_retry: RetryConfiguration,
    /// Default input values merged under the start request's input.
    pub default_input: DataMap,
    pub tags: Vec<String>,
    pub metadata: BTreeMap<String, String>,
    /// Registration time (epoch ms); pins "latest version" lookups deterministically.
    pub registered_at_ms: i64,
}

impl WorkflowDefinition {
    /// The compacted-topic key: `<type>@<version>`.
    pub fn key(&self) -> String {
        definition_key(&self.workflow_type, self.version)
    }

    /// The task named `name`.
    pub fn task(&self, name: &str) -> Option<&TaskConfiguration> {
        self.tasks.iter().find(|t| t.name == name)
    }

    /// A minimal valid definition of `tasks` (for tests and the SDK).
    pub fn new(workflow_type: impl Into<String>, tasks: Vec<TaskConfiguration>) -> Self {
        Self {
            workflow_type: workflow_type.into(),
            version: 1,
            description: String::new(),
            tasks,
            timeout_config: TimeoutConfiguration::default(),
            default_retry: RetryConfiguration::default(),
            default_input: DataMap::new(),
            tags: Vec::new(),
            metadata: BTreeMap::new(),
            registered_at_ms: 0,
        }
    }
}

/// The compacted-topic key of a definition version.
pub fn definition_key(workflow_type: &str, version: u32) -> String {
    format!("{workflow_type}@{version}")
}
