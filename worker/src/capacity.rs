//! What a worker can run at once, and which received record runs next.
//!
//! [`Capacity`] holds the worker's free amount of each resource: its `slots`
//! (`worker.concurrency`) and what it declares in `worker.resources`
//! (`cpu=4`, …). A task takes one slot and what its lane asks for (its
//! `resources`, see [`weft_shared::lanes`]); a [`Permit`] gives them back when
//! the handler returned. So the tasks running at once never ask for more of a
//! resource than the worker has.
//!
//! [`Ready`] holds received records until they fit. Records of urgent lanes
//! (`critical` and `high` tasks) start before the others — except that every
//! [`NORMAL_TURN`]th start goes to another record while both wait, so a
//! stream of urgent work cannot stop the rest. Within a class each topic
//! (a type's lane) has its own queue and the queues take turns, so one type's
//! backlog received in a batch does not hold up another's; within a queue
//! records start in arrival order. One that does not fit yet lets later ones
//! that fit go first, until it has waited [`RESERVE_AFTER`]: then nothing
//! passes it and the capacity it needs frees up for it.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::message::OwnedMessage;
use rdkafka::Message;
use tokio::sync::Notify;
use weft_shared::lanes::{Requirements, SLOTS};

use crate::consumer::lock;
use crate::offsets::Ticket;

/// Every this many starts, one goes to a non-urgent record if one waits.
pub const NORMAL_TURN: u32 = 5;
/// How long a record that does not fit may be passed by others.
pub const RESERVE_AFTER: Duration = Duration::from_secs(2);

/// The worker's free resources.
#[derive(Debug)]
pub(crate) struct Capacity {
    total: BTreeMap<String, i64>,
    free: Mutex<BTreeMap<String, i64>>,
    freed: Notify,
}

/// Resources taken by one running task, given back on drop.
#[derive(Debug)]
pub(crate) struct Permit {
    capacity: Arc<Capacity>,
    taken: Vec<(String, i64)>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        {
            let mut free = lock(&self.capacity.free);
            for (name, n) in &self.taken {
                *free.entry(name.clone()).or_default() += n;
            }
        }
        self.capacity.freed.notify_one();
    }
}

impl Capacity {
    /// A capacity of `total` (which must hold `slots`).
    pub fn new(total: BTreeMap<String, i64>) -> Arc<Self> {
        Arc::new(Self {
            free: Mutex::new(total.clone()),
            total,
            freed: Notify::new(),
        })
    }

    /// What a task of `need` takes: a slot and its resources, each at most
    /// the worker's total (a worker only serves lanes it meets, so that bound
    /// never cuts anything but keeps a mistake from waiting for ever).
    fn amounts(&self, need: &Requirements) -> Vec<(String, i64)> {
        let mut out = vec![(
            SLOTS.to_owned(),
            need.amount(SLOTS)
                .min(self.total.get(SLOTS).copied().unwrap_or(1)),
        )];
        for (name, n) in &need.resources {
            if name != SLOTS {
                let total = self.total.get(name).copied().unwrap_or(0);
                out.push((name.clone(), (*n).min(total)));
            }
        }
        out
    }

    /// Takes what `need` asks for if it is free now.
    pub fn try_take(self: &Arc<Self>, need: &Requirements) -> Option<Permit> {
        let taken = self.amounts(need);
        let mut free = lock(&self.free);
        let fits = taken
            .iter()
            .all(|(name, n)| free.get(name).copied().unwrap_or(0) >= *n);
        if !fits {
            return None;
        }
        for (name, n) in &taken {
            *free.entry(name.clone()).or_default() -= n;
        }
        Some(Permit {
            capacity: self.clone(),
            taken,
        })
    }

    /// Free slots now.
    pub fn free_slots(&self) -> i64 {
        lock(&self.free).get(SLOTS).copied().unwrap_or(0)
    }

    /// Resolves when a permit was given back (at once if one was since the last call).
    pub async fn freed(&self) {
        self.freed.notified().await;
    }

    /// Amounts in use now, by resource (for the node record).
    pub fn in_use(&self) -> BTreeMap<String, i64> {
        let free = lock(&self.free);
        self.total
            .iter()
            .map(|(name, total)| (name.clone(), total - free.get(name).copied().unwrap_or(0)))
            .collect()
    }
}

/// A received task record waiting to start.
pub(crate) struct Waiting {
    pub msg: OwnedMessage,
    pub ticket: Ticket,
    pub need: Requirements,
    pub since: Instant,
}

