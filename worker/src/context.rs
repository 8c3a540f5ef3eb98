//! [`TaskContext`]: everything a handler knows about the task attempt it runs —
//! ids, input, parameters, upstream outputs, the deadline, a cancellation
//! token (fired by a cancel control record, the deadline, or the worker's
//! shutdown past its grace period) and [`TaskContext::heartbeat`], and the
//! secrets the task's definition names (opened by the registry's
//! [`crate::handler::Registry::resolve`] just before the handler runs).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use weft_shared::checkpoint::UPSTREAM_KEY;
use weft_shared::data::{DataMap, WorkflowData};
use weft_shared::ids::{ExecutionId, InstanceId};
use weft_shared::secrets::{SecretValue, Secrets, SECRETS_KEY};
use weft_shared::TaskDispatch;

use crate::checkpoint::Checkpointer;
use crate::error::TaskError;
use crate::usage::{ChildUsage, Reports};

/// The context of one task attempt, handed to its handler.
#[derive(Clone, Debug)]
pub struct TaskContext {
    pub instance_id: InstanceId,
    pub workflow_type: String,
    /// The task's name in the workflow definition.
    pub task_name: String,
    /// The handler name the dispatch asked for.
    pub handler: String,
    /// 1 for the first attempt.
    pub attempt: u32,
    /// This attempt's id (differs per attempt).
    pub execution_id: ExecutionId,
    /// Stable across attempts: use it to apply an effect outside Kafka once.
    pub idempotency_key: String,
    /// The workflow's input data (without the sealed secrets).
    pub input: DataMap,
    /// The instance's secrets that the task's definition names in its
    /// `secrets` parameter, in clear; empty for a task that names none.
    /// Printing shows `<redacted>` for every value.
    pub secrets: Secrets,
    /// The instance's sealed secrets, as the dispatch carried them.
    pub(crate) sealed: Option<String>,
    /// The task's parameters from the definition.
    pub parameters: DataMap,
    /// Outputs of the tasks this one depends on, by task name.
    pub upstream: BTreeMap<String, DataMap>,
    /// When the attempt must be finished, if the orchestrator set a deadline.
    pub deadline: Option<SystemTime>,
    /// The id of the worker node running the attempt.
    pub node_id: String,
    /// W3C traceparent of the attempt's task span (empty when unknown).
    pub traceparent: String,
    /// Fired when the attempt must stop: a cancel control record (the workflow
    /// or task was cancelled), the deadline passed, or the worker stops past
    /// its shutdown grace period. Return promptly; the handler is aborted after
    /// the grace period.
    pub cancel: CancellationToken,
    /// Asks the attempt's heartbeat loop for a heartbeat now.
    liveness: Liveness,
    /// What the handler reports about its run (child usage, metrics).
    pub(crate) reports: Reports,
    /// The last checkpoint an earlier attempt of this task saved: resume
    /// from it (`None` on a first attempt, or when none was saved).
    pub checkpoint: Option<DataMap>,
    /// Where [`TaskContext::save_checkpoint`] sends checkpoints.
    pub(crate) checkpointer: Checkpointer,
}

/// The handle behind [`TaskContext::heartbeat`]: wakes the attempt's task
/// heartbeat loop (none when the dispatch asked for no heartbeats).
#[derive(Clone, Debug, Default)]
pub(crate) struct Liveness(Option<Arc<Notify>>);

impl Liveness {
    pub(crate) fn new(notify: Arc<Notify>) -> Self {
        Self(Some(notify))
    }
}

