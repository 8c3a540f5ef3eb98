//! The worker's main loop: one consumer subscribed to the lanes the worker
//! serves ([`crate::lanes`]) feeding a ready queue, from which tasks start —
//! urgent lanes first — as their slot and resources free up
//! ([`crate::capacity`]); committing the done prefix of each partition as
//! tasks finish, and
//! the drain on shutdown (stop fetching, let running tasks finish within
//! their grace period — the dispatch's `grace_period_ms`, else
//! `worker.shutdown_grace_ms` — cancel the rest, commit, leave the group).
//! Control records are applied in the loop as they come (they need no slot),
//! and by the control listener beside it. The development-broker workarounds
//! (rejoining a group whose rebalance never finished, the idle watch, the
//! orphan watch) run only when `kafka.broker_workarounds` resolves to on
//! ([`weft_shared::kafka::broker_workarounds_enabled`]).

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::Message;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use weft_shared::config::TransactionsMode;
use weft_shared::event::now_ms;
use weft_shared::lanes::{NodeCapabilities, Requirements};
use weft_shared::node::HealthStatus;
use weft_shared::Topics;

use crate::capacity::{Capacity, Ready, Waiting};
use crate::claims::{self, Claims};
use crate::consumer::{self, lock, Paused, TaskConsumer, WorkerContext};
use crate::control;
use crate::error::WorkerError;
use crate::execute::{self, Shared};
use crate::lanes::Served;
use crate::publish::Publisher;
use crate::supervise::SHUTDOWN_ABORT_AFTER;
use crate::worker::Worker;
use crate::{heartbeat, server};

/// How long every handler slot stays busy before fetching of the non-urgent
/// lanes pauses even with few records waiting (long tasks). Pausing drops
/// what librdkafka prefetched for the partitions and a resume fetches it
/// again; pausing at every momentary saturation (a burst larger than
/// `worker.concurrency` of short tasks) held dispatches for seconds.
const PAUSE_AFTER: Duration = Duration::from_millis(250);

/// Payload bytes of waiting non-urgent records that pause their fetching too.
const READY_BYTES: usize = 32 << 20;

/// How often the done prefixes are committed: completions in between share
/// one commit request (a commit per completion cost the broker a request and
/// a write per task; a crash redelivers at most this much more, which the
/// attempt keys make harmless).
const COMMIT_INTERVAL: Duration = Duration::from_millis(50);

