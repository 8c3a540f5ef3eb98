//! `GET /v1/workflows/{ty}/{id}/watch`: an instance's events as server-sent
//! events. First the stored history (from `?from=SEQ`, or after the
//! `Last-Event-ID` a reconnecting client sends), then every new event as the
//! partition processor applies it, then one `end` event once the workflow is
//! in a terminal state and everything up to its last event was sent.
//!
//! New events arrive on the [`EventFeed`](super::EventFeed) broadcast. The
//! subscription is taken before the history is read, and the stream tracks
//! the next sequence number it owes the client: an older event is skipped, a
//! gap or a lagged receiver (it missed feed messages) reloads from the store
//! by sequence number. So no event is missed or sent twice.
//!
//! SSE frames: `event: event`, `id: <sequence number>`, `data: <Event JSON>`;
//! the last one is `event: end` with `data: {"state", "sequence_number"}`.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;
use serde_json::json;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{broadcast, watch};
use weft_shared::ids::InstanceId;
use weft_shared::{WorkflowEvent, WorkflowState};

use super::params::{self, Params};
use super::{catalog_with, unknown_instance, views, ApiError, AppState};
use crate::store::Store;

/// Events read from the store per page while catching up.
const CATCH_UP_PAGE: usize = 1_000;

pub async fn watch(
    State(s): State<AppState>,
    Path((ty, id)): Path<(String, String)>,
    headers: HeaderMap,
    params: Params,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    params.allow(&["from"])?;
    let id = params::instance_id(&id)?;
    let from = match params.int("from", 1, u64::MAX)? {
        Some(from) => from,
        None => last_event_id(&headers)?.map_or(1, |seq| seq + 1),
    };
    catalog_with(&s, &ty)?;
    // Subscribe first: whatever is applied from now on reaches this receiver.
    let feed = s.events.subscribe();
    if s.store.instance(&ty, id)?.is_none() {
        return Err(unknown_instance(&ty, id));
    }
    tracing::debug!(workflow_type = %ty, instance_id = %id, from, "watch stream opened");
    let watcher = Watcher::new(s.store.clone(), ty, id, from, feed, s.shutdown.clone());
    let stream = futures::stream::unfold(watcher, |mut w| async move {
        let frame = w.next_frame().await?;
        Some((Ok(frame.into_sse()), w))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

/// `Last-Event-ID` (the sequence number a reconnecting client saw last).
fn last_event_id(headers: &HeaderMap) -> Result<Option<u64>, ApiError> {
    let Some(v) = headers.get("last-event-id") else {
        return Ok(None);
    };
    v.to_str()
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .map(Some)
        .ok_or_else(|| {
            ApiError::bad_request("header 'Last-Event-ID' must be an event sequence number")
        })
}

/// What the stream sends next.
#[derive(Clone, Debug, PartialEq)]
enum Frame {
    Event(Arc<WorkflowEvent>),
    End {
        state: WorkflowState,
        sequence_number: u64,
    },
    Error(String),
}

impl Frame {
    fn into_sse(self) -> Event {
        match self {
            Frame::Event(e) => Event::default()
                .event("event")
                .id(e.sequence_number.to_string())
                .data(views::event(&e).to_string()),
            Frame::End {
                state,
                sequence_number,
            } => Event::default()
                .event("end")
                .data(json!({ "state": state, "sequence_number": sequence_number }).to_string()),
            Frame::Error(message) => Event::default()
                .event("error")
                .data(json!({ "error": message }).to_string()),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Read what the store has from `next` on.
    CatchUp,
    /// Wait for applied events on the feed.
    Live,
    /// Nothing more to send after `out`.
    Done,
}

struct Watcher {
    store: Store,
    ty: String,
    id: InstanceId,
    /// The sequence number the client is owed next.
    next: u64,
    feed: broadcast::Receiver<Arc<WorkflowEvent>>,
    shutdown: watch::Receiver<bool>,
    out: VecDeque<Frame>,
    phase: Phase,
}

impl Watcher {
    fn new(
        store: Store,
        ty: String,
        id: InstanceId,
        from: u64,
        feed: broadcast::Receiver<Arc<WorkflowEvent>>,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        Self {
            store,
            ty,
            id,
            next: from,
            feed,
            shutdown,
            out: VecDeque::new(),
            phase: Phase::CatchUp,
        }
    }

    /// The next frame, or `None` when the stream is over.
    async fn next_frame(&mut self) -> Option<Frame> {
        loop {
            if let Some(frame) = self.out.pop_front() {
                return Some(frame);
            }
            match self.phase {
                Phase::Done => return None,
                Phase::CatchUp => {
                    if let Err(e) = self.catch_up() {
                        self.fail(e);
                    }
                }
                Phase::Live => self.wait_live().await,
            }
        }
    }

    fn push(&mut self, e: Arc<WorkflowEvent>) {
        self.next = e.sequence_number + 1;
        self.out.push_back(Frame::Event(e));
    }

    fn fail(&mut self, e: crate::store::Error) {
        tracing::warn!(instance_id = %self.id, error = %e, "watch stream failed reading the store");
        self.out.push_back(Frame::Error(e.to_string()));
        self.phase = Phase::Done;
    }

    /// Queues the next page of stored events; at the end of the store, ends
    /// the stream if the workflow is over, else goes live.
    fn catch_up(&mut self) -> Result<(), crate::store::Error> {
        let events = self
            .store
            .events(&self.ty, self.id, self.next, None, CATCH_UP_PAGE)?;
        let full = events.len() == CATCH_UP_PAGE;
        for e in events {
            self.push(Arc::new(e));
        }
        if !full {
            self.phase = if self.finished()? {
                Phase::Done
            } else {
                Phase::Live
            };
        }
        Ok(())
    }

    /// Whether the workflow is terminal and every event was queued; queues `end` if so.
    fn finished(&mut self) -> Result<bool, crate::store::Error> {
        let Some(state) = self.store.instance(&self.ty, self.id)? else {
            return Ok(false);
        };
        if !state.state.is_terminal() || state.last_seq >= self.next {
            return Ok(false);
        }
        tracing::debug!(instance_id = %self.id, state = %state.state, "watch stream ends: workflow finished");
        self.out.push_back(Frame::End {
            state: state.state,
            sequence_number: state.last_seq,
        });
        Ok(true)
    }

    async fn wait_live(&mut self) {
        let received = tokio::select! {
            r = self.feed.recv() => Some(r),
            _ = self.shutdown.wait_for(|stop| *stop) => None,
        };
        let Some(received) = received else {
            self.out
                .push_back(Frame::Error("the orchestrator is shutting down".into()));
            self.phase = Phase::Done;
            return;
        };
        match received {
            Ok(e) if e.workflow_type == self.ty && e.instance_id == self.id => {
                if e.sequence_number < self.next {
                    return; // already sent
                }
                if e.sequence_number > self.next {
                    // A gap: the missing events are in the store (the feed sends after commit).
                    self.phase = Phase::CatchUp;
                    return;
                }
                self.push(e);
                match self.finished() {
                    Ok(true) => self.phase = Phase::Done,
                    Ok(false) => {}
                    Err(err) => self.fail(err),
                }
            }
            Ok(_) => {}
            Err(RecvError::Lagged(missed)) => {
                tracing::debug!(instance_id = %self.id, missed, "watch stream lagged; reloading from the store");
                self.phase = Phase::CatchUp;
            }
            Err(RecvError::Closed) => {
                self.out
                    .push_back(Frame::Error("the event feed closed".into()));
                self.phase = Phase::Done;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use weft_shared::fsm::DefinitionLookup;

    use super::*;
    use crate::api::EventFeed;
    use crate::protocol::conformance::history::{diamond, Defs, Driver};

    /// Frames until the watcher has sent everything stored and waits for the feed.
    async fn caught_up(w: &mut Watcher) -> Vec<Frame> {
        let mut frames = Vec::new();
        while !(w.phase == Phase::Live && w.out.is_empty()) {
            frames.extend(w.next_frame().await);
        }
        frames
    }

    /// Every frame until the stream ends (within a deadline).
    async fn to_the_end(w: &mut Watcher) -> Vec<Frame> {
        let mut frames = Vec::new();
        let read = async {
            while let Some(f) = w.next_frame().await {
                frames.push(f);
            }
        };
        tokio::time::timeout(Duration::from_secs(10), read)
            .await
            .expect("the stream ends within 10 s");
        frames
    }

    fn seqs(frames: &[Frame]) -> Vec<u64> {
        frames
            .iter()
            .filter_map(|f| match f {
                Frame::Event(e) => Some(e.sequence_number),
                _ => None,
            })
            .collect()
    }

    /// Stores what `d` decided since the last call and sends it on the feed.
    fn apply(d: &mut Driver, store: &Store, defs: &Defs, feed: &EventFeed) {
        let from = d.stored;
        d.persist(store, defs);
        for e in &d.history[from..] {
            let _ = feed.send(Arc::new(e.clone()));
        }
    }

    #[tokio::test]
    async fn history_then_live_events_once_each_across_lag_then_end() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let defs = diamond(&["demo"]);
        assert!(defs.get("demo", 1).is_some());
        let (feed, _) = broadcast::channel(2);
        let (_stop, shutdown) = watch::channel(false);
        let mut d = Driver::new("demo", InstanceId::random(), 1_000);
        d.create(&defs);
        apply(&mut d, &store, &defs, &feed);
        let mut w = Watcher::new(
            store.clone(),
            "demo".into(),
            d.id,
            1,
            feed.subscribe(),
            shutdown,
        );

        let stored = d.history.len() as u64;
        let mut frames = caught_up(&mut w).await;
        assert_eq!(seqs(&frames), (1..=stored).collect::<Vec<_>>());

        // An unrelated instance's events and a repeat of an old one are ignored
        // (the sequence check below would see them).
        let mut other = Driver::new("demo", InstanceId::random(), 1_000);
        other.create(&defs);
        apply(&mut other, &store, &defs, &feed);
        let _ = feed.send(Arc::new(d.history[0].clone()));
        d.run_task(&defs, "a");
        apply(&mut d, &store, &defs, &feed);
        // Far more events than the feed holds: the watcher lags and reloads from the store.
        d.complete_all(&defs);
        apply(&mut d, &store, &defs, &feed);
        frames.extend(to_the_end(&mut w).await);
        let all = d.history.len() as u64;
        assert_eq!(seqs(&frames), (1..=all).collect::<Vec<_>>());
        assert_eq!(
            frames.last(),
            Some(&Frame::End {
                state: WorkflowState::Completed,
                sequence_number: all
            })
        );
        assert_eq!(w.phase, Phase::Done);
    }

    #[tokio::test]
    async fn from_a_sequence_and_shutdown() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let defs = diamond(&["demo"]);
        let (feed, _) = broadcast::channel(16);
        let (stop, shutdown) = watch::channel(false);
        let mut d = Driver::new("demo", InstanceId::random(), 1_000);
        d.create(&defs);
        d.run_task(&defs, "a");
        apply(&mut d, &store, &defs, &feed);
        let mut w = Watcher::new(
            store.clone(),
            "demo".into(),
            d.id,
            3,
            feed.subscribe(),
            shutdown,
        );
        let frames = caught_up(&mut w).await;
        assert_eq!(
            seqs(&frames),
            (3..=d.history.len() as u64).collect::<Vec<_>>()
        );
        stop.send(true).unwrap();
        let rest = to_the_end(&mut w).await;
        assert!(
            matches!(&rest[..], [Frame::Error(m)] if m.contains("shutting down")),
            "{rest:?}"
        );
    }
}