impl TaskContext {
    /// The context of `dispatch` on node `node_id`.
    pub fn from_dispatch(
        dispatch: &TaskDispatch,
        node_id: &str,
        cancel: CancellationToken,
    ) -> Self {
        let deadline = u64::try_from(dispatch.deadline_ms)
            .ok()
            .filter(|ms| *ms > 0)
            .map(|ms| UNIX_EPOCH + Duration::from_millis(ms));
        // Handlers never see the envelope, only the secrets they name.
        let mut input = dispatch.input.clone();
        let sealed = match input.remove(SECRETS_KEY) {
            Some(WorkflowData::Str(s)) => Some(s),
            _ => None,
        };
        // The last checkpoint travels as a reserved upstream entry.
        let mut upstream = dispatch.upstream.clone();
        let checkpoint = upstream.remove(UPSTREAM_KEY);
        Self {
            instance_id: dispatch.instance_id,
            workflow_type: dispatch.workflow_type.clone(),
            task_name: dispatch.task_name.clone(),
            handler: dispatch.handler.clone(),
            attempt: dispatch.attempt,
            execution_id: dispatch.execution_id,
            idempotency_key: dispatch.idempotency_key.clone(),
            input,
            secrets: Secrets::new(),
            sealed,
            parameters: dispatch.parameters.clone(),
            upstream,
            deadline,
            node_id: node_id.to_owned(),
            traceparent: dispatch.traceparent.clone(),
            cancel,
            liveness: Liveness::default(),
            reports: Reports::default(),
            checkpoint,
            checkpointer: Checkpointer::None,
        }
    }

    /// The context with its heartbeat handle set.
    pub(crate) fn with_liveness(mut self, liveness: Liveness) -> Self {
        self.liveness = liveness;
        self
    }

    /// A context for calling a handler directly (tests, tools): attempt 1,
    /// random ids, the given input and parameters.
    pub fn for_test(handler: &str, input: DataMap, parameters: DataMap) -> Self {
        let instance_id = InstanceId::random();
        Self {
            instance_id,
            workflow_type: "test".to_owned(),
            task_name: handler.to_owned(),
            handler: handler.to_owned(),
            attempt: 1,
            execution_id: ExecutionId::random(),
            idempotency_key: format!("{instance_id}:{handler}"),
            input,
            secrets: Secrets::new(),
            sealed: None,
            parameters,
            upstream: BTreeMap::new(),
            deadline: None,
            node_id: "test".to_owned(),
            traceparent: String::new(),
            cancel: CancellationToken::new(),
            liveness: Liveness::default(),
            reports: Reports::default(),
            checkpoint: None,
            checkpointer: Checkpointer::Memory(Arc::default()),
        }
    }

    /// The secret `name`, if the task's definition names it and the instance carries it.
    pub fn secret(&self, name: &str) -> Option<&SecretValue> {
        self.secrets.get(name)
    }

    /// The workflow input overlaid with the task parameters (parameters win):
    /// what typed handlers deserialize.
    pub fn merged_input(&self) -> DataMap {
        let mut merged = self.input.clone();
        merged.extend(self.parameters.iter().map(|(k, v)| (k.clone(), v.clone())));
        merged
    }

    /// Time left before the deadline (zero once it passed), if there is one.
    pub fn remaining(&self) -> Option<Duration> {
        self.deadline.map(|d| {
            d.duration_since(SystemTime::now())
                .unwrap_or(Duration::ZERO)
        })
    }

    /// Whether the worker asked this attempt to stop.
    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// Reports that the handler is alive: a task heartbeat goes out now
    /// instead of at the next tick. Cheap (calls coalesce); does nothing when
    /// the task has no heartbeat timeout. The worker already heartbeats on its
    /// own while the handler runs, so this is only for handlers that want the
    /// orchestrator to hear from them at a point of their choosing.
    pub fn heartbeat(&self) {
        if let Some(notify) = &self.liveness.0 {
            notify.notify_one();
        }
    }

    /// Saves a checkpoint: if this attempt fails and the task is retried
    /// (on any worker, after any crash), the next attempt's
    /// [`TaskContext::checkpoint`] is the last one saved. Returns once the
    /// broker has it. Keep it small (the position to resume from): over 64
    /// KiB as JSON it is refused (terminal `checkpoint_too_large`); while the
    /// worker is stopping it fails with the retryable `checkpoint_not_saved`.
    pub async fn save_checkpoint(&self, data: DataMap) -> Result<(), TaskError> {
        self.checkpointer.save(data).await.map(|_| ())
    }

    /// The checkpoints a context made with [`TaskContext::for_test`] saved.
    pub fn saved_checkpoints(&self) -> Vec<DataMap> {
        self.checkpointer.saved()
    }

