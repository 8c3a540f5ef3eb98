//! Firing a live partition's durable timers. Every [`CHECK_EVERY`] the owner
//! reads what is due from the timer index and publishes each timer's fire
//! event (`Timer::fire_event`: an input whose id, key and timestamp depend only
//! on the timer) to the instance's events topic; deciding it is then like any
//! other input, so a fire published twice — or by two owners during a
//! rebalance — is applied once. A heartbeat timer whose attempt was heard
//! from recently is put off instead of fired.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::FutureRecord;
use weft_shared::avro::AvroRecord;
use weft_shared::event::now_ms;
use weft_shared::fsm::{DefinitionLookup, Timer, TimerKind};
use weft_shared::ids::{ExecutionId, InstanceId, TaskId};
use weft_shared::topics::headers as h;

use super::Partition;

/// How often a live partition looks for due timers (the timer resolution).
pub const CHECK_EVERY: Duration = Duration::from_millis(100);
/// A fire not seen applied within this long is published again.
const REFIRE_AFTER: Duration = Duration::from_secs(10);
/// Due timers handled per check.
const PER_CHECK: usize = 1_000;

/// What the owner remembers about fires in flight and put-off heartbeats.
pub struct Firing {
    /// Fires published and not yet applied, by `<instance>/<timer>@<due>`.
    published: HashMap<String, Instant>,
    /// Heartbeat timers put off until the given epoch ms.
    put_off: HashMap<String, i64>,
    /// When this owner took the partition: heartbeats before it are unknown.
    taken_at_ms: i64,
}

impl Default for Firing {
    fn default() -> Self {
        Self {
            published: HashMap::new(),
            put_off: HashMap::new(),
            taken_at_ms: now_ms(),
        }
    }
}

impl Partition {
    /// Publishes the fire events of every due timer of this partition.
    pub(super) async fn fire_due_timers(&mut self) {
        let now = now_ms();
        let due = match self
            .shared
            .store
            .due_timers(&self.topic, self.partition, now, PER_CHECK)
        {
            Ok(d) => d,
            Err(e) => {
                tracing::error!(topic = %self.topic, partition = self.partition, error = %e, "cannot read due timers");
                return;
            }
        };
        let live: std::collections::HashSet<String> =
            due.iter().map(|(id, t)| fire_key(*id, t)).collect();
        self.timers.published.retain(|k, _| live.contains(k));
        self.timers.put_off.retain(|k, _| live.contains(k));
        for (id, timer) in due {
            let key = fire_key(id, &timer);
            if let Some(at) = self.timers.published.get(&key) {
                if at.elapsed() < REFIRE_AFTER {
                    continue;
                }
            }
            if self
                .timers
                .put_off
                .get(&key)
                .is_some_and(|until| *until > now)
            {
                continue;
            }
            if timer.kind == TimerKind::Heartbeat {
                if let Some(until) = self.heartbeat_deadline(id, &timer) {
                    if until > now {
                        self.timers.put_off.insert(key, until);
                        continue;
                    }
                }
            }
            if self.publish_fire(id, &timer).await {
                self.shared.metrics.timers_fired.inc();
                self.timers.published.insert(key, Instant::now());
            }
        }
    }

    /// When a heartbeat timer may fire: its timeout after the last heartbeat
    /// (or after this owner took the partition, if none was seen since).
    fn heartbeat_deadline(&self, id: InstanceId, timer: &Timer) -> Option<i64> {
        let task = timer.task.as_deref()?;
        let state = self.shared.store.instance(&self.workflow_type, id).ok()??;
        let catalog = self.shared.registry.catalog();
        let def = catalog.get(&self.workflow_type, state.definition_version)?;
        let timeout = def.task(task)?.timeout_config.heartbeat_timeout_ms as i64;
        let execution = ExecutionId::of(TaskId::of(id, task), timer.attempt);
        let heard = self
            .shared
            .heartbeats
            .last_seen(execution)
            .map(|at| now_ms() - at.elapsed().as_millis() as i64)
            .unwrap_or(i64::MIN);
        Some(heard.max(self.timers.taken_at_ms) + timeout)
    }

    async fn publish_fire(&self, id: InstanceId, timer: &Timer) -> bool {
        let event = timer.fire_event(&self.workflow_type, id);
        let key = id.to_string();
        let payload = event.encode();
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: h::EVENT_TYPE,
                value: Some(event.event_type.as_str()),
            })
            .insert(Header {
                key: h::IDEMPOTENCY_KEY,
                value: Some(event.idempotency_key.as_str()),
            });
        let record = FutureRecord::to(&self.topic)
            .key(&key)
            .payload(&payload)
            .headers(headers);
        match self
            .shared
            .producer
            .send(record, Duration::from_secs(5))
            .await
        {
            Ok(_) => {
                tracing::debug!(instance_id = %id, timer = %timer.id(), due_ms = timer.fire_at_ms, "timer fired");
                true
            }
            Err((e, _)) => {
                tracing::warn!(instance_id = %id, timer = %timer.id(), error = %e, "could not publish a timer fire; will retry");
                false
            }
        }
    }
}

fn fire_key(id: InstanceId, t: &Timer) -> String {
    format!("{id}/{}@{}", t.id(), t.fire_at_ms)
}
