"""Lanes as Weft's Rust code names them (shared/src/lanes.rs, worker/src/lanes.rs,
worker/src/capacity.rs): topic names, what a worker declares and serves, its
capacity, and the order in which received records start."""

import time

import pytest

from weft_worker.capacity import NORMAL_TURN, RESERVE_AFTER_S, Capacity, Ready, Waiting
from weft_worker.lanes import Served
from weft_worker.protocol import SLOTS, LaneError, NodeOffer, Requirements, Topics


def test_a_lane_names_its_topic_and_the_topic_parses_back():
    req = Requirements(frozenset({"gpu", "cuda_12", "region=eu-west"}), {"cpu": 2}, urgent=True)
    # shared/src/lanes/tests.rs: the same requirements give the same suffix
    assert req.suffix() == "urgent.cap-cuda_12.cap-gpu.res-cpu--2.sel-region--eu-west"
    topic = Topics().lane("render", req)
    assert topic == "weft.render.tasks.urgent.cap-cuda_12.cap-gpu.res-cpu--2.sel-region--eu-west"
    assert Topics().parse_lane(topic) == ("render", req)
    assert Topics().parse(topic) == ("render", "tasks")
    assert req.amount("cpu") == 2 and req.amount(SLOTS) == 1 and req.amount("memory_mb") == 0
    assert req.is_constrained()
    # the README's example
    example = Requirements(frozenset({"gpu", "region=eu"}), {"cpu": 2}, urgent=True)
    assert example.topic("weft.render.tasks") == "weft.render.tasks.urgent.cap-gpu.res-cpu--2.sel-region--eu"


def test_the_default_and_urgent_lanes():
    t = Topics("weft")
    assert t.parse_lane("weft.x.tasks") == ("x", Requirements())
    assert Requirements().topic("weft.x.tasks") == "weft.x.tasks"
    urgent = Requirements(urgent=True)
    assert t.lane("x", urgent) == "weft.x.tasks.urgent"
    assert t.parse_lane("weft.x.tasks.urgent") == ("x", urgent)
    assert not urgent.is_constrained()
    for other in ("weft.x.events", "weft.x.tasksx", "weft.nodes", "other.x.tasks", "weft..tasks", "weft.x.tasks."):
        assert t.parse_lane(other) is None, other
    assert t.parse("weft.x.events") == ("x", "events")
    assert t.parse("weft.x.tasks.cap-b.cap-a") is None


@pytest.mark.parametrize(
    "bad",
    ["cap-gpu.urgent", "cap-b.cap-a", "res-cpu--0", "res-cpu--x", "res-cpu--", "sel-region", "cap-", "cap-a--b",
     "other", "urgent.urgent", "cap-gpu.cap-gpu", "res-cpu--02", "cap-g\u00e9"],
)
def test_only_canonical_suffixes_parse(bad):
    assert Requirements.parse_suffix(bad) is None
    assert Topics().parse_lane(f"weft.t.tasks.{bad}") is None


def test_a_worker_declares_capabilities_labels_and_resources():
    offer = NodeOffer.declare(["gpu", " region = eu ", ""], {"cpu": 4, "memory_mb": 8192}, 8)
    assert offer.capabilities == {"gpu", "region=eu"}
    assert offer.labels == {"region": "eu"}
    assert offer.capacity == {"cpu": 4, "memory_mb": 8192, SLOTS: 8}
    # the CLI's comma-separated strings mean the same
    assert NodeOffer.declare("gpu,region=eu", "cpu=4,memory_mb=8192", 8) == offer
    # slots may be declared; then they, not the concurrency, bound the tasks running at once
    assert NodeOffer.declare([], ["slots=2"], 8).capacity == {SLOTS: 2}
    assert NodeOffer.declare(None, None, 3).capacity == {SLOTS: 3}


@pytest.mark.parametrize(
    "capabilities, resources, says",
    [
        (["g p u"], {}, "capability 'g p u' is not a valid name"),
        (["gpu.x"], {}, "capability 'gpu.x'"),
        (["a--b"], {}, "capability 'a--b'"),
        (["region=e=u"], {}, "label value 'e=u'"),
        (["=eu"], {}, "label key ''"),
        ([], {"cpu": 0}, "resource 'cpu' asks for 0: a resource amount must be at least 1"),
        ([], {"cpu": "4"}, "'cpu=4' is not a resource capacity"),
        ([], {"cpu": True}, "is not a resource capacity"),
        ([], {"c pu": 1}, "resource 'c pu' is not a valid name"),
        ([], ["cpu"], "'cpu' is not a resource capacity: write name=amount, e.g. cpu=4"),
        ([], ["cpu=four"], "'cpu=four' is not a resource capacity"),
        ([], "cpu=-1", "resource 'cpu' asks for -1"),
        ([3], {}, "3 is not a string"),
    ],
)
def test_bad_declarations_are_refused_with_the_reason(capabilities, resources, says):
    with pytest.raises(LaneError) as e:
        NodeOffer.declare(capabilities, resources, 4)
    assert says in str(e.value)
    assert isinstance(e.value, ValueError)


def test_a_node_satisfies_what_it_has_enough_of():
    offer = NodeOffer.declare(["gpu", "cuda_12", "region=eu-west"], {"cpu": 4}, 8)
    req = Requirements(frozenset({"gpu", "cuda_12", "region=eu-west"}), {"cpu": 2}, urgent=True)
    assert offer.satisfies(req)
    assert not offer.satisfies(Requirements(req.capabilities, {"cpu": 5}))
    assert not offer.satisfies(Requirements(frozenset({"region=us"})))
    assert not offer.satisfies(Requirements(frozenset(), {"fpga": 1}))
    assert offer.satisfies(Requirements())
    assert offer.satisfies(Requirements(frozenset(), {SLOTS: 8}))
    assert not offer.satisfies(Requirements(frozenset(), {SLOTS: 9}))


