"""``python -m weft_worker``: run a worker with the built-in handlers, or start workflows.

    python -m weft_worker run --bootstrap 127.0.0.1:9092 [--types a,b] [--group weft-workers]
        [--capabilities gpu,region=eu] [--resources cpu=4,memory_mb=8192]
    python -m weft_worker start --bootstrap 127.0.0.1:9092 --type orders --input '{"n": 1}' --key order-1 [--count 10]

``start`` prints one JSON line per instance: ``{"instance_id", "topic", "partition", "offset", "key"}``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from typing import List, Optional

from .producer import WorkflowStarter
from .protocol import LaneError, NodeOffer
from .worker import Worker


def _properties(pairs: List[str]) -> dict:
    out = {}
    for p in pairs:
        k, sep, v = p.partition("=")
        if not sep:
            raise SystemExit(f"--property wants NAME=VALUE, got {p!r}")
        out[k] = v
    return out


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m weft_worker", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run a worker with the built-in handlers (noop, sleep, fail, choose)")
    run.add_argument("--bootstrap", default=os.environ.get("WEFT_KAFKA_BOOTSTRAP", "127.0.0.1:9092"))
    run.add_argument("--topic-prefix", default="weft")
    run.add_argument("--group", default="weft-workers", help="the workers' consumer group")
    run.add_argument("--types", default="", help="comma-separated workflow types (default: every type)")
    run.add_argument("--node-id", default=None)
    run.add_argument("--concurrency", type=int, default=8, help="tasks run at once (the worker's slots)")
    run.add_argument(
        "--capabilities",
        default="",
        help="comma-separated capabilities (gpu) and labels (region=eu) this worker offers: "
        "it also serves the lanes of tasks that require them",
    )
    run.add_argument(
        "--resources",
        default="",
        help="comma-separated resource capacities NAME=AMOUNT (cpu=4,memory_mb=8192): "
        "the tasks running at once never ask for more",
    )
    run.add_argument("--shutdown-grace-ms", type=int, default=30_000)
    run.add_argument("--transactions", action="store_true", help="enable exactly_once tasks (needs Kafka transactions)")
    run.add_argument("--property", action="append", default=[], help="a librdkafka property NAME=VALUE")
    run.add_argument("--log-level", default=os.environ.get("WEFT_PY_LOG", "INFO"))

    start = sub.add_parser("start", help="start workflows by publishing workflow.created")
    start.add_argument("--bootstrap", default=os.environ.get("WEFT_KAFKA_BOOTSTRAP", "127.0.0.1:9092"))
    start.add_argument("--topic-prefix", default="weft")
    start.add_argument("--type", required=True, dest="workflow_type")
    start.add_argument("--input", default="{}", help="the workflow input, a JSON object")
    start.add_argument("--key", required=True, help="idempotency key (with --count: a prefix, -<i> appended)")
    start.add_argument("--count", type=int, default=None)
    start.add_argument("--definition-version", type=int, default=None)
    start.add_argument("--property", action="append", default=[])

    args = parser.parse_args(argv)
    if args.command == "run":
        logging.basicConfig(
            level=args.log_level.upper(),
            format="%(asctime)s %(levelname)s %(threadName)s %(name)s: %(message)s",
            stream=sys.stderr,
        )
        if args.concurrency < 1:
            run.error(f"--concurrency must be at least 1, got {args.concurrency}")
        for flag, caps, res in (("--capabilities", args.capabilities, None), ("--resources", None, args.resources)):
            try:
                NodeOffer.declare(caps, res, args.concurrency)
            except LaneError as e:
                run.error(f"{flag}: {e}")
        worker = Worker(
            args.bootstrap,
            group_id=args.group,
            topic_prefix=args.topic_prefix,
            types=[t for t in args.types.split(",") if t.strip()],
            node_id=args.node_id,
            concurrency=args.concurrency,
            transactions=args.transactions,
            shutdown_grace_ms=args.shutdown_grace_ms,
            properties=_properties(args.property),
            capabilities=args.capabilities,
            resources=args.resources,
        ).with_builtins()
        worker.run()
        return 0

    starter = WorkflowStarter(args.bootstrap, topic_prefix=args.topic_prefix, properties=_properties(args.property))
    data = json.loads(args.input)
    keys = [args.key] if args.count is None else [f"{args.key}-{i}" for i in range(args.count)]
    for key in keys:
        s = starter.start(args.workflow_type, data, key, definition_version=args.definition_version)
        print(
            json.dumps(
                {"instance_id": s.instance_id, "topic": s.topic, "partition": s.partition, "offset": s.offset, "key": key}
            ),
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
