//! The failure model under load, on the real broker with the real binaries.
//! Workflows of a flaky compute step (retried with durable backoff timers,
//! sometimes failing for good) and an `effect` step (the `ledger` handler) run
//! while processes are SIGKILLed mid-run — each kill waits until there is
//! unfinished work where it strikes. Two plans: one orchestrator and two
//! workers, the orchestrator and a worker killed three times each; and two
//! orchestrator replicas and two workers, with each replica, each worker and
//! the broker itself killed.
//!
//! Afterwards: every workflow ended, as many completed as the failure rates
//! imply, every failure is the injected terminal error or exhausted retries,
//! and retries happened; every effect is in the ledger once; every call of the
//! effect's handler is logged (`calls.log`), so runs are counted, not ledger
//! lines: a second run of an effect is only allowed as a redelivery to another
//! worker process (at-least-once delivery), never twice in one process and
//! never as an attempt nobody scheduled — the test prints how often and why;
//! no decision appears twice in any history; and (single orchestrator) a
//! `--rebuild` that provably discarded and replayed the projection equals the
//! live one.
//!
//! Each kill starts its share of the workflows right before it strikes (the
//! first half start at once): the engine finishes a few hundred of these in
//! seconds, so a kill at a count of effects alone could find nothing left to
//! interrupt (seen in CI: after a fast broker restart every workflow had ended
//! before the last worker kill, which then waited in vain for a task in flight).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use futures::stream::{self, StreamExt};
use serde_json::{json, Value};
use weft_integration_tests::{wait_for, wait_until, ApiClient, ClusterOptions, TestCluster};

const FAIL_RATE: f64 = 0.3;
const TERMINAL_RATE: f64 = 0.02;
const MAX_ATTEMPTS: u32 = 6;

const DEFINITION: &str = r#"
type: faulty
description: a flaky compute step (retried, sometimes for good), then an effect recorded in a ledger
retry: {max_attempts: 6, backoff: fixed, base_delay: 100ms}
tasks:
  - name: prepare
    handler: flaky
    parameters: {fail_rate: 0.3, terminal_rate: 0.02, ms: 20}
  - name: charge
    type: effect
    handler: ledger
    depends_on: [prepare]
    parameters: {dir: "LEDGER_DIR"}
"#;

/// Who is killed.
#[derive(Clone, Copy, Debug)]
enum Victim {
    Orchestrator(usize),
    Worker(usize),
    Broker,
}

/// A run: the cluster, how many workflows, and a kill after each count of effects.
struct Plan {
    orchestrators: usize,
    workers: usize,
    workflows: usize,
    kills: Vec<(usize, Victim)>,
    /// Compare a `--rebuild` with the live projection (one orchestrator).
    rebuild: bool,
}

/// One logged call of the `ledger` handler (see `worker/src/builtins/ledger.rs`).
#[derive(Clone, Debug)]
struct Call {
    key: String,
    attempt: u32,
    applied: bool,
    node: String,
    pid: u32,
    at_ms: i64,
}

fn calls(dir: &Path) -> Vec<Call> {
    std::fs::read_to_string(dir.join("calls.log"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            (f.len() == 7).then_some(())?;
            Some(Call {
                key: f[0].to_owned(),
                attempt: f[1].parse().ok()?,
                applied: f[2].parse().ok()?,
                node: f[3].to_owned(),
                pid: f[5].parse().ok()?,
                at_ms: f[6].parse().ok()?,
            })
        })
        .collect()
}

fn ledger_lines(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("ledger.log"))
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

async fn start_all(api: &ApiClient, range: std::ops::Range<usize>) -> Result<Vec<String>> {
    let ids: Vec<Result<String>> = stream::iter(range)
        .map(|i| async move {
            let key = format!("fault-{i}");
            let v = api.start("faulty", json!({ "n": i }), Some(&key)).await?;
            Ok(v["instance_id"].as_str().context("instance_id")?.to_owned())
        })
        .buffer_unordered(16)
        .collect()
        .await;
    ids.into_iter().collect()
}

