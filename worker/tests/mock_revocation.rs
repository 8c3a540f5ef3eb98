//! Long `at_least_once` tasks and group changes on librdkafka's mock cluster,
//! two workers in one group on a task topic of two partitions, one long task
//! on each partition; a probe handler counts its calls and how many run at
//! once per attempt:
//!
//! - a second worker joining makes the first give its partitions up: the
//!   attempts running for them stop before the new owner runs them again, so
//!   no attempt ever runs on two workers at once;
//! - with the development-broker workarounds on, a task running longer than
//!   the orphan watch's limit on a worker that heartbeats is not called
//!   orphaned: nobody rejoins, no attempt runs twice.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use weft_shared::config::{BrokerWorkarounds, TransactionsMode};
use weft_shared::data::{DataMap, WorkflowData};
use weft_shared::model::ExecutionSemantics;
use weft_shared::{TaskDispatch, Topics, WorkflowEventType};
use weft_worker::{TaskContext, TaskError, Worker};

use common::*;

/// Calls of one attempt, how many run now, and the most that ran at once.
type Runs = (usize, usize, usize);

/// Per attempt (execution id): its [`Runs`].
#[derive(Clone, Default)]
struct Probe(Arc<Mutex<HashMap<String, Runs>>>);

impl Probe {
    fn enter(&self, ctx: &TaskContext) {
        let mut m = self.0.lock().unwrap();
        let e = m.entry(ctx.execution_id.to_string()).or_default();
        e.0 += 1;
        e.1 += 1;
        e.2 = e.2.max(e.1);
    }

    fn leave(&self, ctx: &TaskContext) {
        let mut m = self.0.lock().unwrap();
        if let Some(e) = m.get_mut(&ctx.execution_id.to_string()) {
            e.1 -= 1;
        }
    }

    fn get(&self, d: &TaskDispatch) -> (usize, usize, usize) {
        let m = self.0.lock().unwrap();
        m.get(&d.execution_id.to_string())
            .copied()
            .unwrap_or_default()
    }

    /// A worker of `group` whose `long` handler sleeps `ms` (or until cancelled).
    fn worker(
        &self,
        bootstrap: &str,
        group: &str,
        node: &str,
        workarounds: BrokerWorkarounds,
    ) -> anyhow::Result<Worker> {
        let mut cfg = config(bootstrap, group, &["orders"], TransactionsMode::Off);
        cfg.worker.node_id = node.to_owned();
        cfg.worker.shutdown_grace_ms = 500;
        cfg.kafka.broker_workarounds = workarounds;
        let probe = self.clone();
        Ok(Worker::builder(cfg)
            .handler("long", move |ctx: TaskContext| {
                let probe = probe.clone();
                async move {
                    probe.enter(&ctx);
                    let ms = ctx.param_i64("ms")?.unwrap_or(0).unsigned_abs();
                    let result = tokio::select! {
                        () = tokio::time::sleep(Duration::from_millis(ms)) => Ok(DataMap::new()),
                        () = ctx.cancel.cancelled() => Err(TaskError::retryable("cancelled", "long cancelled")),
                    };
                    probe.leave(&ctx);
                    result
                }
            })
            .orphan_watch(Duration::from_millis(250), Duration::from_millis(1_500))
            .build()?)
    }
}

/// Produces `d` to `partition` of `topic`.
async fn produce_to(
    mock: &Mock,
    topic: &str,
    partition: i32,
    d: &TaskDispatch,
) -> anyhow::Result<()> {
    let key = d.instance_id.to_string();
    let payload = weft_shared::avro::AvroRecord::encode(d);
    let record = rdkafka::producer::FutureRecord::to(topic)
        .key(&key)
        .payload(&payload)
        .partition(partition);
    mock.producer
        .send(record, Duration::from_secs(10))
        .await
        .map_err(|(e, _)| e)?;
    Ok(())
}

/// A `long` dispatch of `ms` on each partition of `tasks`.
async fn one_per_partition(mock: &Mock, tasks: &str, ms: i64) -> anyhow::Result<Vec<TaskDispatch>> {
    let mut out = Vec::new();
    for partition in 0..2 {
        let mut d = dispatch("long", ExecutionSemantics::AtLeastOnce);
        d.parameters = DataMap::from([("ms".to_owned(), WorkflowData::Int(ms))]);
        produce_to(mock, tasks, partition, &d).await?;
        out.push(d);
    }
    Ok(out)
}

