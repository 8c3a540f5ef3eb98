"""Built-in handlers with the same names, parameters and results as the Rust
worker's (``README.md``, "Built-in handlers"), so a Python worker can share a
consumer group with ``weft-worker`` on workflows that use them: ``noop``,
``sleep``, ``fail``, ``choose`` and ``steps`` (checkpoints after each step). Like the Rust ones they read their settings
from the task's parameters only."""

from __future__ import annotations

import os
import re
import time
from typing import Any, Callable, Dict, List

from .context import TaskContext
from .errors import RetryableError, TaskError, TerminalError

_UNITS = {"ms": 0.001, "s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}
_PART = re.compile(r"\s*([0-9]+(?:\.[0-9]+)?)\s*(ms|sec|min|s|m|h)")


def parse_duration(text: str) -> float:
    """Seconds in a duration such as ``"1.5s"``, ``"800ms"``, ``"1m 30s"``."""
    pos, total = 0, 0.0
    text = text.strip()
    while pos < len(text):
        m = _PART.match(text, pos)
        if not m:
            raise ValueError(f"invalid duration {text!r}")
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    if not text:
        raise ValueError("empty duration")
    return total


def noop(ctx: TaskContext) -> Dict[str, Any]:
    return {}


def sleep(ctx: TaskContext) -> Dict[str, Any]:
    ms = ctx.param_int("ms")
    if ms is not None:
        if ms < 0:
            raise TerminalError("invalid_parameters", f"parameter 'ms' must not be negative, got {ms}")
        seconds = ms / 1000.0
    else:
        text = ctx.param_str("duration")
        if text is None:
            raise TerminalError(
                "invalid_parameters",
                "sleep needs parameter 'ms' (integer milliseconds) or 'duration' (such as \"1.5s\")",
            )
        try:
            seconds = parse_duration(text)
        except ValueError as e:
            raise TerminalError(
                "invalid_parameters", f"parameter 'duration' ('{text}') is not a duration: {e}"
            ) from None
    if ctx.wait_cancelled(seconds):
        raise RetryableError("cancelled", "sleep cancelled")
    return {"slept_ms": int(round(seconds * 1000))}


def fail(ctx: TaskContext) -> Dict[str, Any]:
    fail_attempts = ctx.param_int("fail_attempts")
    if fail_attempts is not None and ctx.attempt > fail_attempts:
        return {"attempt": ctx.attempt}
    error_type = ctx.param_str("error_type") or "injected"
    message = ctx.param_str("message")
    if message is None:
        message = f"injected failure of attempt {ctx.attempt}"
    retryable = ctx.param_bool("retryable")
    raise TaskError(error_type, message, True if retryable is None else retryable)


def _names(value: Any, what: str) -> List[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return list(value)
    raise TerminalError("invalid_parameters", f"{what} must be a task name or a list of them, got {value!r}")


def choose(ctx: TaskContext) -> Dict[str, Any]:
    if "branch" in ctx.parameters:
        return {"branches": _names(ctx.parameters["branch"], "parameter 'branch'")}
    key = ctx.param_str("from_input")
    if key is None:
        raise TerminalError(
            "invalid_parameters",
            "choose needs parameter 'branch' (a task name) or 'from_input' (an input key)",
        )
    if key not in ctx.input:
        raise TerminalError("invalid_input", f"the workflow input has no '{key}' to choose a branch from")
    return {"branches": _names(ctx.input[key], f"input '{key}'")}


def steps(ctx: TaskContext) -> Dict[str, Any]:
    """Like Rust's ``steps``: runs steps ``0..steps`` (default 5), each taking
    ``step_ms``, saving the checkpoint ``{next_step}`` after each, resuming from
    an earlier attempt's checkpoint; on attempt 1 fails with the retryable
    ``step_failed`` on reaching step ``fail_at``. Each step run is a line
    ``<idempotency key>\t<attempt>\t<step>`` of ``<dir>/steps.log`` (``dir``
    parameter, else ``WEFT_LEDGER_DIR``)."""
    total = max(0, ctx.param_int("steps") or 5)
    fail_at = ctx.param_int("fail_at")
    step_ms = max(0, ctx.param_int("step_ms") or 0)
    folder = ctx.param_str("dir") or os.environ.get("WEFT_LEDGER_DIR")
    log_path = os.path.join(folder, "steps.log") if folder else None
    resumed_at = int((ctx.checkpoint or {}).get("next_step", 0))
    step = resumed_at
    while step < total:
        if ctx.attempt == 1 and fail_at == step:
            raise RetryableError("step_failed", f"step {step} failed on attempt 1")
        if step_ms:
            time.sleep(step_ms / 1000.0)
        if log_path:
            with open(log_path, "a", encoding="utf-8") as f:
                f.write(f"{ctx.idempotency_key}\t{ctx.attempt}\t{step}\n")
                f.flush()
                os.fsync(f.fileno())
        step += 1
        ctx.save_checkpoint({"next_step": step})
    return {"resumed_at": resumed_at, "steps_run": step - resumed_at, "next_step": step}


#: Name -> handler of every built-in.
BUILTINS: Dict[str, Callable[[TaskContext], Dict[str, Any]]] = {
    "noop": noop,
    "sleep": sleep,
    "fail": fail,
    "choose": choose,
    "steps": steps,
}
