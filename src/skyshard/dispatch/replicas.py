"""Copies of a catalog on the Dask workers' own disks: place, check, repair, rebalance,
drain.

    report = place(client, "catalog", replication=2)   # copy what is missing
    report = check(client, "catalog")                  # size + SHA-256 of every copy
    report = repair(client, "catalog")                 # back to `replication` copies
    report = rebalance(client, "catalog")              # place, then even out the workers
    report = drain(client, "catalog", ["w3"])          # move everything off w3
    print(report.text())

What a unit is and where the placement is recorded: ``placement``. This module does
the moving, always through Dask tasks, so it works without any shared disk:

- **Where a worker keeps its copies.** Below the directory in the Dask configuration
  key ``skyshard.replicas.directory`` of the worker's process (environment variable
  ``DASK_SKYSHARD__REPLICAS__DIRECTORY``), in a subdirectory named after the worker's
  ``name``, then one per catalog (its placement's ``catalog_id``)::

      DASK_SKYSHARD__REPLICAS__DIRECTORY=/data/skyshard dask worker tcp://sched:8786 --name w1
      # keeps catalog "sky" in /data/skyshard/w1/sky-3f2a9c1e/

  Worker name + that directory are the worker's identity: started again with both, it
  holds again what it held. Give every worker a fixed ``--name`` (Dask's default name is
  the address, which changes with the port).
- **Copies are tasks.** ``place`` reads files on the coordinator (the catalog root) and
  scatters them to the target worker, whose task verifies size and SHA-256 against the
  placement, then writes them atomically (temporary file, fsync, rename). ``repair``
  copies worker to worker: a task on a verified holder reads the files, a task on the
  target receives them (Dask moves the bytes between the two) and verifies them the same
  way. Files travel in bundles of at most ``BUNDLE_BYTES``, ``INFLIGHT_BYTES`` at a time.
- **Checks.** A task per worker lists the units' files it has, with size (``place``
  at executor start: cheap) or size and SHA-256 (``check``, ``repair``, ``place``
  from the command line). A unit counts on a worker only if all its files are there and
  match.

- **Moving copies.** ``rebalance`` and ``drain`` plan with ``placement.plan_moves``
  (which copies stay, which go where, fewest moves) and run in an order that never
  leaves a unit without its recorded copies: (1) copy to the new holders from the
  catalog root, verified like ``place``'s; (2) record the new placement atomically,
  each unit naming only workers that hold it (a unit whose copy failed keeps its old
  holders and loses nothing); (3) remove the copies the record no longer names, on
  each worker once ``grace_s`` has passed since the record changed (queries planned on
  the old record have sent their tasks by then) and the tasks running there at the
  change have finished (up to ``settle_s``; a worker still busy then keeps its surplus
  copies, reported). A query reads the record when it starts, so queries during a
  move find every copy they were routed to. ``drain`` records the drained workers in
  the placement: ``place`` and ``repair`` give them nothing while they are in the
  cluster, ``rebalance`` takes them back.

- **Older versions.** An ingest publishes a new version of a table; its files are placed
  as any others (by the first query that needs them, or ``place``), and the older
  version's stay on the workers. ``place`` and ``repair`` (from the command line) then
  remove from every worker the files the placement does not name *and the catalog root
  no longer has*: the catalog's own garbage collection decides when a version may go
  (no reader lease names it, its grace period has passed), and the workers follow it.
  Copies a crash interrupted go the same way once ``COPY_GRACE_S`` has passed since they
  were last written (one being written now is left alone). ``check`` reports them.
  Nothing is removed when the catalog root cannot be read (the report says so).

Not handled: concurrent place/repair/rebalance/drain runs on one catalog (run one at a
time).
"""

from __future__ import annotations

import os
import queue
import time
import uuid
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath

import dask
from distributed import Client, LocalCluster, get_worker

from skyshard.catalog import model
from skyshard.dispatch.placement import (
    SHARED,
    Copy,
    FileSig,
    MovePlan,
    Placement,
    TooFewWorkers,
    data_sig,
    describe,
    file_sig,
    plan_copies,
    plan_moves,
    safe_name,
    unit_weight,
)
from skyshard.errors import ExternalError, InternalError, UserError
from skyshard.storage import layout

CONFIG_KEY = "skyshard.replicas.directory"
BUNDLE_BYTES = 64 * 2**20
INFLIGHT_BYTES = 256 * 2**20
POLL_S = 0.2
#: seconds between recording a new placement and removing the copies it no longer names
GRACE_S = 5.0
#: seconds a removal waits at most for the tasks running on its worker at the change
SETTLE_S = 300.0
#: seconds after its last write a copy left half-written (a crash) counts as stale
COPY_GRACE_S = 3600.0
#: the key of ``ReplicaReport.left`` for what concerns every worker
ALL_WORKERS = "every worker"

# --- on the workers ------------------------------------------------------------------------


