"""The names and rules of Weft's wire protocol (``docs/protocol.md``): topics,
record headers, event metadata keys, derived ids, and the events a worker
publishes for one task attempt."""

from __future__ import annotations

import hashlib
import time
import uuid
from typing import Any, Dict, List, Optional, Tuple

# -- record headers ---------------------------------------------------------

#: The event type of an event record (``workflow.created``, ``task.completed``, ...).
HEADER_EVENT_TYPE = "weft-event-type"
#: The record's idempotency key.
HEADER_IDEMPOTENCY_KEY = "weft-idempotency-key"
#: W3C trace context.
HEADER_TRACEPARENT = "traceparent"
#: On a tasks-topic record: it is a ``TaskControl``, not a ``TaskDispatch``; the value names the action.
HEADER_CONTROL = "weft-control"
#: On a DLQ record: why it could not be processed.
HEADER_DLQ_REASON = "weft-dlq-reason"
#: On a DLQ record: where it came from, ``topic/partition/offset``.
HEADER_DLQ_SOURCE = "weft-dlq-source"

# -- event metadata keys ----------------------------------------------------

META_TASK = "weft.task"
META_ATTEMPT = "weft.attempt"
META_EXECUTION_ID = "weft.execution_id"
META_SOURCE_KIND = "weft.source_kind"
META_DEFINITION_VERSION = "weft.definition_version"
#: ``weft.source_kind`` of events produced outside the orchestrator (workers, clients).
SOURCE_KIND_INPUT = "input"

# -- execution semantics ----------------------------------------------------

AT_MOST_ONCE = "at_most_once"
AT_LEAST_ONCE = "at_least_once"
EXACTLY_ONCE = "exactly_once"

#: librdkafka's Java-compatible partitioner: every producer of records keyed by
#: instance id must use it, so that they land on the partition of the instance.
PARTITIONER = "murmur2_random"

#: Namespace of every UUIDv5 Weft derives.
WEFT_NAMESPACE = uuid.UUID("77656674-2d6e-616d-6573-706163650001")


def now_ms() -> int:
    return int(time.time() * 1000)


def derive_uuid(*parts: bytes) -> uuid.UUID:
    """UUIDv5 in Weft's namespace of the parts, each prefixed with its 4-byte big-endian length."""
    name = b"".join(len(p).to_bytes(4, "big") + p for p in parts)
    digest = hashlib.sha1(WEFT_NAMESPACE.bytes + name).digest()
    return uuid.UUID(bytes=digest[:16], version=5)


def instance_id_for(workflow_type: str, idempotency_key: str) -> str:
    """The instance id Weft gives a start request with ``idempotency_key``."""
    return str(derive_uuid(b"instance", workflow_type.encode(), idempotency_key.encode()))


def task_id_of(instance_id: str, task_name: str) -> str:
    return str(derive_uuid(b"task", uuid.UUID(instance_id).bytes, task_name.encode()))


def execution_id_of(task_id: str, attempt: int) -> str:
    return str(derive_uuid(b"exec", uuid.UUID(task_id).bytes, attempt.to_bytes(4, "big")))


class Topics:
    """Topic names under one prefix (default ``weft``)."""

    def __init__(self, prefix: str = "weft") -> None:
        self.prefix = prefix

    def events(self, workflow_type: str) -> str:
        return f"{self.prefix}.{workflow_type}.events"

    def tasks(self, workflow_type: str) -> str:
        return f"{self.prefix}.{workflow_type}.tasks"

    def heartbeats(self, workflow_type: str) -> str:
        return f"{self.prefix}.{workflow_type}.heartbeats"

    def dlq(self, workflow_type: str) -> str:
        return f"{self.prefix}.{workflow_type}.dlq"

    def nodes(self) -> str:
        return f"{self.prefix}.nodes"

    def tasks_regex(self) -> str:
        """The subscription pattern of every type's tasks topic."""
        escaped = "".join("\\" + c if c in "\\.+*?()|[]{}^$" else c for c in self.prefix)
        return f"^{escaped}\\.[A-Za-z0-9_-]+\\.tasks$"

    def parse(self, topic: str) -> Optional[Tuple[str, str]]:
        """``(workflow_type, kind)`` of a per-type topic (kind: events, tasks, ...)."""
        head = self.prefix + "."
        if not topic.startswith(head):
            return None
        rest = topic[len(head):]
        if "." not in rest:
            return None
        ty, kind = rest.rsplit(".", 1)
        if not ty or "." in ty or kind not in ("events", "tasks", "snapshots", "dlq", "heartbeats"):
            return None
        return ty, kind


