"""Weft workers and producers in Python.

    from weft_worker import Worker, TaskContext, RetryableError, TerminalError

    worker = Worker("127.0.0.1:9092", types=["orders"], capabilities=["gpu"], resources={"cpu": 4}).with_builtins()

    @worker.handler("charge")
    def charge(ctx: TaskContext) -> dict:
        amount = ctx.merged_input().get("amount", 0)
        if amount <= 0:
            raise TerminalError("invalid_amount", "amount must be positive")
        return {"receipt": f"r-{ctx.idempotency_key}"}

    worker.run()   # until SIGTERM / SIGINT, then a graceful drain

The protocol it implements is ``docs/protocol.md`` in Weft's repository.
"""

from .context import TaskContext
from .errors import RetryableError, TaskError, TerminalError
from .partition import murmur2, partition_for
from .producer import Started, WorkflowStarter, start_workflow, workflow_created
from .protocol import LaneError, NodeOffer, Requirements, Topics, instance_id_for
from .worker import Worker

__all__ = [
    "LaneError",
    "NodeOffer",
    "Requirements",
    "RetryableError",
    "Started",
    "TaskContext",
    "TaskError",
    "TerminalError",
    "Topics",
    "Worker",
    "WorkflowStarter",
    "instance_id_for",
    "murmur2",
    "partition_for",
    "start_workflow",
    "workflow_created",
]
