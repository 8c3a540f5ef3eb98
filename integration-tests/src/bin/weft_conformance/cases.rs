//! The cases: each registers a workflow type of its own, makes the worker do
//! one thing of `docs/protocol.md`, and checks what it did through the API
//! (the history) and on the wire (the records it wrote, its offsets).

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use serde_json::{json, Value};
use weft_integration_tests::{wait_for, ApiClient};
use weft_orchestrator::partitioner::Partitioner;
use weft_shared::avro::AvroRecord;
use weft_shared::control::{TaskControl, TaskHeartbeat};
use weft_shared::event::now_ms;
use weft_shared::ids::{EventId, ExecutionId, InstanceId, TaskId};
use weft_shared::model::{ExecutionSemantics, TaskPriority, TaskType, TimeoutConfiguration};
use weft_shared::topics::headers as h;
use weft_shared::{DataMap, TaskDispatch, WorkflowData, WorkflowEvent, WorkflowEventType as T};

use crate::wire::{Rec, Wire};

/// What every case gets.
pub struct Ctx {
    pub api: ApiClient,
    pub wire: Arc<Wire>,
    pub timeout: Duration,
    pub transactions: bool,
}

type CaseFuture = Pin<Box<dyn Future<Output = Result<String>> + Send>>;

/// One case: its name, what it checks, its definition (given its type), and how it runs.
pub struct Case {
    pub name: &'static str,
    pub about: &'static str,
    pub definition: fn(&str) -> String,
    pub run: fn(Arc<Ctx>, String) -> CaseFuture,
}

macro_rules! case {
    ($name:literal, $about:literal, $def:expr, $run:path) => {
        Case {
            name: $name,
            about: $about,
            definition: $def,
            run: |ctx, ty| Box::pin($run(ctx, ty)),
        }
    };
}

pub static CASES: &[Case] = &[
    case!(
        "normal",
        "tasks complete; every event's key, partition, headers, metadata, ids and causation follow the protocol",
        |ty| format!(
            "type: {ty}\ntasks:\n  - {{name: first, handler: noop}}\n  - {{name: second, handler: sleep, parameters: {{ms: 300}}, depends_on: [first]}}\n"
        ),
        normal
    ),
    case!(
        "terminal",
        "a terminal failure is reported as such and not retried",
        |ty| format!(
            "type: {ty}\ntasks:\n  - {{name: t, handler: fail, parameters: {{error_type: bad_input, message: no good, retryable: false}}, retry: {{max_attempts: 3, backoff: fixed, base_delay: 100ms}}}}\n"
        ),
        terminal
    ),
    case!(
        "retryable",
        "a retryable failure is retried and the next attempt completes",
        |ty| format!(
            "type: {ty}\ntasks:\n  - {{name: t, handler: fail, parameters: {{fail_attempts: 1, error_type: flaky_io}}, retry: {{max_attempts: 3, backoff: fixed, base_delay: 100ms, retry_on: [flaky_io]}}}}\n"
        ),
        retryable
    ),
    case!(
        "retry_on",
        "the error type is reported verbatim: one retry_on does not list is not retried",
        |ty| format!(
            "type: {ty}\ntasks:\n  - {{name: t, handler: fail, parameters: {{error_type: other_error}}, retry: {{max_attempts: 3, backoff: fixed, base_delay: 100ms, retry_on: [flaky_io]}}}}\n"
        ),
        retry_on
    ),
    case!(
        "cancel",
        "a cancel stops a running handler early, no result is published, the record is committed",
        |ty| format!(
            "type: {ty}\ntasks:\n  - {{name: nap, handler: sleep, parameters: {{ms: 8000}}, timeout: {{grace: 500ms}}}}\n"
        ),
        cancel
    ),
    case!(
        "heartbeat",
        "Avro heartbeats keep a 5 s task with a 2 s heartbeat timeout alive",
        |ty| format!(
            "type: {ty}\ntasks:\n  - {{name: beat, handler: sleep, parameters: {{ms: 5000}}, timeout: {{heartbeat: 2s}}, retry: {{max_attempts: 1}}}}\n"
        ),
        heartbeat
    ),
    case!(
        "duplicate",
        "duplicate dispatches, while the attempt runs and after, run nothing twice",
        |ty| format!(
            "type: {ty}\ntasks:\n  - {{name: slow, handler: sleep, parameters: {{ms: 1500}}}}\n  - {{name: after, handler: noop, depends_on: [slow]}}\n"
        ),
        duplicate
    ),
    case!(
        "at_least_once",
        "an at_least_once record is committed only after its result is on the wire",
        |ty| format!(
            "type: {ty}\ntasks:\n  - {{name: t, handler: sleep, parameters: {{ms: 2000}}, semantics: at_least_once}}\n"
        ),
        at_least_once
    ),
    case!(
        "at_most_once",
        "an at_most_once record is committed before its handler finishes",
        |ty| format!(
            "type: {ty}\ntasks:\n  - {{name: t, handler: sleep, parameters: {{ms: 3000}}, semantics: at_most_once}}\n"
        ),
        at_most_once
    ),
    case!(
        "exactly_once",
        "an exactly_once dispatch is refused (exactly_once_unsupported) without transactions",
        |ty| format!("type: {ty}\ntasks:\n  - {{name: t, handler: noop}}\n"),
        exactly_once
    ),
    case!(
        "dlq",
        "an undecodable task record goes to the DLQ with its reason and source, and is committed",
        |ty| format!("type: {ty}\ntasks:\n  - {{name: t, handler: noop}}\n"),
        dlq
    ),
];