/// Waits until the two workers hold a partition each: instant tasks on both
/// partitions, until two of them (one per partition) completed on different nodes.
async fn wait_spread(mock: &Mock, topics: &Topics) -> anyhow::Result<()> {
    let tasks = topics.tasks("orders");
    for _ in 0..20 {
        let markers = one_per_partition(mock, &tasks, 0).await?;
        let recs = read_until(&mock.bootstrap, &topics.events("orders"), |recs| {
            markers
                .iter()
                .all(|d| has(recs, d, WorkflowEventType::TaskCompleted))
        })
        .await?;
        let nodes: std::collections::BTreeSet<String> = markers
            .iter()
            .flat_map(|d| events_of(&recs, d.instance_id))
            .filter(|e| e.event_type == WorkflowEventType::TaskCompleted)
            .map(|e| e.source_node_id)
            .collect();
        if nodes.len() == 2 {
            return Ok(());
        }
    }
    anyhow::bail!("the two workers never held a partition each")
}

fn topics_of(t: &Topics) -> Vec<(String, i32)> {
    vec![
        (t.tasks("orders"), 2),
        (t.events("orders"), 1),
        (t.heartbeats("orders"), 1),
        (t.nodes(), 1),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn revoked_attempts_stop_before_the_new_owner_runs_them() -> anyhow::Result<()> {
    init_logs();
    let topics = Topics::default();
    let tasks = topics.tasks("orders");
    let mock = mock_cluster(1, &topics_of(&topics))?;
    let ds = one_per_partition(&mock, &tasks, 15_000).await?;
    let group = format!("workers-{}", uuid_like());
    let probe = Probe::default();

    let (stop_a, mut a) =
        spawn_worker(probe.worker(&mock.bootstrap, &group, "a", BrokerWorkarounds::Off)?);
    while_running(
        &mut a,
        eventually("both long tasks run on the first worker", || {
            ds.iter().all(|d| probe.get(d).1 == 1)
        }),
    )
    .await?;
    // A second worker joins: the group takes a partition from the first.
    let (stop_b, mut b) =
        spawn_worker(probe.worker(&mock.bootstrap, &group, "b", BrokerWorkarounds::Off)?);
    let events = while_running(
        &mut b,
        while_running(
            &mut a,
            read_until(&mock.bootstrap, &topics.events("orders"), |recs| {
                ds.iter()
                    .all(|d| has(recs, d, WorkflowEventType::TaskCompleted))
            }),
        ),
    )
    .await?;
    stop(stop_a, a).await?;
    stop(stop_b, b).await?;
    for d in &ds {
        let (calls, _, most) = probe.get(d);
        assert_eq!(
            most, 1,
            "attempt {} ran on two workers at once ({calls} calls)",
            d.execution_id
        );
        let completed = kinds(&events, d)
            .into_iter()
            .filter(|k| *k == WorkflowEventType::TaskCompleted)
            .count();
        assert_eq!(completed, 1, "one result per attempt");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_task_longer_than_the_orphan_watch_is_not_an_orphan() -> anyhow::Result<()> {
    init_logs();
    let topics = Topics::default();
    let tasks = topics.tasks("orders");
    let mock = mock_cluster(1, &topics_of(&topics))?;
    let group = format!("workers-{}", uuid_like());
    let probe = Probe::default();
    let on = BrokerWorkarounds::On;
    let (stop_a, mut a) = spawn_worker(probe.worker(&mock.bootstrap, &group, "a", on)?);
    let (stop_b, mut b) = spawn_worker(probe.worker(&mock.bootstrap, &group, "b", on)?);
    while_running(&mut b, while_running(&mut a, wait_spread(&mock, &topics))).await?;
    // Far longer than the orphan watch's 1.5 s, and than the 20 s its claims
    // need to be trusted.
    let ds = one_per_partition(&mock, &tasks, 30_000).await?;
    let events = while_running(
        &mut b,
        while_running(
            &mut a,
            read_until(&mock.bootstrap, &topics.events("orders"), |recs| {
                ds.iter()
                    .all(|d| has(recs, d, WorkflowEventType::TaskCompleted))
            }),
        ),
    )
    .await?;
    stop(stop_a, a).await?;
    stop(stop_b, b).await?;
    for d in &ds {
        let (calls, _, most) = probe.get(d);
        assert_eq!(
            (calls, most),
            (1, 1),
            "attempt {} ran {calls} times, {most} at once: its partition was taken from a busy worker",
            d.execution_id
        );
        let completed = kinds(&events, d)
            .into_iter()
            .filter(|k| *k == WorkflowEventType::TaskCompleted)
            .count();
        assert_eq!(completed, 1);
    }
    Ok(())
}
