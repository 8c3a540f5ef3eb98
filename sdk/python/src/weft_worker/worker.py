"""A Weft worker: a member of the workers' consumer group on the task topics
that runs each dispatched attempt's handler and publishes its events, as
``docs/protocol.md`` describes and the Rust worker does.

It subscribes to the lanes it serves (:mod:`weft_worker.lanes`): the default
and urgent lanes of its types, and every existing lane whose capabilities,
labels and resources it offers (looked for again every few seconds). Received
records wait in a ready queue (:mod:`weft_worker.capacity`) where urgent ones
start first, and each starts only when a slot and the resources of its lane
are free.

Threads: the caller's thread runs the consumer loop (fetching, control records,
offset commits, following new lanes, the ready queue, pausing lanes while their
records cannot start); each attempt runs on a
supervisor thread that runs the handler on a thread of its own (so a handler
that ignores its deadline or a cancel can be given up on); a control listener
reads control records from the end of every task partition, so a cancel is seen
even while the group consumer is paused; heartbeat threads publish task
heartbeats; one thread serves the producer's delivery reports and publishes the
node record.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple, Union

from confluent_kafka import OFFSET_END, Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from . import codec
from .builtins import BUILTINS
from .capacity import Capacity, Permit, Ready, Waiting
from .context import TaskContext
from .errors import RetryableError, TaskError, TerminalError
from .lanes import REFRESH_S, Served
from .offsets import OffsetTracker, Ticket
from .protocol import (
    AT_MOST_ONCE,
    COMPLETED,
    EXACTLY_ONCE,
    FAILED,
    HEADER_CONTROL,
    HEADER_DLQ_REASON,
    HEADER_DLQ_SOURCE,
    PARTITIONER,
    SLOTS,
    STARTED,
    NodeOffer,
    Requirements,
    ResourceSpec,
    Topics,
    attempt_event,
    checkpoint_event,
    write_usage,
    data_problem,
    event_headers,
    failure_data,
    header,
    now_ms,
    started_data,
)

log = logging.getLogger("weft_worker")

Handler = Callable[[TaskContext], Optional[Dict[str, Any]]]

#: The shortest time between two scheduled heartbeats of one attempt.
MIN_HEARTBEAT_INTERVAL_S = 0.1
#: How long a handler told to stop at its deadline may take, when the dispatch sets no grace period.
DEADLINE_GRACE_S = 1.0
#: How long a handler cancelled at the end of the shutdown grace period has to return.
SHUTDOWN_ABORT_AFTER_S = 2.0
#: How often done offsets are committed.
COMMIT_INTERVAL_S = 1.0
#: How often the node record is published.
NODE_RECORD_INTERVAL_S = 5.0
#: How often the control listener looks for new task partitions.
DISCOVERY_INTERVAL_S = 5.0
#: How many finished and cancelled attempts are remembered (duplicate and late dispatches).
REMEMBERED_ATTEMPTS = 100_000
#: Fetching of the non-urgent lanes pauses once every slot has been busy this long (seconds).
PAUSE_AFTER_S = 0.25


def ready_buffer(slots: int) -> int:
    """How many received records of one class (urgent or not) may wait before
    that class's lanes stop fetching: 4 per slot, at least 64."""
    return max(4 * slots, 64)


def heartbeat_interval(timeout_ms: int) -> Optional[float]:
    """Seconds between heartbeats for a heartbeat timeout (None: the task asked for none)."""
    if timeout_ms <= 0:
        return None
    return max(timeout_ms / 3000.0, MIN_HEARTBEAT_INTERVAL_S)


def deadline_ms(dispatch: Dict[str, Any], started_ms: int) -> Optional[int]:
    """The earlier of ``started + execution_timeout_ms`` and the dispatch's ``deadline_ms`` (0: none)."""
    candidates = []
    timeout = dispatch.get("timeout_config", {}).get("execution_timeout_ms", 0)
    if timeout > 0:
        candidates.append(started_ms + timeout)
    if dispatch.get("deadline_ms", 0) > 0:
        candidates.append(dispatch["deadline_ms"])
    return min(candidates) if candidates else None


# -- attempts admitted, running, finished, cancelled ---------------------------


@dataclass
class _Attempt:
    execution_id: str
    ticket: Ticket
    #: Fired to ask the handler to stop (control cancel, deadline, shutdown).
    cancel: threading.Event = field(default_factory=threading.Event)
    #: Set by a control record: the grace period it granted, in seconds.
    control_grace: Optional[float] = None
    #: Records of the same attempt that arrived while it ran (at-least-once: done with it).
    duplicates: List[Ticket] = field(default_factory=list)
    #: Its execution semantics and grace period (seconds), once admitted.
    semantics: str = ""
    grace_s: float = 0.0
    #: Set when its partition is revoked: stop, publish only an output returned in time.
    revoked: threading.Event = field(default_factory=threading.Event)
    #: Set when its thread is done with it.
    finished: threading.Event = field(default_factory=threading.Event)


RUN, DUPLICATE_OF_RUNNING, DUPLICATE_OF_FINISHED, CANCELLED = "run", "running", "finished", "cancelled"


