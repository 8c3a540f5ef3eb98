//! [`WorkflowEventBus`] in memory: one append-only log per topic (records
//! Avro-encoded exactly as on Kafka), a cursor per (consumer group, topic), and
//! one delivery task per subscription woken by a version counter. Members of
//! one group share its cursor, so each record goes to one of them.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use tokio::sync::watch;
use weft_shared::avro::AvroRecord;
use weft_shared::ids::{InstanceId, TaskId};
use weft_shared::topics::headers as h;
use weft_shared::{DataMap, TaskDispatch, Topics, WorkflowEvent, WorkflowEventType};

use super::bus::{Subscription, WorkflowEventBus};
use super::{deliver, sequenced, Result, WorkflowEventHandler};

/// One record of an in-memory topic.
#[derive(Clone, Debug, PartialEq)]
pub struct Record {
    pub key: Vec<u8>,
    pub payload: Vec<u8>,
    pub headers: Vec<(String, String)>,
}

#[derive(Default)]
struct Logs {
    topics: HashMap<String, Vec<Record>>,
    cursors: HashMap<(String, String), usize>,
}

/// In-memory event bus.
#[derive(Clone)]
pub struct InMemoryEventBus {
    topics: Topics,
    logs: Arc<Mutex<Logs>>,
    appended: Arc<watch::Sender<u64>>,
}

impl InMemoryEventBus {
    pub fn new(topics: Topics) -> Self {
        Self {
            topics,
            logs: Arc::default(),
            appended: Arc::new(watch::channel(0).0),
        }
    }

    /// Every record of `topic` so far.
    pub fn records(&self, topic: &str) -> Vec<Record> {
        self.lock().topics.get(topic).cloned().unwrap_or_default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Logs> {
        self.logs.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn append(&self, topic: &str, record: Record) {
        self.lock()
            .topics
            .entry(topic.to_owned())
            .or_default()
            .push(record);
        self.appended.send_modify(|v| *v += 1);
    }

    /// The next record for `group` on `topic`, advancing the group's cursor.
    fn next(&self, group: &str, topic: &str) -> Option<Record> {
        let mut logs = self.lock();
        let logs = &mut *logs;
        let cursor = logs
            .cursors
            .entry((group.to_owned(), topic.to_owned()))
            .or_default();
        let record = logs.topics.get(topic)?.get(*cursor)?.clone();
        *cursor += 1;
        Some(record)
    }
}

fn event_record(event: &WorkflowEvent) -> Record {
    Record {
        key: event.instance_id.to_string().into_bytes(),
        payload: event.encode(),
        headers: vec![
            (h::EVENT_TYPE.into(), event.event_type.as_str().into()),
            (h::IDEMPOTENCY_KEY.into(), event.idempotency_key.clone()),
        ],
    }
}

#[async_trait]
impl WorkflowEventBus for InMemoryEventBus {
    async fn publish_workflow_event(
        &self,
        event: &WorkflowEvent,
        target_topic: Option<&str>,
    ) -> Result<()> {
        let topic = target_topic
            .map(str::to_owned)
            .unwrap_or_else(|| self.topics.events(&event.workflow_type));
        self.append(&topic, event_record(event));
        Ok(())
    }

    async fn subscribe_to_workflow_events(
        &self,
        workflow_type: &str,
        event_types: &[WorkflowEventType],
        handler: Arc<dyn WorkflowEventHandler>,
        group_id: &str,
    ) -> Result<Subscription> {
        let (stop_tx, mut stop) = watch::channel(false);
        let bus = self.clone();
        let topic = self.topics.events(workflow_type);
        let group = group_id.to_owned();
        let types = event_types.to_vec();
        let mut appended = self.appended.subscribe();
        let mut context = DataMap::new();
        context.insert("source".into(), "subscription".into());
        context.insert("topic".into(), topic.clone().into());
        context.insert("group_id".into(), group.clone().into());
        let task = tokio::spawn(async move {
            loop {
                appended.borrow_and_update();
                loop {
                    if *stop.borrow() {
                        return;
                    }
                    let Some(r) = bus.next(&group, &topic) else {
                        break;
                    };
                    let Ok(event) = WorkflowEvent::decode(&r.payload) else {
                        tracing::warn!(%topic, "skipping an undecodable record");
                        continue;
                    };
                    if types.is_empty() || types.contains(&event.event_type) {
                        deliver(handler.as_ref(), &event, &context).await;
                    }
                }
                tokio::select! {
                    _ = appended.changed() => {}
                    _ = stop.wait_for(|s| *s) => return,
                }
            }
        });
        Ok(Subscription::new(stop_tx, task))
    }

    async fn coordinate_task_execution(
        &self,
        dispatches: &[TaskDispatch],
        assignments: &BTreeMap<TaskId, String>,
    ) -> Result<()> {
        for d in dispatches {
            let topic = assignments
                .get(&d.task_id)
                .cloned()
                .unwrap_or_else(|| self.topics.tasks(&d.workflow_type));
            let record = Record {
                key: d.instance_id.to_string().into_bytes(),
                payload: d.encode(),
                headers: vec![
                    (h::TRACEPARENT.into(), d.traceparent.clone()),
                    (h::IDEMPOTENCY_KEY.into(), d.attempt_key()),
                ],
            };
            self.append(&topic, record);
        }
        Ok(())
    }

    async fn replay_events(
        &self,
        workflow_type: &str,
        instance_id: InstanceId,
        from_seq: u64,
        to_seq: Option<u64>,
        handler: Option<Arc<dyn WorkflowEventHandler>>,
    ) -> Result<Vec<WorkflowEvent>> {
        let key = instance_id.to_string().into_bytes();
        let records = self.records(&self.topics.events(workflow_type));
        let events = records
            .iter()
            .filter(|r| r.key == key)
            .filter_map(|r| WorkflowEvent::decode(&r.payload).ok());
        let events = sequenced(events, instance_id, from_seq, to_seq);
        if let Some(handler) = handler {
            let mut context = DataMap::new();
            context.insert("source".into(), "replay".into());
            for e in &events {
                deliver(handler.as_ref(), e, &context).await;
            }
        }
        Ok(events)
    }
}