/// Received records not started yet, urgent ones apart.
#[derive(Default)]
pub(crate) struct Ready {
    urgent: Class,
    normal: Class,
    /// Payload bytes of the non-urgent records.
    normal_bytes: usize,
    /// Urgent starts since the last non-urgent one.
    streak: u32,
}

fn size(w: &Waiting) -> usize {
    w.msg.payload().map_or(0, <[u8]>::len)
}

impl Ready {
    pub fn push(&mut self, w: Waiting) {
        if w.need.urgent {
            self.urgent.push(w);
        } else {
            self.normal_bytes += size(&w);
            self.normal.push(w);
        }
    }

    /// Payload bytes of the non-urgent records waiting.
    pub fn normal_bytes(&self) -> usize {
        self.normal_bytes
    }

    pub fn len(&self) -> usize {
        self.urgent.len + self.normal.len
    }

    pub fn urgent_len(&self) -> usize {
        self.urgent.len
    }

    pub fn normal_len(&self) -> usize {
        self.normal.len
    }

    /// Drops the records `keep` refuses (those of an assignment that is
    /// over: the partition's next owner, or its next assignment here,
    /// receives them again from the committed offset); returns how many.
    pub fn retain(&mut self, mut keep: impl FnMut(&Waiting) -> bool) -> usize {
        let before = self.len();
        self.urgent.retain(&mut keep);
        self.normal.retain(&mut keep);
        self.normal_bytes = self
            .normal
            .queues
            .iter()
            .flat_map(|(_, q)| q.iter())
            .map(size)
            .sum();
        before - self.len()
    }

    /// The record to start now and its permit, if one fits.
    pub fn next(&mut self, capacity: &Arc<Capacity>) -> Option<(Waiting, Permit)> {
        let normal_turn = self.streak + 1 >= NORMAL_TURN && self.normal.len > 0;
        let order = if normal_turn {
            [false, true]
        } else {
            [true, false]
        };
        for urgent in order {
            let class = if urgent {
                &mut self.urgent
            } else {
                &mut self.normal
            };
            if let Some(started) = class.take(capacity) {
                if urgent {
                    self.streak += 1;
                } else {
                    self.streak = 0;
                    self.normal_bytes -= size(&started.0);
                }
                return Some(started);
            }
        }
        None
    }
}

/// The waiting records of one class, a queue per topic served in turn: one
/// type's (or lane's) backlog received in one go does not hold up another's.
#[derive(Default)]
struct Class {
    queues: Vec<(String, VecDeque<Waiting>)>,
    /// The queue whose turn is next.
    turn: usize,
    len: usize,
}

impl Class {
    fn push(&mut self, w: Waiting) {
        let topic = w.msg.topic();
        match self.queues.iter_mut().find(|(t, _)| t == topic) {
            Some((_, q)) => q.push_back(w),
            None => self.queues.push((topic.to_owned(), VecDeque::from([w]))),
        }
        self.len += 1;
    }

    fn retain(&mut self, keep: &mut impl FnMut(&Waiting) -> bool) {
        for (_, q) in &mut self.queues {
            q.retain(|w| keep(w));
        }
        self.prune();
    }

    /// The next record that fits, the queues taking turns.
    fn take(&mut self, capacity: &Arc<Capacity>) -> Option<(Waiting, Permit)> {
        let n = self.queues.len();
        for k in 0..n {
            let i = (self.turn + k) % n;
            if let Some(started) = take_fitting(&mut self.queues[i].1, capacity) {
                self.len -= 1;
                if self.queues[i].1.is_empty() {
                    // The next queue moves into this place and has the turn.
                    self.queues.remove(i);
                    self.turn = i;
                } else {
                    self.turn = i + 1;
                }
                if self.turn >= self.queues.len() {
                    self.turn = 0;
                }
                return Some(started);
            }
        }
        None
    }

    fn prune(&mut self) {
        self.queues.retain(|(_, q)| !q.is_empty());
        self.len = self.queues.iter().map(|(_, q)| q.len()).sum();
        if self.turn >= self.queues.len() {
            self.turn = 0;
        }
    }
}

/// The first record of `queue` that fits, unless one before it has waited
/// [`RESERVE_AFTER`] (then only that one may start).
fn take_fitting(
    queue: &mut VecDeque<Waiting>,
    capacity: &Arc<Capacity>,
) -> Option<(Waiting, Permit)> {
    for i in 0..queue.len() {
        let permit = capacity.try_take(&queue[i].need);
        if let Some(permit) = permit {
            let w = queue.remove(i).expect("index in range");
            return Some((w, permit));
        }
        if queue[i].since.elapsed() >= RESERVE_AFTER {
            return None;
        }
    }
    None
}

#[cfg(test)]
mod tests;
