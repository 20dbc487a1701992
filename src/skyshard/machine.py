"""What this machine lets the process use.

>>> cpus() >= 1
True
"""

from __future__ import annotations

import os


def cpus() -> int:
    """The CPUs this process may run on: its affinity (a container's cpuset), else all."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1
