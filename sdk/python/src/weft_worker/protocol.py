"""The names and rules of Weft's wire protocol (``docs/protocol.md``): topics
and lanes, record headers, event metadata keys, derived ids, and the events a
worker publishes for one task attempt."""

from __future__ import annotations

import collections.abc
import hashlib
import json
import math
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Dict, FrozenSet, Iterable, List, Mapping, Optional, Tuple, Union

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


def _regex_escape(s: str) -> str:
    return "".join("\\" + c if c in "\\.+*?()|[]{}^$" else c for c in s)


class Topics:
    """Topic names under one prefix (default ``weft``)."""

    def __init__(self, prefix: str = "weft") -> None:
        self.prefix = prefix

    def events(self, workflow_type: str) -> str:
        return f"{self.prefix}.{workflow_type}.events"

    def tasks(self, workflow_type: str) -> str:
        return f"{self.prefix}.{workflow_type}.tasks"

    def lane(self, workflow_type: str, req: "Requirements") -> str:
        """The task topic of ``workflow_type``'s lane ``req`` (``weft.<type>.tasks[.<tokens>]``)."""
        return req.topic(self.tasks(workflow_type))

    def heartbeats(self, workflow_type: str) -> str:
        return f"{self.prefix}.{workflow_type}.heartbeats"

    def dlq(self, workflow_type: str) -> str:
        return f"{self.prefix}.{workflow_type}.dlq"

    def nodes(self) -> str:
        return f"{self.prefix}.nodes"

    def tasks_regex(self) -> str:
        """The subscription pattern of every type's default lane (``weft.<type>.tasks``)."""
        return f"^{_regex_escape(self.prefix)}\\.[A-Za-z0-9_-]+\\.tasks$"

    def urgent_regex(self) -> str:
        """The subscription pattern of every type's urgent lane (``weft.<type>.tasks.urgent``)."""
        return f"^{_regex_escape(self.prefix)}\\.[A-Za-z0-9_-]+\\.tasks\\.urgent$"

    def parse(self, topic: str) -> Optional[Tuple[str, str]]:
        """``(workflow_type, kind)`` of a per-type topic (kind: events, tasks, ...).
        A lane's task topic (``weft.<type>.tasks.<tokens>``) is of kind ``tasks``."""
        lane = self.parse_lane(topic)
        if lane is not None:
            return lane[0], "tasks"
        head = self.prefix + "."
        if not topic.startswith(head):
            return None
        ty, dot, kind = topic[len(head):].partition(".")
        if not ty or not dot or kind not in ("events", "snapshots", "dlq", "heartbeats"):
            return None
        return ty, kind

    def parse_lane(self, topic: str) -> Optional[Tuple[str, "Requirements"]]:
        """``(workflow_type, requirements)`` of a task topic (the default lane's
        requirements are empty); None for any other topic, or a lane not in
        canonical form."""
        head = self.prefix + "."
        if not topic.startswith(head):
            return None
        ty, dot, kind = topic[len(head):].partition(".")
        if not ty or not dot:
            return None
        if kind == "tasks":
            return ty, Requirements()
        if not kind.startswith("tasks.") or kind == "tasks.":
            return None
        req = Requirements.parse_suffix(kind[len("tasks."):])
        return None if req is None else (ty, req)


# -- lanes ---------------------------------------------------------------------
#
# A task's requirements name its lane: ``weft.<type>.tasks`` plus one token per
# requirement, ``urgent`` first, then the sorted ``cap-<name>``,
# ``sel-<key>--<value>`` and ``res-<name>--<amount>`` (docs/protocol.md, "Lanes";
# shared/src/lanes.rs is the reference implementation).

#: The resource every task takes one of; a worker's capacity in it is its concurrency.
SLOTS = "slots"
#: Kafka's limit on a topic name.
MAX_TOPIC_LEN = 249
_URGENT, _CAP, _SEL, _RES, _PAIR = "urgent", "cap-", "sel-", "res-", "--"


class LaneError(ValueError):
    """A capability, label or resource that cannot name a lane (the message says why)."""


def valid_name(s: str) -> bool:
    """Whether ``s`` may be a capability, label key or value, or resource name:
    letters, digits and ``_``, with single ``-`` between them."""
    return (
        bool(s)
        and not s.startswith("-")
        and not s.endswith("-")
        and _PAIR not in s
        and all((c.isascii() and c.isalnum()) or c in "_-" for c in s)
    )


def check_name(what: str, name: str) -> None:
    """Raises :class:`LaneError` unless ``name`` is a valid name."""
    if not valid_name(name):
        raise LaneError(
            f"{what} '{name}' is not a valid name: use letters, digits and '_', with single '-' between them"
        )


