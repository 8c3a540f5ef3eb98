//! Workers in Python (`sdk/python`), end to end against Tansu and the real
//! binaries:
//!
//! - the library's own unit tests (pytest, in the virtualenv that
//!   `scripts/sdk-python.sh` installs from PyPI's confluent-kafka and fastavro);
//! - one workflow type whose instances run on the Rust `weft-worker` and on two
//!   Python workers sharing its consumer group, half of them started by a Python
//!   producer publishing `workflow.created` directly: every instance completes,
//!   with a clean history, and both languages ran tasks;
//! - partitioning: every record of every instance, whoever wrote it
//!   (confluent-kafka with `partitioner=murmur2_random`, Weft's orchestrator,
//!   the Rust and the Python workers), is on the partition Java's murmur2 gives;
//! - one instance whose tasks run first on a Python worker, which is stopped
//!   gracefully in the middle of its task, then on the Rust worker;
//! - the partition vectors in `docs/protocol.md`;
//! - lanes: a Python worker declaring `--capabilities gpu` next to a Rust
//!   worker without it runs every `requires: [gpu]` task and its share of the
//!   `priority: critical` ones (their urgent lane), the Rust worker never a gpu
//!   task; the Python worker's node record shows what it declared, and it
//!   picks up a gpu lane registered while it runs;
//! - resources and priority: a Python worker with `cpu=2` never runs two
//!   `cpu: 2` tasks at once, and a `critical` one overtakes a backlog of them.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use futures::stream::{self, StreamExt};
use serde_json::{json, Value};
use weft_integration_tests::python::{self, assigned_partitions, wait_for_log};
use weft_integration_tests::{wait_for, wait_until, ApiClient, ClusterOptions, TestCluster};
use weft_orchestrator::partitioner::{murmur2, Partitioner};
use weft_shared::avro::AvroRecord;
use weft_shared::config::WeftConfig;
use weft_shared::{InstanceId, TaskDispatch, Topics, WorkflowEvent};

const MIXED: &str = r#"
type: mixed
tasks:
  - {name: validate, handler: noop}
  - {name: reserve, handler: sleep, parameters: {ms: 150}, depends_on: [validate]}
  - {name: charge, handler: fail, parameters: {fail_attempts: 1, error_type: flaky_io}, retry: {max_attempts: 3, backoff: fixed, base_delay: 100ms}, depends_on: [validate]}
  - {name: ship, handler: noop, depends_on: [reserve, charge]}
"#;

const SLOW: &str = r#"
type: slow
tasks:
  - {name: nap, handler: sleep, parameters: {ms: 2500}, timeout: {grace: 20s}}
  - {name: gate, type: wait, depends_on: [nap], parameters: {signal: go}}
  - {name: after, handler: noop, depends_on: [gate]}
"#;

