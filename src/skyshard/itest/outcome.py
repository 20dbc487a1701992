"""The verdict on one query, and the tallies of many."""

from __future__ import annotations

import enum
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass


class Status(str, enum.Enum):
    """``PASS`` same answer as the reference; ``FAIL`` a different answer; ``ERROR``
    skyshard raised (or crashed); ``SKIP`` not run (skip list, absent table);
    ``REFUSED`` an unsupported_* query refused with a typed SQL error, and MariaDB
    cannot run its reference form either; ``REFUSED_RUNS`` an unsupported_* query
    refused with a typed SQL error although MariaDB runs its reference form (a
    shortfall); ``NOREF`` skyshard answered but the reference database cannot run the
    query, so the answer is unchecked."""

    PASS = "PASS"
    FAIL = "FAIL"
    ERROR = "ERROR"
    SKIP = "SKIP"
    REFUSED_RUNS = "REFUSED_RUNS"
    REFUSED = "REFUSED"
    NOREF = "NOREF"

    @property
    def label(self) -> str:
        """The column heading of tallies."""
        return _LABELS.get(self, self.value.lower())


_LABELS = {Status.REFUSED_RUNS: "refused (MariaDB runs it)",
           Status.REFUSED: "refused (MariaDB fails too)"}

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
    #: unsupported_* queries: whether MariaDB runs the reference form (None: not
    #: tried), and its answer in words (its error, or how many rows) when skyshard gave
    #: none to compare with
    reference_runs: bool | None = None
    reference_detail: str = ""

    @property
    def runnable(self) -> bool:
        return not self.query_class.startswith("unsupported_")

    @property
    def bad(self) -> bool:
        """A result that must be listed as a known failure: a wrong answer, an error, a
        refusal of a query MariaDB runs, or a runnable query that the reference could
        not check."""
        return self.status in (Status.FAIL, Status.ERROR, Status.REFUSED_RUNS) or (
            self.status is Status.NOREF and self.runnable
        )

    def line(self) -> str:
        return f"{self.status.value} {self.id}" + (f": {self.detail}" if self.detail else "")

    def to_json(self) -> dict:
        out = asdict(self)
        out["status"] = self.status.value
        return out


@dataclass(frozen=True)
class BeyondQserv:
    """The measure for the unsupported_* queries (those Qserv refuses): of the ``runs``
    queries whose reference form MariaDB runs, ``correct`` return the same answer on
    skyshard."""

    correct: int
    runs: int

    @property
    def percent(self) -> float:
        return 100.0 * self.correct / self.runs if self.runs else 0.0

    def sentence(self) -> str:
        return (f"{self.correct} of {self.runs} unsupported queries that MariaDB runs return "
                f"correct results ({self.percent:.1f}%)")


def beyond_qserv(outcomes: Iterable[Outcome]) -> BeyondQserv:
    """Count the unsupported_* queries MariaDB runs, and those of them that pass."""
    ran = [o for o in outcomes if not o.runnable and o.reference_runs]
    return BeyondQserv(sum(o.status is Status.PASS for o in ran), len(ran))


def tally(outcomes: Iterable[Outcome]) -> Counter:
    return Counter(o.status for o in outcomes)


def tally_text(counts: Counter) -> str:
    return ", ".join(f"{counts[s]} {s.label}" for s in STATUSES if counts[s]) or "nothing"
