"""Time limits of executing queries: one thread for all of them.

A timer thread per query costs a thread start per query (measurable at tens of queries a
second) and keeps finished queries alive until their limit. ``Deadlines`` keeps the
pending limits in a heap and calls ``expire(item)`` from its single thread once an
item's time has come, unless it was discarded first (the query finished).

>>> import threading
>>> fired = threading.Event()
>>> d = Deadlines(lambda item: fired.set())
>>> d.add("q1", 0.01)
>>> fired.wait(5)
True
>>> d.close()
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable, Hashable
from typing import Any

log = logging.getLogger("skyshard.service")


class Deadlines:
    """Calls ``expire(item)`` ``seconds`` after ``add(item, seconds)``; thread-safe."""

    def __init__(self, expire: Callable[[Any], None], *, name: str = "skyshard-deadlines") -> None:
        self._expire = expire
        self._name = name
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, Hashable]] = []
        self._pending: dict[Hashable, int] = {}  # item -> its entry's sequence number
        self._seq = itertools.count()
        self._thread: threading.Thread | None = None
        self._closed = False

    def add(self, item: Hashable, seconds: float) -> None:
        """Expire ``item`` in ``seconds`` (a new ``add`` of the same item replaces it)."""
        with self._cond:
            if self._closed:
                return
            seq = next(self._seq)
            self._pending[item] = seq
            heapq.heappush(self._heap, (time.monotonic() + seconds, seq, item))
            if len(self._heap) > 2 * len(self._pending) + 64:  # drop discarded entries
                self._heap = [e for e in self._heap if self._pending.get(e[2]) == e[1]]
                heapq.heapify(self._heap)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._thread.start()
            self._cond.notify()

    def discard(self, item: Hashable) -> None:
        """Forget ``item``'s deadline (it will not expire); no error if there is none."""
        with self._cond:
            self._pending.pop(item, None)

    def __len__(self) -> int:
        with self._cond:
            return len(self._pending)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._pending.clear()
            self._heap.clear()
            self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                item = self._next_due()
                if item is None:
                    return
            try:
                self._expire(item)
            except Exception:  # one failure must not stop the others' limits
                log.exception("expiring %r failed", item)

    def _next_due(self) -> Hashable | None:
        """Wait (holding the condition) for the next due item; None once closed."""
        while not self._closed:
            if not self._heap:
                self._cond.wait()
                continue
            at, seq, item = self._heap[0]
            if self._pending.get(item) != seq:  # discarded or replaced
                heapq.heappop(self._heap)
                continue
            delay = at - time.monotonic()
            if delay > 0:
                self._cond.wait(delay)
                continue
            heapq.heappop(self._heap)
            del self._pending[item]
            return item
        return None
