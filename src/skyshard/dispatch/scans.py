"""Shared scans: concurrent full scans of one table share one pass over its files.

A query that reads every partition of one big table (a full scan: no region, no key,
no join, no LIMIT) does not read the files in one statement. It joins the table's
*convoy*: a thread that walks the table's partitions in sky order, a *unit*
(consecutive partitions, at most about ``unit_rows`` rows) at a time. For each unit:

- if two or more queries need it and their columns overlap enough, the convoy runs ONE
  DuckDB statement: the unit's files read once (the union of the columns the queries
  use, projected, materialised) and every query's parallel statement over that
  (``QueryPlan.parallel_sql_over``), each query's partial rows packed into a list;
- otherwise (one query, or columns that overlap too little) a query that never read a
  unit alone reads this one itself and stays aboard, so that queries sent a little
  after it (a Dask worker receives scans sent together milliseconds apart) share the
  next units with it; the others leave the convoy and read every unit they still need
  themselves, each on its own thread, in one statement (their ordinary parallel
  statement, only their own columns). So a lone full scan costs two statements and a
  merge, and a query that left is not joined by later ones (those share with each
  other).

"Enough": the bytes per row the queries would read separately are at least
``min_overlap`` times those of the union. Parquet is columnar, so separate reads
already skip the columns a query does not use, and once the files are in the page
cache decoding a column costs little more than scanning it again (strings more).
Sharing pays when the queries read mostly the same columns (measured:
``bench/shared_scans_bench.py``). It saves decoding more than reading: queries running
together already read the files little more than once between them, through the page
cache (a local catalog, even a cold one) or DuckDB's cache of remote files (a catalog at
a URL). So the same ``min_overlap`` applies to every catalog: sharing whatever the
overlap (``min_overlap=1``) was slower for queries on mostly different columns on a cold
local catalog, and no better overall on S3.

The convoy moves on once every query served has its partial for the unit: one unit is
read at a time per convoy. A query that joins late starts at the convoy's current
position and wraps around to the units it missed (as Qserv's shared-scan scheduler
does); when it has every unit its partials are merged as usual. A convoy that was idle
waits ``gather_s`` before its first unit, so that queries sent together board it
together. Small queries (cones, id lookups), tables under ``min_rows`` rows and top-k
queries never join a convoy and never wait.

Each query's own statements run on its own thread with cursors from the executor's
engine, so cancelling it works as usual (``cursor.interrupt()`` stops its statement).
While a query waits for a shared pass no statement of its own runs, so from its first
long wait it holds a *sentinel*: a streaming statement open on one of its cursors,
polled every ``poll_s`` seconds; an interrupt makes the poll fail and the query leaves
the convoy with ``duckdb.InterruptException`` (the pass goes on for the others). The
convoy runs its passes with the engine it was built with (not the one a service may
wrap later), so one query's interrupt never stops a pass others wait for. When a
shared pass fails, its queries read that unit themselves and ride on: a query's own
error (a bad cast, an unreadable file) then fails that query only.

The convoys work on ``ScanRequest`` values, not on plans: a request names the files of
the partitions to scan, the columns the query uses and its statement over the shared
relation. So they run where the files are read: in this process (``LocalExecutor``) or
on each Dask worker, over the partitions the query sends there (``DaskExecutor``; a full
scan sends the same partitions to the same worker every time, so concurrent scans of a
table meet in the same convoys).

>>> scans = SharedScans(engine)                                 # doctest: +SKIP
>>> info = scans.rides(plan)  # None: run it as usual           # doctest: +SKIP
>>> partials = scans.partials(scan_request(plan, info), engine)  # doctest: +SKIP

The caller adds the parallel statement's result over the table's orphans (if any), then
runs the merge statement over all of them.
"""

from __future__ import annotations

import atexit
import threading
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Self

import duckdb
import pyarrow as pa
from sqlglot import exp

from skyshard.catalog.model import TableInfo
from skyshard.engine.duck import Engine
from skyshard.errors import InternalError
from skyshard.sql.plan import QueryPlan, parquet_source