pub(crate) async fn run(
    worker: Worker,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), WorkerError> {
    let Worker {
        config,
        node_id,
        registry,
        metrics,
        orphan_watch,
        idle_watch,
    } = worker;
    let mut config = config;
    // A secured broker that refuses us is a start-up error, not a hang.
    weft_shared::kafka_check::check_broker(&config.kafka)
        .await
        .map_err(|e| WorkerError::Config(e.to_string()))?;
    // `auto` becomes `on` or `off` here, once: everything below sees the resolved mode.
    config.kafka.transactions = weft_shared::transactions::resolve(&config.kafka).await;
    let settings = config.worker.clone();
    let started_at_ms = now_ms();
    let transactions = config.kafka.transactions == TransactionsMode::On;
    let ready = Arc::new(AtomicBool::new(false));
    let http_stop = CancellationToken::new();
    if !settings.http_addr.trim().is_empty() {
        server::serve(
            &settings.http_addr,
            metrics.clone(),
            ready.clone(),
            http_stop.clone(),
        )
        .await?;
    }
    let _stop_http = http_stop.drop_guard();

    let kafka = config.kafka.clone();
    let workarounds =
        tokio::task::spawn_blocking(move || weft_shared::kafka::broker_workarounds_enabled(&kafka))
            .await
            .unwrap_or(false);
    let transactional_id = transactions.then(|| format!("weft-worker-{node_id}"));
    let publisher = Publisher::new(&config.kafka, transactional_id).await?;
    if !transactions {
        tracing::info!("kafka transactions are off: exactly_once tasks will fail with exactly_once_unsupported");
    }
    let context = WorkerContext {
        metrics: metrics.clone(),
        ..WorkerContext::default()
    };
    let offer = NodeCapabilities::declared(
        &settings.capabilities,
        &settings.resources,
        settings.concurrency,
    )
    .map_err(|e| WorkerError::Config(e.to_string()))?;
    let capacity = Capacity::new(offer.capacity.clone());
    let served = Served::new(
        Topics::new(config.kafka.topic_prefix.clone()),
        &settings.types,
        offer,
    );
    let shared = Arc::new(Shared {
        served,
        capacity,
        node_id: node_id.clone(),
        registry,
        metrics,
        publisher,
        tracker: context.tracker.clone(),
        group: context.group.clone(),
        commit_lane: context.commit_lane.clone(),
        marked: tokio::sync::watch::Sender::new(0),
        assignment: context.assignment.clone(),
        transactions,
        active: Mutex::default(),
        attempts: context.attempts.clone(),
        default_grace: Duration::from_millis(settings.shutdown_grace_ms),
        max_grace_ms: AtomicU64::new(settings.shutdown_grace_ms),
        heartbeat_now: context.heartbeat_now.clone(),
        stop: CancellationToken::new(),
        cancel: CancellationToken::new(),
    });
    let consumer = consumer::subscribe(&config, context, &shared.served)?;
    ready.store(true, Ordering::SeqCst);
    tracing::info!(
        node_id = %node_id,
        concurrency = settings.concurrency,
        handlers = ?shared.registry.names(),
        "worker running"
    );
    let heartbeats = tokio::spawn(heartbeat::run(
        shared.clone(),
        settings.concurrency,
        started_at_ms,
    ));

    let listener = tokio::spawn(control::listen(
        shared.clone(),
        config.kafka.clone(),
        settings.group_id.clone(),
        settings.types.clone(),
    ));

    let claims = workarounds.then(|| {
        let claims = Arc::new(Claims::default());
        tokio::spawn(claims::follow(
            claims.clone(),
            config.kafka.clone(),
            settings.group_id.clone(),
            shared.clone(),
        ));
        claims
    });

    let capacity = shared.capacity.clone();
    let mut tasks = JoinSet::new();
    let watch = claims.map(|claims| Watches {
        claims,
        orphan_watch,
        idle_watch,
    });
    consume(&consumer, &shared, &capacity, &mut tasks, watch, shutdown).await;

    // drain
    ready.store(false, Ordering::SeqCst);
    shared.stop.cancel();
    let grace = Duration::from_millis(shared.max_grace_ms.load(Ordering::SeqCst));
    tracing::info!(
        in_flight = tasks.len(),
        default_grace_ms = settings.shutdown_grace_ms,
        longest_grace_ms = grace.as_millis() as u64,
        "worker draining"
    );
    heartbeats.abort();
    let draining = heartbeat::publish(
        &shared,
        settings.concurrency,
        HealthStatus::Draining,
        started_at_ms,
    );
    if tokio::time::timeout(Duration::from_secs(3), draining)
        .await
        .is_err()
    {
        tracing::warn!("could not publish the draining heartbeat in time");
    }
    // every attempt cancels itself when its own grace period is over; this is the backstop
    drain(
        &consumer,
        &shared,
        &mut tasks,
        grace + SHUTDOWN_ABORT_AFTER + Duration::from_secs(1),
    )
    .await;
    listener.abort();
    let positions = lock(&shared.tracker).all_positions();
    tokio::task::spawn_blocking(move || {
        consumer::commit(&consumer, &positions, CommitMode::Sync);
        consumer.unsubscribe();
        drop(consumer); // closes the consumer: the group rebalances now, not after a session timeout
    })
    .await
    .ok();
    shared.publisher.flush(Duration::from_secs(5)).await;
    tracing::info!("worker stopped");
    Ok(())
}

/// Records of the non-urgent lanes received ahead of free capacity before
/// fetching them pauses: enough that a resume at half of it has records to
/// start for longer than the fetch travels (a pause drops what librdkafka
/// prefetched, and a development broker may take a few hundred ms to answer
/// the next fetch), few enough that an urgent record is read right behind
/// them.
fn ready_buffer(slots: i64) -> usize {
    usize::try_from(slots)
        .unwrap_or(1)
        .saturating_mul(4)
        .max(1024)
}

/// How long after subscribing (or rejoining) the worker waits for an assignment.
const JOIN_WATCHDOG: Duration = Duration::from_secs(15);
/// Rejoins after which an empty assignment is taken as final.
const MAX_REJOINS: u32 = 3;

/// What the development-broker watches need.
struct Watches {
    /// The partitions live workers hold.
    claims: Arc<Claims>,
    /// The orphan watch's check interval and orphan time.
    orphan_watch: (Duration, Duration),
    /// The idle watch's check interval and unowned time.
    idle_watch: (Duration, Duration),
}