async fn digest(api: &ApiClient) -> Result<String> {
    let v = api
        .send(reqwest::Method::GET, "/v1/admin/projection-digest", None)
        .await?;
    ensure!(v.status.is_success(), "digest: {} {}", v.status, v.body);
    Ok(format!("{}:{}", v.body["records"], v.body["digest"]))
}

fn is_terminal(state: &str) -> bool {
    matches!(
        state,
        "completed" | "failed" | "cancelled" | "timeout" | "compensated"
    )
}

/// Waits until every instance has ended; returns the final state of each.
async fn wait_all_ended(
    api: &ApiClient,
    ids: &[String],
    deadline: Duration,
) -> Result<HashMap<String, String>> {
    let mut ended = HashMap::new();
    let start = Instant::now();
    loop {
        let pending: Vec<&String> = ids.iter().filter(|id| !ended.contains_key(*id)).collect();
        if pending.is_empty() {
            return Ok(ended);
        }
        let states: Vec<(String, Option<String>)> = stream::iter(pending)
            .map(|id| async move {
                let s = api
                    .get("faulty", id)
                    .await
                    .ok()
                    .and_then(|v| v["state"].as_str().map(str::to_owned));
                (id.clone(), s)
            })
            .buffer_unordered(16)
            .collect()
            .await;
        for (id, s) in states {
            if let Some(s) = s.filter(|s| is_terminal(s)) {
                ended.insert(id, s);
            }
        }
        ensure!(
            start.elapsed() < deadline,
            "{} of {} workflows had not ended after {deadline:?}",
            ids.len() - ended.len(),
            ids.len()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// No decision twice: unique idempotency keys, one `task.scheduled` per
/// (task, attempt), exactly one terminal workflow event, gapless sequence.
fn check_decisions_once(id: &str, events: &[Value]) -> Result<()> {
    let mut keys = BTreeSet::new();
    let mut scheduled = BTreeSet::new();
    let mut terminal = 0;
    for (i, e) in events.iter().enumerate() {
        ensure!(
            e["sequence_number"] == json!(i + 1),
            "{id}: sequence gap at {i}"
        );
        ensure!(
            keys.insert(e["idempotency_key"].as_str().unwrap_or("").to_owned()),
            "{id}: idempotency key twice: {e}"
        );
        match e["event_type"].as_str().unwrap_or("") {
            "task.scheduled" => {
                let k = (
                    e["metadata"]["weft.task"].to_string(),
                    e["metadata"]["weft.attempt"].to_string(),
                );
                ensure!(
                    scheduled.insert(k),
                    "{id}: an attempt was scheduled twice: {e}"
                );
            }
            "workflow.completed" | "workflow.failed" | "workflow.cancelled"
            | "workflow.timeout" => terminal += 1,
            _ => {}
        }
    }
    ensure!(terminal == 1, "{id}: {terminal} terminal workflow events");
    Ok(())
}

fn task_events<'a>(
    events: &'a [Value],
    ty: &'a str,
    task: &'a str,
) -> impl Iterator<Item = &'a Value> {
    events
        .iter()
        .filter(move |e| e["event_type"] == ty && e["metadata"]["weft.task"] == task)
}

fn attempt_of(e: &Value) -> u32 {
    e["metadata"]["weft.attempt"]
        .as_str()
        .and_then(|a| a.parse().ok())
        .unwrap_or(0)
}

/// Why a failed workflow failed: the injected terminal error, or every attempt
/// failing with the injected retryable one. Anything else is an error.
fn check_failure(id: &str, events: &[Value]) -> Result<&'static str> {
    let failed = events
        .iter()
        .find(|e| e["event_type"] == "workflow.failed")
        .with_context(|| format!("{id}: failed without workflow.failed"))?;
    let fails: Vec<&Value> = task_events(events, "task.failed", "prepare").collect();
    let last = fails
        .last()
        .with_context(|| format!("{id}: failed, but prepare never failed: {failed}"))?;
    let error_type = last["data"]["error_type"].as_str().unwrap_or_default();
    match error_type {
        "flaky_terminal" if failed["data"]["error_type"] == "flaky_terminal" => {
            Ok("injected terminal error")
        }
        "flaky"
            if attempt_of(last) == MAX_ATTEMPTS
                && fails.len() == MAX_ATTEMPTS as usize
                && fails.iter().all(|f| f["data"]["error_type"] == "flaky") =>
        {
            Ok("retries exhausted")
        }
        _ => bail!(
            "{id}: failed for another reason than the injected errors: {failed}\nlast prepare failure: {last}"
        ),
    }
}

