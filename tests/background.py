"""Run a query on a thread while a test kills workers under it."""

from __future__ import annotations

import threading
from collections.abc import Callable


def run_in_thread(query: Callable[[], object]) -> tuple[threading.Thread, dict]:
    """Start ``query()`` on a thread; the dict gets ``table`` or ``error`` when it ends.

    >>> thread, out = run_in_thread(lambda: 42)
    >>> thread.join(); out
    {'table': 42}
    """
    out: dict = {}

    def target() -> None:
        try:
            out["table"] = query()
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            out["error"] = exc

    thread = threading.Thread(target=target)
    thread.start()
    return thread, out