def worker_home(worker=None) -> Path:
    """This worker's replica directory: ``{skyshard.replicas.directory}/{name}``."""
    worker = worker or get_worker()
    base = dask.config.get(CONFIG_KEY, None)
    if not base:
        raise ExternalError(f"Dask worker {worker.name!r} has no replica directory: start it "
                            f"with the Dask config {CONFIG_KEY} set (environment variable "
                            "DASK_SKYSHARD__REPLICAS__DIRECTORY=DIR)")
    return Path(os.path.abspath(os.path.expanduser(str(base)))) / safe_name(worker.name)


def catalog_home(catalog_id: str, worker=None) -> Path:
    """Where this worker keeps its copies of catalog ``catalog_id``."""
    return worker_home(worker) / safe_name(catalog_id)


def _inside(home: Path, rel: str) -> Path:
    p = PurePosixPath(rel)
    if p.is_absolute() or ".." in p.parts or not p.parts:
        raise InternalError(f"not a path inside a catalog: {rel!r}")
    return home.joinpath(*p.parts)


def inventory(catalog_id: str, files: Sequence[str], checksum: bool) -> dict[str, FileSig]:
    """Task: the signatures of the listed files this worker has (size; SHA-256 too when
    ``checksum``, else an empty digest)."""
    home = catalog_home(catalog_id)
    out: dict[str, FileSig] = {}
    for rel in files:
        path = _inside(home, rel)
        try:
            out[rel] = file_sig(path) if checksum else (path.stat().st_size, "")
        except (FileNotFoundError, NotADirectoryError):
            continue
    return out


def read_files(catalog_id: str, files: Sequence[str]) -> dict[str, bytes]:
    """Task: the bytes of this worker's copies of ``files``."""
    home = catalog_home(catalog_id)
    return {rel: _inside(home, rel).read_bytes() for rel in files}


def write_files(catalog_id: str, data: Mapping[str, bytes],
                expected: Mapping[str, FileSig]) -> int:
    """Task: verify ``data`` against ``expected`` (size, SHA-256), then write each file
    below this worker's copy of the catalog atomically; the bytes written."""
    home = catalog_home(catalog_id)
    written = 0
    for rel, blob in data.items():
        got = data_sig(blob)
        if tuple(got) != tuple(expected[rel]):
            raise ExternalError(f"copy of {rel} does not match the placement: "
                                f"{got[0]} bytes, sha256 {got[1][:12]}... instead of "
                                f"{expected[rel][0]} bytes, sha256 {expected[rel][1][:12]}...")
        path = _inside(home, rel)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
        try:
            with open(tmp, "wb") as f:
                f.write(blob)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        written += len(blob)
    return written


def listing(catalog_id: str) -> dict[str, tuple[int, float]]:
    """Task: every file below this worker's copy of the catalog, path -> (bytes, seconds
    since it was last written)."""
    home = catalog_home(catalog_id)
    out: dict[str, tuple[int, float]] = {}
    now = time.time()
    for dirpath, _, names in os.walk(home):
        for name in names:
            path = Path(dirpath) / name
            try:
                st = path.stat()
            except OSError:  # removed meanwhile
                continue
            out[path.relative_to(home).as_posix()] = (st.st_size, now - st.st_mtime)
    return out


def remove_files(catalog_id: str, files: Sequence[str]) -> int:
    """Task: delete this worker's copies of ``files`` (absent ones are fine) and the
    directories left empty; how many files were deleted."""
    home = catalog_home(catalog_id)
    removed = 0
    parents = set()
    for rel in files:
        path = _inside(home, rel)
        try:
            path.unlink()
            removed += 1
        except FileNotFoundError:
            pass
        parents.update(p for p in path.parents if p != home and home in p.parents)
    for d in sorted(parents, key=lambda p: len(p.parts), reverse=True):
        try:
            d.rmdir()
        except OSError:  # not empty, or gone
            pass
    return removed


# --- the cluster as the coordinator sees it ------------------------------------------------


@contextmanager
def connect(scheduler: str | None = None, *, workers: int | None = None,
            replica_dir: str | os.PathLike | None = None,
            timeout_s: float = 10.0) -> Iterator[Client]:
    """A client of the cluster at ``scheduler``, or of a new local cluster of ``workers``
    processes (named 0..N-1) keeping their copies below ``replica_dir``; closed after.

    Waits up to ``timeout_s`` for the cluster's first worker."""
    if (scheduler is None) == (workers is None):
        raise UserError("give either a scheduler address or a number of local workers")
    if workers is not None and replica_dir is None:
        raise UserError("local workers need a replica directory to keep their copies in")
    cluster = None
    try:
        if scheduler is not None:
            try:
                client = Client(scheduler, timeout=timeout_s, set_as_default=False)
            except Exception as exc:
                raise ExternalError(f"cannot connect to the Dask scheduler at {scheduler!r}: "
                                    f"{_describe(exc)}") from exc
        else:
            with dask.config.set({CONFIG_KEY: str(Path(replica_dir).resolve())}):
                cluster = LocalCluster(n_workers=workers, threads_per_worker=1,
                                       processes=True, dashboard_address=None)
            client = Client(cluster, set_as_default=False)
        try:
            client.wait_for_workers(1, timeout=timeout_s)
        except Exception as exc:
            client.close()
            raise ExternalError(f"the Dask cluster has no worker: {_describe(exc)}") from exc
        try:
            yield client
        finally:
            client.close()
    finally:
        if cluster is not None:
            cluster.close()