/// The probability that one workflow completes: prepare succeeds within
/// MAX_ATTEMPTS attempts without drawing the terminal error (charge always succeeds).
fn completion_probability() -> f64 {
    let ok = (1.0 - TERMINAL_RATE) * (1.0 - FAIL_RATE);
    let retry = (1.0 - TERMINAL_RATE) * FAIL_RATE;
    (0..MAX_ATTEMPTS).map(|k| ok * retry.powi(k as i32)).sum()
}

/// The expected number of retries of prepare per workflow.
fn expected_retries() -> f64 {
    let retry = (1.0 - TERMINAL_RATE) * FAIL_RATE;
    (1..MAX_ATTEMPTS).map(|k| retry.powi(k as i32)).sum()
}

/// Waits until there is unfinished work where a kill of `victim` strikes and
/// returns the victim with what was unfinished: a worker with tasks in flight
/// (the planned one, or another if the group gave the planned one nothing to
/// do), or instances still running for an orchestrator or the broker.
async fn wait_unfinished_work(cluster: &TestCluster, victim: Victim) -> Result<(Victim, String)> {
    match victim {
        Victim::Worker(planned) => {
            let workers = cluster.workers().len();
            let (w, n) = wait_for(
                "a task in flight on a worker",
                Duration::from_secs(60),
                Duration::from_millis(5),
                || async {
                    for w in (0..workers).map(|i| (planned + i) % workers) {
                        let n = cluster
                            .worker_metric(w, "weft_worker_in_flight_tasks")
                            .await?;
                        if n > 0.0 {
                            return anyhow::Ok(Some((w, n)));
                        }
                    }
                    Ok(None)
                },
            )
            .await?;
            Ok((Victim::Worker(w), format!("{n} tasks in flight on it")))
        }
        Victim::Orchestrator(_) | Victim::Broker => {
            let running = wait_for(
                "running instances",
                Duration::from_secs(60),
                Duration::from_millis(20),
                || async {
                    for i in 0..cluster.orchestrators().len() {
                        let api = cluster.api_at(i);
                        if let Ok(page) = api.list("type=faulty&state=running&limit=500").await {
                            let n = page["items"].as_array().map_or(0, Vec::len);
                            return anyhow::Ok((n > 0).then_some(n));
                        }
                    }
                    Ok(None)
                },
            )
            .await?;
            Ok((victim, format!("{running} instances running")))
        }
    }
}

/// Waits until every Weft process has logged a broker error since `marks`
/// (the length of each log when the broker was killed): the outage was seen.
async fn wait_outage_seen(cluster: &TestCluster, marks: &[usize]) -> Result<()> {
    wait_until(
        "every Weft process to notice the broker is gone",
        Duration::from_secs(60),
        Duration::from_millis(100),
        || async {
            let nodes = cluster.orchestrators().iter().chain(cluster.workers());
            nodes.zip(marks).all(|(n, &mark)| {
                let log = n.process().log();
                let new = log.get(mark..).unwrap_or_default();
                new.contains("Connection refused")
                    || new.contains("BrokerTransportFailure")
                    || new.contains("AllBrokersDown")
                    || new.contains("all brokers")
            })
        },
    )
    .await
}