/// Receives records into the ready queue and starts them as capacity frees,
/// pausing the non-urgent lanes while enough of them wait, following new
/// lanes, until `shutdown` resolves. With
/// `watch` (the development-broker workarounds on) it also runs the join
/// watchdog, the idle watch and the orphan watch; any rejoin of theirs arms
/// the join watchdog again, in case the group does not finish that rebalance.
async fn consume(
    consumer: &TaskConsumer,
    shared: &Arc<Shared>,
    capacity: &Arc<Capacity>,
    tasks: &mut JoinSet<()>,
    watch: Option<Watches>,
    shutdown: impl Future<Output = ()>,
) {
    let served = &shared.served;
    let buffer = ready_buffer(capacity.free_slots());
    let mut ready = Ready::default();
    let mut rebalances_seen = consumer.context().rebalances.load(Ordering::SeqCst);
    let mut lanes: HashMap<String, Requirements> = HashMap::new();
    let mut lanes_tick = tokio::time::interval_at(
        tokio::time::Instant::now() + crate::lanes::REFRESH,
        crate::lanes::REFRESH,
    );
    tokio::pin!(shutdown);
    let workarounds = watch.is_some();
    let (check_every, orphan_after) = watch.as_ref().map_or(
        (crate::orphans::CHECK_EVERY, crate::orphans::ORPHAN_AFTER),
        |w| w.orphan_watch,
    );
    let (idle_every, unowned_after) = watch.as_ref().map_or(
        (crate::unowned::CHECK_EVERY, crate::unowned::UNOWNED_AFTER),
        |w| w.idle_watch,
    );
    let mut commit_tick = tokio::time::interval(COMMIT_INTERVAL);
    let mut paused = Paused::default();
    let mut saturated_since: Option<tokio::time::Instant> = None;
    // Checks that a rebalance ended for this member; see `consumer::rejoin_if_never_assigned`.
    let mut join_watchdog =
        tokio::time::interval_at(tokio::time::Instant::now() + JOIN_WATCHDOG, JOIN_WATCHDOG);
    let mut rejoins = if workarounds { 0 } else { MAX_REJOINS };
    let mut orphan_tick =
        tokio::time::interval_at(tokio::time::Instant::now() + check_every, check_every);
    let mut orphans = crate::orphans::OrphanWatch::new(orphan_after);
    let mut idle_tick =
        tokio::time::interval_at(tokio::time::Instant::now() + idle_every, idle_every);
    let mut idle = crate::unowned::UnownedWatch::new(unowned_after);
    loop {
        while let Some(joined) = tasks.try_join_next() {
            log_join(joined);
        }
        let epoch = consumer.context().rebalances.load(Ordering::SeqCst);
        if epoch != rebalances_seen {
            rebalances_seen = epoch;
            let tracker = lock(&shared.tracker);
            let dropped = ready.retain(|w| tracker.is_current(&w.ticket));
            if dropped > 0 {
                tracing::info!(
                    dropped,
                    "records of revoked partitions left to their next owner"
                );
            }
        }
        while let Some((w, permit)) = ready.next(capacity) {
            if !lock(&shared.tracker).is_current(&w.ticket) {
                continue; // revoked while it waited; its next owner runs it
            }
            shared
                .metrics
                .observe_ready_wait(w.need.urgent, w.since.elapsed());
            tasks.spawn(execute::process(shared.clone(), w.msg, w.ticket, permit));
        }
        // Pauses fetching of the other lanes once `buffer` of their records
        // (or READY_BYTES) wait, and resumes once half of them started; also
        // while every slot has been busy for PAUSE_AFTER with none of them
        // waiting (long tasks; the commit tick wakes this loop often enough
        // to notice), until a slot frees. Urgent lanes go on fetching until
        // `buffer` urgent records wait: they overtake the others here.
        let saturated = capacity.free_slots() <= 0;
        let busy_for = if saturated {
            saturated_since
                .get_or_insert_with(tokio::time::Instant::now)
                .elapsed()
        } else {
            saturated_since = None;
            Duration::ZERO
        };
        let (waiting, bytes) = (ready.normal_len(), ready.normal_bytes());
        let idle_queue = saturated && waiting == 0;
        let want = Paused {
            normal: if paused.normal {
                waiting >= buffer / 2 || bytes >= READY_BYTES / 2 || idle_queue
            } else {
                waiting >= buffer || bytes >= READY_BYTES || (idle_queue && busy_for >= PAUSE_AFTER)
            },
            urgent: ready.urgent_len() >= buffer,
        };
        consumer::pause_lanes(consumer, served, want, &mut paused);
        tokio::select! {
            biased;
            () = &mut shutdown => return,
            _ = commit_tick.tick() => commit_done(consumer, shared),
            () = capacity.freed(), if ready.len() > 0 => {}
            _ = lanes_tick.tick() => {
                if consumer::follow_lanes(consumer, served) {
                    rejoins = 0;
                    join_watchdog.reset();
                }
            }
            _ = join_watchdog.tick(), if rejoins < MAX_REJOINS => {
                if consumer::rejoin_if_never_assigned(consumer) {
                    rejoins += 1;
                } else {
                    rejoins = MAX_REJOINS;
                }
            }
            _ = orphan_tick.tick(), if workarounds => {
                if let Some(w) = &watch {
                    if orphans.check(consumer, shared.publisher.topics(), &w.claims) {
                        rejoins = 0;
                        join_watchdog.reset();
                    }
                }
            }
            _ = idle_tick.tick(), if workarounds => {
                if let Some(w) = &watch {
                    if idle.check(consumer, served, &w.claims) {
                        rejoins = 0;
                        join_watchdog.reset();
                    }
                }
            }
            received = consumer.recv() => {
                let msg = match received {
                    Ok(m) => m.detach(),
                    Err(e) => {
                        consumer_error(&e);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let ticket = lock(&shared.tracker).track(msg.topic(), msg.partition(), msg.offset());
                if let Some(control) = control::control_of(&msg) {
                    match control {
                        Ok(c) => control::apply(shared, &c, "tasks"),
                        Err(reason) => tracing::warn!(
                            %reason, topic = msg.topic(), partition = msg.partition(), offset = msg.offset(),
                            "unreadable control record; skipped"
                        ),
                    }
                    shared.mark_done(&ticket);
                    continue;
                }
                let need = lanes
                    .entry(msg.topic().to_owned())
                    .or_insert_with(|| served.lane(msg.topic()).unwrap_or_default())
                    .clone();
                ready.push(Waiting {
                    msg,
                    ticket,
                    need,
                    since: std::time::Instant::now(),
                });
            }
        }
    }
}

/// Lets running tasks finish for up to `grace` (each also stops itself at the
/// end of its own grace period), committing as they do; then cancels the rest
/// and gives them a moment to give their records back.
async fn drain(
    consumer: &TaskConsumer,
    shared: &Arc<Shared>,
    tasks: &mut JoinSet<()>,
    grace: Duration,
) {
    let deadline = tokio::time::Instant::now() + grace;
    while !tasks.is_empty() {
        tokio::select! {
            joined = tasks.join_next() => {
                if let Some(joined) = joined {
                    log_join(joined);
                }
                commit_done(consumer, shared);
            }
            () = tokio::time::sleep_until(deadline) => break,
        }
    }
    shared.cancel.cancel();
    if !tasks.is_empty() {
        tracing::warn!(
            unfinished = tasks.len(),
            "grace period over; cancelling tasks, their records stay uncommitted"
        );
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            while let Some(joined) = tasks.join_next().await {
                log_join(joined);
            }
        })
        .await;
        tasks.abort_all();
    }
}

/// Commits the done prefixes that moved. With transactions on, under the
/// commit lane and synchronously: a plain commit is acknowledged before an
/// exactly-once result's transaction commits a later offset of its partition.
fn commit_done(consumer: &TaskConsumer, shared: &Shared) {
    if !shared.transactions {
        let positions = lock(&shared.tracker).take_committable();
        consumer::commit(consumer, &positions, CommitMode::Async);
        return;
    }
    let commit = || {
        let _lane = lock(&shared.commit_lane);
        let positions = lock(&shared.tracker).take_committable();
        consumer::commit(consumer, &positions, CommitMode::Sync);
    };
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(commit),
        _ => commit(),
    }
}

fn consumer_error(e: &KafkaError) {
    match e.rdkafka_error_code() {
        Some(RDKafkaErrorCode::UnknownTopicOrPartition | RDKafkaErrorCode::UnknownTopic) => {
            tracing::debug!(error = %e, "task topic not there yet");
        }
        _ => tracing::warn!(error = %e, "kafka consumer error"),
    }
}

fn log_join(joined: Result<(), tokio::task::JoinError>) {
    if let Err(e) = joined {
        if e.is_panic() {
            tracing::error!(error = %e, "task runner panicked");
        }
    }
}
