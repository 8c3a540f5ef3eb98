//! What a workflow context allows its tasks ([`ContextLimits`]): the
//! capabilities they may require and the most of each resource one may ask
//! for, from a definition's `context` (kept in its metadata) or a start
//! request's.

use std::collections::{BTreeMap, BTreeSet};

use super::{LaneError, NodeCapabilities, Requirements, SLOTS};

/// Definition metadata key of the workflow context's allowed capabilities
/// (comma-separated), written from the definition's `context.capabilities`.
pub const CONTEXT_CAPABILITIES: &str = "weft.context.capabilities";
/// Definition metadata key of the workflow context's resource limits
/// (`name=amount`, comma-separated), from `context.resource_limits`.
pub const CONTEXT_RESOURCE_LIMITS: &str = "weft.context.resource_limits";

/// What a workflow context allows its tasks: when `capabilities` is not
/// empty, only those (plain or `key=value`); and at most `resource_limits`
/// of each resource it names.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ContextLimits {
    pub capabilities: BTreeSet<String>,
    pub resource_limits: BTreeMap<String, i64>,
}

impl ContextLimits {
    /// The limits a definition's metadata carries.
    pub fn of_metadata(metadata: &BTreeMap<String, String>) -> Result<Self, LaneError> {
        let list = |key: &str| -> Vec<String> {
            metadata
                .get(key)
                .map(|v| {
                    v.split(',')
                        .map(|s| s.trim().to_owned())
                        .filter(|s| !s.is_empty())
                        .collect()
                })
                .unwrap_or_default()
        };
        let node = NodeCapabilities::declared(
            &list(CONTEXT_CAPABILITIES),
            &list(CONTEXT_RESOURCE_LIMITS),
            1,
        )?;
        let mut resource_limits = node.capacity;
        if !list(CONTEXT_RESOURCE_LIMITS)
            .iter()
            .any(|r| r.split('=').next().map(str::trim) == Some(SLOTS))
        {
            resource_limits.remove(SLOTS);
        }
        Ok(Self {
            capabilities: node.capabilities,
            resource_limits,
        })
    }

    /// These limits as definition metadata entries.
    pub fn to_metadata(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if !self.capabilities.is_empty() {
            let caps: Vec<&str> = self.capabilities.iter().map(String::as_str).collect();
            out.push((CONTEXT_CAPABILITIES.to_owned(), caps.join(",")));
        }
        if !self.resource_limits.is_empty() {
            let limits: Vec<String> = self
                .resource_limits
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            out.push((CONTEXT_RESOURCE_LIMITS.to_owned(), limits.join(",")));
        }
        out
    }

    /// Why a task of `req` named `task` may not run in this context, if it may not.
    pub fn refuses(&self, task: &str, req: &Requirements) -> Option<String> {
        if !self.capabilities.is_empty() {
            if let Some(c) = req
                .capabilities
                .iter()
                .find(|c| !self.capabilities.contains(*c))
            {
                let allowed: Vec<&str> = self.capabilities.iter().map(String::as_str).collect();
                return Some(format!(
                    "task '{task}' requires capability '{c}', which the workflow context does not allow (allowed: {})",
                    allowed.join(", ")
                ));
            }
        }
        for (name, limit) in &self.resource_limits {
            let asked = req.amount(name);
            if asked > *limit {
                return Some(format!(
                    "task '{task}' asks for {asked} {name}, over the workflow context's limit of {limit}"
                ));
            }
        }
        None
    }
}
