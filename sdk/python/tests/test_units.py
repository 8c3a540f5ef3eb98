"""The worker's parts that need no broker: built-ins, offset tracking,
attempt admission, and the supervision of one handler (deadline, cancel,
exceptions, bad output)."""

import threading
import time

import pytest

from weft_worker import RetryableError, TaskContext, TaskError, TerminalError, Worker
from weft_worker import builtins, codec
from weft_worker.offsets import OffsetTracker
from weft_worker.worker import (
    CANCELLED,
    DUPLICATE_OF_FINISHED,
    DUPLICATE_OF_RUNNING,
    RUN,
    _Attempts,
    deadline_ms,
    heartbeat_interval,
)


def test_builtins_behave_like_the_rust_ones():
    assert builtins.noop(TaskContext.for_test("noop")) == {}
    assert builtins.sleep(TaskContext.for_test("sleep", parameters={"ms": 5})) == {"slept_ms": 5}
    assert builtins.sleep(TaskContext.for_test("sleep", parameters={"duration": "10ms"})) == {"slept_ms": 10}
    with pytest.raises(TerminalError) as e:
        builtins.sleep(TaskContext.for_test("sleep"))
    assert e.value.error_type == "invalid_parameters"
    cancelled = TaskContext.for_test("sleep", parameters={"ms": 60_000})
    cancelled.cancel()
    with pytest.raises(RetryableError, match="cancelled"):
        builtins.sleep(cancelled)

    with pytest.raises(TaskError) as e:
        builtins.fail(TaskContext.for_test("fail"))
    assert (e.value.error_type, e.value.retryable) == ("injected", True)
    params = {"fail_attempts": 2, "error_type": "boom", "retryable": False}
    with pytest.raises(TaskError) as e:
        builtins.fail(TaskContext.for_test("fail", parameters=params, attempt=2))
    assert (e.value.error_type, e.value.retryable) == ("boom", False)
    assert builtins.fail(TaskContext.for_test("fail", parameters=params, attempt=3)) == {"attempt": 3}

    assert builtins.choose(TaskContext.for_test("choose", parameters={"branch": "ship"})) == {"branches": ["ship"]}
    ctx = TaskContext.for_test("choose", input={"route": ["a", "b"]}, parameters={"from_input": "route"})
    assert builtins.choose(ctx) == {"branches": ["a", "b"]}
    assert builtins.parse_duration("1m 30s") == 90.0


def test_offsets_commit_the_done_prefix_only():
    t = OffsetTracker()
    a, b, c = (t.track("weft.x.tasks", 0, o) for o in (10, 11, 12))
    assert t.committable() == [("weft.x.tasks", 0, 10)]
    assert not t.done(b)  # 10 is still running
    assert t.committable() == [("weft.x.tasks", 0, 10)]
    assert t.position_if_done(a) == 12
    assert t.done(a)
    assert t.committable() == [("weft.x.tasks", 0, 12)]
    t.committed(t.committable())
    assert t.committable() == []
    t.done(c)
    assert t.committable() == [("weft.x.tasks", 0, 13)]
    # exactly-once results wait for the head of their partition
    e = t.track("weft.x.tasks", 0, 14)
    f = t.track("weft.x.tasks", 0, 15)
    assert t.earlier_pending(f) and not t.earlier_pending(e)
    assert t.commit_through(e, 16) and not t.earlier_pending(f)
    # after a revoke, tickets of the old assignment count for nothing
    assert t.revoke("weft.x.tasks", 0) is None  # 16 was committed by the transaction
    d = t.track("weft.x.tasks", 0, 13)
    assert not t.done(c)
    assert d.generation != c.generation


def test_attempt_admission():
    t = OffsetTracker()
    ticket = t.track("weft.x.tasks", 0, 1)
    attempts = _Attempts()
    assert attempts.admit("e1", ticket, True)[0] == RUN
    dup = t.track("weft.x.tasks", 0, 2)
    assert attempts.admit("e1", dup, True)[0] == DUPLICATE_OF_RUNNING
    assert attempts.finish("e1") == [dup]
    assert attempts.admit("e1", ticket, True)[0] == DUPLICATE_OF_FINISHED
    assert not attempts.cancel("e2", 0.5)
    assert attempts.admit("e2", ticket, True)[0] == CANCELLED
    verdict, running = attempts.admit("e3", ticket, True)
    assert attempts.cancel("e3", 0.25) and running.cancel.is_set() and running.control_grace == 0.25
    # an attempt stopped by a revoke is forgotten: its record may come back and run here
    assert attempts.admit("e4", ticket, True)[0] == RUN
    assert attempts.of_partitions({("weft.x.tasks", 0)})[0].execution_id in ("e3", "e4")
    attempts.finish("e4", remember=False)
    assert attempts.admit("e4", ticket, True)[0] == RUN