@dataclass
class Requirements:
    """What a task needs of the worker that runs it: capabilities (``gpu``) and
    label pairs (``region=eu``), resource amounts (``cpu`` → 2; never ``slots``
    1, which every task takes), and whether it is urgent (``critical`` or
    ``high`` priority)."""

    capabilities: FrozenSet[str] = field(default_factory=frozenset)
    resources: Dict[str, int] = field(default_factory=dict)
    urgent: bool = False

    def is_constrained(self) -> bool:
        """Whether any capability or resource is asked for (priority aside)."""
        return bool(self.capabilities) or bool(self.resources)

    def amount(self, resource: str) -> int:
        """How much of ``resource`` a task of these requirements takes (``slots``: at least 1)."""
        asked = self.resources.get(resource, 0)
        return max(asked, 1) if resource == SLOTS else asked

    def suffix(self) -> str:
        """The lane's tokens after ``tasks`` (empty for the default lane)."""
        rest = []
        for c in self.capabilities:
            k, eq, v = c.partition("=")
            rest.append(f"{_SEL}{k}{_PAIR}{v}" if eq else f"{_CAP}{c}")
        rest.extend(f"{_RES}{k}{_PAIR}{v}" for k, v in self.resources.items())
        return ".".join(([_URGENT] if self.urgent else []) + sorted(rest))

    @staticmethod
    def parse_suffix(suffix: str) -> Optional["Requirements"]:
        """The requirements the tokens after ``tasks`` name; None unless they are
        valid and in canonical form (only that spelling names a lane)."""
        if suffix == "":
            return Requirements()
        caps: set = set()
        resources: Dict[str, int] = {}
        urgent = False
        for i, token in enumerate(suffix.split(".")):
            if token == _URGENT and i == 0:
                urgent = True
            elif token.startswith(_CAP):
                if not valid_name(token[len(_CAP):]):
                    return None
                caps.add(token[len(_CAP):])
            elif token.startswith(_SEL):
                k, sep, v = token[len(_SEL):].partition(_PAIR)
                if not sep or not valid_name(k) or not valid_name(v):
                    return None
                caps.add(f"{k}={v}")
            elif token.startswith(_RES):
                k, sep, v = token[len(_RES):].partition(_PAIR)
                if not sep or not valid_name(k) or not v.isdigit() or not v.isascii() or int(v) < 1:
                    return None
                resources[k] = int(v)
            else:
                return None
        req = Requirements(frozenset(caps), resources, urgent)
        return req if req.suffix() == suffix else None

    def topic(self, tasks_topic: str) -> str:
        """The task topic of this lane for ``tasks_topic`` (``weft.<type>.tasks``)."""
        suffix = self.suffix()
        return f"{tasks_topic}.{suffix}" if suffix else tasks_topic


#: What :meth:`NodeOffer.declare` takes as resources: ``{"cpu": 4}`` or ``["cpu=4"]`` (or ``"cpu=4,gpu_mem=2"``).
ResourceSpec = Union[Mapping[str, int], Iterable[str], str, None]


@dataclass
class NodeOffer:
    """What a worker offers: capabilities (plain and ``key=value``), labels (the
    ``key=value`` ones) and capacity per resource (``slots`` is its concurrency)."""

    capabilities: FrozenSet[str] = field(default_factory=frozenset)
    labels: Dict[str, str] = field(default_factory=dict)
    capacity: Dict[str, int] = field(default_factory=dict)

    @staticmethod
    def declare(
        capabilities: Union[Iterable[str], str, None], resources: ResourceSpec, concurrency: int
    ) -> "NodeOffer":
        """What a worker declares: ``capabilities`` (names such as ``gpu`` and
        labels such as ``region=eu``; a list, or one comma-separated string) and
        ``resources`` (``{"cpu": 4}``, or ``name=amount`` strings); its ``slots``
        are ``concurrency`` unless ``resources`` names them. Raises
        :class:`LaneError` naming the bad entry."""
        caps: set = set()
        labels: Dict[str, str] = {}
        for raw in _entries(capabilities):
            k, eq, v = raw.partition("=")
            if eq:
                k, v = k.strip(), v.strip()
                check_name("label key", k)
                check_name("label value", v)
                labels[k] = v
                caps.add(f"{k}={v}")
            else:
                check_name("capability", raw)
                caps.add(raw)
        capacity: Dict[str, int] = {}
        pairs: List[Tuple[str, Any, str]] = []
        if isinstance(resources, collections.abc.Mapping):
            pairs = [(str(k).strip(), v, f"{k}={v}") for k, v in resources.items()]
        else:
            for raw in _entries(resources):
                name, eq, amount = raw.partition("=")
                if not eq:
                    raise LaneError(f"'{raw}' is not a resource capacity: write name=amount, e.g. cpu=4")
                try:
                    pairs.append((name.strip(), int(amount.strip()), raw))
                except ValueError:
                    raise LaneError(f"'{raw}' is not a resource capacity: write name=amount, e.g. cpu=4") from None
        for name, amount, given in pairs:
            check_name("resource", name)
            if isinstance(amount, bool) or not isinstance(amount, int):
                raise LaneError(f"'{given}' is not a resource capacity: the amount must be a whole number, e.g. cpu=4")
            if amount < 1:
                raise LaneError(f"resource '{name}' asks for {amount}: a resource amount must be at least 1")
            capacity[name] = amount
        capacity.setdefault(SLOTS, concurrency)
        return NodeOffer(frozenset(caps), labels, capacity)

    def has(self, token: str) -> bool:
        """Whether the node has ``token`` (``gpu`` or ``key=value``)."""
        if token in self.capabilities:
            return True
        k, eq, v = token.partition("=")
        return bool(eq) and self.labels.get(k) == v

    def capacity_of(self, resource: str) -> int:
        return self.capacity.get(resource, 0)

    def satisfies(self, req: Requirements) -> bool:
        """Whether the node can ever run a task of ``req``: every capability, and
        at least the asked amount of every resource."""
        return all(self.has(c) for c in req.capabilities) and all(
            self.capacity_of(r) >= n for r, n in req.resources.items()
        )


