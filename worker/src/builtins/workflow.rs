//! The `workflow` kind: a child workflow. It starts an instance of the type
//! its `workflow_type` parameter names (of `version`, else the latest visible
//! when the child's partition decides the start), waits for it to end, and
//! completes with the child's task outputs, or fails with the child's end.
//!
//! - **Input**: the parent's workflow input (unless `inherit_input: false`),
//!   overlaid with the `input` parameter (a map), plus `weft_parent`:
//!   `{workflow_type, instance_id, task, attempt}` (the link back).
//! - **One child per attempt, across crashes**: the child's instance id, event
//!   id and key derive from the parent instance, the task and the attempt, so
//!   a redelivered dispatch of the same attempt finds the same child (its start
//!   again is a duplicate) and a retry starts a new one.
//! - **Any replica, any partition**: the start is a record on the child type's
//!   events topic and the wait reads the child's partition, so it does not
//!   matter which orchestrator owns it, nor whether one is killed meanwhile.
//! - **Cancellation**: when the attempt is cancelled (the parent was
//!   cancelled, or the task), the child is cancelled too.
//!
//! Output: `child_instance_id`, `child_workflow_type`, `child_state`, and the
//! outputs of the child's completed tasks merged (later tasks win).

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;
use weft_shared::avro::AvroRecord;
use weft_shared::config::KafkaSettings;
use weft_shared::data::{DataMap, Scalar, WorkflowData};
use weft_shared::event::{now_ms, META_DEFINITION_VERSION, META_SOURCE_KIND};
use weft_shared::ids::{EventId, InstanceId};
use weft_shared::kafka::{client_config, headers, Role};
use weft_shared::topics::headers as h;
use weft_shared::{Topics, WorkflowEvent, WorkflowEventType as T};

use crate::context::TaskContext;
use crate::error::TaskError;
use crate::handler::{Handler, HandlerFuture};

/// Metadata on a child's `workflow.created`: the parent, and the traceparent
/// of the parent's task attempt (the child's trace nests under it).
pub use weft_shared::observe::trace::{
    META_PARENT_INSTANCE, META_PARENT_TASK, META_PARENT_TRACEPARENT, META_PARENT_TYPE,
};

/// Starts a child workflow and waits for it.
#[derive(Clone)]
pub struct ChildWorkflow(Arc<Inner>);

struct Inner {
    settings: KafkaSettings,
    topics: Topics,
    producer: OnceLock<Result<FutureProducer, String>>,
}

impl ChildWorkflow {
    pub fn new(settings: KafkaSettings) -> Self {
        let topics = Topics::new(settings.topic_prefix.clone());
        Self(Arc::new(Inner {
            settings,
            topics,
            producer: OnceLock::new(),
        }))
    }
}

impl Inner {
    fn producer(&self) -> Result<FutureProducer, TaskError> {
        self.producer
            .get_or_init(|| {
                client_config(&self.settings, Role::Producer)
                    .create()
                    .map_err(|e| e.to_string())
            })
            .clone()
            .map_err(|e| TaskError::retryable("kafka_unavailable", e))
    }
}

/// The child of an attempt.
pub fn child_id(child_type: &str, ctx: &TaskContext) -> InstanceId {
    weft_shared::observe::children::child_instance_id(
        child_type,
        ctx.instance_id,
        &ctx.task_name,
        ctx.attempt,
    )
}

fn invalid(message: impl Into<String>) -> TaskError {
    TaskError::terminal("invalid_parameters", message)
}

/// The child's `workflow.created`.
fn created(
    ctx: &TaskContext,
    child_type: &str,
    version: Option<i64>,
) -> Result<WorkflowEvent, TaskError> {
    let id = child_id(child_type, ctx);
    let inherit = ctx.param_bool("inherit_input")?.unwrap_or(true);
    let mut input: DataMap = if inherit {
        ctx.input.clone()
    } else {
        DataMap::new()
    };
    match ctx.parameters.get("input") {
        None => {}
        Some(WorkflowData::Map(m)) => {
            input.extend(m.iter().map(|(k, v)| (k.clone(), scalar_data(v))));
        }
        Some(_) => return Err(invalid("parameter 'input' must be a map")),
    }
    let parent = [
        ("workflow_type", Scalar::Str(ctx.workflow_type.clone())),
        ("instance_id", Scalar::Str(ctx.instance_id.to_string())),
        ("task", Scalar::Str(ctx.task_name.clone())),
        ("attempt", Scalar::Int(i64::from(ctx.attempt))),
    ];
    input.insert(
        "weft_parent".into(),
        WorkflowData::Map(parent.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()),
    );
    let mut e = WorkflowEvent::new(
        T::WorkflowCreated,
        child_type,
        id,
        format!("create:{id}"),
        now_ms(),
    );
    e.event_id = EventId::derived(&[b"created", id.as_bytes()]);
    e.data = input;
    e.source_node_id = ctx.node_id.clone();
    e.metadata.insert(META_SOURCE_KIND.into(), "input".into());
    if let Some(v) = version {
        e.metadata
            .insert(META_DEFINITION_VERSION.into(), v.to_string());
    }
    e.metadata
        .insert(META_PARENT_TYPE.into(), ctx.workflow_type.clone());
    e.metadata
        .insert(META_PARENT_INSTANCE.into(), ctx.instance_id.to_string());
    e.metadata
        .insert(META_PARENT_TASK.into(), ctx.task_name.clone());
    if !ctx.traceparent.is_empty() {
        e.metadata
            .insert(META_PARENT_TRACEPARENT.into(), ctx.traceparent.clone());
    }
    Ok(e)
}