// -- helpers ---------------------------------------------------------------------

const POLL: Duration = Duration::from_millis(250);

async fn start(ctx: &Ctx, ty: &str) -> Result<String> {
    let v = ctx
        .api
        .start(ty, json!({"case": ty}), Some(&format!("{ty}-1")))
        .await?;
    Ok(v["instance_id"]
        .as_str()
        .context("no instance_id")?
        .to_owned())
}

async fn wait_state(
    ctx: &Ctx,
    ty: &str,
    id: &str,
    what: &str,
    pred: impl Fn(&Value) -> bool,
) -> Result<Value> {
    wait_for(what, ctx.timeout, POLL, || async {
        let v = ctx.api.get(ty, id).await?;
        anyhow::Ok(pred(&v).then_some(v))
    })
    .await
}

async fn wait_ended(ctx: &Ctx, ty: &str, id: &str, want: &str) -> Result<Value> {
    let v = wait_state(ctx, ty, id, &format!("the workflow to end {want}"), |v| {
        matches!(
            v["state"].as_str(),
            Some("completed" | "failed" | "cancelled" | "timeout" | "compensated")
        )
    })
    .await?;
    ensure!(
        v["state"] == want,
        "the workflow ended {} instead of {want}: {}",
        v["state"],
        summary(&history(ctx, ty, id).await.unwrap_or_default())
    );
    Ok(v)
}

fn task_state(v: &Value, name: &str) -> String {
    v["tasks"]
        .as_array()
        .and_then(|ts| ts.iter().find(|t| t["name"] == name))
        .and_then(|t| t["state"].as_str())
        .unwrap_or("pending")
        .to_owned()
}

async fn history(ctx: &Ctx, ty: &str, id: &str) -> Result<Vec<Value>> {
    Ok(ctx.api.events(ty, id).await?["events"]
        .as_array()
        .context("events")?
        .clone())
}