def gpu_worker(types, prefix="weft"):
    return Served(Topics(prefix), types, NodeOffer.declare(["gpu", "region=eu"], ["cpu=4"], 8))


def test_a_worker_serves_the_lanes_it_meets_of_its_types():
    # worker/src/lanes.rs: serves_the_lanes_it_meets_of_its_types
    w = gpu_worker(["render"])
    existing = [
        "weft.render.tasks",
        "weft.render.tasks.cap-gpu",
        "weft.render.tasks.urgent.cap-gpu.res-cpu--4",
        "weft.render.tasks.res-cpu--8",
        "weft.render.tasks.sel-region--eu",
        "weft.render.tasks.sel-region--us",
        "weft.render.tasks.cap-fpga",
        "weft.other.tasks.cap-gpu",
        "weft.render.events",
        "weft.render.tasks.cap-gpu.urgent",  # not canonical: no lane
    ]
    assert w.subscription(existing) == [
        "weft.render.tasks",
        "weft.render.tasks.urgent",
        "weft.render.tasks.cap-gpu",
        "weft.render.tasks.sel-region--eu",
        "weft.render.tasks.urgent.cap-gpu.res-cpu--4",
    ]
    assert w.serves("weft.render.tasks.urgent")
    assert w.lane("weft.render.tasks.urgent.cap-gpu.res-cpu--4") == Requirements(frozenset({"gpu"}), {"cpu": 4}, True)
    assert not w.serves("weft.render.tasks.res-cpu--8")
    assert not w.serves("weft.other.tasks")


def test_a_worker_of_every_type_subscribes_by_pattern_and_lists_its_lanes():
    w = gpu_worker([])
    assert w.subscription(["weft.a.tasks.cap-gpu", "weft.b.tasks.cap-tpu", "weft.c.tasks.urgent"]) == [
        r"^weft\.[A-Za-z0-9_-]+\.tasks$",
        r"^weft\.[A-Za-z0-9_-]+\.tasks\.urgent$",
        "weft.a.tasks.cap-gpu",
    ]
    plain = Served(Topics("a.b+"), [], NodeOffer.declare([], [], 1))
    assert plain.subscription([])[0] == r"^a\.b\+\.[A-Za-z0-9_-]+\.tasks$"
    assert not plain.serves("a.b+.x.tasks.cap-gpu")
    assert plain.serves("a.b+.x.tasks.urgent")


def test_permits_never_take_more_than_the_worker_has():
    cap = Capacity({SLOTS: 8, "cpu": 4})
    two = Requirements(resources={"cpu": 2})
    a = cap.try_take(two)
    b = cap.try_take(two)
    assert a is not None and b is not None
    assert cap.try_take(two) is None, "a third would need 6 cpu"
    assert cap.in_use() == {SLOTS: 2, "cpu": 4}
    assert cap.free_slots() == 6
    a.release()
    a.release()  # once only
    assert cap.in_use()["cpu"] == 2
    c = cap.try_take(two)
    assert c is not None
    b.release()
    c.release()
    assert cap.in_use() == {SLOTS: 0, "cpu": 0}
    # slots bound plain tasks too
    one = Capacity({SLOTS: 1})
    p = one.try_take(Requirements())
    assert p is not None and one.try_take(Requirements(urgent=True)) is None
    with pytest.raises(ValueError):
        Capacity({"cpu": 1})


def waiting(offset, urgent=False, cpu=0, since=None):
    need = Requirements(resources={"cpu": cpu} if cpu else {}, urgent=urgent)
    return Waiting(offset, need, time.monotonic() if since is None else since)


def test_urgent_records_start_first_but_others_keep_a_turn():
    cap = Capacity({SLOTS: 100, "cpu": 100})
    ready = Ready()
    for i in range(10):
        ready.push(waiting(i))
    for i in range(10, 30):
        ready.push(waiting(i, urgent=True))
    order = []
    while True:
        started = ready.next(cap)
        if started is None:
            break
        order.append((started[0].need.urgent, started[0].item))
    assert len(order) == 30 and len(ready) == 0
    # NORMAL_TURN - 1 urgent starts, then one normal, while both wait; arrival order within each
    assert NORMAL_TURN == 5
    assert [u for u, _ in order[:10]] == [True, True, True, True, False] * 2
    assert [o for u, o in order if not u] == list(range(10))
    assert [o for u, o in order if u] == list(range(10, 30))


def test_an_urgent_record_overtakes_a_backlog_when_a_slot_frees():
    cap = Capacity({SLOTS: 1})
    ready = Ready()
    for i in range(5):
        ready.push(waiting(i))
    first, permit = ready.next(cap)
    assert first.item == 0 and ready.next(cap) is None
    ready.push(waiting(99, urgent=True))
    permit.release()
    assert ready.next(cap)[0].item == 99


def test_a_record_that_does_not_fit_is_passed_until_it_has_waited_long():
    cap = Capacity({SLOTS: 8, "cpu": 4})
    held = cap.try_take(Requirements(resources={"cpu": 3}))
    ready = Ready()
    ready.push(waiting(0, cpu=2))  # needs 2 cpu, 1 free
    ready.push(waiting(1))  # needs none
    w, _ = ready.next(cap)
    assert w.item == 1, "the small one passes"
    assert ready.next(cap) is None
    # once the big one waited long enough, nothing passes it
    ready.normal[0].since -= RESERVE_AFTER_S
    ready.push(waiting(2))
    assert ready.next(cap) is None, "reserved for the waiting record"
    held.release()
    w, _ = ready.next(cap)
    assert w.item == 0
    ready.drop_if(lambda item: item == 2)
    assert len(ready) == 0