def test_intervals_and_deadlines():
    assert heartbeat_interval(0) is None
    assert heartbeat_interval(3000) == 1.0
    assert heartbeat_interval(90) == 0.1
    d = {"timeout_config": {"execution_timeout_ms": 500}, "deadline_ms": 0}
    assert deadline_ms(d, 1000) == 1500
    d["deadline_ms"] = 1200
    assert deadline_ms(d, 1000) == 1200
    assert deadline_ms({"timeout_config": {}, "deadline_ms": 0}, 1000) is None


def dispatch(golden, handler, **timeouts):
    d = codec.decode("TaskDispatch", golden("task_dispatch_minimal"))
    d["handler"] = handler
    d["deadline_ms"] = 0
    d["timeout_config"] = {
        "execution_timeout_ms": 0,
        "heartbeat_timeout_ms": 0,
        "response_timeout_ms": 0,
        "cleanup_timeout_ms": 0,
        "grace_period_ms": 0,
        **timeouts,
    }
    return d


def supervise(worker, d):
    attempt = _Attempts().admit(d["execution_id"], OffsetTracker().track("t", 0, 0), True)[1]
    return worker._supervise(d, attempt), attempt


def test_supervision(golden):
    w = Worker("127.0.0.1:1").with_builtins()
    w.register("boom", lambda ctx: 1 / 0)
    w.register("bad_output", lambda ctx: {"nested": {"x": [1]}})
    w.register("stubborn", lambda ctx: time.sleep(0.6) or {})

    assert supervise(w, dispatch(golden, "noop"))[0] == ("finished", {})
    (outcome, err), _ = supervise(w, dispatch(golden, "nope"))
    assert isinstance(err, TerminalError) and err.error_type == "unknown_handler"
    (outcome, err), _ = supervise(w, dispatch(golden, "boom"))
    assert err.error_type == "handler_exception" and err.retryable and "ZeroDivisionError" in err.message
    (outcome, err), _ = supervise(w, dispatch(golden, "bad_output"))
    assert err.error_type == "output_invalid" and not err.retryable

    # the deadline cancels the handler and fails the attempt, retryably
    began = time.monotonic()
    d = dispatch(golden, "sleep", execution_timeout_ms=200, grace_period_ms=100)
    d["parameters"] = {"ms": 60_000}
    (outcome, err), attempt = supervise(w, d)
    assert err.error_type == "execution_timeout" and err.retryable
    assert attempt.cancel.is_set() and time.monotonic() - began < 5

    # a cancel from the orchestrator: nothing is published, even when the handler ignores it
    d = dispatch(golden, "stubborn")
    attempts = _Attempts()
    attempt = attempts.admit(d["execution_id"], OffsetTracker().track("t", 0, 0), True)[1]
    threading.Timer(0.1, attempts.cancel, args=(d["execution_id"], 0.05)).start()
    assert w._supervise(d, attempt) == ("cancelled", None)


def test_a_revoke_stops_the_handler_but_keeps_an_output_returned_in_time(golden):
    w = Worker("127.0.0.1:1", shutdown_grace_ms=2_000)
    w.register("stubborn", lambda ctx: time.sleep(0.3) or {"done": True})
    w.register("forever", lambda ctx: time.sleep(60))
    for handler, want in (("stubborn", ("finished", {"done": True})), ("forever", ("abandoned", None))):
        d = dispatch(golden, handler)
        d["timeout_config"]["grace_period_ms"] = 200
        attempt = _Attempts().admit(d["execution_id"], OffsetTracker().track("t", 0, 0), True)[1]
        threading.Timer(0.05, lambda a=attempt: (a.revoked.set(), a.cancel.set())).start()
        assert w._supervise(d, attempt) == want