def named_workers(client: Client) -> dict[str, str]:
    """Worker name -> address, for the workers in the cluster now."""
    return {str(w.get("name", a)): a for a, w in cluster_workers(client).items()}


def cluster_workers(client: Client) -> dict[str, dict]:
    """Address -> the scheduler's description of each worker in the cluster now (asked
    directly: ``Client.scheduler_info`` returns a cache the client's periodic update,
    which lists no workers, may overwrite in between)."""
    try:
        return dict(client.sync(client.scheduler.identity, n_workers=-1)["workers"])
    except Exception as exc:
        raise ExternalError(f"the Dask scheduler does not answer: {_describe(exc)}") from exc


# --- the report -------------------------------------------------------------------------------

OK, ABSENT, INCOMPLETE, CORRUPT = "ok", "absent", "incomplete", "corrupt"


@dataclass(frozen=True)
class UnitState:
    """One unit across the cluster: its recorded ``holders``, the live workers with an
    intact copy (``verified``), live holders whose copy is absent or incomplete
    (``missing``), live workers whose copy fails the check (``corrupt``) and holders not
    in the cluster (``down``)."""

    unit: str
    rows: int
    holders: tuple[str, ...]
    verified: tuple[str, ...]
    missing: tuple[str, ...] = ()
    corrupt: tuple[str, ...] = ()
    down: tuple[str, ...] = ()


@dataclass
class ReplicaReport:
    """What ``check``, ``place``, ``repair``, ``rebalance`` or ``drain`` found (after
    its copies and removals)."""

    replication: int
    workers: tuple[str, ...]
    units: list[UnitState]
    copied: list[Copy] = field(default_factory=list)
    failed: list[tuple[Copy, str]] = field(default_factory=list)
    unrepairable: list[str] = field(default_factory=list)
    stale: bool = False
    placement: Placement | None = None
    #: live workers the placement records as drained (they should hold nothing)
    drained: tuple[str, ...] = ()
    #: (unit, worker) copies removed because the new record no longer names them
    removed: list[tuple[str, str]] = field(default_factory=list)
    #: worker -> why the copies it should have removed are still there
    left: dict[str, str] = field(default_factory=dict)
    #: partition copies moved by the balancing step (rebalance)
    moved: int = 0
    #: worker -> (files, bytes) of older versions it holds (check) or that were removed
    #: (place, repair): neither named by the placement nor at the catalog root any more
    leftovers: dict[str, tuple[int, int]] = field(default_factory=dict)
    #: whether ``leftovers`` were removed
    cleaned: bool = False
    #: whether to print what each worker holds (rebalance, drain)
    show_load: bool = False

    @property
    def holding(self) -> list[str]:
        """The live workers that should hold copies: all but the drained ones."""
        return [w for w in self.workers if w not in self.drained]

    @property
    def still_named(self) -> dict[str, list[str]]:
        """Drained worker -> the units the record still names it for (a failed move)."""
        out: dict[str, list[str]] = {}
        for w in self.drained:
            units = [u.unit for u in self.units if w in u.holders]
            if units:
                out[w] = units
        return out

    def load(self) -> dict[str, tuple[int, int]]:
        """Live worker -> (partitions, bytes) it holds as recorded."""
        out = {w: (0, 0) for w in self.workers}
        for u in self.units:
            if u.unit == SHARED:
                continue
            size = unit_weight(self.placement.units[u.unit]) if self.placement else u.rows
            for h in u.holders:
                if h in out:
                    n, b = out[h]
                    out[h] = (n + 1, b + size)
        return out

    @property
    def under_replicated(self) -> list[UnitState]:
        """Partitions with fewer intact live copies than the replication factor (at
        least one)."""
        return [u for u in self.units if u.unit != SHARED and 0 < len(u.verified)
                < self.replication]

    @property
    def missing(self) -> list[UnitState]:
        """Units with no intact copy on a live worker (for the shared files: a live
        worker without them)."""
        out = [u for u in self.units if u.unit != SHARED and not u.verified]
        out += [u for u in self.units if u.unit == SHARED
                and set(u.verified) != set(self.holding)]
        return out

    @property
    def corrupt(self) -> list[UnitState]:
        return [u for u in self.units if u.corrupt]

    @property
    def healthy(self) -> bool:
        return not (self.under_replicated or self.missing or self.corrupt or self.failed
                    or self.unrepairable or self.stale or self.still_named)

    def text(self, *, every_unit: bool = True) -> str:
        """The report in words: one line per unit, then a summary."""
        lines = []
        for u in self.units if every_unit else []:
            bits = [f"holders {','.join(u.holders) or '-'}",
                    f"verified {','.join(u.verified) or '-'}"]
            for label, names in (("MISSING on", u.missing), ("CORRUPT on", u.corrupt),
                                 ("down", u.down)):
                if names:
                    bits.append(f"{label} {','.join(names)}")
            state = ("missing" if u in self.missing else
                     "under-replicated" if u in self.under_replicated else "ok")
            lines.append(f"{u.unit}: {state}; {'; '.join(bits)}")
        parts = [u for u in self.units if u.unit != SHARED]
        lines.append(f"{len(parts)} partitions, replication {self.replication}, live workers: "
                     f"{', '.join(self.workers) or 'none'}")
        if self.copied or self.failed:
            lines.append(f"copied {len(self.copied)} unit(s); {len(self.failed)} copy(ies) "
                         "failed")
        if self.moved or self.removed:
            lines.append(f"moved {self.moved} partition cop(ies) to even out the workers; "
                         f"removed {len(self.removed)} cop(ies) the placement no longer names")
        for w, why in sorted(self.left.items()):
            lines.append(f"  copies left on {w}: {why}")
        if self.leftovers:
            lines.append(("removed files of older versions: " if self.cleaned else
                          "files of older versions on workers (`skyshard replicas repair` "
                          "removes them): ") + "; ".join(
                f"{w} {n} file(s), {_size(b)}" for w, (n, b) in sorted(self.leftovers.items())))
        if self.show_load:
            lines.append("per worker: " + "; ".join(
                f"{w} {n} partition(s), {_size(b)}" for w, (n, b) in sorted(self.load().items())
                if w not in self.drained))
        for c, why in self.failed:
            lines.append(f"  failed: {c.unit} to {c.target}: {why}")
        for label, items in (("under-replicated", self.under_replicated),
                             ("missing", self.missing), ("corrupt copies", self.corrupt)):
            if items:
                lines.append(f"{label}: {len(items)} ({', '.join(u.unit for u in items[:10])}"
                             f"{' ...' if len(items) > 10 else ''})")
        if self.unrepairable:
            lines.append(f"no intact copy to repair from: {', '.join(self.unrepairable)}")
        if self.stale:
            lines.append("the catalog changed since it was placed: run `skyshard replicas "
                         "place`")
        named = self.still_named
        for w in self.drained:
            if w in named:
                lines.append(f"not drained: {w} is still a holder of {len(named[w])} unit(s) "
                             f"({', '.join(named[w][:10])}{' ...' if len(named[w]) > 10 else ''})")
            else:
                lines.append(f"drained: {w} holds nothing the placement names; it can be "
                             "removed")
        if self.healthy:
            lines.append("healthy")
        return "\n".join(lines)