#: The registered name of the unit being scanned, in each query's parallel statement.
SCANNED = "__skyshard_scan"
#: Rows per unit read at once (units are whole partitions, so one may hold more).
DEFAULT_UNIT_ROWS = 2_000_000
#: A table is cut into at least this many units when it has the partitions (so a query
#: arriving during a unit does not wait for the whole scan).
MIN_UNITS = 2
#: Tables smaller than this are scanned as usual (one statement is cheaper than a convoy).
DEFAULT_MIN_ROWS = 1_000_000
#: Share a unit's read when separate reads would read this many times its bytes per row.
DEFAULT_MIN_OVERLAP = 2.0
#: Seconds between two checks of a waiting query's sentinel (interrupt latency).
DEFAULT_POLL_S = 0.05
#: Seconds an idle convoy waits, when a query comes, for others sent at the same time.
#: Kept short: a lone scan pays it (50 ms added 55 ms per lone scan of 10 M rows), and a
#: query that arrives a little later still boards at the next unit.
DEFAULT_GATHER_S = 0.01
#: Seconds a convoy's thread waits for the next query after its last one left.
DEFAULT_LINGER_S = 1.0
#: Never ends; a poll (one chunk of DuckDB's 2048 rows) costs about 0.25 ms.
_SENTINEL_SQL = "SELECT true AS alive FROM range(9223372036854775807)"
_CHUNK_ROWS = 2048


def full_scan_table(plan: QueryPlan) -> TableInfo | None:
    """The table ``plan`` reads in full, when a shared scan can serve it (else None).

    That is: one table reference in the whole query, partitioned, every partition
    chosen, no region, key or pseudo-column on it, no LIMIT, and a parallel + merge
    split. A top-k (``ORDER BY ... LIMIT``) runs alone: as one statement DuckDB reads
    the other columns of the few rows that win only, and skips row groups that cannot
    win; unit by unit it loses most of that.
    """
    a = plan.analysis
    if plan.partitions is None or len(a.refs) != 1 or a.tree.args.get("limit") is not None:
        return None
    ref = a.refs[0]
    info, key = ref.info, ref.alias.lower()
    if not (ref.outermost and info.is_partitioned and info.partitions):
        return None
    if a.regions.get(ref.alias) or a.pseudo.get(ref.alias) or key in plan.healpix:
        return None
    if plan.chosen.get(key) != {(p.order, p.pixel) for p in info.partitions}:
        return None
    return info if plan.split is not None else None


def rides(plan: QueryPlan, min_rows: int = DEFAULT_MIN_ROWS) -> TableInfo | None:
    """The table whose shared scan ``plan`` rides: a full scan (``full_scan_table``) of a
    table of ``min_rows`` rows or more; None: the query runs as usual."""
    refs = plan.analysis.refs
    if len(refs) != 1 or sum(p.rows for p in refs[0].info.partitions) < min_rows:
        return None
    return full_scan_table(plan)


def needed_columns(plan: QueryPlan, info: TableInfo) -> frozenset[str]:
    """The table's columns the parallel statement uses (table spelling)."""
    assert plan.split is not None
    by_lower = {c.lower(): c for c in info.column_names}
    return frozenset(by_lower[c.name.lower()] for c in plan.split.parallel.find_all(exp.Column)
                     if c.name.lower() in by_lower)


@dataclass(frozen=True)
class ScanPart:
    """One partition a shared scan reads: its file and row count."""

    order: int
    pixel: int
    rows: int
    file: str


@dataclass(frozen=True)
class ScanRequest:
    """What one full-scan query asks of a convoy (picklable: Dask sends it to workers).

    ``parts``: the partitions to read, in sky order; ``columns``: the table's columns the
    query uses; ``widths``: bytes per value of every column of the table (name, width),
    to judge overlaps; ``over``: the query's parallel statement over the shared relation
    ``SCANNED`` (``QueryPlan.parallel_sql_over``).
    """

    table: str
    parts: tuple[ScanPart, ...]
    columns: frozenset[str]
    widths: tuple[tuple[str, int], ...]
    over: str

    @property
    def rows(self) -> int:
        return sum(p.rows for p in self.parts)

    def own_sql(self, parts: Sequence[ScanPart]) -> str:
        """The query's statement reading ``parts`` itself (not shared): ``over`` with the
        relation bound to their files; DuckDB inlines it, so it reads only the query's
        columns and pushes its filters into the scan, as ``parallel_sql`` does."""
        source = parquet_source([p.file for p in parts])
        return f'WITH "{SCANNED}" AS {source} {self.over}'


