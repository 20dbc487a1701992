"""Where a catalog's files live on a shared-nothing cluster: the placement (no Dask here).

In shared-nothing mode each Dask worker holds a subset of a catalog's files on its own
disk. The files are grouped into *units*, the things that are copied and routed:

- one unit per partition, keyed ``"Norder=K/Npix=N"``: that pixel's data file of every
  partitioned table (a director and its children share the tiling) and of their margins;
  each on ``replication`` workers, its *holders*;
- the ``"shared"`` unit: every other file a statement can name — replicated tables,
  child orphans, each table's ``_common_metadata`` (the scan of an empty partition
  list) — on every worker that holds anything.

The units are exactly the files ``sql.plan`` renders into statements; nothing else of
the catalog (descriptions, ``_metadata``, director indexes: the coordinator's business)
goes to workers.

The record
----------
``replicas.json`` in the catalog root, beside ``skyshard.json``, written atomically the
same way. The coordinator that plans queries reads the catalog description from the
root anyway, so the placement lives where the files it describes come from, needs no
extra service, and is tied to the catalog state it was made for (``generation`` and
the checksum of ``skyshard.json``: a re-ingest makes it stale). Per unit it keeps the
size and SHA-256 of each file (copies are verified against them) and the holders by
Dask worker *name*: names, unlike addresses, survive a worker's restart, so a worker
that comes back under its name with its directory rejoins holding what it held. One
placement per catalog: one cluster serves a catalog.

>>> p = Partition(4, 11, rows=10)
>>> unit_key(p.order, p.pixel), unit_partition("Norder=4/Npix=11"), unit_partition(SHARED)
('Norder=4/Npix=11', (4, 11), None)
>>> sql = "SELECT * FROM read_parquet(['/cat/Obj/dataset/Norder=4/Dir=0/Npix=11.parquet'])"
>>> sorted(statement_files(sql, "/cat"))
['Obj/dataset/Norder=4/Dir=0/Npix=11.parquet']
>>> rebase(sql, "/cat", "/disk/w1/cat-1")
"SELECT * FROM read_parquet(['/disk/w1/cat-1/Obj/dataset/Norder=4/Dir=0/Npix=11.parquet'])"
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
import uuid
import zlib
from collections import defaultdict
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path, PurePosixPath

from skyshard.catalog.model import CatalogMeta, Partition, TableKind
from skyshard.errors import CatalogError, ExternalError, UserError
from skyshard.storage import layout

PLACEMENT_FILE = "replicas.json"
FORMAT = 1
SHARED = "shared"
DEFAULT_REPLICATION = 2

#: (size in bytes, SHA-256 hex digest) of one file
FileSig = tuple[int, str]


def unit_key(order: int, pixel: int) -> str:
    """The unit of partition ``(order, pixel)``."""
    return f"Norder={order}/Npix={pixel}"


def unit_partition(key: str) -> tuple[int, int] | None:
    """``(order, pixel)`` of a partition unit; None for the shared unit."""
    if key == SHARED:
        return None
    return layout.parse_partition_path(key)


# --- the files of a catalog ----------------------------------------------------------------


def catalog_units(meta: CatalogMeta) -> dict[str, tuple[tuple[str, ...], int]]:
    """unit -> (its files relative to the catalog root, its rows), for every file the
    planner's statements can name. Tables outside the root (a HATS catalog served in
    place) cannot be placed: ``UserError``."""
    files: dict[str, set[str]] = defaultdict(set)
    rows: dict[str, int] = defaultdict(int)
    for t in sorted(meta.tables.values(), key=lambda t: t.name):
        for p in (t.path, t.margin_path):
            if p and Path(p).is_absolute():
                raise UserError(f"table {t.name} lies outside the catalog root ({p}); "
                                "only a skyshard catalog (skyshard ingest) can be placed on "
                                "workers")
        if t.kind is TableKind.REPLICATED:
            files[SHARED].add(_rel(t.path))
            continue
        dataset = PurePosixPath(_rel(t.path), layout.DATASET)
        files[SHARED].add(str(dataset / "_common_metadata"))
        if t.orphan_rows:
            files[SHARED].add(str(PurePosixPath(_rel(t.path)).parent / "orphans.parquet"))
        for p in t.partitions:
            key = unit_key(p.order, p.pixel)
            files[key].add(layout.partition_path(str(dataset), p.order, p.pixel))
            rows[key] += p.rows
        if t.margin_path:
            mset = PurePosixPath(_rel(t.margin_path), layout.DATASET)
            for p in t.margin_partitions:
                files[unit_key(p.order, p.pixel)].add(
                    layout.partition_path(str(mset), p.order, p.pixel))
    files.setdefault(SHARED, set())
    return {k: (tuple(sorted(v)), rows.get(k, 0)) for k, v in files.items()}


def _rel(path: str) -> str:
    return str(PurePosixPath(*Path(path).parts))


def file_sig(path: str | os.PathLike) -> FileSig:
    """Size and SHA-256 of a file."""
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
            size += len(chunk)
    return size, h.hexdigest()


def data_sig(data: bytes) -> FileSig:
    return len(data), hashlib.sha256(data).hexdigest()


# --- the record ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Unit:
    """A unit's files with their signatures, its rows (for balancing) and its holders
    (worker names, in the order they were given it)."""

    files: Mapping[str, FileSig]
    rows: int = 0
    holders: tuple[str, ...] = ()


@dataclass(frozen=True)
class Placement:
    """Which workers hold which units of one catalog (see the module docstring)."""

    catalog_id: str
    replication: int
    units: Mapping[str, Unit]
    generation: int = 0
    meta_sha: str = ""
    #: workers emptied by a drain, to be removed: given nothing by ``place``/``repair``
    #: while they are in the cluster (``rebalance`` takes them back)
    drained: tuple[str, ...] = ()

    def holders(self, key: str) -> tuple[str, ...]:
        unit = self.units.get(key)
        return unit.holders if unit else ()

    def unit_of(self, rel: str) -> str | None:
        """The unit holding file ``rel`` (relative to the catalog root); None if no unit
        lists it."""
        return self._index.get(rel)

    @cached_property
    def _index(self) -> dict[str, str]:
        return {f: k for k, u in self.units.items() for f in u.files}

    @property
    def partition_units(self) -> list[str]:
        return sorted(k for k in self.units if k != SHARED)

    def with_holders(self, holders: Mapping[str, Sequence[str]]) -> Placement:
        units = dict(self.units)
        for key, names in holders.items():
            units[key] = replace(units[key], holders=tuple(names))
        return replace(self, units=units)

    def to_json(self) -> dict:
        return {"format": FORMAT, "catalog_id": self.catalog_id,
                "replication": self.replication, "generation": self.generation,
                "meta_sha": self.meta_sha, "drained": list(self.drained),
                "units": {k: {"holders": list(u.holders), "rows": u.rows,
                              "files": {f: list(s) for f, s in sorted(u.files.items())}}
                          for k, u in sorted(self.units.items())}}

    @classmethod
    def from_json(cls, d: dict) -> Placement:
        if d.get("format") != FORMAT:
            raise CatalogError(f"unsupported placement format {d.get('format')!r}")
        units = {k: Unit({f: (int(s[0]), str(s[1])) for f, s in u["files"].items()},
                         int(u.get("rows", 0)), tuple(str(h) for h in u["holders"]))
                 for k, u in d["units"].items()}
        return cls(str(d["catalog_id"]), int(d["replication"]), units,
                   int(d.get("generation", 0)), str(d.get("meta_sha", "")),
                   tuple(str(w) for w in d.get("drained", ())))

    @staticmethod
    def load(root: str | os.PathLike) -> Placement | None:
        """The placement recorded in catalog ``root``; None when there is none."""
        path = Path(root) / PLACEMENT_FILE
        try:
            text = path.read_text()
        except FileNotFoundError:
            return None
        try:
            return Placement.from_json(json.loads(text))
        except (ValueError, KeyError, TypeError, IndexError) as exc:
            raise CatalogError(f"{path}: malformed placement: {exc}") from exc

    def save(self, root: str | os.PathLike) -> None:
        """Write ``replicas.json`` atomically (temporary file, fsync, rename)."""
        fd, tmp = tempfile.mkstemp(dir=root, prefix=".skyshard.", suffix=".json")
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(self.to_json(), f, indent=1)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, Path(root) / PLACEMENT_FILE)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def describe(root: str | os.PathLike, meta: CatalogMeta,
             previous: Placement | None = None) -> Placement:
    """The placement of the catalog at ``root`` as it is now, holders carried over from
    ``previous``. File signatures are read from the root, or taken from ``previous``
    when the catalog description has not changed since (published files never change)."""
    root = Path(root)
    meta_sha = file_sig(root / layout.CATALOG_META)[1]
    units = catalog_units(meta)
    same = previous is not None and previous.meta_sha == meta_sha
    out: dict[str, Unit] = {}
    for key, (files, rows) in units.items():
        old = previous.units.get(key) if previous else None
        if same and old is not None and set(old.files) == set(files):
            sigs = dict(old.files)
        else:
            sigs = {}
            for f in files:
                try:
                    sigs[f] = file_sig(root / f)
                except FileNotFoundError as exc:
                    raise ExternalError(f"{root}: file {f} of the catalog is missing") from exc
        out[key] = Unit(sigs, rows, old.holders if old else ())
    catalog_id = previous.catalog_id if previous else _new_id(meta.name)
    replication = previous.replication if previous else DEFAULT_REPLICATION
    drained = previous.drained if previous else ()
    return Placement(catalog_id, replication, out, meta.generation, meta_sha, drained)


def _new_id(name: str) -> str:
    return f"{safe_name(name)}-{uuid.uuid4().hex[:8]}"


def safe_name(name: object) -> str:
    """``name`` usable as one directory name.

    >>> safe_name("tcp://10.0.0.5:8786"), safe_name(3)
    ('tcp___10.0.0.5_8786', '3')
    """
    text = re.sub(r"[^A-Za-z0-9._-]", "_", str(name)).strip(".")
    return text or "_"


# --- statements ------------------------------------------------------------------------------


def _prefix(root: str) -> str:
    return "'" + (root.rstrip("/") + "/").replace("'", "''")


def statement_files(sql: str, root: str | os.PathLike) -> set[str]:
    """The files under ``root`` a rendered statement names, relative to ``root``."""
    pattern = re.escape(_prefix(str(root))) + r"((?:[^']|'')*)'"
    return {m.group(1).replace("''", "'") for m in re.finditer(pattern, sql)}


def rebase(sql: str, root: str | os.PathLike, home: str | os.PathLike) -> str:
    """``sql`` reading below ``home`` what it read below ``root``."""
    return sql.replace(_prefix(str(root)), _prefix(str(home)))


# --- routing a query ------------------------------------------------------------------------


def missing_error(parts: Iterable[tuple[int, int]], placement: Placement,
                  usable: Collection[str], why: str = "") -> ExternalError:
    """The error for partitions that no usable worker holds (``error.partitions``)."""
    parts = sorted(set(parts))
    listed = ", ".join(
        f"{unit_key(o, p)} (held by {', '.join(placement.holders(unit_key(o, p))) or 'nobody'})"
        for o, p in parts[:20])
    more = f" and {len(parts) - 20} more" if len(parts) > 20 else ""
    alive = ", ".join(sorted(usable)) or "none"
    err = ExternalError(f"no live worker holds a copy of {len(parts)} partition(s): "
                        f"{listed}{more}; usable workers: {alive}{why}; restart their "
                        "holders or run `skyshard replicas repair`")
    err.partitions = tuple(parts)  # type: ignore[attr-defined]
    return err


def cover(parts: Sequence[Partition], placement: Placement,
          usable: Collection[str]) -> dict[str, list[Partition]]:
    """``parts`` grouped by the worker that runs them: each on one of its usable holders,
    heaviest first onto the least loaded (rows), ties by name, so the same query goes to
    the same workers while they live. Groups are sorted spatially. A partition without a
    usable holder: the ``missing_error``.

    >>> pl = Placement("c", 2, {unit_key(0, i): Unit({}, 0, h) for i, h in
    ...                         enumerate([("a", "b"), ("b", "c"), ("a", "c")])})
    >>> ps = [Partition(0, i, rows=r) for i, r in enumerate([10, 5, 5])]
    >>> {w: [p.pixel for p in g] for w, g in cover(ps, pl, ["a", "b", "c"]).items()}
    {'a': [0], 'b': [1], 'c': [2]}
    >>> {w: [p.pixel for p in g] for w, g in cover(ps, pl, ["a", "c"]).items()}
    {'a': [0], 'c': [1, 2]}
    """
    usable = set(usable)
    options: dict[tuple[int, int], list[str]] = {}
    missing = []
    for p in parts:
        hs = [h for h in placement.holders(unit_key(p.order, p.pixel)) if h in usable]
        if hs:
            options[(p.order, p.pixel)] = hs
        else:
            missing.append((p.order, p.pixel))
    if missing:
        raise missing_error(missing, placement, usable)
    load: dict[str, int] = defaultdict(int)
    groups: dict[str, list[Partition]] = defaultdict(list)
    for p in sorted(parts, key=lambda p: (-max(p.rows, 1), p.order, p.pixel)):
        w = min(options[(p.order, p.pixel)], key=lambda h: (load[h], h))
        groups[w].append(p)
        load[w] += max(p.rows, 1)
    return {w: sorted(g, key=lambda p: p.range29) for w, g in sorted(groups.items())}


def single_holders(units: Collection[str], placement: Placement,
                   usable: Sequence[str]) -> list[str]:
    """The usable workers holding every one of ``units``."""
    return [w for w in usable if all(w in placement.holders(u) for u in units)]


def stable_pick(candidates: Sequence[str], seed: str) -> str:
    """One of ``candidates`` (sorted), the same for the same seed."""
    ordered = sorted(candidates)
    return ordered[zlib.crc32(seed.encode()) % len(ordered)]


# --- maintaining the replicas --------------------------------------------------------------


@dataclass(frozen=True)
class Copy:
    """Copy ``unit`` to worker ``target`` from worker ``source`` (None: the catalog
    root on the coordinator)."""

    unit: str
    target: str
    source: str | None


@dataclass
class CopyPlan:
    copies: list[Copy] = field(default_factory=list)
    #: unit -> holders once every copy has succeeded
    holders: dict[str, tuple[str, ...]] = field(default_factory=dict)
    #: units with no verified copy to copy from
    unrepairable: list[str] = field(default_factory=list)


def plan_copies(placement: Placement, verified: Mapping[str, Collection[str]],
                alive: Sequence[str], *, replication: int, from_catalog: bool) -> CopyPlan:
    """The copies that bring every partition unit to ``replication`` verified copies on
    live workers, and the shared unit to every live worker.

    ``verified``: live worker -> the units it holds complete and intact. Targets are
    first the unit's listed holders that lost it (their copy is restored in place), then
    the live workers holding the fewest rows. Sources are the catalog root
    (``from_catalog``) or a verified holder (spread over them); a unit without one is
    ``unrepairable``. Listed holders that are not alive stay listed (they may come back
    with their data); live ones without the unit and not chosen are dropped.

    >>> pl = Placement("c", 2, {SHARED: Unit({}, 0, ("a", "b")),
    ...                         unit_key(0, 1): Unit({}, 7, ("a", "b"))})
    >>> out = plan_copies(pl, {"a": {SHARED, unit_key(0, 1)}, "c": set()}, ["a", "c"],
    ...                   replication=2, from_catalog=False)
    >>> out.copies
    [Copy(unit='shared', target='c', source='a'), Copy(unit='Norder=0/Npix=1', target='c', source='a')]
    >>> out.holders[unit_key(0, 1)]
    ('a', 'b', 'c')
    """
    alive = sorted(alive)
    out = CopyPlan()
    has = {w: set(verified.get(w, ())) for w in alive}
    load: dict[str, int] = {w: sum(placement.units[u].rows for u in has[w] if u in placement.units
                                   and u != SHARED) for w in alive}
    reads: dict[str, int] = defaultdict(int)

    def source_for(ok: list[str]) -> str | None:
        if from_catalog:
            return None
        src = min(ok, key=lambda w: (reads[w], w))
        reads[src] += 1
        return src

    def listed_down(key: str) -> list[str]:
        return [h for h in placement.holders(key) if h not in has]

    shared_ok = [w for w in alive if SHARED in has[w]]
    if SHARED in placement.units:
        lacking = [w for w in alive if w not in shared_ok]
        if lacking and not shared_ok and not from_catalog:
            out.unrepairable.append(SHARED)
            lacking = []
        for w in lacking:
            out.copies.append(Copy(SHARED, w, source_for(shared_ok)))
        out.holders[SHARED] = _in_record_order(placement.holders(SHARED),
                                               shared_ok + lacking + listed_down(SHARED))
    order = sorted(placement.partition_units, key=lambda k: (-placement.units[k].rows, k))
    for key in order:
        unit = placement.units[key]
        ok = [w for w in alive if key in has[w]]
        # Listed holders first (they keep their place in the record), then the others.
        ok.sort(key=lambda w: (w not in unit.holders, unit.holders.index(w)
                               if w in unit.holders else 0, w))
        need = replication - len(ok)
        targets: list[str] = []
        if need > 0:
            if not ok and not from_catalog:
                out.unrepairable.append(key)
            else:
                lost_here = [h for h in unit.holders if h in has and h not in ok]
                others = sorted((w for w in alive if w not in ok and w not in lost_here),
                                key=lambda w: (load[w], w))
                targets = (lost_here + others)[:need]
                for w in targets:
                    out.copies.append(Copy(key, w, source_for(ok)))
                    load[w] += unit.rows
        out.holders[key] = _in_record_order(unit.holders, ok + targets + listed_down(key))
    return out


# --- moving copies: rebalance and drain ------------------------------------------------------

#: the balancing step stops once every worker's bytes are within this fraction of the mean
BALANCE_TOLERANCE = 0.10


class TooFewWorkers(UserError):
    """Fewer live workers would remain to hold copies than the replication factor:
    nothing is moved. ``remaining``, ``replication`` and ``excluded`` say why."""

    def __init__(self, remaining: Sequence[str], replication: int,
                 excluded: Sequence[str] = ()) -> None:
        self.remaining = tuple(remaining)
        self.replication = replication
        self.excluded = tuple(excluded)
        without = f" without {', '.join(self.excluded)}" if self.excluded else ""
        super().__init__(
            f"{len(self.remaining)} live worker(s) would hold copies{without} "
            f"({', '.join(self.remaining) or 'none'}), fewer than the replication factor "
            f"{replication}: nothing was moved; add workers, drain fewer, or lower "
            "--replication")


def unit_weight(unit: Unit) -> int:
    """What a unit weighs when spreading units over workers: its bytes (rows when its
    files are not known), at least 1."""
    return max(1, sum(size for size, _ in unit.files.values()) or unit.rows)


@dataclass
class MovePlan:
    """What ``plan_moves`` decided. Run ``copies`` first; once they have succeeded,
    record ``holders``; only then remove the ``removals``: the copies a live worker has
    that the new record no longer names (so the record never names a worker without
    its copy, and every unit keeps its recorded copies until the new ones exist)."""

    copies: list[Copy] = field(default_factory=list)
    #: unit -> holders once every copy has succeeded
    holders: dict[str, tuple[str, ...]] = field(default_factory=dict)
    #: live worker -> units whose files it should delete after the record is saved
    removals: dict[str, tuple[str, ...]] = field(default_factory=dict)
    #: units with no verified copy to copy from
    unrepairable: list[str] = field(default_factory=list)
    #: partition copies the balancing step moved off a worker that held them
    moved: int = 0

    def without(self, failed: Collection[tuple[str, str]], placement: Placement,
                verified: Mapping[str, Collection[str]]) -> MovePlan:
        """This plan once the copies ``failed`` ((unit, target) pairs) did not happen:
        their targets are not recorded, and a unit with a failed copy keeps every
        verified copy it had (recorded again, none removed).

        >>> pl = Placement("c", 1, {"u": Unit({}, 1, ("a",))})
        >>> plan = MovePlan([Copy("u", "b", None)], {"u": ("b",)}, {"a": ("u",)})
        >>> after = plan.without({("u", "b")}, pl, {"a": {"u"}, "b": set()})
        >>> after.holders, after.removals
        ({'u': ('a',)}, {})
        """
        failed = set(failed)
        blocked = {u for u, _ in failed}
        holders = dict(self.holders)
        for key in blocked & set(holders):
            keep = [h for h in holders[key] if (key, h) not in failed]
            back = [w for w in sorted(verified) if key in verified[w] and w not in keep]
            holders[key] = _in_record_order(placement.holders(key), keep + back)
        removals = {w: kept for w, units in self.removals.items()
                    if (kept := tuple(u for u in units if u not in blocked))}
        return replace(self, copies=[c for c in self.copies if (c.unit, c.target) not in failed],
                       holders=holders, removals=removals)


def plan_moves(placement: Placement, verified: Mapping[str, Collection[str]],
               alive: Sequence[str], *, replication: int, exclude: Collection[str] = (),
               balance: bool = True, present: Mapping[str, Collection[str]] | None = None,
               from_catalog: bool = True,
               tolerance: float = BALANCE_TOLERANCE) -> MovePlan:
    """The placement that keeps ``replication`` copies of every partition on the live
    workers not in ``exclude`` (a drain), with the fewest copies made:

    1. every verified copy on such a worker stays (at most ``replication`` per unit,
       recorded holders first);
    2. partitions short of copies get them on the least loaded workers (bytes),
       heaviest partition first (a listed holder that lost its copy first);
    3. with ``balance``, copies move one at a time from the most loaded worker above
       the mean to the least loaded below it, the partition chosen closest in bytes to
       what evens the pair out (one the receiver already holds intact costs no copy),
       while a move brings the two closer; it stops once every worker is within
       ``tolerance`` of the mean. A balanced placement therefore moves nothing, and
       workers that join take their share from the most loaded only.

    ``verified``: live worker -> the units it holds complete and intact; ``present``:
    the units it has any file of (default: ``verified``). Copies come from the catalog
    root (``from_catalog``) or a verified holder, an excluded one too. The shared unit
    goes to every remaining worker and leaves the excluded ones. Holders that are not
    alive stay listed (they may come back with their data) unless excluded. Fewer
    remaining workers than ``replication``: ``TooFewWorkers``, before anything else.

    >>> pl = Placement("c", 1, {SHARED: Unit({}, 0, ("a", "b")),
    ...                         **{unit_key(0, i): Unit({}, 10, ("a", "b")[i % 2:][:1])
    ...                            for i in range(4)}})
    >>> has = {w: {k for k, u in pl.units.items() if w in u.holders} for w in "ab"}
    >>> out = plan_moves(pl, {**has, "c": set()}, ["a", "b", "c"], replication=1)
    >>> [(c.unit, c.target) for c in out.copies]
    [('shared', 'c'), ('Norder=0/Npix=1', 'c')]
    >>> out.removals
    {'b': ('Norder=0/Npix=1',)}
    """
    alive = sorted(set(alive))
    excluded = set(exclude)
    eligible = [w for w in alive if w not in excluded]
    if len(eligible) < replication:
        raise TooFewWorkers(eligible, replication, sorted(excluded))
    has = {w: set(verified.get(w, ())) for w in alive}
    holds = {w: has[w] | set((present or {}).get(w, ())) for w in alive}
    weight = {k: unit_weight(u) for k, u in placement.units.items()}
    parts = placement.partition_units
    out = MovePlan()

    sources: dict[str, list[str]] = {}
    target: dict[str, list[str]] = {}
    for key in parts:
        recorded = placement.units[key].holders
        ok = sorted((w for w in alive if key in has[w]),
                    key=lambda w: (w not in recorded, recorded.index(w) if w in recorded
                                   else 0, w))
        sources[key] = ok
        target[key] = [w for w in ok if w not in excluded][:replication]
    load = {w: 0 for w in eligible}
    for key, hs in target.items():
        for w in hs:
            load[w] += weight[key]

    for key in sorted(parts, key=lambda k: (-weight[k], k)):
        need = replication - len(target[key])
        if need <= 0:
            continue
        if not from_catalog and not sources[key]:
            out.unrepairable.append(key)
            continue
        lost_here = [h for h in placement.units[key].holders
                     if h in load and h not in target[key]]
        others = sorted((w for w in eligible if w not in target[key] and w not in lost_here),
                        key=lambda w: (load[w], w))
        for w in (lost_here + others)[:need]:
            target[key].append(w)
            load[w] += weight[key]

    if balance:
        movable = {k for k in parts if from_catalog or sources[k]}
        out.moved = _even_out(target, load, weight, movable, has, tolerance)

    reads: dict[str, int] = defaultdict(int)

    def source_for(key: str) -> str | None:
        if from_catalog:
            return None
        src = min(sources[key], key=lambda w: (reads[w], w))
        reads[src] += 1
        return src

    if SHARED in placement.units:
        shared_ok = [w for w in alive if SHARED in has[w]]
        sources[SHARED] = shared_ok
        lacking = [w for w in eligible if SHARED not in has[w]]
        if lacking and not shared_ok and not from_catalog:
            out.unrepairable.append(SHARED)
            target[SHARED] = [w for w in eligible if w in shared_ok]
        else:
            target[SHARED] = list(eligible)
            out.copies += [Copy(SHARED, w, source_for(SHARED)) for w in lacking]
    for key in sorted(parts, key=lambda k: (-weight[k], k)):
        out.copies += [Copy(key, w, source_for(key)) for w in target[key] if key not in has[w]]
    for key, hs in target.items():
        recorded = placement.units[key].holders
        down = [h for h in recorded if h not in holds and h not in excluded]
        out.holders[key] = _in_record_order(recorded, list(hs) + down)
    removals: dict[str, list[str]] = defaultdict(list)
    for w in alive:
        for key in sorted(holds[w]):
            if key in target and w not in target[key]:
                removals[w].append(key)
    out.removals = {w: tuple(units) for w, units in sorted(removals.items())}
    return out


def _even_out(target: dict[str, list[str]], load: dict[str, int], weight: Mapping[str, int],
              movable: Collection[str], has: Mapping[str, Collection[str]],
              tolerance: float) -> int:
    """The balancing step of ``plan_moves``, in place; the copies moved off a worker."""
    if len(load) < 2:
        return 0
    mean = sum(load.values()) / len(load)
    band = tolerance * mean
    on: dict[str, set[str]] = {w: set() for w in load}
    for key, hs in target.items():
        for w in hs:
            on[w].add(key)
    moved = 0
    for _ in range(sum(len(hs) for hs in target.values()) * 4 + 1):  # a bound; ends sooner
        order = sorted(load, key=lambda w: (load[w], w))
        if load[order[-1]] - mean <= band and mean - load[order[0]] <= band:
            break
        move = None
        for giver in reversed(order):
            if load[giver] <= mean:
                break
            for taker in order:
                if load[taker] >= mean:
                    break
                gap = load[giver] - load[taker]
                ideal = min(load[giver] - mean, mean - load[taker])
                options = [k for k in on[giver] - on[taker] if k in movable and weight[k] < gap]
                if options:
                    # cheapest first: the taker has it already, or the giver's copy is
                    # only planned (retargeted for free); then the best fitting size
                    key = min(options, key=lambda k: (k not in has.get(taker, ()),
                                                      k in has.get(giver, ()),
                                                      abs(weight[k] - ideal), k))
                    move = (key, giver, taker)
                    break
            if move:
                break
        if move is None:
            break
        key, giver, taker = move
        hs = target[key]
        hs[hs.index(giver)] = taker
        on[giver].discard(key)
        on[taker].add(key)
        load[giver] -= weight[key]
        load[taker] += weight[key]
        moved += key in has.get(giver, ())
    return moved


def _in_record_order(recorded: Sequence[str], names: Sequence[str]) -> tuple[str, ...]:
    """``names``, those already recorded first in their recorded order (a repair in
    place leaves the record as it was)."""
    first = [h for h in recorded if h in names]
    return tuple(first + [n for n in names if n not in first])


__all__ = [
    "PLACEMENT_FILE",
    "SHARED",
    "Copy",
    "CopyPlan",
    "FileSig",
    "MovePlan",
    "Placement",
    "TooFewWorkers",
    "Unit",
    "catalog_units",
    "cover",
    "describe",
    "missing_error",
    "plan_copies",
    "plan_moves",
    "rebase",
    "single_holders",
    "stable_pick",
    "statement_files",
    "unit_key",
    "unit_partition",
    "unit_weight",
]
