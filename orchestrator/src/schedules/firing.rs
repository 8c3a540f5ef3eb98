//! Firing a schedule's due ticks (ADR 0017): the overlap policy about the
//! previous run ([`super::overlap`]), the `workflow.created` of each started
//! tick on the schedule's partition ([`super::placement`]), the
//! `workflow.cancelled` of `cancel_previous`, then the progress.

use rdkafka::producer::FutureRecord;
use serde_json::{json, Value};
use weft_shared::avro::AvroRecord;
use weft_shared::data::{data_map_from_json, WorkflowData};
use weft_shared::event::{now_ms, META_DEFINITION_VERSION, META_SOURCE_KIND};
use weft_shared::ids::{EventId, InstanceId};
use weft_shared::kafka::headers;
use weft_shared::topics::headers as h;
use weft_shared::{WorkflowEvent, WorkflowEventType};

use super::overlap::{decide, Action, Previous};
use super::placement::Placement;
use super::runner::{Entry, Error, Scheduler, SEND_TIMEOUT};
use super::{plan, Overlap, Spec};

impl Scheduler {
    /// The version a tick starts.
    fn version(&self, spec: &Spec) -> Option<u32> {
        if spec.version.is_some() {
            return spec.version;
        }
        let catalog = self.registry.catalog();
        let latest = catalog.latest(&spec.workflow_type)?.version;
        let life = self.registry.lifecycle();
        (1..=latest).rev().find(|v| {
            life.deprecation(&spec.workflow_type, *v).is_none()
                && !life.deleted(&spec.workflow_type, *v)
        })
    }

    async fn publish(&self, e: &WorkflowEvent) -> Result<(), Error> {
        let topic = self.topics.events(&e.workflow_type);
        let (key, payload) = (e.instance_id.to_string(), e.encode());
        let hdrs = headers(&[
            (h::EVENT_TYPE, e.event_type.as_str()),
            (h::IDEMPOTENCY_KEY, &e.idempotency_key),
        ]);
        self.producer
            .send(
                FutureRecord::to(&topic)
                    .key(&key)
                    .payload(&payload)
                    .headers(hdrs),
                SEND_TIMEOUT,
            )
            .await
            .map_err(|(err, _)| {
                Error::Unavailable(format!("could not append {}: {err}", e.event_type))
            })?;
        Ok(())
    }

    /// Starts the instance of tick `t`, on the schedule's partition; its id.
    async fn start(
        &self,
        spec: &Spec,
        at: &Placement,
        version: u32,
        t: i64,
    ) -> Result<InstanceId, Error> {
        let id = at
            .tick_instance(&spec.workflow_type, &spec.name, t)
            .ok_or_else(|| {
                Error::Unavailable(format!(
                    "no id of tick {t} lands on partition {} of {}",
                    at.partition, at.partitions
                ))
            })?;
        let mut input = spec.input.clone();
        input.insert(
            "weft_schedule".into(),
            json!({ "name": spec.name, "tick_ms": t }),
        );
        let data = data_map_from_json(&Value::Object(input), "input")
            .map_err(|e| Error::Invalid(format!("schedule input: {e}")))?;
        let mut e = WorkflowEvent::new(
            WorkflowEventType::WorkflowCreated,
            spec.workflow_type.clone(),
            id,
            format!("create:{id}"),
            now_ms(),
        );
        e.event_id = EventId::derived(&[b"created", id.as_bytes()]);
        e.data = data;
        e.source_node_id = self.node_id.clone();
        e.metadata
            .insert(META_DEFINITION_VERSION.into(), version.to_string());
        e.metadata.insert(META_SOURCE_KIND.into(), "input".into());
        e.metadata.insert("weft.schedule".into(), spec.name.clone());
        e.metadata
            .insert("weft.schedule_tick_ms".into(), t.to_string());
        self.publish(&e).await?;
        Ok(id)
    }

    async fn cancel(&self, ty: &str, id: InstanceId, name: &str) -> Result<(), Error> {
        let key = format!("schedule-overlap:{name}:{id}");
        let mut e = WorkflowEvent::new(
            WorkflowEventType::WorkflowCancelled,
            ty,
            id,
            key.clone(),
            now_ms(),
        );
        e.event_id = EventId::derived(&[b"input", ty.as_bytes(), id.as_bytes(), key.as_bytes()]);
        e.data.insert(
            "reason".into(),
            WorkflowData::Str(format!("schedule {name}: overlap policy cancel_previous")),
        );
        e.source_node_id = self.node_id.clone();
        e.metadata.insert(META_SOURCE_KIND.into(), "input".into());
        self.publish(&e).await
    }

    /// Fires what is due of one schedule placed at `at`; records progress.
    pub(super) async fn fire(&self, entry: Entry, at: Placement) -> Result<(), Error> {
        let Entry { spec, mut progress } = entry;
        let timing = spec.timing().map_err(|e| Error::Invalid(e.0))?;
        let last = progress.last_tick_ms.max(spec.start_after_ms);
        let (ticks, newest) = plan(&spec, &timing, last, now_ms());
        let Some(newest) = newest else { return Ok(()) };
        let Some(version) = self.version(&spec) else {
            tracing::warn!(schedule = %spec.name, workflow_type = %spec.workflow_type, "no startable version; the tick is skipped");
            progress.skipped += 1;
            progress.last_tick_ms = newest;
            return self.record(&spec.name, &progress).await;
        };
        for t in ticks {
            let previous = progress
                .last_instance_id
                .as_deref()
                .and_then(|p| p.parse::<InstanceId>().ok());
            let action = match (previous, spec.overlap) {
                (Some(prev), Overlap::Skip | Overlap::CancelPrevious) => {
                    let known = self.previous(&spec.workflow_type, prev, &at).await;
                    let action = decide(spec.overlap, &known, progress.blind_since_ms, now_ms());
                    if let Previous::Unknown(why) = &known {
                        tracing::warn!(schedule = %spec.name, tick_ms = t, previous = %prev, overlap = ?spec.overlap, ?action, reason = %why, "cannot tell whether the previous run of the schedule has ended");
                    }
                    action
                }
                _ => Action::Start,
            };
            match (action, previous) {
                (Action::Skip { blind }, _) => {
                    tracing::info!(schedule = %spec.name, tick_ms = t, previous = ?previous.map(|p| p.to_string()), blind, "previous run may still be running; tick skipped");
                    progress.skipped += 1;
                    progress.blind_since_ms = if blind {
                        progress.blind_since_ms.or(Some(now_ms()))
                    } else {
                        None
                    };
                    continue;
                }
                (Action::CancelThenStart, Some(prev)) => {
                    self.cancel(&spec.workflow_type, prev, &spec.name).await?;
                    tracing::info!(schedule = %spec.name, tick_ms = t, previous = %prev, "previous run cancelled");
                }
                _ => {}
            }
            progress.blind_since_ms = None;
            let id = self.start(&spec, &at, version, t).await?;
            tracing::info!(schedule = %spec.name, tick_ms = t, instance_id = %id, partition = at.partition, "schedule fired");
            progress.last_instance_id = Some(id.to_string());
            progress.started += 1;
        }
        progress.last_tick_ms = newest;
        self.record(&spec.name, &progress).await
    }
}