/// `event_type(task)` of each event, for error messages.
fn summary(events: &[Value]) -> String {
    events
        .iter()
        .map(|e| {
            let t = e["metadata"]["weft.task"].as_str().unwrap_or("");
            if t.is_empty() {
                e["event_type"].as_str().unwrap_or("?").to_owned()
            } else {
                format!("{}({t})", e["event_type"].as_str().unwrap_or("?"))
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn count(events: &[Value], ty: &str, task: &str) -> usize {
    events
        .iter()
        .filter(|e| e["event_type"] == ty && e["metadata"]["weft.task"] == task)
        .count()
}

/// A clean history: no rejected input (`error.occurred`).
fn clean(events: &[Value]) -> Result<()> {
    if let Some(e) = events.iter().find(|e| e["event_type"] == "error.occurred") {
        bail!("an input was rejected: {}", e["metadata"]["weft.reason"]);
    }
    Ok(())
}

/// The dispatches of `id`, by attempt key, with their records.
async fn dispatches(ctx: &Ctx, ty: &str, id: &str) -> Result<Vec<(Rec, TaskDispatch)>> {
    let mut out = Vec::new();
    for r in ctx.wire.read(&ctx.wire.topics.tasks(ty)).await? {
        if r.key_str() != id || r.headers.contains_key(h::CONTROL) {
            continue;
        }
        if let Ok(d) = TaskDispatch::decode(&r.value) {
            out.push((r, d));
        }
    }
    Ok(out)
}

async fn dispatch_of(
    ctx: &Ctx,
    ty: &str,
    id: &str,
    task: &str,
    attempt: u32,
) -> Result<(Rec, TaskDispatch)> {
    wait_for(
        &format!("the dispatch of {task} attempt {attempt}"),
        ctx.timeout,
        POLL,
        || async {
            anyhow::Ok(
                dispatches(ctx, ty, id)
                    .await?
                    .into_iter()
                    .find(|(_, d)| d.task_name == task && d.attempt == attempt),
            )
        },
    )
    .await
}

/// The events on the wire published for `execution`, with their records.
async fn events_of(
    ctx: &Ctx,
    ty: &str,
    execution: ExecutionId,
) -> Result<Vec<(Rec, WorkflowEvent)>> {
    let mut out = Vec::new();
    for r in ctx.wire.read(&ctx.wire.topics.events(ty)).await? {
        let Ok(e) = WorkflowEvent::decode(&r.value) else {
            continue;
        };
        if !e.is_decision()
            && e.metadata.get("weft.execution_id").map(String::as_str)
                == Some(&execution.to_string())
        {
            out.push((r, e));
        }
    }
    Ok(out)
}

fn of_type(events: &[(Rec, WorkflowEvent)], t: T) -> Vec<&(Rec, WorkflowEvent)> {
    events.iter().filter(|(_, e)| e.event_type == t).collect()
}

/// The records of `t` for `d`'s attempt, each checked field by field: exactly
/// one result, at least one `task.started` (an attempt stopped by a rebalance
/// runs again and starts again; the orchestrator drops the repeat).
async fn checked_result(
    ctx: &Ctx,
    d: &TaskDispatch,
    dispatch_rec: &Rec,
    events: &[(Rec, WorkflowEvent)],
    t: T,
) -> Result<WorkflowEvent> {
    let found = of_type(events, t);
    let expected = if t == T::TaskStarted {
        !found.is_empty()
    } else {
        found.len() == 1
    };
    ensure!(
        expected,
        "{} records of {t} for {} attempt {} on the wire, expected {}",
        found.len(),
        d.task_name,
        d.attempt,
        if t == T::TaskStarted {
            "at least 1"
        } else {
            "1"
        }
    );
    for (rec, e) in &found {
        check_record(ctx, d, dispatch_rec, rec, e, t).await?;
    }
    Ok(found[0].1.clone())
}

async fn check_record(
    ctx: &Ctx,
    d: &TaskDispatch,
    dispatch_rec: &Rec,
    rec: &Rec,
    e: &WorkflowEvent,
    t: T,
) -> Result<()> {
    let kind = t.as_str().trim_start_matches("task.");
    let what = format!("{t} of {} attempt {}", d.task_name, d.attempt);
    ensure!(
        rec.key_str() == d.instance_id.to_string(),
        "{what}: key {:?} is not the instance id",
        rec.key_str()
    );
    let n = ctx
        .wire
        .partitions(&ctx.wire.topics.events(&d.workflow_type))
        .await?;
    let want = Partitioner::Murmur2.partition(d.instance_id.to_string().as_bytes(), n);
    ensure!(
        rec.partition == want,
        "{what}: on partition {} but murmur2 of the instance id puts it on {want} (is the producer's partitioner murmur2_random?)",
        rec.partition
    );
    ensure!(
        rec.partition == dispatch_rec.partition,
        "{what}: not on the partition of its dispatch"
    );
    ensure!(
        e.workflow_type == d.workflow_type && e.instance_id == d.instance_id,
        "{what}: wrong workflow type or instance"
    );
    ensure!(
        e.sequence_number == 0,
        "{what}: sequence_number must be 0, is {}",
        e.sequence_number
    );
    let key = format!("{}:{kind}", d.execution_id);
    ensure!(
        e.idempotency_key == key,
        "{what}: idempotency key {:?}, expected {key:?}",
        e.idempotency_key
    );
    ensure!(
        e.causation_id == Some(d.scheduled_event_id),
        "{what}: causation_id must be the dispatch's scheduled_event_id"
    );
    let mut chain = d.correlation_chain.clone();
    chain.push(d.scheduled_event_id);
    ensure!(
        e.correlation_chain == chain,
        "{what}: correlation_chain must be the dispatch's plus its scheduled_event_id"
    );
    for (k, v) in [
        ("weft.task", d.task_name.clone()),
        ("weft.attempt", d.attempt.to_string()),
        ("weft.execution_id", d.execution_id.to_string()),
        ("weft.source_kind", "input".to_owned()),
    ] {
        ensure!(
            e.metadata.get(k) == Some(&v),
            "{what}: metadata {k} is {:?}, expected {v:?}",
            e.metadata.get(k)
        );
    }
    ensure!(
        rec.headers.get(h::EVENT_TYPE).map(String::as_str) == Some(t.as_str()),
        "{what}: header {} is {:?}",
        h::EVENT_TYPE,
        rec.headers.get(h::EVENT_TYPE)
    );
    ensure!(
        rec.headers.get(h::IDEMPOTENCY_KEY) == Some(&key),
        "{what}: header {} is {:?}",
        h::IDEMPOTENCY_KEY,
        rec.headers.get(h::IDEMPOTENCY_KEY)
    );
    if !d.traceparent.is_empty() {
        ensure!(
            rec.headers.get(h::TRACEPARENT) == Some(&d.traceparent),
            "{what}: header traceparent must be the dispatch's"
        );
    }
    let skew = (e.timestamp_ms - now_ms()).abs();
    ensure!(
        skew < 600_000,
        "{what}: timestamp_ms is {skew} ms away from now"
    );
    if t == T::TaskStarted {
        ensure!(
            e.data_str("handler") == Some(d.handler.as_str())
                && e.data_str("node_id").is_some_and(|n| !n.is_empty()),
            "{what}: data must be {{handler, node_id}}, is {:?}",
            e.data
        );
    }
    if t == T::TaskFailed {
        ensure!(
            e.data_str("error_type").is_some()
                && e.data_str("message").is_some()
                && matches!(e.data.get("retryable"), Some(WorkflowData::Bool(_))),
            "{what}: data must be {{error_type, message, retryable}}, is {:?}",
            e.data
        );
    }
    Ok(())
}

fn failure(e: &WorkflowEvent) -> (String, bool) {
    (
        e.data_str("error_type").unwrap_or_default().to_owned(),
        matches!(e.data.get("retryable"), Some(WorkflowData::Bool(true))),
    )
}

// -- the cases --------------------------------------------------------------------

async fn normal(ctx: Arc<Ctx>, ty: String) -> Result<String> {
    let id = start(&ctx, &ty).await?;
    wait_ended(&ctx, &ty, &id, "completed").await?;
    let hist = history(&ctx, &ty, &id).await?;
    clean(&hist)?;
    for task in ["first", "second"] {
        ensure!(
            count(&hist, "task.started", task) == 1 && count(&hist, "task.completed", task) == 1,
            "{task}: not started and completed once each: {}",
            summary(&hist)
        );
        let (rec, d) = dispatch_of(&ctx, &ty, &id, task, 1).await?;
        let events = events_of(&ctx, &ty, d.execution_id).await?;
        checked_result(&ctx, &d, &rec, &events, T::TaskStarted).await?;
        let done = checked_result(&ctx, &d, &rec, &events, T::TaskCompleted).await?;
        if task == "second" {
            ensure!(
                done.data.get("slept_ms") == Some(&WorkflowData::Int(300)),
                "sleep's output must be {{slept_ms: 300}}, is {:?}",
                done.data
            );
        }
    }
    Ok("2 tasks, 4 events as the protocol says".into())
}

async fn terminal(ctx: Arc<Ctx>, ty: String) -> Result<String> {
    let id = start(&ctx, &ty).await?;
    wait_ended(&ctx, &ty, &id, "failed").await?;
    let hist = history(&ctx, &ty, &id).await?;
    clean(&hist)?;
    ensure!(
        count(&hist, "task.scheduled", "t") == 1,
        "a terminal failure was retried: {}",
        summary(&hist)
    );
    let (rec, d) = dispatch_of(&ctx, &ty, &id, "t", 1).await?;
    let events = events_of(&ctx, &ty, d.execution_id).await?;
    let failed = checked_result(&ctx, &d, &rec, &events, T::TaskFailed).await?;
    let (error_type, retryable) = failure(&failed);
    ensure!(
        error_type == "bad_input" && !retryable && failed.data_str("message") == Some("no good"),
        "task.failed data is {:?}, expected error_type bad_input, message \"no good\", retryable false",
        failed.data
    );
    Ok("failed once, not retried".into())
}

async fn retryable(ctx: Arc<Ctx>, ty: String) -> Result<String> {
    let id = start(&ctx, &ty).await?;
    wait_ended(&ctx, &ty, &id, "completed").await?;
    let hist = history(&ctx, &ty, &id).await?;
    clean(&hist)?;
    let (rec1, d1) = dispatch_of(&ctx, &ty, &id, "t", 1).await?;
    let failed = checked_result(
        &ctx,
        &d1,
        &rec1,
        &events_of(&ctx, &ty, d1.execution_id).await?,
        T::TaskFailed,
    )
    .await?;
    let (error_type, retryable) = failure(&failed);
    ensure!(
        error_type == "flaky_io" && retryable,
        "attempt 1 failed with {:?}, expected retryable flaky_io",
        failed.data
    );
    let (rec2, d2) = dispatch_of(&ctx, &ty, &id, "t", 2).await?;
    ensure!(
        d2.execution_id != d1.execution_id,
        "attempt 2 has attempt 1's execution id"
    );
    let e2 = events_of(&ctx, &ty, d2.execution_id).await?;
    checked_result(&ctx, &d2, &rec2, &e2, T::TaskStarted).await?;
    let done = checked_result(&ctx, &d2, &rec2, &e2, T::TaskCompleted).await?;
    ensure!(
        done.data.get("attempt") == Some(&WorkflowData::Int(2)),
        "attempt 2's output is {:?}",
        done.data
    );
    Ok("attempt 1 failed retryably, attempt 2 completed".into())
}

async fn retry_on(ctx: Arc<Ctx>, ty: String) -> Result<String> {
    let id = start(&ctx, &ty).await?;
    wait_ended(&ctx, &ty, &id, "failed").await?;
    let hist = history(&ctx, &ty, &id).await?;
    clean(&hist)?;
    ensure!(
        count(&hist, "task.scheduled", "t") == 1,
        "an error retry_on does not list was retried: {}",
        summary(&hist)
    );
    let (rec, d) = dispatch_of(&ctx, &ty, &id, "t", 1).await?;
    let failed = checked_result(
        &ctx,
        &d,
        &rec,
        &events_of(&ctx, &ty, d.execution_id).await?,
        T::TaskFailed,
    )
    .await?;
    ensure!(
        failure(&failed) == ("other_error".into(), true),
        "task.failed data is {:?}",
        failed.data
    );
    Ok("other_error reported verbatim and not retried".into())
}

async fn cancel(ctx: Arc<Ctx>, ty: String) -> Result<String> {
    let id = start(&ctx, &ty).await?;
    wait_state(&ctx, &ty, &id, "nap to run", |v| {
        task_state(v, "nap") == "running"
    })
    .await?;
    let r = ctx
        .api
        .control(&ty, &id, "cancel", json!({"reason": "conformance"}), None)
        .await?;
    ensure!(
        r.status.as_u16() == 202,
        "cancel answered {} {}",
        r.status,
        r.body
    );
    let cancelled_at = Instant::now();
    wait_ended(&ctx, &ty, &id, "cancelled").await?;
    let (rec, d) = dispatch_of(&ctx, &ty, &id, "nap", 1).await?;
    let tasks = ctx.wire.topics.tasks(&ty);
    let control = wait_for("the control record", ctx.timeout, POLL, || async {
        let found = ctx.wire.read(&tasks).await?.into_iter().find(|r| {
            r.key_str() == id && r.headers.get(h::CONTROL).map(String::as_str) == Some("cancel")
        });
        anyhow::Ok(found)
    })
    .await?;
    let c = <TaskControl as AvroRecord>::decode(&control.value)
        .context("the control record is not an Avro TaskControl")?;
    ensure!(
        c.execution_id == d.execution_id,
        "the control record names another attempt"
    );
    ensure!(
        control.partition == rec.partition,
        "the control record is not on its dispatch's partition"
    );
    // The sleep had 8 s to go: a worker that stops the handler finishes the record long before.
    let last = rec.offset.max(control.offset);
    let took = ctx
        .wire
        .wait_committed_past(
            &tasks,
            rec.partition,
            last,
            Duration::from_secs(6),
            "after the cancel",
        )
        .await
        .context(
            "the handler was not stopped (its record was not done) within 6 s of the cancel",
        )?;
    let events = events_of(&ctx, &ty, d.execution_id).await?;
    ensure!(
        of_type(&events, T::TaskCompleted).is_empty() && of_type(&events, T::TaskFailed).is_empty(),
        "a result of the cancelled attempt was published"
    );
    Ok(format!(
        "record done {:.1}s after the cancel ({:.1}s after the API call), no result",
        took.as_secs_f64(),
        cancelled_at.elapsed().as_secs_f64()
    ))
}

async fn heartbeat(ctx: Arc<Ctx>, ty: String) -> Result<String> {
    let id = start(&ctx, &ty).await?;
    wait_ended(&ctx, &ty, &id, "completed").await?;
    let hist = history(&ctx, &ty, &id).await?;
    clean(&hist)?;
    ensure!(
        count(&hist, "task.failed", "beat") == 0,
        "the task failed: {}",
        summary(&hist)
    );
    let (rec, d) = dispatch_of(&ctx, &ty, &id, "beat", 1).await?;
    let events = events_of(&ctx, &ty, d.execution_id).await?;
    let started = checked_result(&ctx, &d, &rec, &events, T::TaskStarted).await?;
    let done = checked_result(&ctx, &d, &rec, &events, T::TaskCompleted).await?;
    let mut beats = Vec::new();
    for r in ctx.wire.read(&ctx.wire.topics.heartbeats(&ty)).await? {
        if r.key_str() != id {
            continue;
        }
        let b = <TaskHeartbeat as AvroRecord>::decode(&r.value)
            .context("a heartbeat is not an Avro TaskHeartbeat")?;
        ensure!(
            r.partition == rec.partition,
            "a heartbeat is not on the instance's partition"
        );
        ensure!(
            b.execution_id == d.execution_id
                && b.task_name == "beat"
                && b.attempt == 1
                && b.workflow_type == ty,
            "a heartbeat names another attempt: {b:?}"
        );
        beats.push(b.at_ms);
    }
    beats.sort_unstable();
    ensure!(
        beats.len() >= 5,
        "{} heartbeats in 5 s with a 2 s heartbeat timeout",
        beats.len()
    );
    let mut at = vec![started.timestamp_ms];
    at.extend(&beats);
    at.push(done.timestamp_ms);
    let gap = at.windows(2).map(|w| w[1] - w[0]).max().unwrap_or_default();
    // a third of the timeout apart (667 ms), give or take scheduling on a loaded machine
    ensure!(
        gap < 1_500,
        "{gap} ms without a heartbeat while the handler ran (timeout 2 s: one is due every 667 ms)"
    );
    Ok(format!("{} heartbeats, longest gap {gap} ms", beats.len()))
}

async fn duplicate(ctx: Arc<Ctx>, ty: String) -> Result<String> {
    let id = start(&ctx, &ty).await?;
    wait_state(&ctx, &ty, &id, "slow to run", |v| {
        task_state(v, "slow") == "running"
    })
    .await?;
    let (rec, d) = dispatch_of(&ctx, &ty, &id, "slow", 1).await?;
    let tasks = ctx.wire.topics.tasks(&ty);
    let key = rec.key.clone().unwrap_or_default();
    ctx.wire
        .produce(&tasks, Some(rec.partition), &key, &rec.value, &rec.headers)
        .await?;
    wait_ended(&ctx, &ty, &id, "completed").await?;
    let (_, second) = ctx
        .wire
        .produce(&tasks, Some(rec.partition), &key, &rec.value, &rec.headers)
        .await?;
    ctx.wire
        .wait_committed_past(&tasks, rec.partition, second, ctx.timeout, "the duplicates")
        .await?;
    let hist = history(&ctx, &ty, &id).await?;
    clean(&hist)?;
    let events = events_of(&ctx, &ty, d.execution_id).await?;
    checked_result(&ctx, &d, &rec, &events, T::TaskStarted).await?;
    checked_result(&ctx, &d, &rec, &events, T::TaskCompleted).await?;
    let done_at = of_type(&events, T::TaskCompleted)[0].0.offset;
    ensure!(
        !events.iter().any(|(r, _)| r.offset > done_at),
        "the attempt ran again after it completed (the second duplicate)"
    );
    ensure!(
        count(&hist, "task.started", "slow") == 1,
        "slow started twice in the history: {}",
        summary(&hist)
    );
    Ok("two duplicates consumed, the attempt ran once".into())
}

async fn at_least_once(ctx: Arc<Ctx>, ty: String) -> Result<String> {
    let id = start(&ctx, &ty).await?;
    let (rec, d) = dispatch_of(&ctx, &ty, &id, "t", 1).await?;
    let tasks = ctx.wire.topics.tasks(&ty);
    // Whenever the record is seen committed, its result must already be on the wire.
    let began = Instant::now();
    loop {
        if ctx.wire.committed(&tasks, rec.partition).await? > rec.offset {
            let events = events_of(&ctx, &ty, d.execution_id).await?;
            ensure!(
                !of_type(&events, T::TaskCompleted).is_empty(),
                "the record was committed before its task.completed was on the wire"
            );
            break;
        }
        ensure!(
            began.elapsed() < ctx.timeout,
            "the record was never committed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    wait_ended(&ctx, &ty, &id, "completed").await?;
    clean(&history(&ctx, &ty, &id).await?)?;
    Ok("committed after the result".into())
}

async fn at_most_once(ctx: Arc<Ctx>, ty: String) -> Result<String> {
    let id = start(&ctx, &ty).await?;
    let (rec, d) = dispatch_of(&ctx, &ty, &id, "t", 1).await?;
    let tasks = ctx.wire.topics.tasks(&ty);
    // When the record is first seen committed, no result is on the wire yet (the
    // handler sleeps 3 s); a worker that commits after the result fails here.
    ctx.wire
        .wait_committed_past(
            &tasks,
            rec.partition,
            rec.offset,
            ctx.timeout,
            "the at_most_once record",
        )
        .await?;
    let events = events_of(&ctx, &ty, d.execution_id).await?;
    ensure!(
        of_type(&events, T::TaskCompleted).is_empty(),
        "the record was committed only after its task.completed was on the wire"
    );
    wait_ended(&ctx, &ty, &id, "completed").await?;
    clean(&history(&ctx, &ty, &id).await?)?;
    Ok("committed while the handler ran".into())
}

async fn exactly_once(ctx: Arc<Ctx>, ty: String) -> Result<String> {
    // Weft refuses exactly_once definitions without transactions, so the kit writes the dispatch.
    let instance_id = InstanceId::random();
    let task_id = TaskId::of(instance_id, "t");
    let d = TaskDispatch {
        workflow_type: ty.clone(),
        instance_id,
        definition_version: 1,
        task_id,
        task_name: "t".into(),
        task_type: TaskType::Compute,
        handler: "noop".into(),
        attempt: 1,
        execution_id: ExecutionId::of(task_id, 1),
        input: DataMap::new(),
        parameters: DataMap::new(),
        upstream: BTreeMap::new(),
        execution_semantics: ExecutionSemantics::ExactlyOnce,
        priority: TaskPriority::Normal,
        timeout_config: TimeoutConfiguration::default(),
        idempotency_key: format!("{instance_id}/t"),
        scheduled_event_id: EventId::random(),
        correlation_chain: Vec::new(),
        scheduled_at_ms: now_ms(),
        not_before_ms: 0,
        deadline_ms: 0,
        traceparent: String::new(),
    };
    let headers = BTreeMap::from([(h::IDEMPOTENCY_KEY.to_owned(), d.attempt_key())]);
    let tasks = ctx.wire.topics.tasks(&ty);
    let (partition, offset) = ctx
        .wire
        .produce(
            &tasks,
            None,
            instance_id.to_string().as_bytes(),
            &d.encode(),
            &headers,
        )
        .await?;
    let rec = Rec {
        partition,
        offset,
        key: Some(instance_id.to_string().into_bytes()),
        value: Vec::new(),
        headers,
    };
    let want = if ctx.transactions {
        T::TaskCompleted
    } else {
        T::TaskFailed
    };
    let events = wait_for(
        &format!("the worker's {want}"),
        ctx.timeout,
        POLL,
        || async {
            let events = events_of(&ctx, &ty, d.execution_id).await?;
            anyhow::Ok((!of_type(&events, want).is_empty()).then_some(events))
        },
    )
    .await?;
    checked_result(&ctx, &d, &rec, &events, T::TaskStarted).await?;
    let result = checked_result(&ctx, &d, &rec, &events, want).await?;
    if ctx.transactions {
        return Ok("completed in a transaction".into());
    }
    ensure!(
        failure(&result) == ("exactly_once_unsupported".into(), false),
        "expected the terminal exactly_once_unsupported, got {:?}",
        result.data
    );
    Ok("refused with exactly_once_unsupported".into())
}

async fn dlq(ctx: Arc<Ctx>, ty: String) -> Result<String> {
    let tasks = ctx.wire.topics.tasks(&ty);
    let value = b"this is not an Avro TaskDispatch".to_vec();
    let key = format!("{ty}-garbage");
    let headers = BTreeMap::from([("x-conformance".to_owned(), ty.clone())]);
    let (partition, offset) = ctx
        .wire
        .produce(&tasks, Some(0), key.as_bytes(), &value, &headers)
        .await?;
    ctx.wire
        .wait_committed_past(
            &tasks,
            partition,
            offset,
            ctx.timeout,
            "the undecodable record",
        )
        .await?;
    let dlq_topic = ctx.wire.topics.dlq(&ty);
    let copy = wait_for("the DLQ copy", ctx.timeout, POLL, || async {
        anyhow::Ok(
            ctx.wire
                .read(&dlq_topic)
                .await?
                .into_iter()
                .find(|r| r.key_str() == key),
        )
    })
    .await?;
    ensure!(
        copy.value == value,
        "the DLQ copy's value differs from the original"
    );
    let source = format!("{tasks}/{partition}/{offset}");
    ensure!(
        copy.headers.get(h::DLQ_SOURCE) == Some(&source),
        "header {} is {:?}, expected {source:?}",
        h::DLQ_SOURCE,
        copy.headers.get(h::DLQ_SOURCE)
    );
    ensure!(
        copy.headers
            .get(h::DLQ_REASON)
            .is_some_and(|r| !r.is_empty()),
        "no {} header",
        h::DLQ_REASON
    );
    ensure!(
        copy.headers.get("x-conformance") == Some(&ty),
        "the original headers were not kept"
    );
    Ok(format!("reason: {}", copy.headers[h::DLQ_REASON]))
}
