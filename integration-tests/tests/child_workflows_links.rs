//! Child workflows linked both ways (issue 18 item 1, ADR 0019 amendment),
//! with the real binaries on a real broker and two orchestrator replicas:
//! `GET /v1/workflows/{ty}/{id}/children` and `weft children` list exactly
//! the child each parent started (type, id, state, parent task and attempt),
//! asked at either replica, with at least one child on the other replica than
//! its parent (`x-weft-served-by` tells); and the
//! child's trace nests under the parent's task span: the API's span list and
//! OTLP (served, and pushed to a collector) give the child's spans the
//! parent's trace id and the parent's task span as the child root's parent;
//! and the child's own task dispatches, read raw from its tasks topic (field
//! and header), and the events its worker sent back carry a `traceparent` in
//! the parent's trace whose span is the child's task span.

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use reqwest::Method;
use serde_json::{json, Value};
use weft_integration_tests::cli::weft;
use weft_integration_tests::collector::Collector;
use weft_integration_tests::{wait_for, ApiClient, ClusterOptions, TestCluster};

mod issue18;
mod security;

use security::support::{read_all_topics, RawRecord};
use weft_shared::avro::AvroRecord;
use weft_shared::topics::headers;
use weft_shared::{TaskDispatch, WorkflowEvent, WorkflowEventType};

const KID: &str = "type: kid\ntasks:\n  - name: work\n    handler: noop\n";
const MOM: &str = "type: mom\ntasks:\n  - name: spawn\n    handler: workflow\n    parameters: {workflow_type: kid}\n  - name: after\n    handler: noop\n    depends_on: [spawn]\n";
/// Parents started at least, and at most while no child has landed on the
/// other replica than its parent.
const PARENTS: usize = 4;
const MAX_PARENTS: usize = 16;
const DEADLINE: Duration = Duration::from_secs(120);
const POLL: Duration = Duration::from_millis(250);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn children_are_listed_and_their_traces_nest_under_the_parent_task() -> Result<()> {
    let collector = Collector::start().await?;
    let opts =
        ClusterOptions::new(2, 1).env("WEFT_ORCHESTRATOR_OTLP_ENDPOINT", collector.url.clone());
    let cluster = TestCluster::start(opts).await?;
    let result = scenario(&cluster, &collector).await;
    if result.is_err() {
        cluster.print_logs(80);
    }
    result
}

/// `GET path` answered 2xx, retried while a partition changes owner (503).
async fn get(api: &ApiClient, path: &str) -> Result<Value> {
    wait_for(&format!("GET {path}"), DEADLINE, POLL, || async {
        let r = api.send(Method::GET, path, None).await?;
        if r.status.as_u16() == 503 {
            return anyhow::Ok(None);
        }
        ensure!(r.status.is_success(), "GET {path}: {} {}", r.status, r.body);
        Ok(Some(r.body))
    })
    .await
}

