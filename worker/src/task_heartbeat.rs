//! Task heartbeats: while a handler runs an attempt whose dispatch has a
//! heartbeat timeout, the worker publishes a [`TaskHeartbeat`] (Avro, keyed by
//! instance id) to `weft.<type>.heartbeats` when the attempt starts and then
//! every third of the timeout (at least every [`MIN_INTERVAL`]), until the
//! handler returns. The orchestrator fails an attempt whose heartbeats stop.
//! Heartbeats are not history: they never go to the events topic.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::task::JoinHandle;
use weft_shared::control::TaskHeartbeat;
use weft_shared::event::now_ms;
use weft_shared::TaskDispatch;

use crate::context::Liveness;
use crate::execute::Shared;

/// The shortest time between two scheduled heartbeats of one attempt.
pub const MIN_INTERVAL: Duration = Duration::from_millis(100);

/// The time between heartbeats for a heartbeat timeout of `timeout_ms`
/// (`None`: the task asked for none).
pub fn interval(timeout_ms: u64) -> Option<Duration> {
    (timeout_ms > 0).then(|| Duration::from_millis(timeout_ms / 3).max(MIN_INTERVAL))
}

/// The heartbeat loop of one attempt; stops when dropped.
pub(crate) struct Beats {
    task: Option<JoinHandle<()>>,
    liveness: Liveness,
}

impl Beats {
    /// Starts heartbeating `dispatch`'s attempt (when its dispatch asks for it).
    pub fn start(shared: &Arc<Shared>, dispatch: &TaskDispatch) -> Self {
        let Some(every) = interval(dispatch.timeout_config.heartbeat_timeout_ms) else {
            return Self {
                task: None,
                liveness: Liveness::default(),
            };
        };
        let notify = Arc::new(Notify::new());
        let beat = TaskHeartbeat {
            workflow_type: dispatch.workflow_type.clone(),
            instance_id: dispatch.instance_id,
            task_name: dispatch.task_name.clone(),
            attempt: dispatch.attempt,
            execution_id: dispatch.execution_id,
            node_id: shared.node_id.clone(),
            at_ms: 0,
        };
        let task = tokio::spawn(run(shared.clone(), beat, every, notify.clone()));
        Self {
            task: Some(task),
            liveness: Liveness::new(notify),
        }
    }

    /// The handle a handler's [`TaskContext::heartbeat`](crate::TaskContext::heartbeat) uses.
    pub fn liveness(&self) -> Liveness {
        self.liveness.clone()
    }
}

impl Drop for Beats {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

async fn run(shared: Arc<Shared>, mut beat: TaskHeartbeat, every: Duration, asked: Arc<Notify>) {
    let topic = shared.publisher.topics().heartbeats(&beat.workflow_type);
    let key = beat.instance_id.to_string();
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = asked.notified() => tick.reset(),
        }
        beat.at_ms = now_ms();
        let headers = weft_shared::kafka::headers(&[]);
        match shared
            .publisher
            .send(&topic, key.as_bytes(), &beat.encode(), headers)
            .await
        {
            Ok(()) => {
                shared.metrics.task_heartbeats_total.inc();
                tracing::trace!(%topic, at_ms = beat.at_ms, "task heartbeat published");
            }
            Err(e) => {
                tracing::warn!(error = %e, %topic, "could not publish a task heartbeat")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_third_of_the_timeout_but_not_too_often() {
        assert_eq!(interval(0), None);
        assert_eq!(interval(3_000), Some(Duration::from_secs(1)));
        assert_eq!(interval(90), Some(MIN_INTERVAL));
    }
}
