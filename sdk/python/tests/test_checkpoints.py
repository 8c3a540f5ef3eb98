"""Checkpoints and resource usage without a broker: the context reads the
checkpoint of an earlier attempt from the dispatch and saves new ones (size
limit enforced), checkpoint events are keyed per attempt and number, usage
and metrics travel as result metadata, and the meter measures the process."""

import time

import pytest

from weft_worker import TaskContext, TerminalError
from weft_worker.protocol import (
    CHECKPOINT_UPSTREAM_KEY,
    MAX_CHECKPOINT_BYTES,
    checkpoint_event,
    derive_uuid,
    write_usage,
)
from weft_worker.worker import _Meter


def _dispatch(upstream=None):
    return {
        "workflow_type": "orders",
        "instance_id": "0191c3c8-6a3e-7f00-8000-000000000000",
        "task_name": "work",
        "handler": "steps",
        "attempt": 2,
        "execution_id": "0191c3c8-6a3e-7f00-8000-000000000001",
        "idempotency_key": "0191c3c8-6a3e-7f00-8000-000000000000/work",
        "scheduled_event_id": "0191c3c8-6a3e-7f00-8000-000000000002",
        "correlation_chain": [],
        "upstream": upstream or {},
    }


def test_the_context_reads_the_last_checkpoint_and_hides_the_reserved_entry():
    d = _dispatch({CHECKPOINT_UPSTREAM_KEY: {"next_step": 2}, "a": {"x": 1}})
    ctx = TaskContext(d, "py-1")
    assert ctx.checkpoint == {"next_step": 2}
    assert ctx.upstream == {"a": {"x": 1}}
    assert TaskContext(_dispatch(), "py-1").checkpoint is None


def test_saving_goes_to_the_sink_and_the_size_limit_is_enforced():
    saved = []
    ctx = TaskContext(_dispatch(), "py-1", save_checkpoint=saved.append)
    ctx.save_checkpoint({"next_step": 3})
    assert saved == [{"next_step": 3}]
    with pytest.raises(TerminalError) as e:
        ctx.save_checkpoint({"blob": "x" * MAX_CHECKPOINT_BYTES})
    assert e.value.error_type == "checkpoint_too_large"
    assert "over the limit of 65536" in e.value.message
    with pytest.raises(TerminalError) as e:
        ctx.save_checkpoint({"deep": {"no": {"nesting": 1}}})
    assert e.value.error_type == "checkpoint_invalid"
    test_ctx = TaskContext.for_test("steps", checkpoint={"next_step": 1})
    assert test_ctx.checkpoint == {"next_step": 1}
    test_ctx.save_checkpoint({"next_step": 2})
    assert test_ctx.saved_checkpoints == [{"next_step": 2}]


def test_checkpoint_events_are_keyed_by_attempt_and_number():
    d = _dispatch()
    e1 = checkpoint_event(d, 1, {"next_step": 1}, "py-1")
    assert e1["event_type"] == "task.checkpointed"
    assert e1["idempotency_key"] == f"{d['execution_id']}:checkpoint:1"
    assert e1["metadata"]["weft.checkpoint_seq"] == "1"
    assert e1["metadata"]["weft.attempt"] == "2"
    assert e1["data"] == {"next_step": 1}
    import uuid

    want = derive_uuid(b"worker", uuid.UUID(d["execution_id"]).bytes, b"checkpoint", (1).to_bytes(4, "big"))
    assert e1["event_id"] == str(want)
    assert checkpoint_event(d, 2, {}, "py-1")["event_id"] != e1["event_id"]


def test_usage_and_metrics_travel_as_metadata():
    meta = {"weft.task": "work"}
    write_usage(meta, {"cpu_ms": 12, "wall_ms": 30}, {"rows": 3.0, "bad": float("nan")}, "process")
    assert meta["weft.usage.cpu_ms"] == "12"
    assert meta["weft.usage.wall_ms"] == "30"
    assert meta["weft.usage.scope"] == "process"
    assert meta["weft.metric.rows"] == "3.0"
    assert "weft.metric.bad" not in meta
    ctx = TaskContext.for_test("x")
    ctx.record_metric("rows", 4)
    ctx.record_metric("inf", float("inf"))
    assert ctx.metrics == {"rows": 4.0}


def test_the_meter_measures_wall_cpu_and_peak_memory_of_the_process():
    m = _Meter()
    end = time.monotonic() + 0.05
    x = 0
    while time.monotonic() < end:
        x += 1
    usage = m.finish()
    assert usage["wall_ms"] >= 50
    assert usage["cpu_ms"] >= 1
    assert usage["peak_rss_kb"] > 0


def test_steps_fails_at_k_and_the_retry_resumes_from_the_checkpoint(tmp_path):
    from weft_worker import RetryableError, builtins

    params = {"steps": 4, "fail_at": 2, "dir": str(tmp_path)}
    first = TaskContext.for_test("steps", parameters=params)
    with pytest.raises(RetryableError) as e:
        builtins.steps(first)
    assert e.value.error_type == "step_failed"
    assert first.saved_checkpoints == [{"next_step": 1}, {"next_step": 2}]
    second = TaskContext.for_test("steps", parameters=params, attempt=2, checkpoint=first.saved_checkpoints[-1])
    assert builtins.steps(second) == {"resumed_at": 2, "steps_run": 2, "next_step": 4}
    lines = (tmp_path / "steps.log").read_text().splitlines()
    assert [line.split("\t")[1:] for line in lines] == [["1", "0"], ["1", "1"], ["2", "2"], ["2", "3"]]