fn spans(otlp: &Value) -> Vec<Value> {
    otlp["resourceSpans"][0]["scopeSpans"][0]["spans"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

async fn scenario(cluster: &TestCluster, collector: &Collector) -> Result<()> {
    let apis = [cluster.api_at(0), cluster.api_at(1)];
    for def in [KID, MOM] {
        apis[0].register_definition(def).await?;
    }
    for ty in ["kid", "mom"] {
        issue18::wait_spread(cluster, &apis, ty).await?;
    }
    // Parents until some child lives on the other replica than its parent
    // (each does with even odds), so the children query reads one remotely.
    let (mut moms, mut kids, mut crossed) = (Vec::new(), Vec::new(), 0);
    let mut started = Vec::new();
    for n in 0..PARENTS {
        let v = apis[n % 2].start("mom", json!({ "n": n }), None).await?;
        started.push(v["instance_id"].as_str().context("id")?.to_owned());
    }
    loop {
        let Some(mom) = started.pop() else {
            if crossed > 0 || moms.len() >= MAX_PARENTS {
                break;
            }
            let v = apis[0]
                .start("mom", json!({ "n": moms.len() }), None)
                .await?;
            started.push(v["instance_id"].as_str().context("id")?.to_owned());
            continue;
        };
        let child = check(&apis, &mom).await?;
        let parent_at = served_by(&apis[0], &format!("/v1/workflows/mom/{mom}")).await?;
        let child_at = served_by(&apis[0], &format!("/v1/workflows/kid/{child}")).await?;
        crossed += usize::from(parent_at != child_at);
        moms.push(mom);
        kids.push(child);
    }
    ensure!(
        crossed > 0,
        "no child of {} parents on the other replica",
        moms.len()
    );

    // The pushed traces: each child's spans arrive under its parent's trace id.
    for mom in &moms {
        let trace_id = mom.replace('-', "");
        wait_for(
            &format!("the pushed trace of {mom}'s child"),
            DEADLINE,
            POLL,
            || async {
                let pushed: Vec<Value> = collector
                    .received()
                    .iter()
                    .flat_map(spans)
                    .filter(|s| s["traceId"] == trace_id.as_str())
                    .collect();
                let kid_root = pushed
                    .iter()
                    .find(|s| s["name"] == "workflow kid" && s.get("parentSpanId").is_some());
                let spawn = pushed.iter().find(|s| s["name"] == "task spawn");
                anyhow::Ok(match (kid_root, spawn) {
                    (Some(k), Some(sp)) if k["parentSpanId"] == sp["spanId"] => Some(()),
                    _ => None,
                })
            },
        )
        .await?;
    }
    child_dispatches_in_parent_trace(cluster, &apis[0], &moms, &kids).await
}

/// The dispatch of each child's task `work`, read raw from `weft.kid.tasks`,
/// carries (field and header) the traceparent `00-<its parent's trace id>-<the
/// child's work span>-01`, and the worker sent the child's `task.completed`
/// with the same header: a handler's own spans join the parent's tree.
async fn child_dispatches_in_parent_trace(
    cluster: &TestCluster,
    api: &ApiClient,
    moms: &[String],
    kids: &[String],
) -> Result<()> {
    let bootstrap = cluster.bootstrap();
    let records = tokio::task::spawn_blocking(move || read_all_topics(&bootstrap)).await??;
    let header = |r: &RawRecord, k: &str| {
        r.headers
            .get(k)
            .map(|v| String::from_utf8_lossy(v).into_owned())
    };
    for (mom, kid) in moms.iter().zip(kids) {
        let ct = get(api, &format!("/v1/workflows/kid/{kid}/trace?format=spans")).await?;
        let work_span = ct["spans"]
            .as_array()
            .and_then(|ss| ss.iter().find(|s| s["name"] == "task work"))
            .and_then(|s| s["span_id"].as_str())
            .with_context(|| format!("the work span of {kid}: {ct}"))?;
        let want = format!("00-{}-{work_span}-01", mom.replace('-', ""));
        let dispatches: Vec<(TaskDispatch, Option<String>)> = records
            .iter()
            .filter(|r| r.topic == "weft.kid.tasks")
            .filter_map(|r| Some((TaskDispatch::decode(&r.value).ok()?, r)))
            .filter(|(d, _)| d.instance_id.to_string() == *kid && d.task_name == "work")
            .map(|(d, r)| (d, header(r, headers::TRACEPARENT)))
            .collect();
        ensure!(!dispatches.is_empty(), "no dispatch of {kid}'s work");
        for (d, h) in &dispatches {
            ensure!(
                d.traceparent == want && h.as_deref() == Some(want.as_str()),
                "{kid}'s work dispatch in {mom}'s trace: field {}, header {h:?}, want {want}",
                d.traceparent
            );
        }
        // What the worker sent back (not the orchestrator's own decisions).
        let completed: Vec<Option<String>> = records
            .iter()
            .filter(|r| r.topic == "weft.kid.events" && r.key == kid.as_bytes())
            .filter_map(|r| Some((WorkflowEvent::decode(&r.value).ok()?, r)))
            .filter(|(e, _)| e.event_type == WorkflowEventType::TaskCompleted && !e.is_decision())
            .map(|(_, r)| header(r, headers::TRACEPARENT))
            .collect();
        ensure!(
            !completed.is_empty() && completed.iter().all(|h| h.as_deref() == Some(&want)),
            "{kid}'s task.completed headers: {completed:?}, want {want}"
        );
    }
    Ok(())
}

/// Checks the children query, the CLI and the traces of parent `mom` once it
/// completed; returns its child's id.
async fn check(apis: &[ApiClient; 2], mom: &str) -> Result<String> {
    let done = wait_for(
        &format!("parent {mom} completes"),
        DEADLINE,
        POLL,
        || async {
            let v = get(&apis[0], &format!("/v1/workflows/mom/{mom}")).await?;
            ensure!(v["state"] != "failed", "parent failed: {v}");
            anyhow::Ok((v["state"] == "completed").then_some(v))
        },
    )
    .await?;
    let spawn = done["tasks"]
        .as_array()
        .and_then(|ts| ts.iter().find(|t| t["name"] == "spawn"))
        .context("spawn task")?;
    let attempt = spawn["attempt"].as_u64().context("attempt")?;
    let child = spawn["output"]["child_instance_id"]
        .as_str()
        .context("child id")?
        .to_owned();

    // The children query, at both replicas (one owns the parent, one not).
    for api in apis {
        let v = get(api, &format!("/v1/workflows/mom/{mom}/children")).await?;
        let list = v["children"].as_array().context("children")?;
        ensure!(list.len() == 1, "exactly one child of {mom}: {v}");
        let c = &list[0];
        ensure!(
            c["workflow_type"] == "kid"
                && c["instance_id"] == child.as_str()
                && c["state"] == "completed"
                && c["parent_task"] == "spawn"
                && c["parent_attempt"] == attempt,
            "the child of {mom} at {}: {c}",
            api.base_url()
        );
    }
    let none = get(&apis[1], &format!("/v1/workflows/kid/{child}/children")).await?;
    ensure!(
        none["children"] == json!([]),
        "a child has no children: {none}"
    );
    // The CLI, as a table and as JSON.
    let run = weft(&apis[1], &["children", "mom", mom], DEADLINE).await?;
    let out = run.ok()?;
    let row = out
        .lines()
        .find(|l| l.contains(&child))
        .with_context(|| format!("the child in `weft children`: {out}"))?;
    let cols: Vec<&str> = row.split_whitespace().collect();
    ensure!(
        cols == [
            "kid",
            child.as_str(),
            "completed",
            "spawn",
            &attempt.to_string()
        ],
        "{row}"
    );
    let run = weft(&apis[0], &["children", "mom", mom, "--json"], DEADLINE).await?;
    let v: Value = serde_json::from_str(run.ok()?)?;
    ensure!(v["children"][0]["instance_id"] == child.as_str(), "{v}");

    // Traces: the child's hangs under the parent's spawn span.
    let pt = get(
        &apis[0],
        &format!("/v1/workflows/mom/{mom}/trace?format=spans"),
    )
    .await?;
    let ct = get(
        &apis[1],
        &format!("/v1/workflows/kid/{child}/trace?format=spans"),
    )
    .await?;
    ensure!(
        pt.get("parent").is_none(),
        "a parent of its own has none: {pt}"
    );
    let trace_id = pt["trace_id"].as_str().context("trace id")?;
    ensure!(trace_id == mom.replace('-', ""), "{pt}");
    let spawn_span = pt["spans"]
        .as_array()
        .and_then(|ss| {
            ss.iter()
                .filter(|s| s["name"] == "task spawn")
                .find(|s| s["attributes"]["task.attempt"].as_str() == Some(&attempt.to_string()))
        })
        .context("the spawn span")?["span_id"]
        .clone();
    ensure!(
        ct["trace_id"] == trace_id,
        "the child in the parent's trace: {ct}"
    );
    ensure!(ct["parent"]["span_id"] == spawn_span, "{ct}");
    ensure!(ct["parent"]["instance_id"] == mom, "{ct}");
    let root = &ct["spans"][0];
    ensure!(
        root["kind"] == "workflow" && root["parent_span_id"] == spawn_span,
        "the child's root span under the spawn span {spawn_span}: {root}"
    );
    let otlp = get(&apis[0], &format!("/v1/workflows/kid/{child}/trace")).await?;
    let ss = spans(&otlp);
    ensure!(
        !ss.is_empty() && ss.iter().all(|s| s["traceId"] == trace_id),
        "{otlp}"
    );
    ensure!(ss[0]["parentSpanId"] == spawn_span, "{}", ss[0]);
    let run = weft(&apis[0], &["trace", "kid", &child], DEADLINE).await?;
    let out = run.ok()?;
    ensure!(
        out.contains(&format!("child of mom {mom}, task spawn")),
        "weft trace names the parent: {out}"
    );
    Ok(child)
}

/// The replica that serves `path` (`x-weft-served-by`).
async fn served_by(api: &ApiClient, path: &str) -> Result<String> {
    let resp = reqwest::get(format!("{}{path}", api.base_url())).await?;
    ensure!(resp.status().is_success(), "GET {path}: {}", resp.status());
    Ok(resp
        .headers()
        .get("x-weft-served-by")
        .and_then(|v| v.to_str().ok())
        .context("x-weft-served-by")?
        .to_owned())
}
