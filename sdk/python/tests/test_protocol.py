"""Ids, events and partitions agree with Weft's Rust implementation."""

import pytest

from weft_worker import codec, protocol
from weft_worker.partition import murmur2, partition_for


def test_derived_ids_match_rust(golden):
    # shared/tests/avro/fixtures.rs: the instance of idempotency key order-42,
    # attempt 2 of its task "charge".
    control = codec.decode("TaskControl", golden("task_control_full"))
    instance = protocol.instance_id_for("orders", "order-42")
    assert control["instance_id"] == instance
    task = protocol.task_id_of(instance, "charge")
    assert protocol.execution_id_of(task, 2) == control["execution_id"]


def test_attempt_events_follow_the_protocol(golden):
    d = codec.decode("TaskDispatch", golden("task_dispatch_full"))
    started = protocol.attempt_event(d, protocol.STARTED, protocol.started_data(d, "py-1"), "py-1")
    done = protocol.attempt_event(d, protocol.COMPLETED, {"ok": True}, "py-1")
    again = protocol.attempt_event(d, protocol.COMPLETED, {"ok": True}, "py-1")
    assert done["event_id"] == again["event_id"] != started["event_id"]
    assert done["event_type"] == "task.completed"
    assert done["idempotency_key"] == f"{d['execution_id']}:completed"
    assert started["idempotency_key"] == f"{d['execution_id']}:started"
    assert done["causation_id"] == d["scheduled_event_id"]
    assert done["correlation_chain"] == d["correlation_chain"] + [d["scheduled_event_id"]]
    assert done["metadata"] == {
        "weft.task": d["task_name"],
        "weft.attempt": str(d["attempt"]),
        "weft.execution_id": d["execution_id"],
        "weft.source_kind": "input",
    }
    assert done["sequence_number"] == 0
    assert started["data"] == {"handler": d["handler"], "node_id": "py-1"}
    # it encodes
    assert codec.decode("WorkflowEvent", codec.encode("WorkflowEvent", done))["data"] == {"ok": True}
    headers = dict(protocol.event_headers(done, "00-abc-def-01"))
    assert headers == {
        "weft-event-type": b"task.completed",
        "weft-idempotency-key": done["idempotency_key"].encode(),
        "traceparent": b"00-abc-def-01",
    }


def test_murmur2_is_javas():
    # org.apache.kafka.common.utils.UtilsTest
    java = {
        "21": -973932308,
        "foobar": -790332482,
        "a-little-bit-long-string": -985981536,
        "a-little-bit-longer-string": -1486304829,
        "lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
        "abc": 479470107,
    }
    for key, want in java.items():
        h = murmur2(key.encode())
        assert (h - 2**32 if h >= 2**31 else h) == want, key
    assert partition_for(b"foobar", 6) == (-790332482 & 0x7FFFFFFF) % 6
    with pytest.raises(ValueError):
        partition_for(b"x", 0)


def test_topics():
    t = protocol.Topics("weft")
    assert t.tasks("orders") == "weft.orders.tasks"
    assert t.parse("weft.orders.tasks") == ("orders", "tasks")
    assert t.parse("weft.definitions") is None
    assert t.tasks_regex() == r"^weft\.[A-Za-z0-9_-]+\.tasks$"


def test_workflow_data_checks():
    assert protocol.data_problem({"a": 1, "b": [" x"], "c": {"d": 1.5}}, "output") is None
    assert "not workflow data" in protocol.data_problem({"a": [1]}, "output")
    assert "not workflow data" in protocol.data_problem({"a": {"b": [1]}}, "output")
    assert "must be a dict" in protocol.data_problem([1], "output")
    assert "64-bit" in protocol.data_problem({"a": 2**70}, "output")