def scan_request(plan: QueryPlan, info: TableInfo,
                 partitions: Sequence[tuple[int, int]] | None = None) -> ScanRequest:
    """The request of ``plan``, a full scan of ``info`` (``full_scan_table``), for
    ``partitions`` (default: all; orphans are never part of it)."""
    files = plan.partition_files(info, None if partitions is None else set(partitions))
    parts = tuple(ScanPart(p.order, p.pixel, p.rows, files[(p.order, p.pixel)])
                  for p in sorted(info.partitions, key=lambda p: p.range29[0])
                  if (p.order, p.pixel) in files)
    widths = tuple((name, _width(t)) for name, t in info.columns)
    return ScanRequest(info.name, parts, needed_columns(plan, info), widths,
                       plan.parallel_sql_over(SCANNED))


def orphan_sql(plan: QueryPlan, info: TableInfo) -> str | None:
    """The parallel statement of ``plan`` over the orphans of ``info`` (child rows whose
    director row is missing, never part of a shared scan), or None when it has none."""
    return plan.parallel_sql([], orphans=True) if info.orphan_rows else None


@dataclass(frozen=True)
class Unit:
    """Consecutive partitions a convoy reads at once."""

    index: int
    parts: tuple[ScanPart, ...]

    @property
    def rows(self) -> int:
        return sum(p.rows for p in self.parts)

    @property
    def partitions(self) -> tuple[tuple[int, int], ...]:
        return tuple((p.order, p.pixel) for p in self.parts)


def units_of(parts: Sequence[ScanPart], unit_rows: int) -> list[Unit]:
    """``parts`` (in sky order) cut into units of about ``unit_rows`` rows.

    >>> ps = [ScanPart(1, i, 5, f"{i}.parquet") for i in (1, 2, 3)]
    >>> [u.partitions for u in units_of(ps, 8)]
    [((1, 1), (1, 2)), ((1, 3),)]
    """
    units: list[Unit] = []
    current: list[ScanPart] = []
    total = 0
    for p in parts:
        current.append(p)
        total += p.rows
        if total >= (len(units) + 1) * unit_rows:  # cut at multiples of unit_rows
            units.append(Unit(len(units), tuple(current)))
            current = []
    if current:
        units.append(Unit(len(units), tuple(current)))
    return units


@dataclass(eq=False)
class _Offer:
    """A unit handed to its riders: each rider's partial result, computed in one shared
    pass (``partials``); or None: each reads the unit's files itself, and with ``rest``
    the files of every other unit it still needs too, in the same statement, and leaves
    the convoy."""

    unit: Unit
    partials: dict[_Member, pa.Table] | None = None
    rest: bool = False


@dataclass(eq=False)
class _Member:
    """One query in a convoy: its request and the units it still needs."""

    request: ScanRequest
    remaining: set[int]
    offer: _Offer | None = None
    gone: bool = False
    tried_alone: bool = False  # it read a unit alone while waiting for company


@dataclass(eq=False)
class _Convoy:
    """The scan of some partitions of one table (one version of it: the key is their
    files and the table's columns) and the queries riding it."""

    key: tuple[str, tuple[str, ...], tuple[tuple[str, int], ...]]
    table: str
    widths: dict[str, int]
    units: list[Unit]
    members: list[_Member] = field(default_factory=list)
    position: int = 0
    thread: threading.Thread | None = None
    failure: BaseException | None = None


