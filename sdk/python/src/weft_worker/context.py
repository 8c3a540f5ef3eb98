"""What a handler knows about the attempt it runs."""

from __future__ import annotations

import math
import threading
import time
from typing import Any, Callable, Dict, List, Optional

from .errors import TerminalError
from .protocol import (
    CHECKPOINT_UPSTREAM_KEY,
    MAX_CHECKPOINT_BYTES,
    MAX_METRICS,
    checkpoint_size,
    data_problem,
)


class TaskContext:
    """One task attempt, handed to its handler.

    ``input`` is the workflow's input, ``parameters`` the task's parameters
    from the definition, ``upstream`` the outputs of the tasks it depends on
    (by task name); :meth:`merged_input` is the input overlaid with the
    parameters. ``idempotency_key`` is the same for every attempt of the task:
    use it to apply an effect outside Kafka once.

    Long handlers should call :meth:`heartbeat` now and then (the worker also
    sends heartbeats on its own while the handler runs) and check
    :meth:`is_cancelled` (or sleep with :meth:`wait_cancelled`): a cancel from
    the orchestrator, the attempt's deadline, or the worker's shutdown ask the
    handler to stop, and after a grace period the worker gives up on it.
    """

    def __init__(
        self,
        dispatch: Dict[str, Any],
        node_id: str,
        cancel: Optional[threading.Event] = None,
        heartbeat: Optional[Callable[[], None]] = None,
        deadline_ms: Optional[int] = None,
        save_checkpoint: Optional[Callable[[Dict[str, Any]], None]] = None,
        metrics: Optional[Dict[str, float]] = None,
    ) -> None:
        self.dispatch = dispatch
        self.workflow_type: str = dispatch["workflow_type"]
        self.instance_id: str = dispatch["instance_id"]
        self.task_name: str = dispatch["task_name"]
        self.handler: str = dispatch["handler"]
        self.attempt: int = dispatch["attempt"]
        self.execution_id: str = dispatch["execution_id"]
        self.idempotency_key: str = dispatch["idempotency_key"]
        self.input: Dict[str, Any] = dict(dispatch.get("input") or {})
        self.parameters: Dict[str, Any] = dict(dispatch.get("parameters") or {})
        self.upstream: Dict[str, Dict[str, Any]] = dict(dispatch.get("upstream") or {})
        #: The last checkpoint an earlier attempt of this task saved (resume from it), or None.
        self.checkpoint: Optional[Dict[str, Any]] = self.upstream.pop(CHECKPOINT_UPSTREAM_KEY, None)
        #: What :meth:`save_checkpoint` saved, in a context made by :meth:`for_test`.
        self.saved_checkpoints: List[Dict[str, Any]] = []
        #: What :meth:`record_metric` recorded.
        self.metrics: Dict[str, float] = metrics if metrics is not None else {}
        self._save_checkpoint = save_checkpoint
        self.traceparent: str = dispatch.get("traceparent") or ""
        #: When the attempt must be finished (epoch ms), if it has a deadline.
        self.deadline_ms = deadline_ms
        self.node_id = node_id
        self._cancel = cancel or threading.Event()
        self._heartbeat = heartbeat

    @classmethod
    def for_test(
        cls,
        handler: str,
        input: Optional[Dict[str, Any]] = None,
        parameters: Optional[Dict[str, Any]] = None,
        attempt: int = 1,
        checkpoint: Optional[Dict[str, Any]] = None,
    ) -> "TaskContext":
        """A context for calling a handler directly, outside a worker (``checkpoint``:
        the one an earlier attempt saved; what the handler saves is in ``saved_checkpoints``)."""
        dispatch = {
            "workflow_type": "test",
            "instance_id": "00000000-0000-4000-8000-000000000000",
            "task_name": handler,
            "handler": handler,
            "attempt": attempt,
            "execution_id": "00000000-0000-4000-8000-000000000001",
            "idempotency_key": f"test/{handler}",
            "input": input or {},
            "parameters": parameters or {},
            "upstream": {CHECKPOINT_UPSTREAM_KEY: checkpoint} if checkpoint is not None else {},
        }
        return cls(dispatch, "test")

    def merged_input(self) -> Dict[str, Any]:
        merged = dict(self.input)
        merged.update(self.parameters)
        return merged

    def is_cancelled(self) -> bool:
        """Whether the worker asked this attempt to stop."""
        return self._cancel.is_set()

    def wait_cancelled(self, seconds: Optional[float]) -> bool:
        """Sleeps up to ``seconds`` (forever with ``None``); True as soon as the attempt is cancelled."""
        return self._cancel.wait(seconds)

    def cancel(self) -> None:
        """Asks the handler to stop (the worker does this; tests may too)."""
        self._cancel.set()

    def heartbeat(self) -> None:
        """Sends a task heartbeat now rather than at the next tick (when the task has a heartbeat timeout)."""
        if self._heartbeat is not None:
            self._heartbeat()

    def save_checkpoint(self, data: Dict[str, Any]) -> None:
        """Saves a checkpoint: if this attempt fails and the task is retried (on any
        worker, after any crash), the next attempt's :attr:`checkpoint` is the last
        one saved. Returns once the broker has it. Over 64 KiB as JSON it is refused
        (``TerminalError('checkpoint_too_large')``)."""
        problem = data_problem(data, "a checkpoint")
        if problem:
            raise TerminalError("checkpoint_invalid", problem)
        size = checkpoint_size(data)
        if size > MAX_CHECKPOINT_BYTES:
            raise TerminalError(
                "checkpoint_too_large",
                f"checkpoint is {size} bytes as JSON, over the limit of {MAX_CHECKPOINT_BYTES}; "
                "keep a checkpoint to the position to resume from and put bulk data elsewhere",
            )
        if self._save_checkpoint is None:
            self.saved_checkpoints.append(dict(data))
        else:
            self._save_checkpoint(dict(data))

    def record_metric(self, name: str, value: float) -> None:
        """Reports a number about this attempt (rows processed, ...): it travels in the
        result as ``weft.metric.<name>``. At most 32 names; non-finite values are ignored."""
        if math.isfinite(value) and (len(self.metrics) < MAX_METRICS or name in self.metrics):
            self.metrics[name] = float(value)

    def remaining(self) -> Optional[float]:
        """Seconds left before the deadline (0 once it passed), if there is one."""
        if self.deadline_ms is None:
            return None
        return max(0.0, self.deadline_ms / 1000.0 - time.time())

    # -- typed parameters, as the built-in handlers read them ----------------

    def param_str(self, name: str) -> Optional[str]:
        v = self.parameters.get(name)
        if v is None or isinstance(v, str):
            return v
        raise TerminalError("invalid_parameters", f"parameter '{name}' must be a string, got {v!r}")

    def param_int(self, name: str) -> Optional[int]:
        v = self.parameters.get(name)
        if v is None:
            return None
        if isinstance(v, bool) or not isinstance(v, (int, float)) or (isinstance(v, float) and not v.is_integer()):
            raise TerminalError("invalid_parameters", f"parameter '{name}' must be an integer, got {v!r}")
        return int(v)

    def param_float(self, name: str) -> Optional[float]:
        v = self.parameters.get(name)
        if v is None:
            return None
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise TerminalError("invalid_parameters", f"parameter '{name}' must be a number, got {v!r}")
        return float(v)

    def param_bool(self, name: str) -> Optional[bool]:
        v = self.parameters.get(name)
        if v is None or isinstance(v, bool):
            return v
        raise TerminalError("invalid_parameters", f"parameter '{name}' must be a boolean, got {v!r}")
