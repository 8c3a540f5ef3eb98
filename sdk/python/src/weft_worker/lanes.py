"""The task topics a worker serves (``docs/protocol.md``, "Lanes"), as the Rust
worker's ``worker/src/lanes.rs`` computes them: for each of its workflow types
(or every type), the default lane ``weft.<type>.tasks``, the urgent lane
``weft.<type>.tasks.urgent``, and every existing lane whose requirements its
declared capabilities, labels and resources meet. The default and urgent lanes
are subscribed by name (or by ``^`` pattern, for every type); the constrained
ones are found in the broker's topic list, looked at again every
:data:`REFRESH_S` seconds (the worker subscribes again when the set changes)."""

from __future__ import annotations

from typing import Iterable, List, Optional, Sequence

from .protocol import NodeOffer, Requirements, Topics

#: How often the worker looks for new lanes it can serve, in seconds.
REFRESH_S = 5.0


class Served:
    """What a worker of ``types`` (every type when empty) offering ``offer`` serves."""

    def __init__(self, topics: Topics, types: Sequence[str], offer: NodeOffer) -> None:
        self.topics = topics
        self.types = [t.strip() for t in types if t.strip()]
        self.offer = offer

    def lane(self, topic: str) -> Optional[Requirements]:
        """The lane of a task topic this worker serves (None: not served)."""
        parsed = self.topics.parse_lane(topic)
        if parsed is None:
            return None
        ty, req = parsed
        typed = not self.types or ty in self.types
        return req if typed and self.offer.satisfies(req) else None

    def serves(self, topic: str) -> bool:
        return self.lane(topic) is not None

    def subscription(self, existing: Iterable[str]) -> List[str]:
        """The default and urgent lanes of the types (by name, or as ``^``
        patterns for every type), then the constrained lanes among ``existing``
        topic names that the worker serves, sorted."""
        if self.types:
            urgent = Requirements(urgent=True)
            out = [name for t in self.types for name in (self.topics.tasks(t), self.topics.lane(t, urgent))]
        else:
            out = [self.topics.tasks_regex(), self.topics.urgent_regex()]
        lanes = set()
        for name in existing:
            req = self.lane(name)
            if req is not None and req.is_constrained():
                lanes.add(name)
        return out + sorted(lanes)
