//! Pipelined publishing (ADR 0010): a live processor decides batch N+1 while
//! the records of batch N are still on their way to the broker. Each batch's
//! publishable records go out as one *flight*; at most [`WINDOW`] flights are in
//! the air, landed oldest first. A landed flight's outbox entries leave the
//! outbox in memory at once, and their rows are deleted in the write of the
//! next batch (or on the next idle tick), so a batch costs one RocksDB write,
//! not two.
//!
//! What stays true:
//! - a flight's records are handed to the idempotent producer by the
//!   processor itself, in order, before the next batch is decided (only the
//!   wait for acknowledgements is a task of its own), and the producer keeps a
//!   partition's records in the order they were handed over, so a flight
//!   never overtakes an earlier one unless a publish fails; a failed flight is published again, stop-and-wait, by
//!   [`Partition::flush`] (its records carry idempotency keys, and a rebuild
//!   derives decisions from inputs, never from where a decision record sits);
//! - an outbox entry in flight is in no other flight (a go-live or a release
//!   of held dispatches skips it);
//! - a row not yet deleted when the processor stops is published again by the
//!   next one, which the idempotency keys make harmless — as before;
//! - a transactional publisher flies one flight at a time (one open
//!   transaction per producer).

use std::collections::{HashSet, VecDeque};

use tokio::task::JoinHandle;

use super::{Exit, Partition};
use crate::publisher::{Failure, PublishError, Publisher};
use crate::store::OutboxRecord;

/// Flights in the air at once per partition.
pub const WINDOW: usize = 8;

/// One batch's records on their way to the broker.
pub(super) struct Flight {
    seqs: Vec<u64>,
    handle: JoinHandle<Result<(), PublishError>>,
}

/// The flights of one processor, and the outbox rows waiting to be deleted.
#[derive(Default)]
pub(super) struct Flights {
    queue: VecDeque<Flight>,
    /// Outbox entries in some flight.
    pub(super) seqs: HashSet<u64>,
    /// Published (or withheld) entries whose rows the next write deletes.
    pub(super) forgotten: Vec<u64>,
}

impl Flights {
    pub(super) fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Flights in the air.
    pub(super) fn len(&self) -> usize {
        self.queue.len()
    }

    /// The oldest flight's handle, to wait on in the run loop.
    pub(super) fn front(&mut self) -> Option<&mut JoinHandle<Result<(), PublishError>>> {
        self.queue.front_mut().map(|f| &mut f.handle)
    }
}

impl Partition {
    /// How many flights may be in the air.
    fn window(&self) -> usize {
        match self.publisher {
            Publisher::Transactional(_) => 1,
            Publisher::Plain(_) => WINDOW,
        }
    }

    /// Publishes `seqs` without waiting for the broker (waiting only while the
    /// window is full); a transactional publisher waits for each flush.
    pub(super) async fn launch(&mut self, seqs: &[u64]) -> Result<(), Exit> {
        if self.window() <= 1 {
            self.drain().await?;
            return self.flush(seqs).await;
        }
        let (publish, withheld) = self.publishable(seqs);
        self.forget_later(&withheld);
        if publish.is_empty() {
            return Ok(());
        }
        while self.flights.queue.len() >= self.window() {
            let oldest = self.flights.queue.pop_front().expect("a full window");
            let landed = oldest.handle.await;
            self.landed(oldest.seqs, landed).await?;
        }
        let (seqs, records): (Vec<u64>, Vec<OutboxRecord>) = publish.into_iter().unzip();
        self.flights.seqs.extend(seqs.iter().copied());
        // Handed to the producer here, in the processor's order; only the
        // wait for the broker's acknowledgements runs beside it. (Enqueued by
        // a spawned task, a flight could start before an earlier one.)
        let enqueued = crate::publisher::enqueue(self.publisher.producer(), &records).await;
        let handle = tokio::spawn(enqueued.acknowledged());
        self.flights.queue.push_back(Flight { seqs, handle });
        self.shared.metrics.flights.inc();
        Ok(())
    }

    /// The oldest flight landed with `result`: its entries leave the outbox,
    /// or, when it failed, are published again, stop-and-wait.
    pub(super) async fn landed(
        &mut self,
        seqs: Vec<u64>,
        result: Result<Result<(), PublishError>, tokio::task::JoinError>,
    ) -> Result<(), Exit> {
        for seq in &seqs {
            self.flights.seqs.remove(seq);
        }
        self.shared.metrics.flights.dec();
        match result {
            Ok(Ok(())) => {
                self.forget_later(&seqs);
                Ok(())
            }
            Ok(Err(e)) if e.failure == Failure::Fatal => {
                tracing::error!(topic = %self.topic, partition = self.partition, error = %e, "the producer can no longer publish; stopping the partition processor");
                Err(Exit::Fenced(e.to_string()))
            }
            Ok(Err(e)) => {
                tracing::warn!(topic = %self.topic, partition = self.partition, error = %e, records = seqs.len(), "a pipelined publish failed; publishing its records again");
                self.flush(&seqs).await
            }
            Err(e) => {
                tracing::warn!(topic = %self.topic, partition = self.partition, error = %e, "a publish task ended abnormally; publishing its records again");
                self.flush(&seqs).await
            }
        }
    }

    /// Lands the oldest flight (it has finished: the run loop waited on it).
    pub(super) async fn land_front(
        &mut self,
        result: Result<Result<(), PublishError>, tokio::task::JoinError>,
    ) -> Result<(), Exit> {
        let Some(oldest) = self.flights.queue.pop_front() else {
            return Ok(());
        };
        self.landed(oldest.seqs, result).await
    }

    /// Waits for every flight, then deletes the rows of everything landed.
    pub(super) async fn drain(&mut self) -> Result<(), Exit> {
        while let Some(oldest) = self.flights.queue.pop_front() {
            let landed = oldest.handle.await;
            self.landed(oldest.seqs, landed).await?;
        }
        self.delete_forgotten();
        Ok(())
    }

    /// Takes published or withheld entries out of the outbox; their rows are
    /// deleted with the next batch written (or by [`Self::delete_forgotten`]).
    pub(super) fn forget_later(&mut self, done: &[u64]) {
        for seq in done {
            if self.outbox.take(*seq).is_some() {
                self.flights.forgotten.push(*seq);
            }
        }
    }

    /// Deletes the rows of forgotten entries now (idle, or stopping).
    pub(super) fn delete_forgotten(&mut self) {
        if self.flights.forgotten.is_empty() {
            return;
        }
        let mut wb = self.shared.store.batch();
        for seq in &self.flights.forgotten {
            wb.delete_outbox(&self.topic, self.partition, *seq);
        }
        match wb.commit() {
            Ok(()) => self.flights.forgotten.clear(),
            // Kept for the next write; a restart publishes them again, and the
            // copies are dropped on apply.
            Err(e) => {
                tracing::error!(topic = %self.topic, partition = self.partition, error = %e, "could not clear published outbox records")
            }
        }
    }
}