    /// Reports a number about this attempt (rows processed, bytes sent, …):
    /// it travels in the result as `weft.metric.<name>` and shows in the
    /// task's trace span. At most 32 names; non-finite values are ignored.
    pub fn record_metric(&self, name: &str, value: f64) {
        self.reports.metric(name, value);
    }

    /// Reports what a child process the handler ran and reaped used: the
    /// attempt's CPU time and peak memory are then its children's (added up,
    /// the largest) rather than the worker process's.
    pub fn report_child_usage(&self, usage: ChildUsage) {
        self.reports.child(usage);
    }

    /// A string parameter; `Ok(None)` when absent, `invalid_parameters` when not a string.
    pub fn param_str(&self, name: &str) -> Result<Option<&str>, TaskError> {
        match self.parameters.get(name) {
            None => Ok(None),
            Some(WorkflowData::Str(s)) => Ok(Some(s)),
            Some(other) => Err(invalid(name, "a string", other)),
        }
    }

    /// An integer parameter (an integer, or a string holding one).
    pub fn param_i64(&self, name: &str) -> Result<Option<i64>, TaskError> {
        match self.parameters.get(name) {
            None => Ok(None),
            Some(WorkflowData::Int(i)) => Ok(Some(*i)),
            Some(WorkflowData::Str(s)) => s
                .trim()
                .parse()
                .map(Some)
                .map_err(|_| invalid(name, "an integer", &WorkflowData::Str(s.clone()))),
            Some(other) => Err(invalid(name, "an integer", other)),
        }
    }

    /// A number parameter (a float, an integer, or a string holding one).
    pub fn param_f64(&self, name: &str) -> Result<Option<f64>, TaskError> {
        match self.parameters.get(name) {
            None => Ok(None),
            Some(WorkflowData::Float(f)) => Ok(Some(*f)),
            Some(WorkflowData::Int(i)) => Ok(Some(*i as f64)),
            Some(WorkflowData::Str(s)) => s
                .trim()
                .parse()
                .map(Some)
                .map_err(|_| invalid(name, "a number", &WorkflowData::Str(s.clone()))),
            Some(other) => Err(invalid(name, "a number", other)),
        }
    }

    /// A boolean parameter (a boolean, or the string `true` / `false`).
    pub fn param_bool(&self, name: &str) -> Result<Option<bool>, TaskError> {
        match self.parameters.get(name) {
            None => Ok(None),
            Some(WorkflowData::Bool(b)) => Ok(Some(*b)),
            Some(WorkflowData::Str(s)) if s.eq_ignore_ascii_case("true") => Ok(Some(true)),
            Some(WorkflowData::Str(s)) if s.eq_ignore_ascii_case("false") => Ok(Some(false)),
            Some(other) => Err(invalid(name, "a boolean", other)),
        }
    }
}

fn invalid(name: &str, expected: &str, got: &WorkflowData) -> TaskError {
    TaskError::terminal(
        "invalid_parameters",
        format!(
            "parameter '{name}' must be {expected}, got {}",
            got.to_json()
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_win_over_input_and_accessors_check_types() {
        let input = DataMap::from([("a".into(), 1i64.into()), ("b".into(), "in".into())]);
        let params = DataMap::from([
            ("b".into(), "param".into()),
            ("n".into(), "42".into()),
            ("t".into(), "TRUE".into()),
        ]);
        let ctx = TaskContext::for_test("x", input, params);
        let merged = ctx.merged_input();
        assert_eq!(merged["a"], WorkflowData::Int(1));
        assert_eq!(merged["b"], WorkflowData::Str("param".into()));
        assert_eq!(ctx.param_i64("n").unwrap(), Some(42));
        assert_eq!(ctx.param_bool("t").unwrap(), Some(true));
        assert_eq!(ctx.param_str("missing").unwrap(), None);
        let err = ctx.param_bool("b").unwrap_err();
        assert_eq!(err.error_type, "invalid_parameters");
        assert!(err.message.contains("'b'"), "{}", err.message);
    }
}