class _Attempts:
    """Which attempts run here, ran here, or were cancelled before they arrived."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.running: Dict[str, _Attempt] = {}
        self._finished: "OrderedDict[str, None]" = OrderedDict()
        self._cancelled: "OrderedDict[str, float]" = OrderedDict()

    @staticmethod
    def _remember(lru: "OrderedDict[str, Any]", key: str, value: Any) -> None:
        lru[key] = value
        lru.move_to_end(key)
        while len(lru) > REMEMBERED_ATTEMPTS:
            lru.popitem(last=False)

    def admit(self, execution_id: str, ticket: Ticket, attach: bool) -> Tuple[str, Optional[_Attempt]]:
        with self._lock:
            if execution_id in self._cancelled:
                return CANCELLED, None
            running = self.running.get(execution_id)
            if running is not None:
                if attach:
                    running.duplicates.append(ticket)
                return DUPLICATE_OF_RUNNING, None
            if execution_id in self._finished:
                return DUPLICATE_OF_FINISHED, None
            attempt = _Attempt(execution_id, ticket)
            self.running[execution_id] = attempt
            return RUN, attempt

    def cancel(self, execution_id: str, grace_s: float) -> bool:
        """Cancels the attempt if it runs here (True), and remembers the cancel either way."""
        with self._lock:
            self._remember(self._cancelled, execution_id, grace_s)
            attempt = self.running.get(execution_id)
            if attempt is None:
                return False
            if attempt.control_grace is None:
                attempt.control_grace = grace_s
            attempt.cancel.set()
            return True

    def finish(self, execution_id: str, remember: bool = True) -> List[Ticket]:
        """Forgets the running attempt; remembers it as run here unless ``remember``
        is False (its record runs again if it comes back)."""
        with self._lock:
            attempt = self.running.pop(execution_id, None)
            if remember:
                self._remember(self._finished, execution_id, None)
            return attempt.duplicates if attempt else []

    def of_partitions(self, partitions: "set[Tuple[str, int]]") -> List[_Attempt]:
        with self._lock:
            return [a for a in self.running.values() if (a.ticket.topic, a.ticket.partition) in partitions]

    def in_flight(self) -> List[str]:
        with self._lock:
            return list(self.running)


# -- the worker -----------------------------------------------------------------


class Worker:
    """Runs handlers registered by name for the task topics of ``types`` (every type when empty).

    ``group_id`` is the workers' consumer group: a Python worker may share it
    with Rust workers (and others) as long as every member can run every
    handler the types it serves use. ``capabilities`` (names such as ``gpu``
    and labels such as ``region=eu``) and ``resources`` (``{"cpu": 4}``) say
    which constrained lanes it serves, and bound what runs at once: a task
    takes one of ``concurrency`` slots and the resources its lane names. Bad
    names or amounts raise :class:`~weft_worker.protocol.LaneError` (a
    ``ValueError``) saying why. ``transactions=True`` enables
    ``exactly_once`` tasks (results and the consumer offset in one Kafka
    transaction; needs a broker with transactions); without it such tasks fail
    with the terminal error ``exactly_once_unsupported``.
    """

    def __init__(
        self,
        bootstrap: str = "127.0.0.1:9092",
        *,
        group_id: str = "weft-workers",
        topic_prefix: str = "weft",
        types: Optional[List[str]] = None,
        node_id: Optional[str] = None,
        concurrency: int = 8,
        transactions: bool = False,
        shutdown_grace_ms: int = 30_000,
        properties: Optional[Dict[str, str]] = None,
        capabilities: Union[Iterable[str], str, None] = None,
        resources: ResourceSpec = None,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        #: What this worker offers: capabilities, labels, capacity per resource (``slots`` included).
        self.offer = NodeOffer.declare(capabilities, resources, concurrency)
        self.bootstrap = bootstrap
        self.group_id = group_id
        self.topics = Topics(topic_prefix)
        self.types = [t.strip() for t in (types or []) if t.strip()]
        self._served = Served(self.topics, self.types, self.offer)
        self._capacity = Capacity(self.offer.capacity)
        #: Received task records not started yet (consumer loop thread only).
        self._ready = Ready()
        #: The lane of each task topic received from.
        self._lanes: Dict[str, Requirements] = {}
        self._subscription: List[str] = []
        self.node_id = node_id or f"py-{socket.gethostname()}-{os.getpid()}"
        self.concurrency = concurrency
        self.transactions = transactions
        self.default_grace_s = shutdown_grace_ms / 1000.0
        self.properties = dict(properties or {})
        self.handlers: Dict[str, Handler] = {}
        self._stopping = threading.Event()
        self._hard_stop = threading.Event()
        self._closed = threading.Event()
        self._offsets = OffsetTracker()
        self._attempts = _Attempts()
        self._lock = threading.Lock()
        self._in_flight = 0
        self._max_grace_s = 0.0
        self._commit_waiters: List[threading.Event] = []
        self._commit_now = threading.Event()
        self._group_metadata: Any = None
        self._tx_lock = threading.Lock()
        #: Every commit of the group's offsets goes through this lane, so that plain
        #: commits and the offsets of transactions reach the coordinator in order.
        self._commit_lane = threading.Lock()
        #: The partitions held, and since when (epoch ms), for the node record.
        self._assignment: Dict[Tuple[str, int], int] = {}
        self._consumer: Optional[Consumer] = None
        self._producer: Optional[Producer] = None
        self._tx_producer: Optional[Producer] = None
        #: Whether the non-urgent and the urgent lanes' partitions are paused.
        self._paused = {"normal": False, "urgent": False}
        self._saturated_since: Optional[float] = None
        self._assignment_changed = False
        self._started_at_ms = now_ms()
        #: Counts by outcome, for tests and logs: completed, failed, cancelled, abandoned, duplicate, dlq.
        self.counts: Dict[str, int] = {}

    # -- registration -------------------------------------------------------

    def register(self, name: str, handler: Handler) -> "Worker":
        """Registers ``handler`` (called with a :class:`TaskContext`, returning a dict of
        workflow data or None) under ``name``, the ``handler`` of a task in a definition."""
        self.handlers[name] = handler
        return self

    def handler(self, name: Optional[str] = None) -> Callable[[Handler], Handler]:
        """Decorator: ``@worker.handler("charge")`` registers the function under that name
        (its own name by default)."""

        def register(fn: Handler) -> Handler:
            self.register(name or fn.__name__, fn)
            return fn

        return register

    def with_builtins(self) -> "Worker":
        """Registers the built-ins (noop, sleep, fail, choose, steps) not registered yet."""
        for name, fn in BUILTINS.items():
            self.handlers.setdefault(name, fn)
        return self

    # -- clients --------------------------------------------------------------

    def _config(self, extra: Dict[str, Any]) -> Dict[str, Any]:
        cfg: Dict[str, Any] = {"bootstrap.servers": self.bootstrap, "client.id": f"weft-py-{self.node_id}"}
        cfg.update(extra)
        cfg.update(self.properties)
        return cfg

    def _consumer_config(self, group_id: str) -> Dict[str, Any]:
        return self._config(
            {
                "group.id": group_id,
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "auto.offset.reset": "earliest",
                # The group's members must agree on an assignment strategy; Weft's workers use range.
                "partition.assignment.strategy": "range",
                "session.timeout.ms": 10_000,
                "heartbeat.interval.ms": 1_000,
                "topic.metadata.refresh.interval.ms": 5_000,
                "fetch.wait.max.ms": 10,
            }
        )

    def _producer_config(self, extra: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
        cfg = {
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 1,
            "message.timeout.ms": 30_000,
            # Records keyed by instance id must land where Weft's own records do.
            "partitioner": PARTITIONER,
        }
        cfg.update(extra or {})
        return self._config(cfg)

    # -- running ----------------------------------------------------------------

    def stop(self) -> None:
        """Starts a graceful shutdown: no new records; running handlers get their grace period."""
        self._stopping.set()

    def run(self, install_signal_handlers: bool = True) -> None:
        """Consumes and runs tasks until :meth:`stop` (or SIGTERM / SIGINT), then drains:
        running handlers may finish within their grace period (the dispatch's
        ``grace_period_ms``, else ``shutdown_grace_ms``), done offsets are
        committed, and the consumer leaves the group."""
        if not self.handlers:
            raise ValueError("no handlers registered (register some or call with_builtins())")
        if install_signal_handlers and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, lambda *_: self.stop())
            signal.signal(signal.SIGINT, lambda *_: self.stop())
        self._producer = Producer(self._producer_config())
        if self.transactions:
            self._tx_producer = Producer(self._producer_config({"transactional.id": f"weft-worker-{self.node_id}"}))
            self._tx_producer.init_transactions(30)
        self._consumer = Consumer(self._consumer_config(self.group_id))
        self._subscription = self._served.subscription(self._existing_topics(self._consumer))
        self._consumer.subscribe(self._subscription, on_assign=self._on_assign, on_revoke=self._on_revoke)
        log.info(
            "subscribed to %s as %s in group %s (capabilities %s, capacity %s)",
            self._subscription,
            self.node_id,
            self.group_id,
            sorted(self.offer.capabilities),
            self.offer.capacity,
        )
        background = [
            threading.Thread(target=self._serve_producer, name="weft-producer", daemon=True),
            threading.Thread(target=self._listen_for_controls, name="weft-control", daemon=True),
        ]
        for t in background:
            t.start()
        last_commit = time.monotonic()
        next_lanes = time.monotonic() + REFRESH_S
        try:
            while not self._stopping.is_set():
                self._start_ready()
                msg = self._consumer.poll(0.05)
                if msg is not None:
                    self._received(msg)
                self._pause_lanes()
                if self._commit_now.is_set() or time.monotonic() - last_commit >= COMMIT_INTERVAL_S:
                    self._commit()
                    last_commit = time.monotonic()
                if time.monotonic() >= next_lanes:
                    next_lanes = time.monotonic() + REFRESH_S
                    self._follow_lanes()
            self._drain()
        finally:
            self._hard_stop.set()
            self._closed.set()
            try:
                self._commit()
                self._publish_node_record("draining")
                self._producer.flush(5)
                if self._tx_producer is not None:
                    self._tx_producer.flush(5)
            finally:
                self._consumer.close()
                for t in background:
                    t.join(timeout=5)
            log.info("worker %s stopped", self.node_id)

    def _drain(self) -> None:
        """Shutdown: stop fetching; wait for running attempts (their grace periods); commit."""
        self._ready.clear()  # not started: left for another worker
        try:
            assignment = self._consumer.assignment()
            if assignment:
                self._consumer.pause(assignment)
        except KafkaException as e:
            log.warning("could not pause the consumer: %s", e)
        with self._lock:
            limit = max(self._max_grace_s, self.default_grace_s if self._in_flight else 0.0)
        deadline = time.monotonic() + limit + SHUTDOWN_ABORT_AFTER_S + 1.0
        log.info("draining: %d attempts running, waiting up to %.1fs", self._in_flight, limit)
        while time.monotonic() < deadline:
            with self._lock:
                if self._in_flight == 0:
                    break
            self._consumer.poll(0.05)  # serves rebalances; partitions are paused
            self._commit()
        self._commit()

    # -- the consumer loop ------------------------------------------------------

    def _on_assign(self, consumer: Consumer, partitions: List[TopicPartition]) -> None:
        for p in partitions:
            self._offsets.revoke(p.topic, p.partition)  # a fresh assignment starts from the committed offset
            self._assignment.setdefault((p.topic, p.partition), now_ms())
        self._assignment_changed = True
        try:
            self._group_metadata = consumer.consumer_group_metadata()
        except KafkaException:
            self._group_metadata = None
        log.info("partitions assigned: %s", ", ".join(f"{p.topic}[{p.partition}]" for p in partitions))

    def _on_revoke(self, consumer: Consumer, partitions: List[TopicPartition]) -> None:
        revoked = {(p.topic, p.partition) for p in partitions}
        self._stop_attempts_of(revoked)
        commits = []
        for p in partitions:
            self._assignment.pop((p.topic, p.partition), None)
            pos = self._offsets.revoke(p.topic, p.partition)
            if pos is not None:
                commits.append(TopicPartition(p.topic, p.partition, pos))
        self._ready.drop_if(lambda item: (item[0].topic(), item[0].partition()) in revoked)
        if commits:
            try:
                with self._commit_lane:
                    consumer.commit(offsets=commits, asynchronous=False)
            except KafkaException as e:
                log.warning("could not commit offsets of revoked partitions: %s", e)
        log.info("partitions revoked: %d", len(partitions))

    def _stop_attempts_of(self, partitions: "set[Tuple[str, int]]") -> None:
        """Before partitions go to another member: the attempts running for their
        records stop (all but at_most_once ones, whose records are committed), so
        no attempt runs on two workers at once. One that returns an output within
        its grace period still publishes it; the others publish nothing and leave
        their records to the next owner."""
        victims = [a for a in self._attempts.of_partitions(partitions) if a.semantics != AT_MOST_ONCE]
        if not victims:
            return
        log.info("stopping %d attempts of revoked partitions", len(victims))
        for a in victims:
            a.revoked.set()
            a.cancel.set()
        began = time.monotonic()
        for a in victims:
            left = a.grace_s + SHUTDOWN_ABORT_AFTER_S + 1.0 - (time.monotonic() - began)
            if not a.finished.wait(max(0.0, left)):
                log.warning("attempt %s did not stop in time; its record is left uncommitted", a.execution_id)

    def _received(self, msg: Message) -> None:
        err = msg.error()
        if err is not None:
            if err.code() in (KafkaError._PARTITION_EOF, KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_TOPIC):
                log.debug("consumer: %s", err)
            else:
                log.warning("consumer error: %s", err)
            return
        ticket = self._offsets.track(msg.topic(), msg.partition(), msg.offset())
        if header(msg.headers(), HEADER_CONTROL) is not None:
            self._control_record(msg, "tasks")
            self._done(ticket)
            return
        self._ready.push(Waiting((msg, ticket), self._lane_of(msg.topic())))
        self._start_ready()

    def _lane_of(self, topic: str) -> Requirements:
        need = self._lanes.get(topic)
        if need is None:
            need = self._served.lane(topic) or Requirements()
            self._lanes[topic] = need
        return need

    def _start_ready(self) -> None:
        """Starts received records while they fit: urgent ones first, each with
        a slot and its lane's resources."""
        while len(self._ready) and not self._stopping.is_set():
            started = self._ready.next(self._capacity)
            if started is None:
                return
            waiting, permit = started
            msg, ticket = waiting.item
            self._dispatch_record(msg, ticket, permit)

    def _pause_lanes(self) -> None:
        """Pauses fetching of the non-urgent lanes once ``ready_buffer`` of their
        records wait or every slot has been busy for ``PAUSE_AFTER_S``, resumes it
        once half of them started and a slot is free; urgent lanes go on
        fetching until ``ready_buffer`` urgent records wait, so they overtake
        the others. After an assignment the new partitions are set either way
        (one paused before a revoke would come back paused)."""
        buffer = ready_buffer(self._capacity.total[SLOTS])
        saturated = self._capacity.free_slots() <= 0
        if not saturated:
            self._saturated_since = None
        elif self._saturated_since is None:
            self._saturated_since = time.monotonic()
        busy_long = saturated and time.monotonic() - self._saturated_since >= PAUSE_AFTER_S
        normal = len(self._ready.normal)
        want = {
            "normal": (normal >= buffer // 2 or saturated) if self._paused["normal"] else (normal >= buffer or busy_long),
            "urgent": len(self._ready.urgent) >= buffer,
        }
        changed, self._assignment_changed = self._assignment_changed, False
        if want == self._paused and not changed:
            return
        try:
            pause, resume = [], []
            for tp in self._consumer.assignment():
                urgent = self._lane_of(tp.topic).urgent
                (pause if want["urgent" if urgent else "normal"] else resume).append(tp)
            if pause:
                self._consumer.pause(pause)
            if resume:
                self._consumer.resume(resume)
            self._paused = want
        except KafkaException as e:
            log.warning("could not pause or resume fetching: %s", e)

    def _existing_topics(self, consumer: Consumer) -> List[str]:
        """The names of the broker's topics (empty when the metadata cannot be read)."""
        try:
            return list(consumer.list_topics(timeout=5).topics)
        except KafkaException as e:
            log.debug("cannot read the topic list; lanes not refreshed: %s", e)
            return []

    def _follow_lanes(self) -> bool:
        """Subscribes again when a lane this worker serves appeared (or went); True if it did."""
        existing = self._existing_topics(self._consumer)
        if not existing:
            return False
        wanted = self._served.subscription(existing)
        if sorted(wanted) == sorted(self._subscription):
            return False
        try:
            self._consumer.subscribe(wanted, on_assign=self._on_assign, on_revoke=self._on_revoke)
        except KafkaException as e:
            log.warning("could not subscribe to the new lanes: %s", e)
            return False
        self._subscription = wanted
        log.info("lanes changed; subscribed again to %s", wanted)
        return True

    def _done(self, ticket: Ticket) -> None:
        if self._offsets.done(ticket):
            self._commit_now.set()

    def _commit(self) -> None:
        self._commit_now.clear()
        with self._lock:
            waiters, self._commit_waiters = self._commit_waiters, []
        with self._commit_lane:
            positions = self._offsets.committable()
            if positions:
                try:
                    self._consumer.commit(
                        offsets=[TopicPartition(t, p, o) for t, p, o in positions], asynchronous=False
                    )
                    self._offsets.committed(positions)
                except KafkaException as e:
                    log.warning("could not commit offsets: %s", e)
        for w in waiters:
            w.set()

    def _commit_and_wait(self, timeout_s: float = 10.0) -> None:
        """Asks the consumer loop for a commit now and waits until it ran (at-most-once)."""
        done = threading.Event()
        with self._lock:
            self._commit_waiters.append(done)
        self._commit_now.set()
        if not done.wait(timeout_s):
            log.warning("offset commit did not run within %.0fs", timeout_s)

    # -- control records --------------------------------------------------------

    def _control_record(self, msg: Message, via: str) -> None:
        try:
            control = codec.decode_control(msg.value())
        except codec.CodecError as e:
            log.warning(
                "unreadable control record at %s/%d/%d; skipped: %s", msg.topic(), msg.partition(), msg.offset(), e
            )
            return
        if control.get("action") != "cancel":
            log.warning("unknown control action %r; skipped", control.get("action"))
            return
        running = self._attempts.cancel(control["execution_id"], control.get("grace_period_ms", 0) / 1000.0)
        log.info(
            "cancel received via %s for %s/%s attempt %s (running here: %s): %s",
            via,
            control.get("instance_id"),
            control.get("task_name"),
            control.get("attempt"),
            running,
            control.get("reason", ""),
        )

    def _listen_for_controls(self) -> None:
        """Reads control records from the end of every served task partition, outside the group."""
        group = f"{self.group_id}.control.{self.node_id}.{uuid.uuid4()}"
        try:
            consumer = Consumer(self._consumer_config(group) | {"fetch.wait.max.ms": 500})
        except KafkaException as e:
            log.error("could not create the control listener; cancels arrive in band only: %s", e)
            return
        assigned: set = set()
        next_discovery = 0.0
        try:
            while not self._closed.is_set():
                if time.monotonic() >= next_discovery:
                    next_discovery = time.monotonic() + DISCOVERY_INTERVAL_S
                    new = [tp for tp in self._task_partitions(consumer) if tp not in assigned]
                    if new:
                        consumer.incremental_assign([TopicPartition(t, p, OFFSET_END) for t, p in new])
                        assigned.update(new)
                if not assigned:
                    self._closed.wait(0.5)
                    continue
                msg = consumer.poll(0.5)
                if msg is None or msg.error() is not None:
                    continue
                if header(msg.headers(), HEADER_CONTROL) is not None:
                    self._control_record(msg, "listener")
        except Exception:  # noqa: BLE001 - the listener must never take the worker down
            log.exception("control listener failed; cancels arrive in band only")
        finally:
            consumer.close()

    def _task_partitions(self, consumer: Consumer) -> List[Tuple[str, int]]:
        try:
            md = consumer.list_topics(timeout=5)
        except KafkaException as e:
            log.debug("control listener could not read metadata: %s", e)
            return []
        out = []
        for name, topic in md.topics.items():
            # a task's cancels come on its lane: every lane served, urgent and constrained ones too
            if topic.error is None and self._served.serves(name):
                out.extend((name, p) for p in topic.partitions)
        return out

    # -- one task record ----------------------------------------------------------

    def _count(self, what: str) -> None:
        with self._lock:
            self.counts[what] = self.counts.get(what, 0) + 1

    def _dispatch_record(self, msg: Message, ticket: Ticket, permit: Permit) -> None:
        """Starts the attempt of a task record on a thread of its own, holding
        ``permit`` until it is over; a record that does not run gives it back now."""
        try:
            self._admit_record(msg, ticket, permit)
        except BaseException:
            permit.release()
            raise

    def _admit_record(self, msg: Message, ticket: Ticket, permit: Permit) -> None:
        try:
            d = codec.decode("TaskDispatch", msg.value())
        except codec.CodecError as e:
            permit.release()
            self._dead_letter(msg, str(e))
            self._done(ticket)
            return
        attach = d["execution_semantics"] != AT_MOST_ONCE
        verdict, attempt = self._attempts.admit(d["execution_id"], ticket, attach)
        if verdict != RUN:
            permit.release()
        if verdict == DUPLICATE_OF_RUNNING:
            self._count("duplicate")
            log.info("duplicate dispatch of %s attempt %d, running here; dropped", d["task_name"], d["attempt"])
            if not attach:
                self._done(ticket)
            return
        if verdict == DUPLICATE_OF_FINISHED:
            self._count("duplicate")
            log.info("duplicate dispatch of %s attempt %d, which ran here; dropped", d["task_name"], d["attempt"])
            self._done(ticket)
            return
        if verdict == CANCELLED:
            self._count("cancelled")
            log.info("dispatch of a cancelled attempt (%s attempt %d); skipped", d["task_name"], d["attempt"])
            self._done(ticket)
            return
        assert attempt is not None
        grace = self._grace_s(d)
        attempt.semantics = d["execution_semantics"]
        attempt.grace_s = grace
        with self._lock:
            self._in_flight += 1
            self._max_grace_s = max(self._max_grace_s, grace)
        threading.Thread(
            target=self._run_attempt,
            args=(d, ticket, attempt, permit),
            name=f"weft-attempt-{d['task_name']}",
            daemon=True,
        ).start()

    def _grace_s(self, d: Dict[str, Any]) -> float:
        ms = d.get("timeout_config", {}).get("grace_period_ms", 0)
        return ms / 1000.0 if ms > 0 else self.default_grace_s

    def _dead_letter(self, msg: Message, reason: str) -> None:
        source = f"{msg.topic()}/{msg.partition()}/{msg.offset()}"
        log.warning("undecodable task record %s, sending it to the dlq: %s", source, reason)
        parsed = self.topics.parse(msg.topic())
        if parsed is None or parsed[1] != "tasks":
            log.error("record from %s, which is not a task topic; dropped", msg.topic())
            return
        headers = list(msg.headers() or []) + [
            (HEADER_DLQ_REASON, reason.encode()),
            (HEADER_DLQ_SOURCE, source.encode()),
        ]
        if self._send(self.topics.dlq(parsed[0]), msg.key() or b"", msg.value() or b"", headers):
            self._count("dlq")

    def _run_attempt(self, d: Dict[str, Any], ticket: Ticket, attempt: _Attempt, permit: Permit) -> None:
        done = False
        try:
            done = self._attempt(d, ticket, attempt)
        except Exception:  # noqa: BLE001 - a bug here must not kill the worker
            log.exception("attempt %s of %s failed inside the worker", d["attempt"], d["task_name"])
        finally:
            # An attempt stopped by a revoke without a result may run here again.
            duplicates = self._attempts.finish(d["execution_id"], remember=done or not attempt.revoked.is_set())
            if done:
                for t in duplicates:
                    self._done(t)
            permit.release()
            with self._lock:
                self._in_flight -= 1
            attempt.finished.set()

    def _attempt(self, d: Dict[str, Any], ticket: Ticket, attempt: _Attempt) -> bool:
        """Runs one attempt; True when its record was marked done."""
        wait_ms = d.get("not_before_ms", 0) - now_ms()
        if wait_ms > 0:
            end = time.monotonic() + wait_ms / 1000.0
            while time.monotonic() < end and not attempt.cancel.is_set():
                if self._stopping.wait(min(0.05, max(0.0, end - time.monotonic()))):
                    log.info("shutting down before %s started; leaving it for another worker", d["task_name"])
                    return False
        if attempt.revoked.is_set():
            return False
        if attempt.cancel.is_set():
            log.info("%s attempt %d cancelled before it started; skipped", d["task_name"], d["attempt"])
            self._count("cancelled")
            self._done(ticket)
            return True
        semantics = d["execution_semantics"]
        transactional = semantics == EXACTLY_ONCE and self.transactions
        marked = False
        if semantics == AT_MOST_ONCE:
            # committed before the handler runs: a crash from here on loses the attempt, never repeats it
            self._done(ticket)
            marked = True
            self._commit_and_wait()

        started = attempt_event(d, STARTED, started_data(d, self.node_id), self.node_id)
        if not self._publish(started, d, transactional, None, attempt):
            self._count("abandoned")
            return marked
        log.info("task %s attempt %d started (%s)", d["task_name"], d["attempt"], d["handler"])

        usage = _Meter()
        metrics: Dict[str, float] = {}
        if semantics == EXACTLY_ONCE and not self.transactions:
            log.error(
                "task %s is exactly_once but this worker has no Kafka transactions (transactions=False); failing it",
                d["task_name"],
            )
            outcome, result = "finished", TerminalError(
                "exactly_once_unsupported",
                "exactly_once needs a broker with transactions; run the worker with transactions=True against Apache Kafka",
            )
        else:
            outcome, result = self._supervise(d, attempt, metrics)
        resources = usage.finish()

        if outcome == "cancelled":
            log.info("task %s attempt %d cancelled; no result is published", d["task_name"], d["attempt"])
            self._count("cancelled")
            if not marked:
                self._done(ticket)
            return True
        if outcome == "abandoned":
            log.info("task %s stopped by a shutdown or revoke; leaving it for another worker", d["task_name"])
            self._count("abandoned")
            return marked
        if isinstance(result, TaskError):
            log.info("task %s attempt %d failed: %s", d["task_name"], d["attempt"], result)
            event = attempt_event(d, FAILED, failure_data(result.error_type, result.message, result.retryable), self.node_id)
        else:
            event = attempt_event(d, COMPLETED, result, self.node_id)
        # Handlers run on threads of this process: the CPU and memory figures are the process's.
        write_usage(event["metadata"], resources, metrics, USAGE_SCOPE_PROCESS)
        if not self._publish(event, d, transactional, ticket, attempt):
            self._count("abandoned")
            return marked
        self._count("failed" if isinstance(result, TaskError) else "completed")
        if not marked:
            self._done(ticket)
        return True

    def _supervise(
        self, d: Dict[str, Any], attempt: _Attempt, metrics: Optional[Dict[str, float]] = None
    ) -> Tuple[str, Any]:
        """Runs the handler until it returns, its deadline passes, a control record
        cancels it, or the worker's shutdown grace period ends.

        Returns ``("finished", output dict | TaskError)``, ``("cancelled", None)``
        (publish nothing) or ``("abandoned", None)`` (leave the record to another worker)."""
        handler = self.handlers.get(d["handler"])
        if handler is None:
            return "finished", TerminalError(
                "unknown_handler",
                f"no handler '{d['handler']}' is registered on this worker (registered: {', '.join(sorted(self.handlers))})",
            )
        beats = _Heartbeats(self, d)
        deadline = deadline_ms(d, now_ms())
        seq = [0]

        def save_checkpoint(data: Dict[str, Any]) -> None:
            seq[0] += 1
            event = checkpoint_event(d, seq[0], data, self.node_id)
            if not self._publish(event, d, False, None):
                raise RetryableError("checkpoint_not_saved", "the worker is stopping; the checkpoint was not saved")

        ctx = TaskContext(
            d,
            self.node_id,
            cancel=attempt.cancel,
            heartbeat=beats.now,
            deadline_ms=deadline,
            save_checkpoint=save_checkpoint,
            metrics=metrics,
        )
        box: Dict[str, Any] = {}
        returned = threading.Event()

        def call() -> None:
            try:
                out = handler(ctx)
                out = {} if out is None else out
                problem = data_problem(out, "output")
                box["result"] = TerminalError("output_invalid", f"task output is not workflow data: {problem}") if problem else out
            except TaskError as e:
                box["result"] = e
            except Exception as e:  # noqa: BLE001 - any other exception fails the attempt, retryably
                log.exception("handler %s raised", d["handler"])
                box["result"] = RetryableError("handler_exception", f"{type(e).__name__}: {e}")
            finally:
                returned.set()

        beats.start()
        threading.Thread(target=call, name=f"weft-handler-{d['handler']}", daemon=True).start()
        grace = self._grace_s(d)
        stop_since: Optional[float] = None
        try:
            while True:
                if returned.wait(0.02):
                    if attempt.control_grace is not None:
                        return "cancelled", None  # it returned as it saw the cancel: not a result
                    return "finished", box["result"]
                if attempt.revoked.is_set():
                    # the partition is going to another member: an output returned in time still counts
                    if returned.wait(grace + SHUTDOWN_ABORT_AFTER_S) and not isinstance(box.get("result"), TaskError):
                        return "finished", box["result"]
                    return "abandoned", None
                if attempt.control_grace is not None:
                    log.info("attempt cancelled; waiting up to %.1fs for the handler to stop", attempt.control_grace)
                    returned.wait(attempt.control_grace)
                    return "cancelled", None
                if deadline is not None and now_ms() >= deadline:
                    log.info("deadline of %s passed; cancelling the handler", d["task_name"])
                    attempt.cancel.set()
                    ms = d.get("timeout_config", {}).get("grace_period_ms", 0)
                    returned.wait(ms / 1000.0 if ms > 0 else DEADLINE_GRACE_S)
                    timeout_ms = d.get("timeout_config", {}).get("execution_timeout_ms", 0)
                    return "finished", RetryableError(
                        "execution_timeout",
                        f"handler '{d['handler']}' did not finish by its deadline "
                        f"(execution timeout {timeout_ms} ms, deadline {d.get('deadline_ms', 0)} ms)",
                    )
                if self._hard_stop.is_set() or self._stopping.is_set():
                    stop_since = stop_since or time.monotonic()
                    if self._hard_stop.is_set() or time.monotonic() - stop_since >= grace:
                        log.info("shutdown grace period over; cancelling the handler of %s", d["task_name"])
                        attempt.cancel.set()
                        if returned.wait(SHUTDOWN_ABORT_AFTER_S) and not isinstance(box.get("result"), TaskError):
                            return "finished", box["result"]
                        return "abandoned", None
        finally:
            beats.stop()

    # -- producing ----------------------------------------------------------------

    def _serve_producer(self) -> None:
        """Serves delivery reports and publishes the node record every few seconds."""
        next_record = 0.0
        while not self._closed.is_set():
            self._producer.poll(0.1)
            if self._tx_producer is not None:
                self._tx_producer.poll(0)
            if time.monotonic() >= next_record:
                next_record = time.monotonic() + NODE_RECORD_INTERVAL_S
                self._publish_node_record("healthy")

    def _publish_node_record(self, health: str) -> None:
        in_flight = self._attempts.in_flight()
        record = {
            "node_id": self.node_id,
            "role": "worker",
            # handler names and declared capabilities, plain and key=value
            "capabilities": sorted(set(self.handlers) | self.offer.capabilities),
            "capacity_limits": {**self.offer.capacity, "concurrency": self.concurrency},
            "current_load": {**self._capacity.in_use(), "in_flight": len(in_flight)},
            "active_tasks": in_flight,
            "health": health,
            "labels": {
                "sdk": "python",
                **self.offer.labels,
                # the partitions held, as Weft's workers announce them (the orphan watch trusts them)
                **{f"weft.partition.{t}/{p}": f"assigned@{since}" for (t, p), since in list(self._assignment.items())},
            },
            "started_at_ms": self._started_at_ms,
            "heartbeat_at_ms": now_ms(),
        }
        try:
            self._producer.produce(self.topics.nodes(), key=self.node_id.encode(), value=codec.encode("NodeRecord", record))
        except (BufferError, KafkaException) as e:
            log.debug("could not publish the node record: %s", e)

    def _send(self, topic: str, key: bytes, value: bytes, headers: List[Tuple[str, bytes]]) -> bool:
        """Produces one record and waits for the broker's ack; retries until the
        worker's hard stop. True once acknowledged."""
        backoff = 0.25
        while True:
            acked = threading.Event()
            outcome: Dict[str, Any] = {}

            def delivered(err: Optional[KafkaError], _msg: Message) -> None:
                outcome["err"] = err
                acked.set()

            try:
                self._producer.produce(topic, key=key, value=value, headers=headers, on_delivery=delivered)
                while not acked.wait(0.05):
                    if self._hard_stop.is_set() and not acked.wait(5):
                        return False
                if outcome["err"] is None:
                    return True
                log.warning("could not publish to %s: %s; retrying in %.2fs", topic, outcome["err"], backoff)
            except BufferError:
                log.debug("producer queue full; retrying")
            except KafkaException as e:
                log.warning("could not publish to %s: %s; retrying in %.2fs", topic, e, backoff)
            if self._hard_stop.wait(backoff):
                return False
            backoff = min(backoff * 2, 5.0)

    def _publish(
        self,
        event: Dict[str, Any],
        d: Dict[str, Any],
        transactional: bool,
        ticket: Optional[Ticket],
        attempt: Optional[_Attempt] = None,
    ) -> bool:
        """Appends an attempt event to its type's events topic, keyed by instance id.

        An exactly-once result waits until its record is the head of its
        partition (every earlier record done), then goes out in one transaction
        with the partition's done prefix through its record, so its offset is
        always committed with it."""
        topic = self.topics.events(event["workflow_type"])
        key = event["instance_id"].encode()
        value = codec.encode("WorkflowEvent", event)
        headers = event_headers(event, d.get("traceparent", ""))
        if not transactional:
            return self._send(topic, key, value, headers)
        if ticket is not None:
            while self._offsets.earlier_pending(ticket):
                if self._hard_stop.is_set() or (attempt is not None and attempt.revoked.is_set()):
                    return False
                time.sleep(0.02)
        backoff = 0.25
        while not self._hard_stop.is_set():
            if attempt is not None and attempt.revoked.is_set():
                return False
            try:
                return self._send_transactional(topic, key, value, headers, ticket)
            except KafkaException as e:
                log.warning("transaction failed: %s; retrying in %.2fs", e, backoff)
            if self._hard_stop.wait(backoff):
                break
            backoff = min(backoff * 2, 5.0)
        return False

    def _send_transactional(
        self, topic: str, key: bytes, value: bytes, headers: List[Tuple[str, bytes]], ticket: Optional[Ticket]
    ) -> bool:
        """The event and (for a result) its partition's done prefix through its
        record, in one Kafka transaction; False (nothing published) when the
        record's partition was revoked meanwhile."""
        assert self._tx_producer is not None
        with self._tx_lock, self._commit_lane:
            position = None
            if ticket is not None:
                position = self._offsets.position_if_done(ticket)
                if position is None or self._group_metadata is None:
                    return False
            tx = self._tx_producer
            tx.begin_transaction()
            try:
                tx.produce(topic, key=key, value=value, headers=headers)
                if ticket is not None and position is not None:
                    tx.send_offsets_to_transaction(
                        [TopicPartition(ticket.topic, ticket.partition, position)], self._group_metadata, 30
                    )
                tx.commit_transaction(30)
                if ticket is not None and position is not None:
                    self._offsets.commit_through(ticket, position)
                return True
            except KafkaException:
                try:
                    tx.abort_transaction(30)
                except KafkaException as e:
                    log.warning("could not abort the transaction: %s", e)
                raise


class _Heartbeats:
    """The task heartbeats of one attempt: one when it starts, then every third of
    its heartbeat timeout (at least every 0.1 s), and one whenever the handler
    calls ``ctx.heartbeat()``; none when the dispatch has no heartbeat timeout."""

    def __init__(self, worker: Worker, d: Dict[str, Any]) -> None:
        self.worker = worker
        self.every = heartbeat_interval(d.get("timeout_config", {}).get("heartbeat_timeout_ms", 0))
        self.topic = worker.topics.heartbeats(d["workflow_type"])
        self.key = d["instance_id"].encode()
        self.beat = {
            "workflow_type": d["workflow_type"],
            "instance_id": d["instance_id"],
            "task_name": d["task_name"],
            "attempt": d["attempt"],
            "execution_id": d["execution_id"],
            "node_id": worker.node_id,
            "at_ms": 0,
        }
        self._asked = threading.Event()
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def start(self) -> None:
        if self.every is None:
            return
        self._thread = threading.Thread(target=self._run, name="weft-heartbeat", daemon=True)
        self._thread.start()

    def now(self) -> None:
        self._asked.set()

    def stop(self) -> None:
        self._stop.set()
        self._asked.set()

    def _run(self) -> None:
        assert self.every is not None
        while not self._stop.is_set():
            self.beat["at_ms"] = now_ms()
            try:
                self.worker._producer.produce(self.topic, key=self.key, value=codec.encode("TaskHeartbeat", self.beat))
            except (BufferError, KafkaException) as e:
                log.warning("could not publish a task heartbeat: %s", e)
            self._asked.wait(self.every)
            self._asked.clear()


#: ``weft.usage.scope`` of figures that are the worker process's.
USAGE_SCOPE_PROCESS = "process"


class _Meter:
    """What one attempt used: the handler's wall time, and the CPU time the
    worker process used meanwhile and its peak resident memory (``resource``'s
    rusage; handlers run on threads of this process, so nothing finer is honest)."""

    def __init__(self) -> None:
        self._began = time.monotonic()
        self._cpu = _cpu_s()

    def finish(self) -> Dict[str, int]:
        out = {"wall_ms": int((time.monotonic() - self._began) * 1000)}
        try:
            import resource

            ru = resource.getrusage(resource.RUSAGE_SELF)
        except (ImportError, OSError):  # not on this platform
            return out
        out["cpu_ms"] = max(0, int((ru.ru_utime + ru.ru_stime - self._cpu) * 1000))
        out["peak_rss_kb"] = int(ru.ru_maxrss)  # KiB on Linux
        return out


def _cpu_s() -> float:
    try:
        import resource

        ru = resource.getrusage(resource.RUSAGE_SELF)
        return ru.ru_utime + ru.ru_stime
    except (ImportError, OSError):
        return 0.0