def _entries(given: Union[Iterable[str], str, None]) -> List[str]:
    """The non-empty, trimmed entries of a list or of one comma-separated string."""
    if given is None:
        return []
    items = given.split(",") if isinstance(given, str) else list(given)
    out = []
    for item in items:
        if not isinstance(item, str):
            raise LaneError(f"{item!r} is not a string: give names such as gpu or region=eu")
        if item.strip():
            out.append(item.strip())
    return out


# -- the events of one attempt ----------------------------------------------

STARTED = "started"
COMPLETED = "completed"
FAILED = "failed"
CHECKPOINTED = "checkpointed"
_EVENT_TYPES = {
    STARTED: "task.started",
    COMPLETED: "task.completed",
    FAILED: "task.failed",
    CHECKPOINTED: "task.checkpointed",
}

#: The dispatch ``upstream`` entry holding the task's last checkpoint (no task can be named so).
CHECKPOINT_UPSTREAM_KEY = "weft.checkpoint"
#: Metadata key of a checkpoint's number within its attempt (1, 2, ...).
META_CHECKPOINT_SEQ = "weft.checkpoint_seq"
#: The largest checkpoint, as compact JSON (bytes).
MAX_CHECKPOINT_BYTES = 64 * 1024
#: Result metadata: ``weft.usage.<name>`` (cpu_ms, wall_ms, peak_rss_kb), the scope, ``weft.metric.<name>``.
USAGE_PREFIX = "weft.usage."
USAGE_SCOPE = "weft.usage.scope"
METRIC_PREFIX = "weft.metric."
#: The most metrics one result carries.
MAX_METRICS = 32


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


def checkpoint_event(dispatch: Dict[str, Any], seq: int, data: Dict[str, Any], node_id: str) -> Dict[str, Any]:
    """Checkpoint number ``seq`` (1, 2, ...) of ``dispatch``'s attempt: ``task.checkpointed``
    with the checkpoint as data, keyed ``<execution_id>:checkpoint:<seq>``."""
    exec_id = dispatch["execution_id"]
    event = attempt_event(dispatch, CHECKPOINTED, data, node_id)
    event["event_id"] = str(
        derive_uuid(b"worker", uuid.UUID(exec_id).bytes, b"checkpoint", seq.to_bytes(4, "big"))
    )
    event["idempotency_key"] = f"{exec_id}:checkpoint:{seq}"
    event["metadata"][META_CHECKPOINT_SEQ] = str(seq)
    return event


def checkpoint_size(data: Dict[str, Any]) -> int:
    """The size the limit counts: the checkpoint as compact JSON."""
    return len(json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode())


def write_usage(
    metadata: Dict[str, str], resources: Mapping[str, int], metrics: Mapping[str, float], scope: str
) -> None:
    """Puts an attempt's measured usage and its handler's metrics into a result's metadata."""
    for k, v in resources.items():
        metadata[USAGE_PREFIX + k] = str(int(v))
    if scope:
        metadata[USAGE_SCOPE] = scope
    for k, v in list(metrics.items())[:MAX_METRICS]:
        if math.isfinite(v):
            metadata[METRIC_PREFIX + k] = repr(float(v))


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
