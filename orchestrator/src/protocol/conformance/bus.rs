//! The [`WorkflowEventBus`] conformance suite: subscriptions with and without
//! an event-type filter, a group resuming after what it handled, no delivery
//! after unsubscribing, target topics, state changes, task coordination and
//! replay by sequence number (with duplicates in the log).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use weft_shared::avro::AvroRecord;
use weft_shared::ids::InstanceId;
use weft_shared::WorkflowState as W;
use weft_shared::{DataMap, TaskDispatch, Topics, WorkflowEvent, WorkflowEventType as T};

use super::history::{diamond, fold, Driver};
use crate::protocol::{handler_fn, WorkflowEventBus, WorkflowEventHandler};
use crate::store::to_snapshot;

/// How long the suite waits for a delivery (a group join on a real broker takes seconds).
pub const DELIVERY_DEADLINE: Duration = Duration::from_secs(90);

/// Reads what a topic holds, for checks the trait itself cannot make.
#[async_trait]
pub trait TopicProbe: Send + Sync {
    /// `(key, payload)` of the topic's records, waiting until there are at least `at_least`.
    async fn read(&self, topic: &str, at_least: usize) -> Vec<(Vec<u8>, Vec<u8>)>;
}

/// What the suite runs on: two workflow types whose topics exist (or can be
/// created by the bus) and one extra topic standing for a node group's queue.
pub struct BusFixture<'a> {
    pub topics: Topics,
    pub workflow_type: &'a str,
    pub other_type: &'a str,
    pub queue_topic: &'a str,
}

/// A handler that records what it is given.
#[derive(Clone, Default)]
pub struct Collector(Arc<Mutex<Vec<WorkflowEvent>>>);

impl Collector {
    pub fn handler(&self) -> Arc<dyn WorkflowEventHandler> {
        let seen = self.0.clone();
        handler_fn(move |e, _ctx| {
            let seen = seen.clone();
            async move {
                seen.lock().unwrap_or_else(|p| p.into_inner()).push(e);
                Ok(())
            }
        })
    }

