"""Starting workflows from Python by publishing ``workflow.created`` directly
to ``weft.<type>.events`` (no HTTP API involved)."""

from __future__ import annotations

import threading
import uuid
from dataclasses import dataclass
from typing import Any, Dict, Optional

from confluent_kafka import KafkaError, Message, Producer

from . import codec
from .protocol import (
    HEADER_EVENT_TYPE,
    HEADER_IDEMPOTENCY_KEY,
    HEADER_TRACEPARENT,
    META_DEFINITION_VERSION,
    PARTITIONER,
    Topics,
    data_problem,
    instance_id_for,
    now_ms,
)


@dataclass(frozen=True)
class Started:
    """Where a ``workflow.created`` event went."""

    instance_id: str
    topic: str
    partition: int
    offset: int


def workflow_created(
    workflow_type: str,
    input: Dict[str, Any],
    idempotency_key: str,
    *,
    instance_id: Optional[str] = None,
    definition_version: Optional[int] = None,
    source_node_id: str = "python",
) -> Dict[str, Any]:
    """The ``workflow.created`` event that starts an instance of ``workflow_type``.

    The instance id is derived from the idempotency key the way Weft's API
    derives it, so a retried start names the same instance (and the second
    event is dropped as a duplicate) unless ``instance_id`` is given.
    """
    problem = data_problem(input, "input")
    if problem:
        raise ValueError(problem)
    metadata = {}
    if definition_version is not None:
        metadata[META_DEFINITION_VERSION] = str(definition_version)
    return {
        "event_id": str(uuid.uuid4()),
        "event_type": "workflow.created",
        "workflow_type": workflow_type,
        "instance_id": instance_id or instance_id_for(workflow_type, idempotency_key),
        "sequence_number": 0,
        "causation_id": None,
        "correlation_chain": [],
        "timestamp_ms": now_ms(),
        "data": input,
        "metadata": metadata,
        "idempotency_key": idempotency_key,
        "source_node_id": source_node_id,
    }


class WorkflowStarter:
    """A producer of ``workflow.created`` events (configured with the
    ``murmur2_random`` partitioner, as every producer of Weft events must be)."""

    def __init__(
        self,
        bootstrap: str = "127.0.0.1:9092",
        *,
        topic_prefix: str = "weft",
        properties: Optional[Dict[str, str]] = None,
        source_node_id: str = "python",
    ) -> None:
        cfg: Dict[str, Any] = {
            "bootstrap.servers": bootstrap,
            "enable.idempotence": True,
            "acks": "all",
            "partitioner": PARTITIONER,
        }
        cfg.update(properties or {})
        self.producer = Producer(cfg)
        self.topics = Topics(topic_prefix)
        self.source_node_id = source_node_id

    def start(
        self,
        workflow_type: str,
        input: Dict[str, Any],
        idempotency_key: str,
        *,
        definition_version: Optional[int] = None,
        traceparent: str = "",
        timeout_s: float = 30.0,
    ) -> Started:
        """Publishes the ``workflow.created`` event and waits for the broker's ack."""
        event = workflow_created(
            workflow_type,
            input,
            idempotency_key,
            definition_version=definition_version,
            source_node_id=self.source_node_id,
        )
        headers = [
            (HEADER_EVENT_TYPE, b"workflow.created"),
            (HEADER_IDEMPOTENCY_KEY, idempotency_key.encode()),
        ]
        if traceparent:
            headers.append((HEADER_TRACEPARENT, traceparent.encode()))
        done = threading.Event()
        result: Dict[str, Any] = {}

        def delivered(err: Optional[KafkaError], msg: Message) -> None:
            result["err"], result["msg"] = err, msg
            done.set()

        topic = self.topics.events(workflow_type)
        self.producer.produce(
            topic,
            key=event["instance_id"].encode(),
            value=codec.encode("WorkflowEvent", event),
            headers=headers,
            on_delivery=delivered,
        )
        self.producer.flush(timeout_s)
        if not done.is_set():
            raise TimeoutError(f"workflow.created for {event['instance_id']} not acknowledged within {timeout_s}s")
        if result["err"] is not None:
            raise RuntimeError(f"workflow.created for {event['instance_id']} failed: {result['err']}")
        msg: Message = result["msg"]
        return Started(event["instance_id"], topic, msg.partition(), msg.offset())


def start_workflow(
    bootstrap: str,
    workflow_type: str,
    input: Dict[str, Any],
    idempotency_key: str,
    **kwargs: Any,
) -> Started:
    """Starts one instance (a one-off :class:`WorkflowStarter`)."""
    return WorkflowStarter(bootstrap).start(workflow_type, input, idempotency_key, **kwargs)
