//! The overlap policy of a schedule (ADR 0017): what a tick does while the
//! previous run may still be running.
//!
//! The previous run is looked up where it lives: a run started under the
//! current id scheme is on the schedule's own partition ([`super::placement`]),
//! owned by the driving replica, so the answer comes from the local
//! projection once that partition has folded everything it held (a run
//! started a moment ago is applied first). Only a run that is elsewhere (one
//! started by a release before that scheme, or after the partition count of
//! the type changed) is asked of its owner's API; that may fail (no
//! credential when API authentication is on, the owner unreachable), and then
//! the state is [`Previous::Unknown`] and [`decide`] is conservative:
//!
//! - `cancel_previous` cancels it anyway (a cancel of a run that has ended is
//!   rejected by its partition and changes nothing), then starts;
//! - `skip` skips the tick, for at most [`BLIND_SKIP_MS`] of consecutive
//!   ticks it cannot tell about; after that it starts the tick (logged), so a
//!   previous run that can never be looked up does not stop the schedule for
//!   good.

use weft_shared::event::now_ms;
use weft_shared::ids::InstanceId;
use weft_shared::state::WorkflowState;

use super::placement::Placement;
use super::runner::Scheduler;
use super::Overlap;
use crate::status::scope;

/// How long `skip` goes on skipping ticks while it cannot tell whether the
/// previous run has ended, counted from the first tick it skipped so.
pub const BLIND_SKIP_MS: i64 = 10 * 60_000;

/// What is known of the previous run of a schedule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Previous {
    Running,
    Ended,
    /// Nobody could say; why.
    Unknown(String),
}

impl From<WorkflowState> for Previous {
    fn from(s: WorkflowState) -> Self {
        if s.is_terminal() {
            Self::Ended
        } else {
            Self::Running
        }
    }
}

/// What a tick does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Start,
    /// Skip the tick; `blind` when it is because the previous run's state is unknown.
    Skip {
        blind: bool,
    },
    /// Cancel the previous run, then start the tick.
    CancelThenStart,
}

/// The overlap policy applied to what is known of the previous run.
/// `blind_since_ms`: when `skip` first skipped a tick because it could not
/// tell (reset once it can).
pub fn decide(
    overlap: Overlap,
    previous: &Previous,
    blind_since_ms: Option<i64>,
    now_ms: i64,
) -> Action {
    match (overlap, previous) {
        (Overlap::Allow, _) | (_, Previous::Ended) => Action::Start,
        (Overlap::Skip, Previous::Running) => Action::Skip { blind: false },
        (Overlap::Skip, Previous::Unknown(_)) => {
            if blind_since_ms.is_some_and(|since| now_ms - since >= BLIND_SKIP_MS) {
                Action::Start
            } else {
                Action::Skip { blind: true }
            }
        }
        (Overlap::CancelPrevious, Previous::Running | Previous::Unknown(_)) => {
            Action::CancelThenStart
        }
    }
}

impl Scheduler {
    /// What is known of instance `id` of `ty`, the previous run of a schedule
    /// placed at `at`: from the local projection when this replica owns its
    /// partition (after that partition has folded what it held), else from
    /// its owner's API.
    pub(super) async fn previous(&self, ty: &str, id: InstanceId, at: &Placement) -> Previous {
        match self.store.instance(ty, id) {
            Ok(Some(s)) => return s.state.into(),
            Ok(None) => {}
            Err(e) => return Previous::Unknown(format!("the local projection: {e}")),
        }
        let topic = self.topics.events(ty);
        let partition = at.partition_of(id);
        if self
            .forwarder
            .status
            .owns(&scope(&topic, partition))
            .is_none()
        {
            return self.ask_owner(ty, id, &topic, partition).await;
        }
        // Started a moment ago (by this replica or the previous driver), maybe not applied yet.
        if let Err(why) =
            crate::api::schedules::settle_partition(&self.api, &topic, partition).await
        {
            return Previous::Unknown(why);
        }
        match self.store.instance(ty, id) {
            Ok(Some(s)) => s.state.into(),
            // Not in its partition once everything is applied: never started
            // (its start was rejected) or archived after it ended.
            Ok(None) => Previous::Ended,
            Err(e) => Previous::Unknown(format!("the local projection: {e}")),
        }
    }

    /// Asks the owner of `partition` of `topic` about the instance (a run
    /// started before runs were placed on the schedule's partition).
    async fn ask_owner(&self, ty: &str, id: InstanceId, topic: &str, partition: i32) -> Previous {
        let part = scope(topic, partition);
        let Some(owner) = self
            .forwarder
            .replicas
            .owner(&part, now_ms(), &self.node_id)
        else {
            return Previous::Unknown(format!("no replica owns {part}"));
        };
        let url = format!(
            "{}/v1/workflows/{ty}/{id}",
            owner.api_url.trim_end_matches('/')
        );
        let resp = match self.http.get(&url).send().await {
            Ok(r) => r,
            Err(e) => return Previous::Unknown(format!("{url}: {e}")),
        };
        let status = resp.status();
        if status == reqwest::StatusCode::NOT_FOUND {
            return Previous::Ended;
        }
        if !status.is_success() {
            let hint = if matches!(status.as_u16(), 401 | 403) {
                " (API authentication is on: a replica has no credential for its peers)"
            } else {
                ""
            };
            return Previous::Unknown(format!("{url} answered {status}{hint}"));
        }
        let state = resp
            .json::<serde_json::Value>()
            .await
            .ok()
            .and_then(|v| v["state"].as_str()?.parse::<WorkflowState>().ok());
        match state {
            Some(s) => s.into(),
            None => Previous::Unknown(format!("{url} answered without a readable state")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_000_000_000;

    #[test]
    fn known_states_follow_the_policy() {
        for (overlap, running, ended) in [
            (Overlap::Allow, Action::Start, Action::Start),
            (Overlap::Skip, Action::Skip { blind: false }, Action::Start),
            (
                Overlap::CancelPrevious,
                Action::CancelThenStart,
                Action::Start,
            ),
        ] {
            assert_eq!(decide(overlap, &Previous::Running, None, NOW), running);
            assert_eq!(decide(overlap, &Previous::Ended, None, NOW), ended);
            // An old blind streak does not matter once the state is known.
            assert_eq!(decide(overlap, &Previous::Running, Some(0), NOW), running);
        }
    }

    #[test]
    fn unknown_is_conservative_and_bounded() {
        let unknown = Previous::Unknown("401".into());
        assert_eq!(decide(Overlap::Allow, &unknown, None, NOW), Action::Start);
        // cancel_previous cancels what it cannot see (a no-op if it ended).
        assert_eq!(
            decide(Overlap::CancelPrevious, &unknown, None, NOW),
            Action::CancelThenStart
        );
        // skip skips, for a bounded time.
        let skip = |since| decide(Overlap::Skip, &unknown, since, NOW);
        assert_eq!(skip(None), Action::Skip { blind: true });
        assert_eq!(
            skip(Some(NOW - BLIND_SKIP_MS + 1)),
            Action::Skip { blind: true }
        );
        assert_eq!(skip(Some(NOW - BLIND_SKIP_MS)), Action::Start);
    }

    #[test]
    fn terminal_states_have_ended() {
        assert_eq!(Previous::from(WorkflowState::Completed), Previous::Ended);
        assert_eq!(Previous::from(WorkflowState::Cancelled), Previous::Ended);
        assert_eq!(Previous::from(WorkflowState::Running), Previous::Running);
    }
}