# --- place / check / repair ------------------------------------------------------------------


def place(client: Client, root: str | os.PathLike, *, replication: int | None = None,
          checksum: bool = True, clean: bool = True) -> ReplicaReport:
    """Copy the catalog at ``root`` onto the cluster's workers so that every partition
    has ``replication`` intact copies on live workers (default: the recorded factor, or
    2) and every live worker has the shared files; record the placement. Copies that
    are there and intact (size; also SHA-256 when ``checksum``) are kept. With ``clean``,
    then remove the files of older versions from the workers (see the module)."""
    root = Path(root).resolve()
    placement = _described(root, replication)
    report = _maintain(client, root, placement, checksum=checksum, from_catalog=True)
    if clean:
        _clean(client, root, report)
    return report


def _described(root: Path, replication: int | None) -> Placement:
    """The catalog's units as they are now, with the recorded holders, at ``replication``
    copies (default: as recorded)."""
    if replication is not None and replication < 1:
        raise UserError(f"replication must be at least 1, not {replication}")
    placement = describe(root, model.load(root), Placement.load(root))
    if replication is not None:
        placement = replace(placement, replication=replication)
    return placement


def check(client: Client, root: str | os.PathLike) -> ReplicaReport:
    """The state of every unit's copies (size and SHA-256), changing nothing."""
    root = Path(root).resolve()
    placement = _recorded(root)
    alive = named_workers(client)
    placement = _current_drained(placement, alive)
    survey = _survey(client, placement, alive, checksum=True)
    report = _report(placement, alive, survey, stale=_stale(root, placement))
    try:
        found, report.left = _leftovers(client, root, placement, alive)
    except ExternalError as exc:
        report.left[ALL_WORKERS] = str(exc)
        return report
    report.leftovers = {w: (len(f), sum(f.values())) for w, f in found.items()}
    return report


def repair(client: Client, root: str | os.PathLike, *,
           replication: int | None = None) -> ReplicaReport:
    """Bring every partition back to the replication factor and every live worker back
    to holding the shared files, copying from intact copies on other workers (never from
    the catalog root); units without any intact copy are reported ``unrepairable``."""
    root = Path(root).resolve()
    placement = _recorded(root)
    if replication is not None:
        placement = replace(placement, replication=replication)
    report = _maintain(client, root, placement, checksum=True, from_catalog=False)
    report.stale = _stale(root, placement)
    _clean(client, root, report)
    return report


