"""Named moments of ingest work where a test may kill the process.

``SKYSHARD_CRASH_AT=<name>`` in the environment makes the process kill itself with
SIGKILL when it reaches that moment (``SKYSHARD_CRASH_AT=<name>:<n>``: the n-th time).
The crash-safety tests use it to hit the narrow windows of a commit (between moving a
version into place and renaming ``skyshard.json``, say) that random kills rarely hit.
Unset, ``reached`` costs one dictionary lookup.

>>> reached("publish-before-save")   # no-op unless asked for
"""

from __future__ import annotations

import os
import signal

ENV = "SKYSHARD_CRASH_AT"

#: Every moment ingest work announces, in the order a commit reaches them.
NAMES = (
    "add-spooled",          # a contribution is spooled, not yet recorded
    "add-recorded",         # a contribution is recorded in txn.json
    "commit-started",       # state COMMITTING saved
    "build-data",           # partition files of the new version written
    "build-done",           # the new version is complete in the transaction's folder
    "publish-moved",        # a new version folder moved into the catalog
    "publish-before-save",  # every folder moved, skyshard.json not yet renamed
    "publish-after-save",   # published: skyshard.json renamed
    "cleanup",              # the transaction's folder is being removed
    "gc-removed",           # a retired version removed, skyshard.json not yet rewritten
)

_counts: dict[str, int] = {}


def run_cli(argv: list[str], crash_at: str | None = None) -> None:
    """Run the ``skyshard`` command in this process (a test's child process), crashing
    at ``crash_at`` if given; exits with the command's status."""
    import sys

    from skyshard.cli import main

    if crash_at:
        os.environ[ENV] = crash_at
    _counts.clear()
    sys.exit(main(argv))


def reached(name: str) -> None:
    """Kill this process now if the environment asks for a crash at ``name``."""
    wanted = os.environ.get(ENV)
    if not wanted:
        return
    target, _, nth = wanted.partition(":")
    if target != name:
        return
    _counts[name] = _counts.get(name, 0) + 1
    if _counts[name] >= int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)
