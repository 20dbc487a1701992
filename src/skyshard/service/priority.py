"""Operating-system priority of the threads that run full scans.

Qserv keeps interactive queries responsive by giving shared scans their own resources.
skyshard does it with the scheduler: scans run on threads whose *nice* value is raised,
so when the CPUs are busy an interactive query's thread (nice 0) gets most of them, and
when they are idle a scan still uses them all. On Linux the nice value is per thread and
a new thread inherits its creator's, so a DuckDB database opened from a lowered thread
(``run_lowered``) has all its worker threads lowered too.

Raising one's own nice value needs no privilege (lowering it back does, so lowered
threads stay lowered). Elsewhere than Linux these functions do nothing and say so.

>>> import threading
>>> run_lowered(lambda: 6 * 7, 0)
42
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

#: The highest nice value (the lowest priority) the kernel accepts.
MAX_NICE = 19


def supported() -> bool:
    """Whether per-thread priorities can be set here (Linux)."""
    return sys.platform.startswith("linux") and hasattr(os, "setpriority")


def lower_current_thread(increment: int) -> int | None:
    """Raise the calling thread's nice value by ``increment`` (capped at 19); the new
    value, or None where it cannot be set (``increment <= 0`` changes nothing)."""
    if increment <= 0 or not supported():
        return None
    tid = threading.get_native_id()
    try:
        target = min(MAX_NICE, os.getpriority(os.PRIO_PROCESS, tid) + increment)
        os.setpriority(os.PRIO_PROCESS, tid, target)
        return os.getpriority(os.PRIO_PROCESS, tid)
    except OSError:
        return None


def current_nice() -> int | None:
    """The calling thread's nice value (None where unsupported)."""
    if not supported():
        return None
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


def run_lowered(fn: Callable[[], T], increment: int) -> T:
    """``fn()`` run on a new thread lowered by ``increment``: whatever threads it starts
    (a DuckDB database's workers) inherit the lower priority. Exceptions propagate."""
    out: dict[str, object] = {}

    def target() -> None:
        lower_current_thread(increment)
        try:
            out["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller
            out["error"] = exc

    thread = threading.Thread(target=target, name="skyshard-lowered", daemon=True)
    thread.start()
    thread.join()
    if "error" in out:
        raise out["error"]  # type: ignore[misc]
    return out["value"]  # type: ignore[return-value]
