"""The worker with capabilities and resources, without a broker: task records
fed to its consumer loop as the group consumer would hand them over (with
stand-ins for the Kafka clients), its node record, the lanes it follows, the
lanes whose fetching it pauses, the partitions its control listener reads,
and the command line's checks."""

import threading
import time
import uuid
from types import SimpleNamespace

import pytest

from weft_worker import Worker, codec
from weft_worker.__main__ import main
from weft_worker.protocol import SLOTS, LaneError


class Msg:
    """A consumed record, as confluent-kafka's ``Message`` answers."""

    def __init__(self, topic, partition, offset, value, headers=None):
        self._t, self._p, self._o, self._v, self._h = topic, partition, offset, value, headers

    def topic(self):
        return self._t

    def partition(self):
        return self._p

    def offset(self):
        return self._o

    def value(self):
        return self._v

    def key(self):
        return b"k"

    def headers(self):
        return self._h

    def error(self):
        return None


class Producer:
    """Acknowledges every record at once and keeps it."""

    def __init__(self):
        self.sent = []
        self.lock = threading.Lock()

    def produce(self, topic, key=None, value=None, headers=None, on_delivery=None):
        with self.lock:
            self.sent.append((topic, value))
        if on_delivery is not None:
            on_delivery(None, None)


def dispatch_record(golden, topic, offset, task_name, handler):
    d = codec.decode("TaskDispatch", golden("task_dispatch_minimal"))
    d.update(task_name=task_name, handler=handler, execution_id=str(uuid.uuid4()))
    return Msg(topic, 0, offset, codec.encode("TaskDispatch", d))


class Recorder:
    """A handler that notes which tasks run at once and in which order they start."""

    def __init__(self, gate=None):
        self.lock = threading.Lock()
        self.running = {}
        self.peak = {}
        self.order = []
        self.gate = gate

    def __call__(self, ctx):
        name = ctx.task_name
        with self.lock:
            self.order.append(name)
            self.running[name] = self.running.get(name, 0) + 1
            total = sum(self.running.values())
            self.peak[name] = max(self.peak.get(name, 0), self.running[name])
            self.peak["total"] = max(self.peak.get("total", 0), total)
        if self.gate is not None:
            self.gate.wait(10)
        time.sleep(0.05)
        with self.lock:
            self.running[name] -= 1
        return {}


def run_loop(w, until, timeout=20.0):
    """The consumer loop's part that starts ready records, until ``until()``."""
    end = time.monotonic() + timeout
    while not until():
        assert time.monotonic() < end, "the records did not all run"
        w._start_ready()
        time.sleep(0.005)


def test_tasks_never_take_more_than_the_worker_has(golden):
    w = Worker("127.0.0.1:1", concurrency=4, resources={"cpu": 3})
    rec = Recorder()
    w.register("work", rec)
    w._producer = Producer()
    records = []
    for i in range(12):
        records.append(dispatch_record(golden, "weft.orders.tasks.res-cpu--2", i, "heavy", "work"))
        records.append(dispatch_record(golden, "weft.orders.tasks", i, "light", "work"))
    for m in records:
        w._received(m)
    run_loop(w, lambda: w.counts.get("completed", 0) == len(records))
    # 2 of 3 cpu each: never two heavy ones at once; never more than 4 slots
    assert rec.peak["heavy"] == 1
    assert 2 <= rec.peak["total"] <= 4, rec.peak
    assert w._capacity.in_use() == {SLOTS: 0, "cpu": 0}
    events = [codec.decode("WorkflowEvent", v) for t, v in w._producer.sent if t == "weft.orders.events"]
    assert sum(e["event_type"] == "task.completed" for e in events) == len(records)


def test_urgent_records_start_before_the_backlog(golden):
    gate = threading.Event()
    w = Worker("127.0.0.1:1", concurrency=1)
    rec = Recorder(gate)
    w.register("work", rec)
    w._producer = Producer()
    for i in range(6):
        w._received(dispatch_record(golden, "weft.orders.tasks", i, f"normal-{i}", "work"))
    w._received(dispatch_record(golden, "weft.orders.tasks.urgent", 0, "critical", "work"))
    run_loop(w, lambda: len(rec.order) == 1)
    gate.set()
    run_loop(w, lambda: w.counts.get("completed", 0) == 7)
    # normal-0 took the only slot before the urgent one arrived; it goes next
    assert rec.order[:3] == ["normal-0", "critical", "normal-1"], rec.order
    assert rec.peak["total"] == 1


def test_a_record_that_does_not_run_gives_its_slot_back(golden):
    w = Worker("127.0.0.1:1", concurrency=1).with_builtins()
    w._producer = Producer()
    m = dispatch_record(golden, "weft.orders.tasks", 0, "a", "noop")
    w._received(m)
    run_loop(w, lambda: w.counts.get("completed", 0) == 1)
    w._received(Msg(m.topic(), 0, 1, m.value()))  # the same attempt again: a duplicate
    w._received(Msg("weft.orders.tasks", 0, 2, b"\x00garbage"))  # undecodable: to the dlq
    run_loop(w, lambda: w.counts.get("duplicate", 0) == 1 and w.counts.get("dlq", 0) == 1)
    assert w._capacity.free_slots() == 1
    assert any(t == "weft.orders.dlq" for t, _ in w._producer.sent)