class SharedScans:
    """The convoys of one engine's queries; thread-safe.

    ``engine`` runs the shared passes; ``unit_rows`` sets the unit size (memory: one
    unit of the columns the riding queries use, per table being scanned);
    ``min_overlap`` when a pass is shared (see the module's docstring); ``min_rows`` the
    smallest table scanned this way; ``gather_s`` how long a convoy that was idle waits
    before its first unit, for queries sent together; ``poll_s`` how often a waiting
    query checks for an interrupt; ``linger_s`` how long an idle convoy's thread waits
    for the next query.
    """

    def __init__(self, engine: Engine, *, unit_rows: int = DEFAULT_UNIT_ROWS,
                 min_overlap: float = DEFAULT_MIN_OVERLAP, min_rows: int = DEFAULT_MIN_ROWS,
                 gather_s: float = DEFAULT_GATHER_S, poll_s: float = DEFAULT_POLL_S,
                 linger_s: float = DEFAULT_LINGER_S) -> None:
        if unit_rows < 1 or poll_s <= 0 or min(linger_s, gather_s, min_overlap, min_rows) < 0:
            raise ValueError("unit_rows must be >= 1, poll_s > 0, and linger_s, gather_s, "
                             "min_overlap and min_rows >= 0")
        self.engine = engine
        self.unit_rows = unit_rows
        self.min_rows = min_rows
        self.min_overlap = min_overlap
        self.gather_s = gather_s
        self.poll_s = poll_s
        self.linger_s = linger_s
        self._cond = threading.Condition()
        self._convoys: dict[tuple, _Convoy] = {}
        self._closed = False
        _OPEN.add(self)
        self._stats = {"convoys": 0, "queries": 0, "served": 0, "shared_reads": 0,
                       "own_reads": 0, "shared_failures": 0}

    @property
    def stats(self) -> dict[str, int]:
        """Counters: convoys started, queries that rode one, units handed to a query
        (``served``), units read once for several queries (``shared_reads``), units a
        query read from the files itself (``own_reads``, one per query and unit) and
        shared passes that failed (their riders then read the unit themselves)."""
        with self._cond:
            return dict(self._stats)

    def rides(self, plan: QueryPlan) -> TableInfo | None:
        """``rides(plan, min_rows)``; always None once closed."""
        return None if self._closed else rides(plan, self.min_rows)

    def close(self, timeout_s: float = 10.0) -> None:
        """Stop the convoys (queries riding one fail with ``InternalError``) and wait up to
        ``timeout_s`` for their threads; later full scans run as usual. Idempotent; called
        at interpreter exit too, so that no convoy thread is inside DuckDB then."""
        with self._cond:
            self._closed = True
            threads = [c.thread for c in self._convoys.values() if c.thread is not None]
            self._cond.notify_all()
        deadline = time.monotonic() + timeout_s
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()))

    def units(self, request: ScanRequest) -> list[Unit]:
        """How a convoy cuts the partitions of ``request``: units of ``unit_rows`` rows,
        smaller if that makes fewer than ``MIN_UNITS``."""
        rows = request.rows
        return units_of(request.parts, max(1, min(self.unit_rows, -(-rows // MIN_UNITS))))

    def position(self, table: str) -> int | None:
        """The unit a convoy of ``table`` is at (None: no convoy)."""
        with self._cond:
            for c in self._convoys.values():
                if c.table == table:
                    return c.position
        return None

    def partials(self, request: ScanRequest, engine: Engine) -> list[pa.Table]:
        """The results of the query's parallel statement over the partitions of
        ``request``; run on this thread with cursors from ``engine`` (any object with
        the ``cursor`` and ``query`` methods of ``Engine``)."""
        out: list[pa.Table] = []
        with _Sentinel(engine) as sentinel:
            convoy, member = self._join(request)
            try:
                while member.remaining:
                    offer = self._next_offer(convoy, member, sentinel)
                    if offer.rest:  # on its own from here: every unit left, at once
                        rest = [pp for u in convoy.units if u.index in member.remaining
                                for pp in u.parts]
                        out.append(engine.query(request.own_sql(rest)))
                        break
                    try:
                        if offer.partials is not None:
                            out.append(offer.partials[member])
                        else:  # read alone: waiting for company, or the shared pass failed
                            out.append(engine.query(request.own_sql(offer.unit.parts)))
                    finally:
                        self._done_with(member, offer)
                        offer = None
                    sentinel.check()
            finally:
                self._leave(convoy, member)
        return out

    # --- the query's side -----------------------------------------------------------

    def _join(self, request: ScanRequest) -> tuple[_Convoy, _Member]:
        key = (request.table, tuple(p.file for p in request.parts), request.widths)
        with self._cond:
            convoy = self._convoys.get(key)
            if convoy is None:
                convoy = _Convoy(key, request.table, dict(request.widths),
                                 self.units(request))
                self._convoys[key] = convoy
            member = _Member(request, {u.index for u in convoy.units})
            convoy.members.append(member)
            self._stats["queries"] += 1
            self._cond.notify_all()  # a lingering convoy wakes up
            if convoy.thread is None:
                self._stats["convoys"] += 1
                convoy.thread = threading.Thread(target=self._drive, args=(convoy,),
                                                 name=f"skyshard-scan-{request.table}", daemon=True)
                convoy.thread.start()
            return convoy, member

    def _next_offer(self, convoy: _Convoy, member: _Member, sentinel: _Sentinel) -> _Offer:
        since = time.monotonic()
        while True:
            with self._cond:
                if member.offer is not None:
                    return member.offer
                if convoy.failure is not None:
                    raise convoy.failure
                self._cond.wait(self.poll_s)
            # A long wait: watch for interrupts from now on.
            sentinel.check(start=time.monotonic() - since >= self.poll_s)

    def _done_with(self, member: _Member, offer: _Offer) -> None:
        with self._cond:
            member.remaining.discard(offer.unit.index)
            member.offer = None
            self._cond.notify_all()

    def _leave(self, convoy: _Convoy, member: _Member) -> None:
        with self._cond:
            member.gone = True
            member.offer = None
            if member in convoy.members:
                convoy.members.remove(member)
            self._cond.notify_all()

    # --- the convoy's thread --------------------------------------------------------

    def _drive(self, convoy: _Convoy) -> None:
        try:
            fresh = True  # nothing handed out since the convoy was last empty
            while True:
                with self._cond:
                    if self._closed:
                        self._stop(convoy)
                        return
                    if not self._live(convoy):
                        fresh = True
                        if not self._linger(convoy):
                            self._retire(convoy)
                            return
                    if fresh:  # let queries sent together board the first unit
                        self._pause(self.gather_s)
                        fresh = False
                        if not self._live(convoy):
                            continue
                    unit, riders = self._next_unit(convoy)
                    convoy.position = unit.index
                handed = self._offers(convoy, unit, riders)
                if handed is None:
                    continue  # interrupted: try again
                with self._cond:
                    served: list[_Member] = []
                    for members, offer in handed:
                        members = [m for m in members if not m.gone]
                        for m in members:
                            m.offer = offer
                        self._count(offer, members)
                        if offer.rest:  # they go on alone: no waiting for them
                            convoy.members = [m for m in convoy.members if m not in members]
                        else:
                            served += members
                    self._cond.notify_all()
                    if not served:
                        del handed, offer
                        continue
                    while any(m.offer is not None and not m.gone for m in served):
                        self._cond.wait()
                    convoy.position = (unit.index + 1) % len(convoy.units)
                del handed, offer  # the partials are the riders' now
        except BaseException as exc:  # noqa: BLE001 - a bug: fail the riders, never hang them
            with self._cond:
                self._stop(convoy, exc)

    def _stop(self, convoy: _Convoy, cause: BaseException | None = None) -> None:
        """Under the lock: end the convoy; its members fail."""
        why = "the executor was closed" if cause is None else f"{type(cause).__name__}: {cause}"
        convoy.failure = InternalError(f"shared scan of {convoy.table} stopped: {why}")
        convoy.failure.__cause__ = cause
        self._retire(convoy)
        self._cond.notify_all()

    def _live(self, convoy: _Convoy) -> bool:
        """Under the lock: drop members that left or are done; whether any is left."""
        convoy.members = [m for m in convoy.members if not m.gone and m.remaining]
        return bool(convoy.members)

    def _linger(self, convoy: _Convoy) -> bool:
        """Under the lock: wait up to ``linger_s`` for a member (the thread stays ready
        for the next scan); whether one came."""
        deadline = time.monotonic() + self.linger_s
        while not self._live(convoy) and not self._closed:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self._cond.wait(left)
        return not self._closed

    def _pause(self, seconds: float) -> None:
        """Under the lock: let other threads run for ``seconds``."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            self._cond.wait(left)

    def _next_unit(self, convoy: _Convoy) -> tuple[Unit, list[_Member]]:
        """Under the lock: from the current position on (wrapping around), the first unit
        some member still needs, and those members (every member needs one)."""
        n = len(convoy.units)
        for step in range(n):
            unit = convoy.units[(convoy.position + step) % n]
            riders = [m for m in convoy.members if not m.gone and unit.index in m.remaining]
            if riders:
                return unit, riders
        raise InternalError("no convoy member needs a unit")

    def _count(self, offer: _Offer, riders: list[_Member]) -> None:
        """Under the lock: units served, and read by their query itself."""
        n = sum(len(m.remaining) for m in riders) if offer.rest else len(riders)
        self._stats["served"] += n
        if offer.partials is None:
            self._stats["own_reads"] += n

    def _offers(self, convoy: _Convoy, unit: Unit,
                riders: list[_Member]) -> list[tuple[list[_Member], _Offer]] | None:
        """The unit for ``riders``, as (members, offer) pairs: their partials from one
        shared pass if worth it. Else a rider that never read a unit alone reads this one
        itself and rides on (queries sent with it may board meanwhile), the others go on
        alone. When the shared pass fails, each reads this unit itself (and meets its own
        error, if any: a bad query fails alone) and rides on. None: the shared pass was
        interrupted."""
        if not self._worth_sharing(convoy.widths, riders):
            stay = [m for m in riders if not m.tried_alone]
            for m in stay:
                m.tried_alone = True  # only this thread reads or writes it
            leave = [m for m in riders if m not in stay]
            return [(group, offer) for group, offer in
                    ((stay, _Offer(unit)), (leave, _Offer(unit, rest=True))) if group]
        try:
            partials = self._shared_pass(convoy, unit, riders)
        except duckdb.InterruptException:
            return None
        except Exception:  # noqa: BLE001 - each rider will meet its own error, if any
            with self._cond:
                self._stats["shared_failures"] += 1
            return [(riders, _Offer(unit))]
        with self._cond:
            self._stats["shared_reads"] += 1
        return [(riders, _Offer(unit, partials))]

    def _worth_sharing(self, width: dict[str, int], riders: list[_Member]) -> bool:
        """Two riders or more, reading separately at least ``min_overlap`` times the bytes
        per row of the union of their columns."""
        if len(riders) < 2:
            return False
        union = set().union(*(m.request.columns for m in riders))
        if not union:
            return False  # COUNT(*) alone: Parquet footers answer it
        apart = sum(width[c] for m in riders for c in m.request.columns)
        return apart >= self.min_overlap * sum(width[c] for c in union)

    def _shared_pass(self, convoy: _Convoy, unit: Unit,
                     riders: list[_Member]) -> dict[_Member, pa.Table]:
        """One DuckDB statement: the unit's files read once (the union of the riders'
        columns, projected, materialised), every rider's parallel statement over that,
        each rider's rows packed into a list of structs."""
        columns = set().union(*(m.request.columns for m in riders))
        names = [c for c in convoy.widths if c in columns] or [next(iter(convoy.widths))]
        listing = ", ".join("'" + p.file.replace("'", "''") + "'" for p in unit.parts)
        cols = ", ".join('"' + c.replace('"', '""') + '"' for c in names)
        each = ", ".join(f"(SELECT list(__r) FROM ({m.request.over}) AS __r) AS __q{i}"
                         for i, m in enumerate(riders))
        table = self.engine.query(
            f'WITH "{SCANNED}" AS MATERIALIZED (SELECT {cols} FROM read_parquet([{listing}], '
            f"hive_partitioning = false)) SELECT {each}")
        out = {}
        for i, m in enumerate(riders):
            packed = table.column(i).combine_chunks()
            out[m] = pa.Table.from_struct_array(packed.flatten())
        return out

    def _retire(self, convoy: _Convoy) -> None:
        """Under the lock: the convoy has no member left."""
        convoy.thread = None
        if self._convoys.get(convoy.key) is convoy:
            del self._convoys[convoy.key]


#: Every SharedScans not yet garbage-collected, closed at interpreter exit (before
#: daemon threads are stopped: one stopped inside DuckDB would abort the process).
_OPEN: weakref.WeakSet[SharedScans] = weakref.WeakSet()


@atexit.register
def _close_all() -> None:
    for scans in list(_OPEN):
        scans.close()


def _width(arrow_type: str) -> int:
    """Bytes per value a column costs to read, roughly, from its Arrow type name
    (strings and other variable-width types count 8: their offsets plus a few bytes).

    >>> _width("int64"), _width("float"), _width("bool"), _width("string")
    (8, 4, 1, 8)
    """
    t = arrow_type.lower()
    if t in ("bool", "int8", "uint8"):
        return 1
    if t in ("int16", "uint16", "halffloat", "float16"):
        return 2
    if t in ("int32", "uint32", "float", "float32", "date32[day]"):
        return 4
    return 8


class _Sentinel:
    """Tells whether the query's cursors were interrupted while it runs no statement: a
    never-ending streaming statement on one of its cursors, read a chunk at a time
    (DuckDB checks the interrupt when it makes a chunk; rows it already made are served
    without a check, hence whole chunks). Started at the query's first long wait: an
    interrupt sent before is lost, but the service repeats its interrupts until the
    query returns."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._cursor = None

    def check(self, *, start: bool = False) -> None:
        """Raise ``duckdb.InterruptException`` if interrupted (watching from now on if
        ``start``)."""
        if self._cursor is None:
            if not start:
                return
            self._cursor = self._engine.cursor()
            self._cursor.execute(_SENTINEL_SQL)
        self._cursor.fetchmany(_CHUNK_ROWS)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._cursor is not None:
            self._cursor.close()


__all__ = ["SCANNED", "ScanPart", "ScanRequest", "SharedScans", "Unit", "full_scan_table",
           "needed_columns", "orphan_sql", "rides", "scan_request", "units_of"]