#[test]
fn python_sdk_unit_tests_pass() -> Result<()> {
    let py = python::python()?;
    let out = std::process::Command::new(&py)
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"])
        .current_dir(python::repo_root().join("sdk/python"))
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .context("running pytest")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    ensure!(
        out.status.success(),
        "pytest failed ({}):\n{stdout}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    ensure!(stdout.contains(" passed"), "pytest ran no test: {stdout}");
    Ok(())
}

/// The examples of `docs/protocol.md` are what Weft computes.
#[test]
fn protocol_doc_partition_vectors_are_right() -> Result<()> {
    let doc = std::fs::read_to_string(python::repo_root().join("docs/protocol.md"))?;
    let rows: Vec<Vec<&str>> = doc
        .lines()
        .filter(|l| l.starts_with("| `") && l.matches('|').count() == 5)
        .map(|l| l.split('|').map(|c| c.trim().trim_matches('`')).collect())
        .filter(|c: &Vec<&str>| c[1].parse::<InstanceId>().is_ok())
        .collect();
    ensure!(
        rows.len() >= 3,
        "no partition vectors found in docs/protocol.md"
    );
    for c in rows {
        let key = c[1].as_bytes();
        ensure!(
            format!("{:08x}", murmur2(key)) == c[2],
            "murmur2 of {}",
            c[1]
        );
        ensure!(
            Partitioner::Murmur2.partition(key, 6).to_string() == c[3],
            "{} of 6",
            c[1]
        );
        ensure!(
            Partitioner::Murmur2.partition(key, 12).to_string() == c[4],
            "{} of 12",
            c[1]
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rust_and_python_workers_share_a_group_and_python_starts_workflows() -> Result<()> {
    let py = python::python()?;
    let cluster = TestCluster::start(ClusterOptions::new(1, 1)).await?;
    let bootstrap = cluster.bootstrap();
    let logs = cluster.dir().join("logs");
    let api = cluster.api();
    api.register_definition(MIXED).await?;
    api.register_definition(SLOW).await?;

    let mut workers = Vec::new();
    for name in ["py-0", "py-1"] {
        workers.push(python::start_worker(&py, name, &bootstrap, &[], &logs).await?);
    }
    // Both Python workers hold partitions of the tasks topic: the group (with
    // the Rust worker) has settled on three members.
    for w in &mut workers {
        wait_until(
            &format!("{} holds partitions of weft.mixed.tasks", w.name()),
            Duration::from_secs(90),
            Duration::from_millis(200),
            || {
                let log = w.log();
                async move { !assigned_partitions(&log, "weft.mixed.tasks").is_empty() }
            },
        )
        .await?;
    }

    let result = async {
        // Half started through the API (Weft's producer), half by Python.
        let mut ids: Vec<String> = stream::iter(0..12)
            .map(|i| {
                let api = api.clone();
                async move {
                    let v = api
                        .start("mixed", json!({"n": i}), Some(&format!("api-{i}")))
                        .await?;
                    anyhow::Ok(v["instance_id"].as_str().context("instance_id")?.to_owned())
                }
            })
            .buffer_unordered(6)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<Result<_>>()?;
        let from_python = python::start_workflows(
            &py,
            &bootstrap,
            "mixed",
            "py",
            12,
            &json!({"source": "python", "amount": 12.5}),
        )
        .await?;
        ensure!(
            from_python.len() == 12,
            "the Python producer started {} instances",
            from_python.len()
        );
        let mut python_partition = HashMap::new();
        for s in &from_python {
            let id = s["instance_id"].as_str().context("instance_id")?.to_owned();
            let key = s["key"].as_str().context("key")?;
            ensure!(
                id == InstanceId::for_idempotency_key("mixed", key).to_string(),
                "the Python producer derived another instance id for {key}"
            );
            python_partition.insert(
                id.clone(),
                s["partition"].as_i64().context("partition")? as i32,
            );
            ids.push(id);
        }

        wait_all_completed(&api, "mixed", &ids).await?;

        // Clean histories, and who ran what.
        let mut ran_on: BTreeMap<String, usize> = BTreeMap::new();
        for id in &ids {
            let events = api.events("mixed", id).await?["events"]
                .as_array()
                .cloned()
                .context("events")?;
            check_history(id, &events)?;
            for e in events.iter().filter(|e| e["event_type"] == "task.started") {
                *ran_on
                    .entry(e["data"]["node_id"].as_str().unwrap_or("?").to_owned())
                    .or_default() += 1;
            }
            let created = &events[0];
            if python_partition.contains_key(id) {
                ensure!(
                    created["source_node_id"] == "python" && created["data"]["amount"] == 12.5,
                    "{id}: the Python producer's workflow.created is not the first event: {created}"
                );
            }
        }
        let rust = ran_on.get("worker-0").copied().unwrap_or_default();
        let python: usize = ran_on
            .iter()
            .filter(|(n, _)| n.starts_with("py-"))
            .map(|(_, c)| c)
            .sum();
        ensure!(
            rust > 0 && python > 0,
            "tasks did not run on both workers: {ran_on:?}"
        );
        eprintln!("task attempts by worker: {ran_on:?}");

        check_partitions(&bootstrap, &ids, &python_partition).await?;
        handover(&api, &bootstrap, &mut workers).await
    }
    .await;
    if result.is_err() {
        cluster.print_logs(80);
        for w in &workers {
            w.print_log_tail(80);
        }
    }
    result
}

async fn wait_all_completed(api: &ApiClient, ty: &str, ids: &[String]) -> Result<()> {
    let mut pending: BTreeSet<&String> = ids.iter().collect();
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while !pending.is_empty() {
        let mut done = Vec::new();
        for id in &pending {
            let Ok(v) = api.get(ty, id).await else {
                continue;
            };
            match v["state"].as_str() {
                Some("completed") => done.push(*id),
                Some(s @ ("failed" | "cancelled" | "timeout")) => {
                    anyhow::bail!("instance {id} ended {s}: {v}")
                }
                _ => {}
            }
        }
        for id in done {
            pending.remove(id);
        }
        ensure!(
            std::time::Instant::now() < deadline,
            "{} of {} {ty} instances not completed after 120 s",
            pending.len(),
            ids.len()
        );
        if !pending.is_empty() {
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
    Ok(())
}

/// As clean as a Rust-only history: sequence numbers from 1 without gaps,
/// every event but a timer's firing caused by an earlier one, results caused by their task's
/// schedule, no idempotency key twice, nothing rejected, each task completed
/// once, `charge` retried once, and the workflow completed last.
fn check_history(id: &str, events: &[Value]) -> Result<()> {
    let mut position: HashMap<&str, usize> = HashMap::new();
    let mut keys = BTreeSet::new();
    for (i, e) in events.iter().enumerate() {
        let ty = e["event_type"].as_str().unwrap_or("");
        ensure!(
            e["sequence_number"] == json!(i + 1),
            "{id}: event {i} has sequence {}",
            e["sequence_number"]
        );
        ensure!(
            keys.insert(e["idempotency_key"].as_str().unwrap_or("")),
            "{id}: idempotency key twice: {e}"
        );
        ensure!(
            ty != "error.occurred",
            "{id}: an input was rejected: {}",
            e["metadata"]["weft.reason"]
        );
        // a durable timer's firing (the retry's backoff) is an input with no cause
        let timer = e["metadata"]["weft.timer"].is_string();
        if i > 0 && !timer {
            let cause = e["causation_id"]
                .as_str()
                .with_context(|| format!("{id}: {ty} has no cause"))?;
            let at = *position
                .get(cause)
                .with_context(|| format!("{id}: cause of {ty} is not earlier"))?;
            if ty.starts_with("task.") && e["metadata"]["weft.source_kind"] == "input" {
                ensure!(
                    events[at]["event_type"] == "task.scheduled",
                    "{id}: {ty} caused by {}",
                    events[at]["event_type"]
                );
                ensure!(
                    events[at]["metadata"]["weft.task"] == e["metadata"]["weft.task"],
                    "{id}: {ty} caused by another task's schedule"
                );
            }
        }
        position.insert(e["event_id"].as_str().context("event_id")?, i);
    }
    let count = |t: &str, task: &str| {
        events
            .iter()
            .filter(|e| {
                e["event_type"] == t && (task.is_empty() || e["metadata"]["weft.task"] == task)
            })
            .count()
    };
    for task in ["validate", "reserve", "charge", "ship"] {
        ensure!(
            count("task.completed", task) == 1,
            "{id}: {task} not completed once"
        );
    }
    ensure!(
        count("task.failed", "charge") == 1 && count("task.scheduled", "charge") == 2,
        "{id}: charge not retried once"
    );
    ensure!(count("task.failed", "") == 1, "{id}: unexpected failures");
    ensure!(
        events
            .last()
            .is_some_and(|e| e["event_type"] == "workflow.completed"),
        "{id}: does not end completed"
    );
    Ok(())
}

/// Every record about each instance — on the events topic (the start, the
/// orchestrator's decisions, both workers' results) and the tasks topic — is
/// on the partition Java's murmur2 of the instance id gives, which is where
/// confluent-kafka's `murmur2_random` put the Python producer's starts.
async fn check_partitions(
    bootstrap: &str,
    ids: &[String],
    python_partition: &HashMap<String, i32>,
) -> Result<()> {
    let topics = Topics::default();
    let wanted: BTreeSet<&str> = ids.iter().map(String::as_str).collect();
    let mut seen: HashMap<String, BTreeSet<i32>> = HashMap::new();
    let mut counts = (0usize, 0usize);
    for (topic, is_events) in [
        (topics.events("mixed"), true),
        (topics.tasks("mixed"), false),
    ] {
        let (records, partitions) = read_topic(bootstrap, &topic).await?;
        for (partition, key, value) in records {
            if !wanted.contains(key.as_str()) {
                continue;
            }
            let id = if is_events {
                counts.0 += 1;
                WorkflowEvent::decode(&value)?.instance_id.to_string()
            } else {
                counts.1 += 1;
                match TaskDispatch::decode(&value) {
                    Ok(d) => d.instance_id.to_string(),
                    Err(_) => key.clone(), // a control record
                }
            };
            ensure!(id == key, "{topic}: a record keyed {key} is about {id}");
            let want = Partitioner::Murmur2.partition(key.as_bytes(), partitions);
            ensure!(
                partition == want,
                "{topic}: a record of {key} is on partition {partition}, murmur2 says {want}"
            );
            seen.entry(key).or_default().insert(partition);
        }
    }
    for (id, librdkafka) in python_partition {
        ensure!(
            seen.get(id).map(|p| p.iter().copied().collect::<Vec<_>>()) == Some(vec![*librdkafka]),
            "{id}: confluent-kafka put workflow.created on {librdkafka}, Weft's records are on {:?}",
            seen.get(id)
        );
    }
    ensure!(
        seen.len() == ids.len(),
        "records of {} of {} instances found",
        seen.len(),
        ids.len()
    );
    eprintln!(
        "{} events and {} task records of {} instances, each instance on one partition",
        counts.0,
        counts.1,
        ids.len()
    );
    Ok(())
}

/// `(partition, key, value)` of every record of `topic`, and its partition count.
async fn read_topic(bootstrap: &str, topic: &str) -> Result<(Vec<(i32, String, Vec<u8>)>, i32)> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::{Message, Offset, TopicPartitionList};
    let mut settings = WeftConfig::default().kafka;
    settings.bootstrap = bootstrap.to_owned();
    let topic = topic.to_owned();
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer =
            weft_shared::kafka::client_config(&settings, weft_shared::kafka::Role::Consumer)
                .set(
                    "group.id",
                    format!("python-worker-test-{}", uuid::Uuid::new_v4()),
                )
                .create()?;
        let md = consumer.fetch_metadata(Some(&topic), Duration::from_secs(5))?;
        let partitions = md.topics()[0].partitions().len() as i32;
        let mut tpl = TopicPartitionList::new();
        let mut ends = BTreeMap::new();
        for p in 0..partitions {
            let (low, high) = consumer.fetch_watermarks(&topic, p, Duration::from_secs(5))?;
            if high > low {
                tpl.add_partition_offset(&topic, p, Offset::Offset(low))?;
                ends.insert(p, high);
            }
        }
        consumer.assign(&tpl)?;
        let mut out = Vec::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while !ends.is_empty() {
            ensure!(
                std::time::Instant::now() < deadline,
                "reading {topic}: {ends:?} not reached"
            );
            let Some(m) = consumer.poll(Duration::from_millis(200)) else {
                continue;
            };
            let m = m?;
            if ends
                .get(&m.partition())
                .is_some_and(|end| m.offset() + 1 >= *end)
            {
                ends.remove(&m.partition());
            }
            let key = String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned();
            out.push((m.partition(), key, m.payload().unwrap_or_default().to_vec()));
        }
        Ok((out, partitions))
    })
    .await?
}

/// One instance whose tasks run on a Python worker and then on the Rust one,
/// in the same group: SIGTERM reaches a Python worker while its handler runs
/// `nap` — the handler finishes within the grace period, its result is
/// published, and the worker leaves the group and exits 0; the other Python
/// worker stops too; then a signal releases `after`, which the Rust worker,
/// now holding every partition, runs.
async fn handover(
    api: &ApiClient,
    bootstrap: &str,
    workers: &mut [weft_integration_tests::Process],
) -> Result<()> {
    let log = wait_for_log(
        &mut workers[0],
        "partitions assigned",
        Duration::from_secs(5),
    )
    .await?;
    let mine = assigned_partitions(&log, "weft.slow.tasks");
    ensure!(
        !mine.is_empty(),
        "{} holds no partition of weft.slow.tasks",
        workers[0].name()
    );
    let (_, partitions) = read_topic(bootstrap, "weft.slow.tasks").await?;
    // An idempotency key whose instance lands on a partition py-0 holds.
    let key = (0..10_000)
        .map(|i| format!("slow-{i}"))
        .find(|k| {
            let id = InstanceId::for_idempotency_key("slow", k).to_string();
            mine.contains(&Partitioner::Murmur2.partition(id.as_bytes(), partitions))
        })
        .context("no key maps to the worker's partitions")?;
    let id = api.start("slow", json!({}), Some(&key)).await?["instance_id"]
        .as_str()
        .context("instance_id")?
        .to_owned();
    let ran_on = |events: &Value, task: &str| {
        events["events"]
            .as_array()
            .and_then(|es| {
                es.iter().find(|e| {
                    e["event_type"] == "task.started" && e["metadata"]["weft.task"] == task
                })
            })
            .map(|e| e["data"]["node_id"].as_str().unwrap_or("").to_owned())
    };
    let started = wait_for(
        "nap runs",
        Duration::from_secs(60),
        Duration::from_millis(100),
        || async { anyhow::Ok(ran_on(&api.events("slow", &id).await?, "nap")) },
    )
    .await?;
    ensure!(started == "py-0", "nap started on {started}, not py-0");
    for w in workers.iter_mut() {
        let status = w.terminate_and_wait(Duration::from_secs(30)).await?;
        ensure!(status.success(), "{} exited {status} on SIGTERM", w.name());
        ensure!(
            w.log().contains("draining"),
            "{} did not drain:\n{}",
            w.name(),
            w.log_tail(20)
        );
    }
    // The result was acknowledged before py-0 exited; the orchestrator applies it right after.
    wait_until(
        "nap completes and gate waits for its signal",
        Duration::from_secs(15),
        Duration::from_millis(100),
        || async {
            api.get("slow", &id).await.is_ok_and(|v| {
                v["tasks"].as_array().is_some_and(|ts| {
                    ts.iter()
                        .any(|t| t["name"] == "gate" && t["state"] == "waiting_for_dependency")
                })
            })
        },
    )
    .await?;
    let r = api
        .control("slow", &id, "signals/go", json!({}), None)
        .await?;
    ensure!(r.status.as_u16() == 202, "signal: {} {}", r.status, r.body);
    wait_until(
        "slow completes on the Rust worker",
        Duration::from_secs(90),
        Duration::from_millis(200),
        || async {
            api.get("slow", &id)
                .await
                .is_ok_and(|v| v["state"] == "completed")
        },
    )
    .await?;
    let events = api.events("slow", &id).await?;
    let all = events["events"].as_array().cloned().unwrap_or_default();
    ensure!(
        all.iter().all(|e| e["event_type"] != "error.occurred"),
        "an input was rejected: {events}"
    );
    let completed_by: Vec<&str> = all
        .iter()
        .filter(|e| {
            e["event_type"] == "task.completed" && e["metadata"]["weft.source_kind"] == "input"
        })
        .map(|e| e["source_node_id"].as_str().unwrap_or(""))
        .collect();
    ensure!(
        completed_by == ["py-0", "worker-0"],
        "nap and after completed by {completed_by:?}, expected py-0 (stopped gracefully) then the Rust worker"
    );
    ensure!(
        ran_on(&events, "after").as_deref() == Some("worker-0"),
        "after did not run on the Rust worker"
    );
    Ok(())
}

const LANES: &str = r#"
type: pylanes
tasks:
  - {name: prep, handler: noop}
  - {name: render, handler: sleep, requires: [gpu], parameters: {ms: 20}, depends_on: [prep]}
  - {name: alert, handler: noop, priority: critical, depends_on: [prep]}
  - {name: plain, handler: noop, depends_on: [prep]}
"#;

/// A Python worker with `--capabilities gpu` and the Rust `worker-0` without
/// it, in one group: the gpu lane is the Python worker's alone, the urgent
/// lane is shared. Instances are keyed so that some land on urgent-lane
/// partitions the Python worker holds; where each task ran is the
/// `data.node_id` of its `task.started`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_python_worker_with_gpu_runs_gpu_and_critical_tasks_next_to_a_rust_worker() -> Result<()>
{
    let py = python::python()?;
    let cluster = TestCluster::start(ClusterOptions::new(1, 1)).await?;
    let bootstrap = cluster.bootstrap();
    let api = cluster.api();
    // Registration creates the lane topics, so the Python worker finds
    // `weft.pylanes.tasks.cap-gpu` when it subscribes.
    api.register_definition(LANES).await?;
    let mut worker = python::start_worker(
        &py,
        "py-gpu",
        &bootstrap,
        &["--capabilities", "gpu", "--resources", "cpu=2"],
        &cluster.dir().join("logs"),
    )
    .await?;
    let result = lanes(&api, &bootstrap, &mut worker).await;
    if result.is_err() {
        cluster.print_logs(80);
        worker.print_log_tail(120);
    }
    result
}

async fn lanes(
    api: &ApiClient,
    bootstrap: &str,
    worker: &mut weft_integration_tests::Process,
) -> Result<()> {
    const GPU: &str = "weft.pylanes.tasks.cap-gpu";
    const URGENT: &str = "weft.pylanes.tasks.urgent";
    let log = worker.log();
    ensure!(
        log.contains(GPU),
        "py-gpu did not subscribe to the gpu lane:\n{}",
        worker.log_tail(20)
    );
    // The group has settled with both workers: the Python worker holds the
    // whole gpu lane and part of the urgent one (the Rust worker the rest).
    let (_, partitions) = read_topic(bootstrap, GPU).await?;
    let mine = wait_for(
        "py-gpu holds the gpu lane and part of the urgent lane",
        Duration::from_secs(90),
        Duration::from_millis(200),
        || {
            let log = worker.log();
            async move {
                let gpu = assigned_partitions(&log, GPU);
                let urgent = assigned_partitions(&log, URGENT);
                let shared = !urgent.is_empty() && (urgent.len() as i32) < partitions;
                anyhow::Ok((gpu.len() as i32 == partitions && shared).then_some(urgent))
            }
        },
    )
    .await?;
    // Four instances on the Python worker's urgent partitions, twelve anywhere.
    let on_mine: Vec<String> = (0..10_000)
        .map(|i| format!("lanes-py-{i}"))
        .filter(|k| {
            let id = InstanceId::for_idempotency_key("pylanes", k).to_string();
            mine.contains(&Partitioner::Murmur2.partition(id.as_bytes(), partitions))
        })
        .take(4)
        .collect();
    let keys: Vec<String> = on_mine
        .into_iter()
        .chain((0..12).map(|i| format!("lanes-{i}")))
        .collect();
    let mut ids = Vec::new();
    for k in &keys {
        let v = api.start("pylanes", json!({}), Some(k)).await?;
        ids.push(v["instance_id"].as_str().context("instance_id")?.to_owned());
    }
    wait_all_completed(api, "pylanes", &ids).await?;

    let mut ran_on: BTreeMap<&str, BTreeMap<String, usize>> = BTreeMap::new();
    for id in &ids {
        let events = api.events("pylanes", id).await?["events"]
            .as_array()
            .cloned()
            .context("events")?;
        ensure!(
            events.iter().all(|e| e["event_type"] != "error.occurred"),
            "{id}: an input was rejected or a task unschedulable: {events:?}"
        );
        for task in ["prep", "render", "alert", "plain"] {
            let starts: Vec<&str> = events
                .iter()
                .filter(|e| e["event_type"] == "task.started" && e["metadata"]["weft.task"] == task)
                .map(|e| e["data"]["node_id"].as_str().unwrap_or("?"))
                .collect();
            ensure!(
                starts.len() == 1,
                "{id}: {task} started {} times: {starts:?}",
                starts.len()
            );
            *ran_on
                .entry(task)
                .or_default()
                .entry(starts[0].to_owned())
                .or_default() += 1;
        }
    }
    eprintln!("lanes: task starts by node {ran_on:?}");
    let count = |task: &str, node: &str| {
        ran_on
            .get(task)
            .and_then(|m| m.get(node))
            .copied()
            .unwrap_or(0)
    };
    ensure!(
        count("render", "py-gpu") == ids.len(),
        "every gpu task must run on py-gpu, the only worker with gpu: {ran_on:?}"
    );
    ensure!(
        count("alert", "py-gpu") >= 1,
        "no critical task ran on py-gpu, though instances were keyed to its urgent partitions: {ran_on:?}"
    );
    let rust: usize = ["prep", "alert", "plain"]
        .iter()
        .map(|t| count(t, "worker-0"))
        .sum();
    ensure!(
        rust >= 1,
        "the Rust worker ran none of the tasks without requirements: {ran_on:?}"
    );

    // The Python worker's node record says what it declared.
    let node = wait_for(
        "py-gpu's node record",
        Duration::from_secs(30),
        Duration::from_millis(250),
        || async {
            let r = api.send(reqwest::Method::GET, "/v1/nodes", None).await?;
            ensure!(r.status == 200, "GET /v1/nodes: {} {}", r.status, r.body);
            let nodes = r.body["nodes"].as_array().cloned().unwrap_or_default();
            anyhow::Ok(nodes.into_iter().find(|n| n["node_id"] == "py-gpu"))
        },
    )
    .await?;
    let caps: Vec<&str> = node["capabilities"]
        .as_array()
        .map(|c| c.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    ensure!(
        caps.contains(&"gpu") && caps.contains(&"sleep"),
        "py-gpu's node record lists capabilities {caps:?}: {node}"
    );
    ensure!(
        node["capacity_limits"]["cpu"] == 2 && node["capacity_limits"]["slots"] == 8,
        "py-gpu's node record has capacity {}",
        node["capacity_limits"]
    );
    late_lane(api, worker).await
}

/// A gpu lane that appears while the Python worker runs (a definition
/// registered later): it subscribes again within its refresh and runs the
/// lane's tasks.
async fn late_lane(api: &ApiClient, worker: &mut weft_integration_tests::Process) -> Result<()> {
    api.register_definition(
        "type: pylate\ntasks:\n  - {name: train, handler: noop, requires: [gpu], priority: high}\n",
    )
    .await?;
    let log = wait_for_log(
        worker,
        "lanes changed; subscribed again",
        Duration::from_secs(30),
    )
    .await?;
    ensure!(
        log.contains("weft.pylate.tasks.urgent.cap-gpu"),
        "py-gpu subscribed again, but not to the new lane:\n{}",
        worker.log_tail(20)
    );
    let mut ids = Vec::new();
    for i in 0..3 {
        let v = api
            .start("pylate", json!({}), Some(&format!("late-{i}")))
            .await?;
        ids.push(v["instance_id"].as_str().context("instance_id")?.to_owned());
    }
    wait_all_completed(api, "pylate", &ids).await?;
    for id in &ids {
        let events = api.events("pylate", id).await?;
        let started: Vec<&str> = events["events"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|e| e["event_type"] == "task.started")
            .map(|e| e["data"]["node_id"].as_str().unwrap_or("?"))
            .collect();
        ensure!(
            started == ["py-gpu"],
            "{id}: the late gpu task started on {started:?}, not once on py-gpu"
        );
    }
    Ok(())
}

const RUSH: &str = r#"
type: pyrush
tasks:
  - {name: crunch, handler: sleep, resources: {cpu: 2}, parameters: {ms: 100}}
"#;

const HOT: &str = r#"
type: pyhot
tasks:
  - {name: hot, handler: noop, priority: critical, resources: {cpu: 2}}
"#;

/// A Python worker alone in its group, with 2 slots but `cpu=2`: tasks asking
/// `cpu: 2` run one at a time (their runs never overlap, though a slot is
/// free), so a backlog of them waits in the worker; a `critical` task that
/// also asks `cpu: 2`, started after the first of them has begun, takes the
/// cpu before most of that backlog (urgent records start first).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_python_worker_keeps_within_its_cpu_and_starts_critical_tasks_first() -> Result<()> {
    let py = python::python()?;
    let cluster = TestCluster::start(ClusterOptions::new(1, 0)).await?;
    let api = cluster.api();
    api.register_definition(RUSH).await?;
    api.register_definition(HOT).await?;
    let mut worker = python::start_worker(
        &py,
        "py-solo",
        &cluster.bootstrap(),
        &["--concurrency", "2", "--resources", "cpu=2"],
        &cluster.dir().join("logs"),
    )
    .await?;
    let result = rush(&api, &mut worker).await;
    if result.is_err() {
        cluster.print_logs(80);
        worker.print_log_tail(120);
    }
    result
}

/// `(started, completed)` timestamps of `task`'s run in instance `id`.
async fn run_of(api: &ApiClient, ty: &str, id: &str, task: &str) -> Result<(i64, i64)> {
    let events = api.events(ty, id).await?["events"]
        .as_array()
        .cloned()
        .context("events")?;
    let at = |kind: &str| {
        let found: Vec<i64> = events
            .iter()
            .filter(|e| e["event_type"] == kind && e["metadata"]["weft.task"] == task)
            .filter_map(|e| e["timestamp_ms"].as_i64())
            .collect();
        ensure!(
            found.len() == 1,
            "{id}: {} {kind} events of {task}",
            found.len()
        );
        anyhow::Ok(found[0])
    };
    Ok((at("task.started")?, at("task.completed")?))
}

async fn rush(api: &ApiClient, worker: &mut weft_integration_tests::Process) -> Result<()> {
    const N: usize = 24;
    let log = wait_for_log(
        worker,
        "weft.pyrush.tasks.res-cpu--2",
        Duration::from_secs(30),
    )
    .await?;
    ensure!(
        log.contains("weft.pyhot.tasks.urgent.res-cpu--2"),
        "py-solo did not subscribe to the urgent cpu lane:\n{}",
        worker.log_tail(20)
    );
    let mut ids = Vec::new();
    for i in 0..N {
        let v = api
            .start("pyrush", json!({}), Some(&format!("rush-{i}")))
            .await?;
        ids.push(v["instance_id"].as_str().context("instance_id")?.to_owned());
    }
    wait_until(
        "the first crunch starts",
        Duration::from_secs(60),
        Duration::from_millis(50),
        || async {
            let mut any = false;
            for id in &ids {
                if let Ok(v) = api.events("pyrush", id).await {
                    any |= v["events"]
                        .as_array()
                        .is_some_and(|es| es.iter().any(|e| e["event_type"] == "task.started"));
                }
                if any {
                    break;
                }
            }
            any
        },
    )
    .await?;
    let hot = api.start("pyhot", json!({}), Some("hot")).await?["instance_id"]
        .as_str()
        .context("instance_id")?
        .to_owned();
    wait_all_completed(api, "pyrush", &ids).await?;
    wait_all_completed(api, "pyhot", std::slice::from_ref(&hot)).await?;

    let mut runs = Vec::new();
    for id in &ids {
        runs.push(run_of(api, "pyrush", id, "crunch").await?);
    }
    runs.sort();
    for w in runs.windows(2) {
        ensure!(
            w[1].0 >= w[0].1,
            "two cpu: 2 tasks ran at once on a worker with cpu=2: {:?} and {:?}",
            w[0],
            w[1]
        );
    }
    let (hot_started, _) = run_of(api, "pyhot", &hot, "hot").await?;
    let before = runs.iter().filter(|(s, _)| *s < hot_started).count();
    eprintln!(
        "rush: {before} of {N} crunches started before the critical task; crunches ran {} ms back to back",
        runs.last().map_or(0, |r| r.1) - runs[0].0
    );
    ensure!(
        before <= N / 2,
        "the critical task started after {before} of the {N} queued crunches"
    );
    Ok(())
}