    pub fn events(&self) -> Vec<WorkflowEvent> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Waits until `n` events arrived (panics after the deadline); returns them.
    pub async fn wait_for(&self, n: usize, what: &str) -> Vec<WorkflowEvent> {
        let deadline = Instant::now() + DELIVERY_DEADLINE;
        loop {
            let got = self.events();
            if got.len() >= n {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: {} of {n} events after {DELIVERY_DEADLINE:?}",
                got.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Runs the suite.
pub async fn bus_suite<B: WorkflowEventBus + ?Sized>(
    bus: &B,
    f: &BusFixture<'_>,
    probe: &dyn TopicProbe,
) {
    let ty = f.workflow_type;
    let defs = diamond(&[ty]);
    let mut x = Driver::new(ty, InstanceId::random(), 1_000);
    x.create(&defs);
    x.complete_all(&defs);
    let e = x.history.clone();
    assert!(e.len() >= 12, "the history is long enough ({})", e.len());

    let all = Collector::default();
    let wanted = [T::TaskCompleted, T::StateTransitioned];
    let filtered = Collector::default();
    let sub_all = bus
        .subscribe_to_workflow_events(ty, &[], all.handler(), "conf-all")
        .await
        .expect("subscribe");
    let sub_f = bus
        .subscribe_to_workflow_events(ty, &wanted, filtered.handler(), "conf-filtered")
        .await
        .expect("subscribe");
    for ev in &e[..6] {
        bus.publish_workflow_event(ev, None).await.expect("publish");
    }
    let snap = to_snapshot(&fold(&e[..6]).unwrap(), None);
    let mut meta = DataMap::new();
    meta.insert("reason".into(), "maintenance".into());
    let change = bus
        .publish_workflow_state_change(&snap, W::Running, W::Paused, Some(&meta))
        .await
        .expect("state change");
    assert_eq!(change.event_type, T::StateTransitioned);
    assert_eq!(
        (change.data_str("from"), change.data_str("to")),
        (Some("running"), Some("paused"))
    );
    assert_eq!(change.data_str("reason"), Some("maintenance"));
    let mut want_all = e[..6].to_vec();
    want_all.push(change.clone());
    assert_eq!(all.wait_for(7, "all events").await, want_all);
    let want_f: Vec<_> = want_all
        .iter()
        .filter(|ev| wanted.contains(&ev.event_type))
        .cloned()
        .collect();
    assert_eq!(
        filtered.wait_for(want_f.len(), "filtered events").await,
        want_f
    );

    // A group resumes after what it handled; an unsubscribed handler hears nothing more.
    sub_all.unsubscribe().await;
    for ev in &e[6..9] {
        bus.publish_workflow_event(ev, None).await.expect("publish");
    }
    let resumed = Collector::default();
    let sub_again = bus
        .subscribe_to_workflow_events(ty, &[], resumed.handler(), "conf-all")
        .await
        .expect("subscribe");
    assert_eq!(resumed.wait_for(3, "resumed group").await, e[6..9]);
    assert_eq!(all.events().len(), 7, "no delivery after unsubscribe");

    // A target topic: the other type's subscribers get it, this type's do not.
    let mut y = Driver::new(ty, InstanceId::random(), 2_000);
    y.create(&defs);
    let elsewhere = y.history[0].clone();
    let other_topic = f.topics.events(f.other_type);
    bus.publish_workflow_event(&elsewhere, Some(&other_topic))
        .await
        .expect("publish elsewhere");
    let other = Collector::default();
    let sub_other = bus
        .subscribe_to_workflow_events(f.other_type, &[], other.handler(), "conf-other")
        .await
        .expect("subscribe");
    assert_eq!(other.wait_for(1, "target topic").await, vec![elsewhere]);
    bus.publish_workflow_event(&e[9], None)
        .await
        .expect("publish");
    assert_eq!(
        resumed.wait_for(4, "after the target topic").await,
        e[6..10]
    );

    coordinates(bus, f, probe, &x.dispatches).await;

    // Replay by sequence number, with a duplicate in the log.
    for ev in e[10..].iter().chain([&e[2]]) {
        bus.publish_workflow_event(ev, None).await.expect("publish");
    }
    let replayed = Collector::default();
    let got = bus
        .replay_events(ty, x.id, 2, Some(5), Some(replayed.handler()))
        .await
        .expect("replay");
    assert_eq!(got, e[1..5]);
    assert_eq!(replayed.events(), e[1..5]);
    assert_eq!(
        bus.replay_events(ty, x.id, 0, None, None)
            .await
            .expect("replay"),
        e
    );
    assert_eq!(
        bus.replay_events(ty, x.id, e.len() as u64 + 1, None, None)
            .await
            .expect("replay"),
        vec![]
    );
    assert_eq!(
        bus.replay_events(ty, InstanceId::random(), 1, None, None)
            .await
            .expect("replay"),
        vec![]
    );

    for s in [sub_f, sub_again, sub_other] {
        assert!(s.is_active());
        s.unsubscribe().await;
    }
}

/// Dispatches go to the tasks topic, or to the topic assigned to their task.
async fn coordinates<B: WorkflowEventBus + ?Sized>(
    bus: &B,
    f: &BusFixture<'_>,
    probe: &dyn TopicProbe,
    dispatches: &[TaskDispatch],
) {
    let [first, second, ..] = dispatches else {
        panic!("the history has two dispatches");
    };
    let assignments = BTreeMap::from([(second.task_id, f.queue_topic.to_owned())]);
    bus.coordinate_task_execution(&[first.clone(), second.clone()], &assignments)
        .await
        .expect("coordinate");
    for (topic, d) in [
        (f.topics.tasks(f.workflow_type), first),
        (f.queue_topic.to_owned(), second),
    ] {
        let records = probe.read(&topic, 1).await;
        assert_eq!(records.len(), 1, "{topic}");
        assert_eq!(records[0].0, d.instance_id.to_string().into_bytes());
        assert_eq!(&TaskDispatch::decode(&records[0].1).expect("a dispatch"), d);
    }
}
