"""Which offsets a worker may commit: records finish out of order (handlers
run concurrently), but a partition's committed offset may only move past a
record once it and every record before it are done. Thread-safe."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Dict, List, Optional, Set, Tuple


@dataclass(frozen=True)
class Ticket:
    """One received record; ``generation`` ties it to one assignment of its partition."""

    topic: str
    partition: int
    offset: int
    generation: int


class _Partition:
    def __init__(self, generation: int) -> None:
        self.generation = generation
        self.outstanding: Set[int] = set()
        self.high = -1
        self.committed = -1

    def position(self) -> Optional[int]:
        """The offset to commit: the first record not done, else one past the last."""
        if self.outstanding:
            return min(self.outstanding)
        return self.high + 1 if self.high >= 0 else None


class OffsetTracker:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._parts: Dict[Tuple[str, int], _Partition] = {}
        self._generation = 0

    def track(self, topic: str, partition: int, offset: int) -> Ticket:
        with self._lock:
            p = self._parts.get((topic, partition))
            if p is None:
                self._generation += 1
                p = self._parts[(topic, partition)] = _Partition(self._generation)
            p.outstanding.add(offset)
            p.high = max(p.high, offset)
            return Ticket(topic, partition, offset, p.generation)

    def done(self, ticket: Ticket) -> bool:
        """Marks the ticket's record done; True when its partition's position moved."""
        with self._lock:
            p = self._parts.get((ticket.topic, ticket.partition))
            if p is None or p.generation != ticket.generation or ticket.offset not in p.outstanding:
                return False
            before = p.position()
            p.outstanding.discard(ticket.offset)
            return p.position() != before

    def position_if_done(self, ticket: Ticket) -> Optional[int]:
        """The position of the ticket's partition if the ticket's record were done
        (for a transaction that commits it with the result)."""
        with self._lock:
            p = self._parts.get((ticket.topic, ticket.partition))
            if p is None or p.generation != ticket.generation:
                return None
            rest = p.outstanding - {ticket.offset}
            return min(rest) if rest else p.high + 1

    def earlier_pending(self, ticket: Ticket) -> Optional[bool]:
        """Whether a record received before the ticket's on its partition is not
        done yet (None: the partition was revoked since)."""
        with self._lock:
            p = self._parts.get((ticket.topic, ticket.partition))
            if p is None or p.generation != ticket.generation:
                return None
            return any(o < ticket.offset for o in p.outstanding)

    def commit_through(self, ticket: Ticket, position: int) -> bool:
        """Marks the ticket's record done and ``position`` committed (a transaction
        committed it); False when the partition was revoked since the ticket."""
        with self._lock:
            p = self._parts.get((ticket.topic, ticket.partition))
            if p is None or p.generation != ticket.generation:
                return False
            p.outstanding.discard(ticket.offset)
            p.committed = max(p.committed, position)
            return True

    def committable(self) -> List[Tuple[str, int, int]]:
        """``(topic, partition, offset)`` of every partition whose position moved past its last commit."""
        with self._lock:
            out = []
            for (topic, partition), p in self._parts.items():
                pos = p.position()
                if pos is not None and pos > p.committed:
                    out.append((topic, partition, pos))
            return out

    def committed(self, positions: List[Tuple[str, int, int]]) -> None:
        with self._lock:
            for topic, partition, offset in positions:
                p = self._parts.get((topic, partition))
                if p is not None and offset > p.committed:
                    p.committed = offset

    def revoke(self, topic: str, partition: int) -> Optional[int]:
        """Forgets the partition; returns its position to commit, if any."""
        with self._lock:
            p = self._parts.pop((topic, partition), None)
            if p is None:
                return None
            pos = p.position()
            return pos if pos is not None and pos > p.committed else None