def rebalance(client: Client, root: str | os.PathLike, *, replication: int | None = None,
              checksum: bool = True, grace_s: float = GRACE_S,
              settle_s: float = SETTLE_S) -> ReplicaReport:
    """``place``, then even the partitions out over every live worker (bytes within
    10 % of the mean where the partitions' sizes allow), moving the fewest copies:
    copies first, then the record, then the surplus copies removed (see the module
    docstring). Workers recorded as drained hold copies again."""
    return _move(client, root, replication=replication, exclude=(), balance=True,
                 checksum=checksum, grace_s=grace_s, settle_s=settle_s)


def drain(client: Client, root: str | os.PathLike, workers: Iterable[str], *,
          replication: int | None = None, checksum: bool = True, grace_s: float = GRACE_S,
          settle_s: float = SETTLE_S) -> ReplicaReport:
    """Move every copy off ``workers`` (worker names) onto the other live workers,
    keeping the replication factor and evening them out as ``rebalance`` does (the
    fewest extra moves), record them as drained and remove their copies: then they can
    leave the cluster. Too few workers left for the replication factor:
    ``TooFewWorkers``, and nothing changes. Workers drained before and still in the
    cluster stay drained."""
    names = tuple(dict.fromkeys(str(w).strip() for w in workers if str(w).strip()))
    if not names:
        raise UserError("name the workers to drain")
    return _move(client, root, replication=replication, exclude=names, balance=True,
                 checksum=checksum, grace_s=grace_s, settle_s=settle_s)


def _move(client: Client, root: str | os.PathLike, *, replication: int | None,
          exclude: Sequence[str], balance: bool, checksum: bool, grace_s: float,
          settle_s: float) -> ReplicaReport:
    root = Path(root).resolve()
    placement = _described(root, replication)
    alive = named_workers(client)
    if not alive:
        raise ExternalError("the Dask cluster has no worker to hold replicas")
    drained = set(exclude)
    if exclude:  # a drain adds to the drained workers still in the cluster
        drained |= {w for w in placement.drained if w in alive}
    remaining = sorted(set(alive) - drained)
    if len(remaining) < placement.replication:
        raise TooFewWorkers(remaining, placement.replication, sorted(drained))
    placement = replace(placement, drained=tuple(sorted(drained)))
    survey = _survey(client, placement, alive, checksum=checksum)
    verified = {w: {u for u, st in states.items() if st == OK} for w, states in survey.items()}
    present = {w: {u for u, st in states.items() if st != ABSENT}
               for w, states in survey.items()}
    plan = plan_moves(placement, verified, sorted(alive), replication=placement.replication,
                      exclude=drained, balance=balance, present=present, from_catalog=True)
    failed = _copy(client, root, placement, plan.copies, alive)
    plan = plan.without({(c.unit, c.target) for c, _ in failed}, placement, verified)
    placement = placement.with_holders(plan.holders)
    try:
        placement.save(root)
    except OSError as exc:
        raise ExternalError(f"cannot record the placement in {root}: {exc}") from exc
    for c in plan.copies:
        survey[c.target][c.unit] = OK
    removed, left = _remove_surplus(client, placement, plan, alive,
                                    time.monotonic() + grace_s, settle_s)
    for unit, w in removed:
        survey[w][unit] = ABSENT
    report = _report(placement, alive, survey)
    report.copied = list(plan.copies)
    report.failed = failed
    report.unrepairable = plan.unrepairable
    report.removed = removed
    report.left = left
    report.moved = plan.moved
    report.show_load = True
    return report


def _remove_surplus(client: Client, placement: Placement, plan: MovePlan,
                    alive: Mapping[str, str], not_before: float,
                    settle_s: float) -> tuple[list[tuple[str, str]], dict[str, str]]:
    """Remove ``plan.removals`` (the record no longer names them), each worker's once
    ``not_before`` (monotonic) has passed and the tasks it had when the record changed,
    or when ``not_before`` passed (sent by queries planned just before the change), have
    finished; (unit, worker) removed, and worker -> why not."""
    pending = {w: units for w, units in plan.removals.items() if units}
    if not pending:
        return [], {}
    addresses = {w: alive[w] for w in pending}
    busy = _processing(client, addresses.values())
    running = {w: busy.get(a, set()) for w, a in addresses.items()}
    while (now := time.monotonic()) < not_before:
        time.sleep(min(POLL_S, not_before - now))
    busy = _processing(client, addresses.values())
    for w, a in addresses.items():
        running[w] |= busy.get(a, set())
    deadline = time.monotonic() + settle_s
    left: dict[str, str] = {}
    futures: dict[str, object] = {}
    while pending:
        current = _processing(client, (addresses[w] for w in pending))
        present = set(named_workers(client).values())
        for w in list(pending):
            if addresses[w] not in present:
                left[w] = "it left the cluster"
                del pending[w]
            elif not running[w] & current.get(addresses[w], set()):
                files = sorted(f for u in pending[w] for f in placement.units[u].files)
                futures[w] = client.submit(remove_files, placement.catalog_id, files,
                                           workers=[addresses[w]], allow_other_workers=False,
                                           pure=False,
                                           key=f"skyshard-remove-{uuid.uuid4().hex[:12]}")
                del pending[w]
            elif time.monotonic() > deadline:
                left[w] = (f"tasks that started before the placement changed still ran after "
                           f"{settle_s:g} s; run `skyshard replicas rebalance` again later")
                del pending[w]
        if pending:
            time.sleep(POLL_S)
    removed: list[tuple[str, str]] = []
    results = _results(client, futures, {w: (addresses[w],) for w in futures},
                       "remove its surplus copies")
    for w, got in results.items():
        if isinstance(got, BaseException):
            left[w] = f"removing failed: {_describe(got)}"
        else:
            removed += [(u, w) for u in plan.removals[w]]
    return sorted(removed), left