# -- the events of one attempt ----------------------------------------------

STARTED = "started"
COMPLETED = "completed"
FAILED = "failed"
_EVENT_TYPES = {STARTED: "task.started", COMPLETED: "task.completed", FAILED: "task.failed"}


def attempt_event(dispatch: Dict[str, Any], kind: str, data: Dict[str, Any], node_id: str) -> Dict[str, Any]:
    """The ``task.started`` / ``task.completed`` / ``task.failed`` event of ``dispatch``'s attempt.

    Its ids are derived from the execution id, so a republished result is the
    same event and the orchestrator drops it.
    """
    exec_id = dispatch["execution_id"]
    chain: List[str] = list(dispatch.get("correlation_chain") or [])
    chain.append(dispatch["scheduled_event_id"])
    return {
        "event_id": str(derive_uuid(b"worker", uuid.UUID(exec_id).bytes, kind.encode())),
        "event_type": _EVENT_TYPES[kind],
        "workflow_type": dispatch["workflow_type"],
        "instance_id": dispatch["instance_id"],
        "sequence_number": 0,
        "causation_id": dispatch["scheduled_event_id"],
        "correlation_chain": chain,
        "timestamp_ms": now_ms(),
        "data": data,
        "metadata": {
            META_TASK: dispatch["task_name"],
            META_ATTEMPT: str(dispatch["attempt"]),
            META_EXECUTION_ID: exec_id,
            META_SOURCE_KIND: SOURCE_KIND_INPUT,
        },
        "idempotency_key": f"{exec_id}:{kind}",
        "source_node_id": node_id,
    }


def started_data(dispatch: Dict[str, Any], node_id: str) -> Dict[str, Any]:
    return {"handler": dispatch["handler"], "node_id": node_id}


def failure_data(error_type: str, message: str, retryable: bool) -> Dict[str, Any]:
    return {"error_type": error_type, "message": message, "retryable": retryable}


def event_headers(event: Dict[str, Any], traceparent: str = "") -> List[Tuple[str, bytes]]:
    headers = [
        (HEADER_EVENT_TYPE, event["event_type"].encode()),
        (HEADER_IDEMPOTENCY_KEY, event["idempotency_key"].encode()),
    ]
    if traceparent:
        headers.append((HEADER_TRACEPARENT, traceparent.encode()))
    return headers


def header(headers: Optional[List[Tuple[str, Optional[bytes]]]], name: str) -> Optional[bytes]:
    """The value of header ``name`` in a confluent-kafka header list (``None``: absent)."""
    for k, v in headers or []:
        if k == name:
            return v if v is not None else b""
    return None


def is_workflow_data(value: Any) -> bool:
    """Whether ``value`` is a ``WorkflowData``: str, int, float, bool, a list of
    str, or a dict of str to scalars."""
    if isinstance(value, (str, bool, int, float)):
        return True
    if isinstance(value, list):
        return all(isinstance(v, str) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and isinstance(v, (str, bool, int, float)) for k, v in value.items())
    return False


def data_problem(data: Any, what: str) -> Optional[str]:
    """Why ``data`` is not a data map (a dict of str to WorkflowData), or None."""
    if not isinstance(data, dict):
        return f"{what} must be a dict, got {type(data).__name__}"
    for k, v in data.items():
        if not isinstance(k, str):
            return f"{what} has a key that is not a string: {k!r}"
        if not is_workflow_data(v):
            return (
                f"{what}[{k!r}] is not workflow data (a string, integer, float, boolean, "
                f"list of strings or dict of scalars): {v!r}"
            )
        if isinstance(v, int) and not isinstance(v, bool) and not -(2**63) <= v < 2**63:
            return f"{what}[{k!r}] does not fit a 64-bit integer"
    return None