async fn kill(cluster: &mut TestCluster, victim: Victim, worker_pids: &mut Vec<u32>) -> Result<()> {
    match victim {
        Victim::Orchestrator(i) => cluster.restart_orchestrator(i).await,
        Victim::Worker(w) => {
            if let Some(pid) = cluster.worker_mut(w).process_mut().pid() {
                worker_pids.push(pid);
            }
            cluster.restart_worker(w).await
        }
        Victim::Broker => {
            let marks: Vec<usize> = cluster
                .orchestrators()
                .iter()
                .chain(cluster.workers())
                .map(|n| n.process().log().len())
                .collect();
            cluster.broker_mut().kill9();
            wait_outage_seen(cluster, &marks).await?;
            cluster.broker_mut().restart().await
        }
    }
}

async fn run(plan: Plan) -> Result<()> {
    let ledger = tempfile::tempdir()?;
    let mut cluster =
        TestCluster::start(ClusterOptions::new(plan.orchestrators, plan.workers)).await?;
    let result = scenario(&mut cluster, &plan, ledger.path()).await;
    if let Err(e) = &result {
        cluster.print_logs(60);
        // A panic keeps the cluster's directory (logs, broker data) for a post-mortem.
        panic!("{e:#}");
    }
    result
}

async fn scenario(cluster: &mut TestCluster, plan: &Plan, ledger: &Path) -> Result<()> {
    let started = Instant::now();
    let api = cluster.api();
    let definition = DEFINITION.replace("LEDGER_DIR", &ledger.display().to_string());
    api.register_definition(&definition).await?;
    // Half the workflows start now, the rest in equal shares right before each kill.
    let share = plan.workflows / 2 / plan.kills.len().max(1);
    let first = plan.workflows - share * plan.kills.len();
    let mut ids = start_all(&api, 0..first).await?;
    println!("started {} workflows in {:?}", ids.len(), started.elapsed());

    // Kill at progress points, each where there is unfinished work.
    let mut kills = Vec::new();
    let mut killed_pids = Vec::new();
    let mut kill_times: Vec<(i64, Victim)> = Vec::new();
    for &(at, victim) in &plan.kills {
        let reachable = ids.len() as f64 * completion_probability() * 0.9;
        assert!(
            (at as f64) < reachable,
            "the plan kills at {at} effects, but {} started workflows make about {reachable:.0} for sure",
            ids.len()
        );
        wait_until(
            &format!("{at} effects applied"),
            Duration::from_secs(240),
            Duration::from_millis(50),
            || async { ledger_lines(ledger).len() >= at },
        )
        .await?;
        ids.extend(start_all(&api, ids.len()..ids.len() + share).await?);
        let (victim, work) = wait_unfinished_work(cluster, victim).await?;
        let calls_at = calls(ledger).len();
        let killed_at_ms = weft_shared::event::now_ms();
        kill(cluster, victim, &mut killed_pids).await?;
        kills.push((victim, at, work, calls_at, started.elapsed()));
        kill_times.push((killed_at_ms, victim));
    }
    // Any API of a running orchestrator answers for every instance.
    let ended = wait_all_ended(&api, &ids, Duration::from_secs(420)).await?;
    let mut by_state: BTreeMap<&str, usize> = BTreeMap::new();
    for s in ended.values() {
        *by_state.entry(s.as_str()).or_default() += 1;
    }
    let calls = calls(ledger);
    for (victim, at, work, calls_at, when) in &kills {
        println!("killed {victim:?} at {at} effects ({when:?}): {work}");
        ensure!(
            calls.len() > *calls_at,
            "no effect ran after the kill of {victim:?}: it did not strike mid-run"
        );
    }
    println!(
        "all {} ended after {:?}: {by_state:?}",
        ids.len(),
        started.elapsed()
    );

    // Histories: decisions once; completion rate, causes of failure and retries as injected.
    let (mut retries, mut stale) = (0usize, 0usize);
    let mut failures: BTreeMap<&str, usize> = BTreeMap::new();
    let mut charged = BTreeSet::new();
    let mut charge_failed: BTreeMap<String, BTreeSet<u32>> = BTreeMap::new();
    let mut inputs = 0usize;
    for id in &ids {
        // A replica restarted by the last kill may still be rebalancing: the
        // API answers 503 ("try again shortly") meanwhile.
        let h = wait_for(
            &format!("the history of {id}"),
            Duration::from_secs(60),
            Duration::from_millis(250),
            || async { api.events("faulty", id).await.map(Some) },
        )
        .await?;
        let events = h["events"].as_array().context("events")?;
        check_decisions_once(id, events)?;
        inputs += events
            .iter()
            .filter(|e| e["metadata"]["weft.source_kind"] != "decision")
            .count();
        retries += events
            .iter()
            .filter(|e| e["event_type"] == "workflow.retrying")
            .count();
        stale += events
            .iter()
            .filter(|e| e["data"]["error_type"] == "stale_attempt")
            .count();
        match ended[id].as_str() {
            "completed" => {}
            "failed" => *failures.entry(check_failure(id, events)?).or_default() += 1,
            other => bail!("{id} ended {other}: nothing in the test cancels or times out"),
        }
        if task_events(events, "task.completed", "charge")
            .next()
            .is_some()
        {
            charged.insert(format!("{id}/charge"));
        }
        let failed: BTreeSet<u32> = task_events(events, "task.failed", "charge")
            .map(attempt_of)
            .collect();
        if !failed.is_empty() {
            charge_failed.insert(format!("{id}/charge"), failed);
        }
    }
    let n = ids.len() as f64;
    let p = completion_probability();
    let completed = by_state.get("completed").copied().unwrap_or(0) as f64;
    let sd = (n * p * (1.0 - p)).sqrt();
    ensure!(
        (completed - n * p).abs() <= 6.0 * sd + 1.0,
        "{completed} of {n} completed; the failure rates imply {:.1} ± {:.1}",
        n * p,
        6.0 * sd
    );
    let want_retries = n * expected_retries();
    ensure!(
        (retries as f64) > want_retries * 0.6 && (retries as f64) < want_retries * 1.4,
        "{retries} retries; the failure rates imply about {want_retries:.0}"
    );
    println!(
        "completed {completed} (expected {:.1} ± {:.1}); failures {failures:?}; retries {retries} (expected {want_retries:.0}); stale results recorded {stale}",
        n * p,
        6.0 * sd
    );

    // Effects: each key in the ledger once, exactly the completed charges.
    let lines = ledger_lines(ledger);
    let unique: BTreeSet<String> = lines.iter().cloned().collect();
    ensure!(
        unique.len() == lines.len(),
        "{} ledger entries but {} keys: an effect applied twice",
        lines.len(),
        unique.len()
    );
    ensure!(
        unique == charged,
        "ledger and completed charges differ: {} only in the ledger, {} only completed",
        unique.difference(&charged).count(),
        charged.difference(&unique).count()
    );

    // Runs: every call of the handler, however it ended.
    let mut by_key: BTreeMap<&str, Vec<&Call>> = BTreeMap::new();
    for c in &calls {
        by_key.entry(c.key.as_str()).or_default().push(c);
    }
    // Each key applied by one logged call at most, and only keys of the ledger.
    // A SIGKILL between the ledger's fsync and the calls log's line loses the
    // applying call's line: its key then has only later, not-applied calls.
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    for (key, runs) in &by_key {
        let applied = runs.iter().filter(|c| c.applied).count();
        ensure!(
            applied <= 1 && (applied == 0 || unique.contains(*key)),
            "{key}: {applied} calls applied the effect: {runs:?}"
        );
    }
    let mut extra_runs = 0;
    for key in &unique {
        let runs = by_key.get(key.as_str()).map_or(&[][..], Vec::as_slice);
        if runs.iter().all(|c| !c.applied) {
            // It ran (the ledger has it) and its worker died before logging it.
            ensure!(
                !runs.is_empty(),
                "{key} is in the ledger but no call of it was logged"
            );
            extra_runs += 1;
            *reasons
                .entry("redelivered: a kill cut off the applying call before it was logged".into())
                .or_default() += 1;
        }
    }
    for (key, runs) in &by_key {
        for (i, c) in runs.iter().enumerate() {
            // An attempt after the first runs only when the one before it failed.
            if c.attempt > 1 {
                let failed = charge_failed.get(*key);
                ensure!(
                    failed.is_some_and(|f| f.contains(&(c.attempt - 1))),
                    "{key}: attempt {} ran, but attempt {} never failed: {runs:?}",
                    c.attempt,
                    c.attempt - 1
                );
            }
            let Some(before) = runs[..i].iter().find(|b| b.attempt == c.attempt) else {
                continue;
            };
            extra_runs += 1;
            ensure!(
                runs[..i]
                    .iter()
                    .all(|b| b.attempt != c.attempt || b.pid != c.pid),
                "{key}: attempt {} ran twice in one worker process ({} pid {}): {runs:?}",
                c.attempt,
                c.node,
                c.pid
            );
            let how = if killed_pids.contains(&before.pid) {
                "its worker process was killed"
            } else {
                "a rebalance moved its partition"
            };
            // The kill the second run followed.
            let after = kill_times
                .iter()
                .rev()
                .find(|(t, _)| *t <= c.at_ms)
                .map_or("no kill".to_owned(), |(_, v)| format!("{v:?}"));
            *reasons
                .entry(format!("redelivered after {after}: {how}"))
                .or_default() += 1;
        }
    }
    let twice = by_key
        .values()
        .filter(|r| r.len() > 1 || r.iter().all(|c| !c.applied))
        .count();
    println!(
        "effects: {} applied once each; handler calls {} for {} keys: {twice} effects ran more than once, {extra_runs} extra runs: {reasons:?}",
        lines.len(),
        calls.len(),
        by_key.len()
    );
    cluster.check_processes()?;

    if plan.rebuild {
        // Rebuild from nothing equals the live projection, and provably replayed.
        let live = digest(&api).await?;
        let rebuild_started = Instant::now();
        cluster.rebuild_orchestrator(0).await?;
        let rebuilt = wait_for(
            "the rebuilt projection equals the live one",
            Duration::from_secs(120),
            Duration::from_millis(500),
            || async {
                let d = digest(&api).await?;
                anyhow::Ok((d == live).then_some(d))
            },
        )
        .await;
        ensure!(
            rebuilt.is_ok(),
            "rebuilt digest {} != live {live}",
            digest(&api).await?
        );
        let applied = api.metric("weft_orchestrator_events_applied_total").await?;
        ensure!(
            applied as usize == inputs,
            "the rebuild applied {applied} inputs; the histories hold {inputs}"
        );
        println!(
            "rebuilt from the topics in {:?} ({inputs} inputs replayed)",
            rebuild_started.elapsed()
        );
    }
    println!("fault test took {:?}", started.elapsed());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_thousand_flaky_workflows_survive_orchestrator_and_worker_kills() -> Result<()> {
    let kills = [80usize, 180, 280, 380, 480, 580]
        .into_iter()
        .enumerate()
        .map(|(i, at)| {
            let victim = if i % 2 == 0 {
                Victim::Orchestrator(0)
            } else {
                Victim::Worker((i / 2) % 2)
            };
            (at, victim)
        })
        .collect();
    run(Plan {
        orchestrators: 1,
        workers: 2,
        workflows: 1_000,
        kills,
        rebuild: true,
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn flaky_workflows_survive_replica_worker_and_broker_kills() -> Result<()> {
    run(Plan {
        orchestrators: 2,
        workers: 2,
        workflows: 400,
        kills: vec![
            (40, Victim::Orchestrator(0)),
            (90, Victim::Worker(1)),
            (140, Victim::Broker),
            (200, Victim::Orchestrator(1)),
            (250, Victim::Worker(0)),
        ],
        rebuild: false,
    })
    .await
}
