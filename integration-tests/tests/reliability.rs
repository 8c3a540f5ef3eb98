//! Control and reliability features end to end, on Tansu with the real
//! binaries: signals completing `wait` tasks, cancel reaching a running
//! handler, pause and resume, decision branches and groups, saga
//! compensation, the workflow timeout, a durable timer that falls due while no
//! orchestrator runs, and a heartbeat timeout after a worker dies; plus the
//! bad-input cases (signal to a finished workflow, cancel of an unknown id).

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use serde_json::{json, Value};
use weft_integration_tests::{wait_for, wait_until, ApiClient, ClusterOptions, TestCluster};

const DEFS: &[&str] = &[
    r#"
type: approval
tasks:
  - {name: prepare, handler: noop}
  - {name: approve, type: wait, depends_on: [prepare], parameters: {signal: approved, duration: 5m}}
  - {name: ship, handler: noop, depends_on: [approve]}
"#,
    r#"
type: sleepy
tasks:
  - {name: nap, handler: sleep, parameters: {ms: 60000}, timeout: {grace: 500ms}}
"#,
    r#"
type: steps
tasks:
  - {name: first, handler: sleep, parameters: {ms: 1500}}
  - {name: second, handler: noop, depends_on: [first]}
"#,
    r#"
type: saga
tasks:
  - {name: reserve, handler: noop, compensation: release}
  - {name: charge, handler: noop, depends_on: [reserve], compensation: refund}
  - {name: ship, handler: fail, depends_on: [charge], retry: {max_attempts: 2, backoff: fixed, base_delay: 200ms}}
  - {name: release, handler: noop}
  - {name: refund, handler: noop}
"#,
    r#"
type: routing
tasks:
  - {name: route, type: decision, handler: choose, parameters: {branch: express}}
  - {name: express, handler: noop, depends_on: [route]}
  - {name: standard, handler: noop, depends_on: [route]}
  - {name: pack, type: parallel, depends_on: [express], parameters: {tasks: [box, label]}}
  - {name: box, handler: noop}
  - {name: label, handler: noop}
"#,
    r#"
type: limited
timeout: {execution: 2s}
tasks:
  - {name: long, handler: sleep, parameters: {ms: 60000}}
"#,
];

async fn started(api: &ApiClient, ty: &str) -> Result<String> {
    let v = api.start(ty, json!({}), None).await?;
    Ok(v["instance_id"].as_str().context("instance_id")?.to_owned())
}

/// Waits until `ty/id` satisfies `pred` and returns its state.
async fn wait_state(
    api: &ApiClient,
    ty: &str,
    id: &str,
    what: &str,
    pred: impl Fn(&Value) -> bool,
) -> Result<Value> {
    wait_for(
        what,
        Duration::from_secs(60),
        Duration::from_millis(100),
        || async {
            let v = api.get(ty, id).await?;
            anyhow::Ok(pred(&v).then_some(v))
        },
    )
    .await
}

fn task_state(v: &Value, name: &str) -> String {
    v["tasks"]
        .as_array()
        .and_then(|ts| ts.iter().find(|t| t["name"] == name))
        .and_then(|t| t["state"].as_str())
        .unwrap_or("pending")
        .to_owned()
}