def _leftovers(client: Client, root: Path, placement: Placement, alive: Mapping[str, str]
               ) -> tuple[dict[str, dict[str, int]], dict[str, str]]:
    """Worker -> {file: bytes} of the files it holds that ``placement`` does not name
    and the catalog root no longer has; and worker -> why it could not be listed."""
    if not (root / layout.CATALOG_META).is_file():
        raise ExternalError(f"{root}: cannot read {layout.CATALOG_META}, so no worker's "
                            "files can be told stale; nothing was removed")
    named = {f for unit in placement.units.values() for f in unit.files}
    futures = {w: client.submit(listing, placement.catalog_id, workers=[a],
                                allow_other_workers=False, pure=False,
                                key=f"skyshard-listing-{uuid.uuid4().hex[:12]}")
               for w, a in alive.items()}
    found: dict[str, dict[str, int]] = {}
    failed: dict[str, str] = {}
    for w, got in _results(client, futures, {w: (alive[w],) for w in futures},
                           "list its files").items():
        if isinstance(got, BaseException):
            failed[w] = f"listing its files failed: {_describe(got)}"
            continue
        stale = {rel: size for rel, (size, age) in got.items()
                 if rel not in named and not (root / rel).exists()
                 and (age >= COPY_GRACE_S or not _copying(rel))}
        if stale:
            found[w] = stale
    return found, failed


def _copying(rel: str) -> bool:
    """Whether ``rel`` names a copy being written (``write_files``' temporary name)."""
    name = PurePosixPath(rel).name
    return name.startswith(".") and name.endswith(".tmp")


def _clean(client: Client, root: Path, report: ReplicaReport) -> None:
    """Remove the files of older versions from the live workers (``_leftovers``), after
    ``report``'s copies; what was removed goes in the report (and why not, if not)."""
    if report.placement is None:
        return
    alive = named_workers(client)
    try:
        found, failed = _leftovers(client, root, report.placement, alive)
    except ExternalError as exc:
        report.left[ALL_WORKERS] = str(exc)
        return
    report.left.update(failed)
    futures = {w: client.submit(remove_files, report.placement.catalog_id, sorted(files),
                                workers=[alive[w]], allow_other_workers=False, pure=False,
                                key=f"skyshard-remove-{uuid.uuid4().hex[:12]}")
               for w, files in found.items()}
    for w, got in _results(client, futures, {w: (alive[w],) for w in futures},
                           "remove files of older versions").items():
        if isinstance(got, BaseException):
            report.left[w] = f"removing files of older versions failed: {_describe(got)}"
        else:
            report.leftovers[w] = (len(found[w]), sum(found[w].values()))
    report.cleaned = True


def _processing(client: Client, addresses: Iterable[str]) -> dict[str, set[str]]:
    """Address -> keys of the tasks the scheduler has given that worker, running or
    waiting there."""
    addresses = list(addresses)
    if not addresses:
        return {}
    try:
        found = client.processing(workers=addresses)
    except Exception as exc:
        raise ExternalError(f"the Dask scheduler does not answer: {_describe(exc)}") from exc
    return {a: {str(k) for k in keys} for a, keys in (found or {}).items()}


def _recorded(root: Path) -> Placement:
    placement = Placement.load(root)
    if placement is None:
        raise UserError(f"{root}: the catalog has not been placed on workers (no "
                        "replicas.json): run `skyshard replicas place` first")
    return placement


def _stale(root: Path, placement: Placement) -> bool:
    try:
        return file_sig(root / layout.CATALOG_META)[1] != placement.meta_sha
    except FileNotFoundError:
        return True


def _current_drained(placement: Placement, alive: Mapping[str, str]) -> Placement:
    """``placement`` with only the drained workers still in the cluster listed as such
    (one that left has been removed; a new worker of that name starts afresh)."""
    return replace(placement, drained=tuple(w for w in placement.drained if w in alive))


