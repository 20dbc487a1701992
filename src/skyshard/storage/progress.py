"""Progress of ingest work: a tqdm bar on a terminal, and a small JSON file in the
transaction's directory that ``status`` (CLI and HTTP) reads while the work runs.

>>> import tempfile
>>> d = Path(tempfile.mkdtemp())
>>> with Progress("reading", show=False, report=d / "progress.json") as p:
...     p.update(10, nbytes=100)
...     p.flush()
...     read_report(d / "progress.json")["rows"]
10
>>> read_report(d / "progress.json") is None
True
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

#: Seconds between two writes of the progress file.
REPORT_EVERY = 0.5


class Progress:
    """One phase of work counted in rows (and bytes of input, when known)."""

    def __init__(self, label: str, *, show: bool | None = None, total: int | None = None,
                 report: Path | None = None) -> None:
        self.label = label
        self.rows = 0
        self.bytes = 0
        self.total = total
        self.report = report
        self._written = 0.0
        self.bar = None
        if show if show is not None else sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=label, unit=" rows", unit_scale=True, file=sys.stderr)
        self._write(force=True)

    def __enter__(self) -> Progress:
        return self

    def update(self, rows: int, *, nbytes: int = 0) -> None:
        self.rows += rows
        self.bytes += nbytes
        if self.bar is not None:
            self.bar.update(rows)
        self._write()

    def flush(self) -> None:
        """Write the progress file now (it is otherwise written at most every
        ``REPORT_EVERY`` seconds)."""
        self._write(force=True)

    def _write(self, force: bool = False) -> None:
        if self.report is None:
            return
        now = time.time()
        if not force and now - self._written < REPORT_EVERY:
            return
        self._written = now
        data = {"phase": self.label, "rows": self.rows, "bytes": self.bytes,
                "total_rows": self.total, "pid": os.getpid(), "updated": now}
        tmp = self.report.with_name(self.report.name + ".tmp")
        try:
            tmp.write_text(json.dumps(data))
            os.replace(tmp, self.report)
        except OSError:
            pass  # the transaction was removed meanwhile: nothing to report to

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.report is not None:
            self.report.unlink(missing_ok=True)


def read_report(path: Path) -> dict | None:
    """The progress a running phase last wrote, or None."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None
