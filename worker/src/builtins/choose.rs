//! The `choose` kind, a convenience for `decision` tasks: succeeds with
//! `{branches: [...]}` naming the downstream tasks to run — the parameter
//! `branch` (a task name or a list of them), or the value of the workflow
//! input key named by the parameter `from_input`. The orchestrator runs the
//! branches named and skips the others.

use weft_shared::data::{DataMap, WorkflowData};

use crate::context::TaskContext;
use crate::error::TaskError;
use crate::handler::{Handler, HandlerFuture};

/// The output key of a decision task's chosen branches.
pub const BRANCHES: &str = "branches";

/// Names the branches a decision task chose.
pub struct Choose;

fn names(value: &WorkflowData, what: &str) -> Result<Vec<String>, TaskError> {
    match value {
        WorkflowData::Str(s) => Ok(vec![s.clone()]),
        WorkflowData::List(l) => Ok(l.clone()),
        other => Err(TaskError::terminal(
            "invalid_parameters",
            format!(
                "{what} must be a task name or a list of them, got {}",
                other.to_json()
            ),
        )),
    }
}

fn branches(ctx: &TaskContext) -> Result<Vec<String>, TaskError> {
    if let Some(branch) = ctx.parameters.get("branch") {
        return names(branch, "parameter 'branch'");
    }
    let Some(key) = ctx.param_str("from_input")? else {
        return Err(TaskError::terminal(
            "invalid_parameters",
            "choose needs parameter 'branch' (a task name) or 'from_input' (an input key)",
        ));
    };
    match ctx.input.get(key) {
        Some(value) => names(value, &format!("input '{key}'")),
        None => Err(TaskError::terminal(
            "invalid_input",
            format!("the workflow input has no '{key}' to choose a branch from"),
        )),
    }
}

impl Handler for Choose {
    fn call(&self, ctx: TaskContext) -> HandlerFuture {
        Box::pin(async move {
            let chosen = branches(&ctx)?;
            Ok(DataMap::from([(
                BRANCHES.to_owned(),
                WorkflowData::List(chosen),
            )]))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn chooses_the_parameter_or_the_input_value() {
        let params = DataMap::from([("branch".to_owned(), "ship".into())]);
        let out = Choose
            .call(TaskContext::for_test("choose", DataMap::new(), params))
            .await
            .unwrap();
        assert_eq!(out[BRANCHES], WorkflowData::List(vec!["ship".into()]));

        let input = DataMap::from([("route".to_owned(), "express".into())]);
        let params = DataMap::from([("from_input".to_owned(), "route".into())]);
        let out = Choose
            .call(TaskContext::for_test("choose", input, params.clone()))
            .await
            .unwrap();
        assert_eq!(out[BRANCHES], WorkflowData::List(vec!["express".into()]));

        let err = Choose
            .call(TaskContext::for_test("choose", DataMap::new(), params))
            .await
            .unwrap_err();
        assert_eq!(err.error_type, "invalid_input");
        let err = Choose
            .call(TaskContext::for_test(
                "choose",
                DataMap::new(),
                DataMap::new(),
            ))
            .await
            .unwrap_err();
        assert_eq!(err.error_type, "invalid_parameters");
    }
}