async fn event_types(api: &ApiClient, ty: &str, id: &str) -> Result<Vec<String>> {
    let h = api.events(ty, id).await?;
    Ok(h["events"]
        .as_array()
        .context("events")?
        .iter()
        .map(|e| e["event_type"].as_str().unwrap_or("").to_owned())
        .collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn control_signals_branches_groups_and_sagas() -> Result<()> {
    let cluster = TestCluster::start(ClusterOptions::new(1, 1)).await?;
    let result = async {
        let api = cluster.api();
        for d in DEFS {
            api.register_definition(d).await?;
        }
        // A signal completes the wait; its data is the task's output.
        let id = started(&api, "approval").await?;
        wait_state(&api, "approval", &id, "approve waits", |v| {
            task_state(v, "approve") == "waiting_for_dependency"
        })
        .await?;
        let r = api
            .control(
                "approval",
                &id,
                "signals/approved",
                json!({"by": "alice"}),
                None,
            )
            .await?;
        ensure!(r.status.as_u16() == 202, "signal: {} {}", r.status, r.body);
        let v = wait_state(&api, "approval", &id, "approval completes", |v| {
            v["state"] == "completed"
        })
        .await?;
        let approve = v["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["name"] == "approve")
            .cloned()
            .unwrap_or_default();
        ensure!(
            approve["output"]["by"] == "alice",
            "signal data is the output: {approve}"
        );
        // Bad input: a signal to a finished workflow, a cancel of an unknown id.
        let r = api
            .control("approval", &id, "signals/approved", json!({}), None)
            .await?;
        ensure!(
            r.status.as_u16() == 409,
            "signal to a finished workflow: {} {}",
            r.status,
            r.body
        );
        let unknown = "00000000-0000-4000-8000-000000000001";
        let r = api
            .control("approval", unknown, "cancel", json!({}), None)
            .await?;
        ensure!(
            r.status.as_u16() == 404,
            "cancel of an unknown id: {} {}",
            r.status,
            r.body
        );

        // Cancel reaches the running handler, which stops at once.
        let id = started(&api, "sleepy").await?;
        wait_state(&api, "sleepy", &id, "nap runs", |v| {
            task_state(v, "nap") == "running"
        })
        .await?;
        let r = api
            .control("sleepy", &id, "cancel", json!({"reason": "test"}), None)
            .await?;
        ensure!(r.status.as_u16() == 202, "cancel: {} {}", r.status, r.body);
        wait_state(&api, "sleepy", &id, "sleepy cancelled", |v| {
            v["state"] == "cancelled"
        })
        .await?;
        let worker = ApiClient::new(cluster.worker(0).http_url());
        wait_until(
            "the worker cancelled the running handler",
            Duration::from_secs(15),
            Duration::from_millis(100),
            || async {
                worker.metrics().await.is_ok_and(|m| {
                    m.lines()
                        .any(|l| l.contains("outcome=\"cancelled\"") && !l.ends_with(" 0"))
                })
            },
        )
        .await?;

        // Pause holds the next task; resume releases it.
        let id = started(&api, "steps").await?;
        wait_state(&api, "steps", &id, "first runs", |v| {
            task_state(v, "first") == "running"
        })
        .await?;
        let r = api.control("steps", &id, "pause", json!({}), None).await?;
        ensure!(r.status.as_u16() == 202, "pause: {} {}", r.status, r.body);
        let v = wait_state(&api, "steps", &id, "first completes while paused", |v| {
            task_state(v, "first") == "completed"
        })
        .await?;
        ensure!(
            v["state"] == "paused" && task_state(&v, "second") == "pending",
            "paused: no new dispatch: {v}"
        );
        let r = api.control("steps", &id, "pause", json!({}), None).await?;
        ensure!(
            r.status.as_u16() == 409,
            "pausing a paused workflow: {} {}",
            r.status,
            r.body
        );
        api.control("steps", &id, "resume", json!({}), None).await?;
        wait_state(&api, "steps", &id, "steps completes after resume", |v| {
            v["state"] == "completed"
        })
        .await?;

        // Saga: ship fails for good; charge and reserve are compensated, newest first.
        let id = started(&api, "saga").await?;
        wait_state(&api, "saga", &id, "saga compensated", |v| {
            v["state"] == "compensated"
        })
        .await?;
        let types = event_types(&api, "saga", &id).await?;
        ensure!(
            types.iter().any(|t| t == "compensation.started")
                && types.last().map(String::as_str) == Some("compensation.completed"),
            "{types:?}"
        );
        let h = api.events("saga", &id).await?;
        let order: Vec<&str> = h["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["event_type"] == "task.completed")
            .filter_map(|e| e["metadata"]["weft.task"].as_str())
            .filter(|t| *t == "release" || *t == "refund")
            .collect();
        ensure!(
            order == ["refund", "release"],
            "compensations in reverse completion order: {order:?}"
        );

        // A decision picks a branch; the group runs its members.
        let id = started(&api, "routing").await?;
        let v = wait_state(&api, "routing", &id, "routing completes", |v| {
            v["state"] == "completed"
        })
        .await?;
        ensure!(
            task_state(&v, "standard") == "skipped"
                && task_state(&v, "pack") == "completed"
                && task_state(&v, "label") == "completed",
            "{v}"
        );

        // The workflow's execution timeout ends it `timeout`.
        let id = started(&api, "limited").await?;
        let v = wait_state(&api, "limited", &id, "limited times out", |v| {
            v["state"] == "timeout"
        })
        .await?;
        ensure!(task_state(&v, "long") == "cancelled", "{v}");
        Ok(())
    }
    .await;
    if result.is_err() {
        cluster.print_logs(60);
    }
    result
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn timers_fire_after_downtime_and_dead_workers_miss_heartbeats() -> Result<()> {
    let mut cluster = TestCluster::start(ClusterOptions::new(1, 1)).await?;
    let result = async {
        let api = cluster.api();
        api.register_definition("type: delayed\ntasks:\n  - {name: pause, type: wait, parameters: {duration: 3s}}\n  - {name: after, handler: noop, depends_on: [pause]}\n").await?;
        api.register_definition("type: beating\ntasks:\n  - {name: work, handler: sleep, parameters: {ms: 4000}, timeout: {heartbeat: 1500ms}, retry: {max_attempts: 3, backoff: fixed, base_delay: 100ms}}\n").await?;

        // A timer that falls due while no orchestrator runs fires once one is back.
        let id = started(&api, "delayed").await?;
        wait_state(&api, "delayed", &id, "the wait started", |v| task_state(v, "pause") == "waiting_for_dependency").await?;
        cluster.orchestrator_mut(0).process_mut().kill9();
        let down_at = std::time::Instant::now();
        wait_until("the timer is due while the orchestrator is down", Duration::from_secs(10), Duration::from_millis(100), || async {
            down_at.elapsed() > Duration::from_secs(4)
        })
        .await?;
        cluster.orchestrator_mut(0).process_mut().start()?;
        cluster.wait_ready(0).await?;
        wait_state(&api, "delayed", &id, "delayed completes", |v| v["state"] == "completed").await?;
        let h = api.events("delayed", &id).await?;
        let fired = h["events"].as_array().unwrap().iter().find(|e| e["metadata"]["weft.source_kind"] == "timer").cloned().context("a timer fire in the history")?;
        ensure!(fired["metadata"]["weft.timer"].as_str().is_some_and(|t| t.starts_with("wait:")), "{fired}");

        // A worker killed mid-task stops heartbeating: the attempt fails and is retried.
        let id = started(&api, "beating").await?;
        wait_state(&api, "beating", &id, "work runs", |v| task_state(v, "work") == "running").await?;
        cluster.worker_mut(0).process_mut().kill9();
        wait_state(&api, "beating", &id, "heartbeat timeout detected", |v| {
            v["tasks"].as_array().and_then(|ts| ts.first()).is_some_and(|t| t["attempt"].as_u64() >= Some(2))
        })
        .await?;
        cluster.worker_mut(0).process_mut().start()?;
        cluster.wait_worker_ready(0).await?;
        wait_state(&api, "beating", &id, "beating completes on the restarted worker", |v| v["state"] == "completed").await?;
        let h = api.events("beating", &id).await?;
        ensure!(
            h["events"].as_array().unwrap().iter().any(|e| e["event_type"] == "task.failed" && e["data"]["error_type"] == "heartbeat_timeout"),
            "no heartbeat_timeout failure in {h}"
        );
        Ok(())
    }
    .await;
    if result.is_err() {
        cluster.print_logs(60);
    }
    result
}
