"""The verdict on one query, and the tallies of many."""

from __future__ import annotations

import enum
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass


class Status(str, enum.Enum):
    """``PASS`` same answer as the reference; ``FAIL`` a different answer; ``ERROR``
    skyshard raised (or crashed); ``SKIP`` not run (skip list, absent table);
    ``REFUSED`` an unsupported_* query refused with a typed SQL error, as it should be;
    ``NOREF`` skyshard answered but the reference database cannot run the query, so the
    answer is unchecked."""

    PASS = "PASS"
    FAIL = "FAIL"
    ERROR = "ERROR"
    SKIP = "SKIP"
    REFUSED = "REFUSED"
    NOREF = "NOREF"


#: The order of columns in tallies.
STATUSES = tuple(Status)


@dataclass
class Outcome:
    """One query's verdict. ``id`` is ``case/[group/]name`` (``expected/case/name`` for
    the stored expected results); ``detail`` the first difference, the error, or the
    reason for a skip."""

    id: str
    case: str
    query_class: str
    status: Status
    detail: str = ""
    seconds: float | None = None  # skyshard, first execution path
    reference_seconds: float | None = None
    rows: int | None = None
    note: str = ""  # e.g. column names that differ while the values agree

    @property
    def runnable(self) -> bool:
        return not self.query_class.startswith("unsupported_")

    @property
    def bad(self) -> bool:
        """A result that must be listed as a known failure: a wrong answer, an error, or
        a runnable query that the reference could not check."""
        return self.status in (Status.FAIL, Status.ERROR) or (
            self.status is Status.NOREF and self.runnable
        )

    def line(self) -> str:
        return f"{self.status.value} {self.id}" + (f": {self.detail}" if self.detail else "")

    def to_json(self) -> dict:
        out = asdict(self)
        out["status"] = self.status.value
        return out


def tally(outcomes: Iterable[Outcome]) -> Counter:
    return Counter(o.status for o in outcomes)


def tally_text(counts: Counter) -> str:
    return ", ".join(f"{counts[s]} {s.value.lower()}" for s in STATUSES if counts[s]) or "nothing"