fn scalar_data(s: &Scalar) -> WorkflowData {
    match s {
        Scalar::Bool(b) => WorkflowData::Bool(*b),
        Scalar::Int(i) => WorkflowData::Int(*i),
        Scalar::Float(f) => WorkflowData::Float(*f),
        Scalar::Str(s) => WorkflowData::Str(s.clone()),
    }
}

async fn send(
    producer: &FutureProducer,
    topic: &str,
    e: &WorkflowEvent,
) -> Result<(i32, i64), TaskError> {
    let (key, payload) = (e.instance_id.to_string(), e.encode());
    let hdrs = headers(&[
        (h::EVENT_TYPE, e.event_type.as_str()),
        (h::IDEMPOTENCY_KEY, &e.idempotency_key),
    ]);
    let d = producer
        .send(
            FutureRecord::to(topic)
                .key(&key)
                .payload(&payload)
                .headers(hdrs),
            Duration::from_secs(30),
        )
        .await
        .map_err(|(err, _)| {
            TaskError::retryable(
                "kafka_unavailable",
                format!("could not start the child: {err}"),
            )
        })?;
    Ok((d.partition, d.offset))
}

/// How the child ended, and its tasks' outputs.
struct Ended {
    state: &'static str,
    outputs: DataMap,
    error: Option<String>,
}

/// Reads the child's partition from its start until the child ends, or `cancel` fires. Blocking.
fn wait_end(
    settings: &KafkaSettings,
    topic: &str,
    partition: i32,
    id: InstanceId,
    cancel: &CancellationToken,
) -> Result<Option<Ended>, TaskError> {
    let kafka =
        |e: rdkafka::error::KafkaError| TaskError::retryable("kafka_unavailable", e.to_string());
    let mut cfg = client_config(settings, Role::Consumer);
    cfg.set("group.id", format!("weft-child-{}", InstanceId::random()));
    let consumer: BaseConsumer = cfg.create().map_err(kafka)?;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Beginning)
        .map_err(kafka)?;
    consumer.assign(&tpl).map_err(kafka)?;
    let key = id.to_string();
    let mut outputs = DataMap::new();
    while !cancel.is_cancelled() {
        let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        if m.key() != Some(key.as_bytes()) {
            continue;
        }
        let Some(e) = m.payload().and_then(|p| WorkflowEvent::decode(p).ok()) else {
            continue;
        };
        // The child's history: what its orchestrator derived (results are inputs, repeated there).
        if !e.is_decision() && e.event_type != T::TaskCompleted {
            continue;
        }
        let state = match e.event_type {
            T::TaskCompleted => {
                outputs.extend(e.data.clone());
                continue;
            }
            T::WorkflowCompleted => "completed",
            T::WorkflowFailed => "failed",
            T::WorkflowCancelled => "cancelled",
            T::WorkflowTimeout => "timeout",
            T::CompensationCompleted => "compensated",
            _ => continue,
        };
        let error = (state != "completed").then(|| {
            e.data
                .get("message")
                .or_else(|| e.data.get("reason"))
                .map(|v| format!("{v:?}"))
                .unwrap_or_else(|| format!("{:?}", e.data))
        });
        return Ok(Some(Ended {
            state,
            outputs,
            error,
        }));
    }
    Ok(None)
}