def _maintain(client: Client, root: Path, placement: Placement, *, checksum: bool,
              from_catalog: bool) -> ReplicaReport:
    alive = named_workers(client)
    placement = _current_drained(placement, alive)
    holding = sorted(w for w in alive if w not in placement.drained)
    if not holding:
        raise ExternalError("the Dask cluster has no worker to hold replicas"
                            + (f" (drained: {', '.join(placement.drained)})"
                               if placement.drained else ""))
    survey = _survey(client, placement, alive, checksum=checksum)
    verified = {w: {u for u, s in states.items() if s == OK} for w, states in survey.items()
                if w in holding}
    plan = plan_copies(placement, verified, holding, replication=placement.replication,
                       from_catalog=from_catalog)
    failed = _copy(client, root, placement, plan.copies, alive)
    bad = {(c.unit, c.target) for c, _ in failed}
    holders = {u: tuple(h for h in hs if (u, h) not in bad) for u, hs in plan.holders.items()}
    placement = placement.with_holders(holders)
    try:
        placement.save(root)
    except OSError as exc:
        raise ExternalError(f"cannot record the placement in {root}: {exc}") from exc
    for c in plan.copies:
        if (c.unit, c.target) not in bad:
            survey[c.target][c.unit] = OK
    report = _report(placement, alive, survey)
    report.copied = [c for c in plan.copies if (c.unit, c.target) not in bad]
    report.failed = failed
    report.unrepairable = plan.unrepairable
    return report


def _survey(client: Client, placement: Placement, alive: Mapping[str, str], *,
            checksum: bool) -> dict[str, dict[str, str]]:
    """worker -> unit -> OK | ABSENT | INCOMPLETE | CORRUPT, for every live worker."""
    files = sorted(placement._index)
    futures = {name: client.submit(inventory, placement.catalog_id, files, checksum,
                                   workers=[addr], allow_other_workers=False, pure=False,
                                   key=f"skyshard-inventory-{uuid.uuid4().hex[:12]}")
               for name, addr in alive.items()}
    found = _results(client, futures, {n: (alive[n],) for n in futures}, "list its replicas")
    survey: dict[str, dict[str, str]] = {}
    for name in alive:
        have = found[name]
        if isinstance(have, BaseException):
            raise ExternalError(f"worker {name} cannot list its replicas: {have}") from have
        states = {}
        for key, unit in placement.units.items():
            got = [have.get(f) for f in unit.files]
            if all(g is None for g in got) and unit.files:
                states[key] = ABSENT
            elif any(g is not None and (g[0] != s[0] or (checksum and g[1] != s[1]))
                     for g, s in zip(got, unit.files.values())):
                states[key] = CORRUPT
            elif any(g is None for g in got):
                states[key] = INCOMPLETE
            else:
                states[key] = OK
        survey[name] = states
    return survey


def _report(placement: Placement, alive: Mapping[str, str],
            survey: Mapping[str, Mapping[str, str]], *, stale: bool = False) -> ReplicaReport:
    units = []
    order = [SHARED] + placement.partition_units if SHARED in placement.units else \
        placement.partition_units
    holding = [w for w in sorted(alive) if w not in placement.drained]
    for key in order:
        unit = placement.units[key]
        verified = [w for w in holding if survey[w].get(key) == OK]
        verified.sort(key=lambda w: (w not in unit.holders, w))
        units.append(UnitState(
            key, unit.rows, unit.holders, tuple(verified),
            missing=tuple(h for h in unit.holders
                          if h in alive and survey[h].get(key) in (ABSENT, INCOMPLETE)),
            corrupt=tuple(w for w in sorted(alive) if survey[w].get(key) == CORRUPT),
            down=tuple(h for h in unit.holders if h not in alive)))
    return ReplicaReport(placement.replication, tuple(sorted(alive)), units, stale=stale,
                         placement=placement, drained=placement.drained)


# --- moving files ------------------------------------------------------------------------------


@dataclass
class _Bundle:
    source: str | None
    target: str
    files: dict[str, FileSig]
    copies: set[Copy]

    @property
    def size(self) -> int:
        return sum(s for s, _ in self.files.values())


def _bundles(placement: Placement, copies: Iterable[Copy]) -> list[_Bundle]:
    by_route: dict[tuple[str | None, str], list[Copy]] = defaultdict(list)
    for c in copies:
        by_route[(c.source, c.target)].append(c)
    out = []
    for (source, target), cs in sorted(by_route.items(), key=lambda kv: (kv[0][1], kv[0][0] or "")):
        current = _Bundle(source, target, {}, set())
        for c in cs:
            for rel, sig in sorted(placement.units[c.unit].files.items()):
                if current.files and current.size + sig[0] > BUNDLE_BYTES:
                    out.append(current)
                    current = _Bundle(source, target, {}, set())
                current.files[rel] = sig
                current.copies.add(c)
        if current.files or current.copies:
            out.append(current)
    return out


