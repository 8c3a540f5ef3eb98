"""What a worker can run at once, and which received record runs next, as the
Rust worker's ``worker/src/capacity.rs`` decides it.

:class:`Capacity` holds the worker's free amount of each resource: its
``slots`` (its concurrency) and what it declares (``cpu=4``, ...). A task takes
one slot and what its lane asks for (``res-<name>--<n>`` tokens); the
:class:`Permit` gives them back when the attempt is over. So the tasks running
at once never ask for more of a resource than the worker has.

:class:`Ready` holds received records until they fit. Records of urgent lanes
(``critical`` and ``high`` tasks) start before the others, except that every
:data:`NORMAL_TURN`-th start goes to the oldest other record while both wait,
so a stream of urgent work cannot stop the rest. Within a class records start
in arrival order; one that does not fit yet lets later ones that fit go first
until it has waited :data:`RESERVE_AFTER_S`: then nothing passes it, and the
capacity it needs frees up for it.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Deque, Dict, List, Optional, Tuple

from .protocol import SLOTS, Requirements

#: Every this many starts, one goes to a non-urgent record if one waits.
NORMAL_TURN = 5
#: How long a record that does not fit may be passed by others, in seconds.
RESERVE_AFTER_S = 2.0


class Permit:
    """Resources taken by one task; :meth:`release` gives them back (once)."""

    def __init__(self, capacity: "Capacity", taken: List[Tuple[str, int]]) -> None:
        self._capacity = capacity
        self.taken = taken
        self._released = False

    def release(self) -> None:
        with self._capacity._lock:
            if self._released:
                return
            self._released = True
            for name, n in self.taken:
                self._capacity._free[name] = self._capacity._free.get(name, 0) + n


class Capacity:
    """The worker's free resources, of ``total`` (which holds ``slots``)."""

    def __init__(self, total: Dict[str, int]) -> None:
        if total.get(SLOTS, 0) < 1:
            raise ValueError("a worker's capacity needs at least one slot")
        self.total = dict(total)
        self._free = dict(total)
        self._lock = threading.Lock()

    def amounts(self, need: Requirements) -> List[Tuple[str, int]]:
        """What a task of ``need`` takes: a slot and its resources, each at most
        the worker's total (a worker only serves lanes it meets, so that bound
        never cuts anything but keeps a mistake from waiting for ever)."""
        out = [(SLOTS, min(need.amount(SLOTS), self.total[SLOTS]))]
        out.extend((name, min(n, self.total.get(name, 0))) for name, n in sorted(need.resources.items()) if name != SLOTS)
        return out

    def try_take(self, need: Requirements) -> Optional[Permit]:
        """Takes what ``need`` asks for if it is all free now."""
        taken = self.amounts(need)
        with self._lock:
            if any(self._free.get(name, 0) < n for name, n in taken):
                return None
            for name, n in taken:
                self._free[name] = self._free.get(name, 0) - n
        return Permit(self, taken)

    def free_slots(self) -> int:
        with self._lock:
            return self._free.get(SLOTS, 0)

    def in_use(self) -> Dict[str, int]:
        """Amounts in use now, by resource (for the node record)."""
        with self._lock:
            return {name: total - self._free.get(name, 0) for name, total in self.total.items()}


@dataclass
class Waiting:
    """A received task record waiting to start."""

    item: Any
    need: Requirements
    since: float = field(default_factory=time.monotonic)


class Ready:
    """Received records not started yet, urgent ones apart. Used by the
    consumer loop's thread only."""

    def __init__(self) -> None:
        self.urgent: Deque[Waiting] = deque()
        self.normal: Deque[Waiting] = deque()
        #: Urgent starts since the last non-urgent one.
        self._streak = 0

    def push(self, w: Waiting) -> None:
        (self.urgent if w.need.urgent else self.normal).append(w)

    def __len__(self) -> int:
        return len(self.urgent) + len(self.normal)

    def clear(self) -> None:
        self.urgent.clear()
        self.normal.clear()

    def drop_if(self, gone: Callable[[Any], bool]) -> None:
        """Forgets the records whose item ``gone`` says (their partitions were revoked)."""
        self.urgent = deque(w for w in self.urgent if not gone(w.item))
        self.normal = deque(w for w in self.normal if not gone(w.item))

    def next(self, capacity: Capacity, now: Optional[float] = None) -> Optional[Tuple[Waiting, Permit]]:
        """The record to start now and its permit, if one fits."""
        now = time.monotonic() if now is None else now
        normal_turn = self._streak + 1 >= NORMAL_TURN and bool(self.normal)
        for urgent in ((False, True) if normal_turn else (True, False)):
            started = _take_fitting(self.urgent if urgent else self.normal, capacity, now)
            if started is not None:
                self._streak = self._streak + 1 if urgent else 0
                return started
        return None


def _take_fitting(queue: Deque[Waiting], capacity: Capacity, now: float) -> Optional[Tuple[Waiting, Permit]]:
    """The first record of ``queue`` that fits, unless one before it has waited
    :data:`RESERVE_AFTER_S` (then only that one may start)."""
    for i, w in enumerate(queue):
        permit = capacity.try_take(w.need)
        if permit is not None:
            del queue[i]
            return w, permit
        if now - w.since >= RESERVE_AFTER_S:
            return None
    return None