def test_the_node_record_shows_capabilities_labels_capacity_and_load():
    w = Worker("127.0.0.1:1", node_id="py-gpu", concurrency=3, capabilities=["gpu", "region=eu"], resources="cpu=4")
    w.with_builtins()
    w._producer = Producer()
    held = w._capacity.try_take(w._served.lane("weft.x.tasks.cap-gpu.res-cpu--3"))
    w._publish_node_record("healthy")
    topic, value = w._producer.sent[-1]
    record = codec.decode("NodeRecord", value)
    assert topic == "weft.nodes"
    assert record["capabilities"] == sorted({"gpu", "region=eu", "noop", "sleep", "fail", "choose", "steps"})
    assert record["labels"]["region"] == "eu" and record["labels"]["sdk"] == "python"
    assert record["capacity_limits"] == {"cpu": 4, SLOTS: 3, "concurrency": 3}
    assert record["current_load"] == {"cpu": 3, SLOTS: 1, "in_flight": 0}
    held.release()
    w._publish_node_record("healthy")
    assert codec.decode("NodeRecord", w._producer.sent[-1][1])["current_load"]["cpu"] == 0


class Consumer:
    """The group consumer's metadata, subscription, assignment and pauses."""

    def __init__(self, topics, assignment=()):
        self.topics = {name: SimpleNamespace(error=None, partitions={0: None, 1: None}) for name in topics}
        self.subscribed = []
        self._assignment = [SimpleNamespace(topic=t, partition=p) for t, p in assignment]
        self.paused = set()

    def list_topics(self, timeout=None):
        return SimpleNamespace(topics=self.topics)

    def subscribe(self, topics, on_assign=None, on_revoke=None):
        self.subscribed.append(list(topics))

    def assignment(self):
        return self._assignment

    def pause(self, tps):
        self.paused |= {(tp.topic, tp.partition) for tp in tps}

    def resume(self, tps):
        self.paused -= {(tp.topic, tp.partition) for tp in tps}


def test_the_worker_follows_new_lanes_it_serves():
    w = Worker("127.0.0.1:1", types=["render"], capabilities="gpu")
    c = Consumer(["weft.render.tasks", "weft.render.events"])
    w._consumer = c
    w._subscription = w._served.subscription(w._existing_topics(c))
    assert w._subscription == ["weft.render.tasks", "weft.render.tasks.urgent"]
    assert not w._follow_lanes() and c.subscribed == []
    c.topics["weft.render.tasks.cap-fpga"] = c.topics["weft.render.tasks"]
    assert not w._follow_lanes(), "a lane it does not serve changes nothing"
    c.topics["weft.render.tasks.urgent.cap-gpu"] = c.topics["weft.render.tasks"]
    assert w._follow_lanes()
    assert c.subscribed == [["weft.render.tasks", "weft.render.tasks.urgent", "weft.render.tasks.urgent.cap-gpu"]]
    assert not w._follow_lanes()


def test_the_control_listener_reads_every_lane_it_serves():
    w = Worker("127.0.0.1:1", capabilities="gpu")
    c = Consumer(["weft.a.tasks", "weft.a.tasks.urgent", "weft.a.tasks.cap-gpu", "weft.a.tasks.cap-tpu", "weft.a.events"])
    got = sorted({t for t, _ in w._task_partitions(c)})
    assert got == ["weft.a.tasks", "weft.a.tasks.cap-gpu", "weft.a.tasks.urgent"]


def test_urgent_lanes_keep_fetching_while_the_others_pause(golden):
    gate = threading.Event()
    w = Worker("127.0.0.1:1", concurrency=1)
    w.register("work", Recorder(gate))
    w._producer = Producer()
    c = Consumer([], assignment=[("weft.a.tasks", 0), ("weft.a.tasks.urgent", 0), ("weft.a.tasks.cap-x", 0)])
    w._consumer = c
    w._pause_lanes()
    assert c.paused == set()
    w._received(dispatch_record(golden, "weft.a.tasks", 0, "a", "work"))  # takes the only slot
    w._pause_lanes()
    w._saturated_since -= 1.0  # every slot busy for a while
    w._pause_lanes()
    assert c.paused == {("weft.a.tasks", 0), ("weft.a.tasks.cap-x", 0)}
    gate.set()
    run_loop(w, lambda: w.counts.get("completed", 0) == 1)
    w._pause_lanes()
    assert c.paused == set()


def test_bad_capabilities_and_resources_are_refused():
    with pytest.raises(LaneError, match="capability 'g pu'"):
        Worker("127.0.0.1:1", capabilities=["g pu"])
    with pytest.raises(LaneError, match="at least 1"):
        Worker("127.0.0.1:1", resources={"cpu": 0})


@pytest.mark.parametrize(
    "args, says",
    [
        (["--capabilities", "gpu,re gion=eu"], "--capabilities: label key 're gion' is not a valid name"),
        (["--resources", "cpu"], "--resources: 'cpu' is not a resource capacity: write name=amount, e.g. cpu=4"),
        (["--resources", "cpu=0"], "--resources: resource 'cpu' asks for 0"),
        (["--concurrency", "0"], "--concurrency must be at least 1"),
    ],
)
def test_the_command_line_says_what_is_wrong(capsys, args, says):
    with pytest.raises(SystemExit) as e:
        main(["run", "--bootstrap", "127.0.0.1:1", *args])
    assert e.value.code == 2
    assert says in capsys.readouterr().err