def _copy(client: Client, root: Path, placement: Placement, copies: Sequence[Copy],
          alive: Mapping[str, str]) -> list[tuple[Copy, str]]:
    """Run ``copies``; the ones that failed, with why."""
    failed: dict[Copy, str] = {}
    queue = _bundles(placement, copies)
    running: dict = {}  # write future -> (bundle, addresses involved)
    finished = Completions()
    inflight = 0
    cid = placement.catalog_id
    while queue or running:
        while queue and (not running or inflight + queue[0].size <= INFLIGHT_BYTES):
            b = queue.pop(0)
            target = alive[b.target]
            try:
                if b.source is None:
                    blobs = {rel: (root / rel).read_bytes() for rel in b.files}
                    [data] = client.scatter([blobs], workers=[target], hash=False)
                    involved = (target,)
                else:
                    src = alive[b.source]
                    data = client.submit(read_files, cid, sorted(b.files), workers=[src],
                                         allow_other_workers=False, pure=False,
                                         key=f"skyshard-read-{uuid.uuid4().hex[:12]}")
                    involved = (src, target)
                fut = client.submit(write_files, cid, data, dict(b.files), workers=[target],
                                    allow_other_workers=False, pure=False,
                                    key=f"skyshard-write-{uuid.uuid4().hex[:12]}")
            except Exception as exc:  # noqa: BLE001 - reported per copy
                for c in b.copies:
                    failed.setdefault(c, _describe(exc))
                continue
            running[fut] = (b, involved)
            finished.watch(fut)
            inflight += b.size
        done = set(finished.done(POLL_S))
        present = set(named_workers(client).values()) if not done else None
        for fut in list(running):
            b, involved = running[fut]
            why = None
            if fut in done:
                try:
                    fetch(client, fut, involved)
                except Exception as exc:  # noqa: BLE001 - reported per copy
                    why = _describe(exc)
            elif present is not None and not set(involved) <= present:
                why = "a worker of the copy left the cluster"
                fut.cancel()
            else:
                continue
            del running[fut]
            inflight -= b.size
            if why is not None:
                for c in b.copies:
                    failed.setdefault(c, why)
    return sorted(failed.items(), key=lambda kv: (kv[0].unit, kv[0].target))


class WorkerLost(Exception):
    """A finished task's result went with its worker."""


def fetch(client: Client, future, addresses: Iterable[str], *, first_timeout_s: float = 1.0):
    """The result of a finished ``future`` whose task ran pinned to ``addresses``.

    When such a worker dies after the task finished but before its result was fetched,
    the scheduler marks the task for recomputation, which its strict restriction keeps
    from ever running: a plain ``result()`` would wait forever. So wait in rounds
    (``first_timeout_s``, doubling: a big result may take a while to move) and give up
    with ``WorkerLost`` once a worker of ``addresses`` has left the cluster."""
    timeout = first_timeout_s
    while True:
        try:
            return future.result(timeout=timeout)
        except TimeoutError:
            if future.status == "error":  # the task's own TimeoutError
                return future.result()
            if not set(addresses) <= set(cluster_workers(client)):
                future.cancel()
                raise WorkerLost("the worker left the cluster with the result") from None
            timeout *= 2


class Completions:
    """Futures as they finish, fed by their done-callbacks (works without a default
    client and takes futures added while waiting).

    ``watch(future)``, then ``done(timeout_s)``: the futures finished since the last
    call, waiting up to ``timeout_s`` for the first (none on timeout). Cancelled futures
    come out too; callers ignore the ones they no longer track."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue = queue.SimpleQueue()

    def watch(self, future) -> None:
        future.add_done_callback(self._queue.put)

    def done(self, timeout_s: float) -> list:
        try:
            out = [self._queue.get(timeout=timeout_s)]
        except queue.Empty:
            return []
        while True:
            try:
                out.append(self._queue.get_nowait())
            except queue.Empty:
                return out


def _results(client: Client, futures: Mapping[str, object],
             addresses: Mapping[str, tuple[str, ...]], what: str) -> dict[str, object]:
    """name -> result (or the exception) of each future, failing any whose worker left."""
    out: dict[str, object] = {}
    running = dict(futures)
    finished = Completions()
    for fut in running.values():
        finished.watch(fut)
    while running:
        done = set(finished.done(POLL_S))
        present = set(named_workers(client).values()) if not done else None
        for name, fut in list(running.items()):
            if fut in done:
                try:
                    out[name] = fetch(client, fut, addresses[name])
                except Exception as exc:  # noqa: BLE001 - handed to the caller
                    out[name] = exc
            elif present is not None and not set(addresses[name]) <= present:
                fut.cancel()
                out[name] = ExternalError(f"worker {name} left the cluster before it could "
                                          f"{what}")
            else:
                continue
            del running[name]
    return out


def _size(n: int) -> str:
    """Bytes for people.

    >>> _size(512), _size(1536), _size(3 * 2**30)
    ('512 B', '1.5 KiB', '3.0 GiB')
    """
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


__all__ = ["CONFIG_KEY", "ReplicaReport", "TooFewWorkers", "UnitState", "catalog_home",
           "check", "connect", "drain", "named_workers", "place", "rebalance", "repair",
           "worker_home"]