/// The input that cancels the child of an attempt (derived: a repeat is a duplicate).
fn cancel_event(ctx: &TaskContext, child_type: &str, id: InstanceId) -> WorkflowEvent {
    let key = format!(
        "parent-cancel:{}:{}:{}",
        ctx.instance_id, ctx.task_name, ctx.attempt
    );
    let mut c = WorkflowEvent::new(T::WorkflowCancelled, child_type, id, key.clone(), now_ms());
    c.event_id = EventId::derived(&[
        b"input",
        child_type.as_bytes(),
        id.as_bytes(),
        key.as_bytes(),
    ]);
    c.data.insert(
        "reason".into(),
        WorkflowData::Str(format!("parent {} was cancelled", ctx.instance_id)),
    );
    c.metadata.insert(META_SOURCE_KIND.into(), "input".into());
    c
}

/// Appends `cancel` when the attempt is cancelled before the child ended.
async fn cancel_with_attempt(
    attempt: CancellationToken,
    finished: CancellationToken,
    producer: FutureProducer,
    topic: String,
    cancel: WorkflowEvent,
) {
    tokio::select! {
        () = finished.cancelled() => {}
        () = attempt.cancelled() => {
            if finished.is_cancelled() {
                return;
            }
            match send(&producer, &topic, &cancel).await {
                Ok(_) => tracing::info!(child = %cancel.instance_id, "child workflow cancelled with its parent"),
                Err(e) => tracing::warn!(child = %cancel.instance_id, error = %e, "could not cancel the child workflow"),
            }
        }
    }
}

impl Handler for ChildWorkflow {
    fn call(&self, ctx: TaskContext) -> HandlerFuture {
        let me = self.0.clone();
        Box::pin(async move { me.run(ctx).await })
    }
}

impl Inner {
    async fn run(&self, ctx: TaskContext) -> Result<DataMap, TaskError> {
        let child_type = ctx
            .param_str("workflow_type")?
            .ok_or_else(|| invalid("workflow needs parameter 'workflow_type' (the child's type)"))?
            .to_owned();
        let version = ctx.param_i64("version")?;
        let event = created(&ctx, &child_type, version)?;
        let id = event.instance_id;
        let topic = self.topics.events(&child_type);
        let producer = self.producer()?;
        let (partition, _) = send(&producer, &topic, &event).await?;
        tracing::info!(parent = %ctx.instance_id, task = %ctx.task_name, attempt = ctx.attempt, child_type = %child_type, child = %id, "child workflow started");
        // Cancelling the attempt cancels the child, from a task of its own: the
        // worker may abort this handler at once (no grace period).
        let finished = CancellationToken::new();
        tokio::spawn(cancel_with_attempt(
            ctx.cancel.clone(),
            finished.clone(),
            producer.clone(),
            topic.clone(),
            cancel_event(&ctx, &child_type, id),
        ));
        let (settings, t, cancel) = (self.settings.clone(), topic.clone(), ctx.cancel.clone());
        let waited =
            tokio::task::spawn_blocking(move || wait_end(&settings, &t, partition, id, &cancel))
                .await;
        let ended = match waited {
            Ok(Ok(Some(ended))) => ended,
            // Cancelled: the watcher cancels the child (this handler may be gone by then).
            Ok(Ok(None)) => {
                return Err(TaskError::retryable(
                    "cancelled",
                    format!("child {id} cancelled with the attempt"),
                ))
            }
            Ok(Err(e)) => {
                finished.cancel();
                return Err(e);
            }
            Err(e) => {
                finished.cancel();
                return Err(TaskError::retryable("child_wait_failed", e.to_string()));
            }
        };
        finished.cancel();
        if let Some(err) = ended.error {
            return Err(TaskError::terminal(
                format!("child_{}", ended.state),
                format!("child {child_type} {id} ended {}: {err}", ended.state),
            ));
        }
        let mut out = ended.outputs;
        out.insert(
            "child_instance_id".into(),
            WorkflowData::Str(id.to_string()),
        );
        out.insert("child_workflow_type".into(), WorkflowData::Str(child_type));
        out.insert("child_state".into(), WorkflowData::Str(ended.state.into()));
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_childs_start_carries_the_parent_and_its_task_span() {
        let mut ctx = TaskContext::for_test("workflow", DataMap::new(), DataMap::new());
        let plain = created(&ctx, "child", None).unwrap();
        assert_eq!(plain.metadata[META_PARENT_TASK], ctx.task_name);
        assert!(!plain.metadata.contains_key(META_PARENT_TRACEPARENT));
        ctx.traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into();
        let e = created(&ctx, "child", None).unwrap();
        assert_eq!(e.metadata[META_PARENT_TRACEPARENT], ctx.traceparent);
        assert_eq!(
            e.metadata[META_PARENT_INSTANCE],
            ctx.instance_id.to_string()
        );
        assert_eq!(e.instance_id, child_id("child", &ctx));
    }
}
