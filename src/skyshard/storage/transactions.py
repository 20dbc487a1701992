"""Ingest transactions: begin, add contributions, commit (or prepare and publish), abort.

A transaction loads rows into one table (created with its role at the first commit if
new). It lives in ``CATALOG/.transactions/<id>/`` until it is published or aborted::

    txn.json       this record (rewritten atomically at every change of state)
    lock           flock held by the process working on the transaction
    schema.arrow   the table's columns, once known
    c000001/       a recorded contribution (contributions.py)
    c000002.tmp/   a contribution being read, locked by its reader (parallel adds)
    work/          a commit's scratch space; work/out/ the new table versions
    prepared.json  the built versions of a prepared transaction
    progress.json  progress of the running commit (status reads it)

States::

                 add (any number, in parallel)
               +-------+
               v       |
    begin --> OPEN ----+--------- abort ----------------------------> (removed)
               |   ^
        commit |   | the build failed (nothing published); recovery
               v   |   after a killed commit
            COMMITTING ----- commit(publish=False) ----> PREPARED
               |                                          |  |
               | publish: skyshard.json renamed           |  +-- abort --> (removed)
               v                                          |
            PUBLISHED <-------------- publish ------------+
               |
               +--> (removed: the transaction's folder is deleted)

Publishing is one atomic rename of ``skyshard.json`` (``versions.publish``). A killed
process leaves the catalog as it was before or after that rename; what it leaves in the
transaction's folder is cleaned by recovery (every begin, commit and gc), which puts an
interrupted commit back to OPEN, so running ``commit`` again resumes it (the
contributions are kept) and ``abort`` removes everything. A transaction published
before its folder was removed is recognised (``skyshard.json`` names the transaction
of every current and retired version) and never published twice.

Locks (``locks``): the transaction's own (add takes it briefly to reserve and to
record a contribution, commit and abort hold it throughout), then the locks of the
table and its family (a child and its director; a director and its children), so that
commits to one table serialise and build on the latest version, then the catalog lock
around the publish itself. Transactions on different tables commit in parallel up to
the publish.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, ExitStack, contextmanager, nullcontext
from dataclasses import dataclass, field, replace
from enum import Enum
from pathlib import Path

import pyarrow as pa

from skyshard.catalog import model
from skyshard.catalog.model import CatalogMeta, TableInfo, TableKind
from skyshard.errors import IngestError, SkyshardError
from skyshard.machine import cpus
from skyshard.storage import contributions, crashpoints, incremental, layout, versions
from skyshard.storage.contributions import Contribution, TableSpec
from skyshard.storage.locks import Busy, FileLock, clear_stale, is_locked, table_locks
from skyshard.storage.options import IngestOptions
from skyshard.storage.progress import Progress, read_report
from skyshard.storage.readers import prefetch

TRANSACTIONS = ".transactions"
RECORD = "txn.json"
SCHEMA = "schema.arrow"
PREPARED = "prepared.json"
PROGRESS = "progress.json"
WORK = "work"


class State(str, Enum):
    OPEN = "OPEN"
    COMMITTING = "COMMITTING"
    PREPARED = "PREPARED"
    PUBLISHED = "PUBLISHED"


class UnknownTransactionError(IngestError):
    """No such transaction in this catalog (never begun, aborted, or long published)."""

    def __init__(self, tid: str) -> None:
        super().__init__(f"unknown transaction {tid!r}")
        self.transaction = tid


class TransactionStateError(IngestError):
    """The transaction's state does not allow the request (adding to a prepared
    transaction, aborting a published one, a transaction busy in another process)."""


@dataclass(frozen=True)
class Record:
    """What ``txn.json`` holds."""

    id: str
    spec: TableSpec
    options: IngestOptions
    state: State = State.OPEN
    created: float = 0.0
    updated: float = 0.0
    next_number: int = 1
    contributions: tuple[Contribution, ...] = ()
    note: str | None = None
    error: str | None = None

    def to_json(self) -> dict:
        return {"id": self.id, "table": self.spec.name, "spec": self.spec.to_json(),
                "options": self.options.to_json(), "state": self.state.value,
                "created": self.created, "updated": self.updated, "next": self.next_number,
                "contributions": [c.to_json() for c in self.contributions],
                "note": self.note, "error": self.error}

    @classmethod
    def from_json(cls, d: dict) -> Record:
        return cls(d["id"], TableSpec.from_json(d["spec"]), IngestOptions.from_json(d["options"]),
                   State(d["state"]), d["created"], d["updated"], d["next"],
                   tuple(Contribution.from_json(c) for c in d["contributions"]),
                   d.get("note"), d.get("error"))


@dataclass(frozen=True)
class Status:
    """A transaction as ``status`` reports it: counts, state and the progress of work
    running now (one entry per running phase: ``phase``, ``rows``, ``bytes``)."""

    id: str
    table: str
    kind: str
    state: State
    created: float | None = None
    updated: float | None = None
    contributions: tuple[Contribution, ...] = ()
    running: tuple[dict, ...] = ()
    note: str | None = None
    error: str | None = None
    published: dict[str, int] = field(default_factory=dict)

    @property
    def rows(self) -> int:
        return sum(c.rows for c in self.contributions)

    @property
    def bytes(self) -> int:
        return sum(c.bytes for c in self.contributions)

    def to_json(self) -> dict:
        return {"id": self.id, "table": self.table, "kind": self.kind,
                "state": self.state.value, "created": self.created, "updated": self.updated,
                "contributions": len(self.contributions), "rows": self.rows,
                "bytes": self.bytes, "files": [c.to_json() for c in self.contributions],
                "running": list(self.running), "note": self.note, "error": self.error,
                "published": self.published}

    def summary(self) -> str:
        text = (f"transaction {self.id} ({self.table}, {self.kind}): {self.state.value}, "
                f"{len(self.contributions)} contribution(s), {self.rows:,} rows, "
                f"{_size(self.bytes)}")
        if self.published:
            text += ", published " + ", ".join(f"{t} v{v}" for t, v in self.published.items())
        for r in self.running:
            text += f"\n  running: {r.get('phase')}: {r.get('rows', 0):,} rows"
        if self.note:
            text += f"\n  note: {self.note}"
        if self.error:
            text += f"\n  last error: {self.error}"
        return text


# --- the folder of one transaction ---------------------------------------------------------


class _Txn:
    def __init__(self, root: Path, tid: str) -> None:
        if not tid or not all(c.isalnum() or c in "-_" for c in tid):
            raise UnknownTransactionError(tid)
        self.root = root
        self.id = tid
        self.path = root / TRANSACTIONS / tid

    @contextmanager
    def locked(self, *, blocking: bool) -> Iterator[None]:
        lock = FileLock(self.path / "lock", remove=False, make_parent=False)
        try:
            lock.acquire(blocking=blocking)
        except FileNotFoundError:
            raise UnknownTransactionError(self.id) from None
        except Busy:
            raise TransactionStateError(
                f"transaction {self.id} is busy: another process is committing, publishing "
                "or aborting it") from None
        try:
            yield
        finally:
            lock.release()

    def load(self) -> Record:
        try:
            return Record.from_json(json.loads((self.path / RECORD).read_text()))
        except FileNotFoundError:
            raise UnknownTransactionError(self.id) from None
        except (ValueError, KeyError, TypeError) as exc:
            raise IngestError(f"{self.path / RECORD}: malformed transaction record: {exc}") from exc

    def save(self, rec: Record) -> Record:
        rec = replace(rec, updated=time.time())
        _write_atomic(self.path / RECORD, json.dumps(rec.to_json(), indent=1))
        return rec

    def schema(self) -> pa.Schema | None:
        p = self.path / SCHEMA
        return pa.ipc.read_schema(pa.py_buffer(p.read_bytes())) if p.exists() else None

    def set_schema(self, schema: pa.Schema) -> None:
        _write_atomic(self.path / SCHEMA, schema.serialize().to_pybytes())

    @property
    def work(self) -> Path:
        return self.path / WORK

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
        _remove_if_empty(self.root / TRANSACTIONS)


def _write_atomic(path: Path, data: str | bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    if isinstance(data, str):
        tmp.write_text(data)
    else:
        tmp.write_bytes(data)
    os.replace(tmp, path)


def _remove_if_empty(path: Path) -> None:
    try:
        path.rmdir()
    except OSError:
        pass


# --- begin -------------------------------------------------------------------------------


def begin(root: str | os.PathLike, table: str, *, ra: str | None = None, dec: str | None = None,
          key: str | None = None, director: str | None = None, director_key: str | None = None,
          replicated: bool = False, schema: pa.Schema | str | os.PathLike | None = None,
          options: IngestOptions | None = None) -> Status:
    """Start a transaction loading into ``table`` of the catalog at ``root`` (created if
    needed). For a new table the role follows from the arguments as in ``ingest``; for
    an existing one they may be left out (if given, they must match)."""
    root = Path(root)
    opts = options or IngestOptions()
    root.mkdir(parents=True, exist_ok=True)
    recover(root)
    meta = _load(root)
    existing = _find(meta, table)
    if existing is not None:
        spec = _existing_spec(meta, existing, opts, ra=ra, dec=dec, key=key, director=director,
                              director_key=director_key, replicated=replicated)
        arrow_schema = contributions.table_schema(root, existing)
        if schema is not None:
            given = _resolve_schema(schema)
            if given is not None and given.names != arrow_schema.names:
                raise IngestError(f"the schema given for {existing.name!r} has columns "
                                  f"{', '.join(given.names)}; the table has "
                                  f"{', '.join(arrow_schema.names)}")
    else:
        spec = _new_spec(meta, table, opts, ra=ra, dec=dec, key=key, director=director,
                         director_key=director_key, replicated=replicated)
        arrow_schema = _resolve_schema(schema)
    tid = f"{time.strftime('%Y%m%d')}-{secrets.token_hex(4)}"
    now = time.time()
    rec = Record(tid, spec, opts, created=now, updated=now)
    staging = root / TRANSACTIONS / f".{tid}.new"
    staging.mkdir(parents=True)
    lock = FileLock(staging / "lock", remove=False).acquire()
    try:
        txn = _Txn(root, tid)
        txn.path = staging
        txn.save(rec)
        if arrow_schema is not None:
            txn.set_schema(arrow_schema)
        os.rename(staging, root / TRANSACTIONS / tid)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    finally:
        lock.release()
    return status(root, tid)


def _new_spec(meta: CatalogMeta, table: str, opts: IngestOptions, *, ra, dec, key, director,
              director_key, replicated) -> TableSpec:
    common = {"max_rows_per_partition": opts.max_rows_per_partition,
              "max_order": opts.max_order, "margin_arcsec": opts.margin_arcsec,
              "allow_duplicate_keys": opts.allow_duplicate_keys}
    if replicated:
        return TableSpec(table, TableKind.REPLICATED, **common)
    if director is not None:
        dinfo = meta.table(director)
        if dinfo.kind is not TableKind.DIRECTOR:
            raise IngestError(f"{director!r} is a {dinfo.kind.value} table, not a director")
        if (ra is None) != (dec is None):
            raise IngestError("give both --ra and --dec, or neither")
        dkey = director_key or dinfo.key
        if dkey is None:
            raise IngestError(f"director {dinfo.name!r} has no key; give --director-key")
        return TableSpec(table, TableKind.CHILD, ra=ra, dec=dec, director=dinfo.name,
                         director_key=dkey, **common)
    if not (ra and dec and key):
        raise IngestError(
            "a director table needs --ra, --dec and --key "
            "(or --director for a child table, --replicated for a replicated one)")
    return TableSpec(table, TableKind.DIRECTOR, ra=ra, dec=dec, key=key, **common)


def _existing_spec(meta: CatalogMeta, info: TableInfo, opts: IngestOptions, *, ra, dec, key,
                   director, director_key, replicated) -> TableSpec:
    given = {"ra": ra, "dec": dec, "key": key, "director": director,
             "director_key": director_key}
    kind = (TableKind.REPLICATED if replicated else TableKind.CHILD if director
            else TableKind.DIRECTOR if key else None)
    if kind is not None and kind is not info.kind:
        raise IngestError(f"table {info.name!r} exists as a {info.kind.value} table")
    for name, value in given.items():
        have = getattr(info, name)
        if value is not None and (have is None or str(have).lower() != value.lower()):
            raise IngestError(f"table {info.name!r} exists with {name}={have!r}, not {value!r}")
    if Path(info.path).is_absolute():
        raise IngestError(f"table {info.name!r} is a HATS catalog served in place; "
                          "it cannot be ingested into")
    deepest = max((p.order for p in info.partitions), default=0)
    return TableSpec(
        info.name, info.kind, ra=info.ra, dec=info.dec, key=info.key, director=info.director,
        director_key=info.director_key,
        max_rows_per_partition=info.max_rows_per_partition or opts.max_rows_per_partition,
        max_order=max(info.max_order or opts.max_order, deepest),
        margin_arcsec=info.margin_arcsec or opts.margin_arcsec,
        allow_duplicate_keys=opts.allow_duplicate_keys)


def _resolve_schema(schema) -> pa.Schema | None:
    if schema is None or isinstance(schema, pa.Schema):
        return schema
    from skyshard.catalog.mysql_schema import parse_create_table

    path = Path(schema)
    if not path.exists():
        raise IngestError(f"schema file not found: {path}")
    return parse_create_table(path.read_text(encoding="latin-1"), path=str(path)).schema


# --- add ---------------------------------------------------------------------------------


class Adding:
    """One contribution being added: reserve it (``with transactions.adding(...)``),
    read a file into it (``read``), and it is recorded when the block ends without error
    (or removed, on error). Several may run at once in one transaction."""

    def __init__(self, root: Path, tid: str, *, show_progress: bool | None = None) -> None:
        self.txn = _Txn(root, tid)
        self.show_progress = show_progress
        self.number = 0
        self.dir = Path()
        self.result: Contribution | None = None
        self._rows = 0
        self._bytes = 0
        self._source = ""
        self._format = ""
        self._schema: pa.Schema | None = None
        self._lock: FileLock | None = None
        self.record: Record | None = None

    def __enter__(self) -> Adding:
        if self.record is None:
            self.reserve()
        return self

    def reserve(self) -> None:
        """Take the transaction's next contribution number (``__enter__`` does it unless
        it was done already)."""
        with self.txn.locked(blocking=True):
            rec = self.txn.load()
            if rec.state is not State.OPEN:
                raise TransactionStateError(
                    f"transaction {rec.id} is {rec.state.value}: contributions can only be "
                    "added to an OPEN transaction")
            self.record = rec
            self.number = rec.next_number
            self.txn.save(replace(rec, next_number=rec.next_number + 1))
            self.dir = self.txn.path / (contributions.contribution_dir(self.number) + ".tmp")
            self.dir.mkdir()
            self._lock = FileLock(self.dir / "lock", remove=False).acquire()

    @property
    def input_dir(self) -> Path:
        """Where an upload or a download of this contribution may be written."""
        d = self.dir / "input"
        d.mkdir(exist_ok=True)
        return d

    def read(self, source: str, *, name: str | None = None, display: str | None = None) -> None:
        """Read ``source`` (a path or URL) into this contribution. ``name`` gives the file
        name to detect the format from; ``display`` how errors name the input."""
        path, fmt_name = contributions.fetch(source, self.input_dir, name=name)
        display = display or source
        rec = self.record
        assert rec is not None, "use Adding as a context manager"
        with Progress(f"{rec.spec.name}: {Path(fmt_name).name}", show=self.show_progress,
                      report=self.dir / PROGRESS) as bar:
            index = _index_file(self.txn.root, rec.spec)
            rows, schema = contributions.spool(
                self.dir, path, display, fmt_name, rec.spec, self.txn.schema(),
                batch_rows=rec.options.batch_rows, progress=bar, index_file=index,
                memory_limit=rec.options.memory_limit)
        self._rows, self._schema = rows, schema
        self._bytes = path.stat().st_size
        self._source, self._format = display, Path(fmt_name).suffix.lstrip(".")
        shutil.rmtree(self.dir / "input", ignore_errors=True)
        crashpoints.reached("add-spooled")

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None:
                if self._schema is None:
                    raise IngestError("nothing was read into the contribution")
                self._record()
        finally:
            if self._lock is not None:
                self._lock.release()
            if self.result is None:
                shutil.rmtree(self.dir, ignore_errors=True)

    def _record(self) -> None:
        try:
            with self.txn.locked(blocking=True):
                rec = self.txn.load()
                if rec.state is not State.OPEN:
                    raise TransactionStateError(
                        f"transaction {rec.id} became {rec.state.value} while this "
                        "contribution was read; not added")
                assert self._schema is not None
                schema = self.txn.schema()
                if schema is None:
                    self.txn.set_schema(self._schema)
                elif schema != self._schema:
                    contributions.conform_spool(self.dir, schema, self._source)
                final = self.txn.path / contributions.contribution_dir(self.number)
                os.rename(self.dir, final)
                self.dir = final
                (final / "lock").unlink(missing_ok=True)
                c = Contribution(self.number, self._source, self._format, self._rows,
                                 self._bytes)
                self.txn.save(replace(rec, contributions=rec.contributions + (c,)))
                self.result = c
                crashpoints.reached("add-recorded")
        except UnknownTransactionError:
            raise TransactionStateError(
                f"transaction {self.txn.id} was aborted while this contribution was read"
            ) from None


def adding(root: str | os.PathLike, tid: str, *, show_progress: bool | None = None) -> Adding:
    return Adding(Path(root), tid, show_progress=show_progress)


def add(root: str | os.PathLike, tid: str, sources: Sequence[str | os.PathLike], *,
        show_progress: bool | None = None, parallel: int | None = None) -> list[Contribution]:
    """Read, check and spool ``sources`` (paths or URLs), one contribution each; returns
    them in the order given. ``parallel`` files are read at once (default: one per CPU,
    at most 4; reading, HEALPix and Parquet encoding release the GIL).

    On an error no further file is started; the files already being read finish and are
    kept, the failed one leaves no trace, and the first error (in the order given) is
    raised. Files that were never started are not in the transaction: add them again.
    """
    workers = max(1, min(parallel or _default_parallel(), len(sources)))
    for source in sources[:workers]:
        prefetch(source)
    # Each file, as it starts, has the disk read the one that starts after it (the
    # workers-th next) into the cache meanwhile.
    later = [sources[i + workers] if i + workers < len(sources) else None
             for i in range(len(sources))]
    if workers == 1:
        return [_add_one(root, tid, source, show_progress, ahead=after)
                for source, after in zip(sources, later)]
    order = _InOrder()  # contributions numbered in the order of the sources
    with ThreadPoolExecutor(workers, thread_name_prefix="skyshard-add") as pool:
        futures = [pool.submit(_add_one, root, tid, source, show_progress, order.turn(i),
                               ahead=later[i])
                   for i, source in enumerate(sources)]
        try:
            return [f.result() for f in futures]
        except BaseException:
            order.stop()
            for f in futures:
                f.cancel()
            raise


def _add_one(root: str | os.PathLike, tid: str, source: str | os.PathLike,
             show_progress: bool | None, turn: AbstractContextManager | None = None, *,
             ahead: str | os.PathLike | None = None) -> Contribution:
    if ahead is not None:
        prefetch(ahead)
    a = adding(root, tid, show_progress=show_progress)
    with turn if turn is not None else nullcontext():
        a.reserve()
    with a:
        a.read(os.fspath(source))
    assert a.result is not None
    return a.result


class _InOrder:
    """Turns for parallel adds: the i-th reserves its contribution number after the
    (i-1)-th (the pool starts them in that order, so none waits for one not started);
    after ``stop`` a waiting add starts no more."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._next = 0
        self._stopped = False

    @contextmanager
    def turn(self, i: int) -> Iterator[None]:
        with self._cond:
            self._cond.wait_for(lambda: self._next == i or self._stopped)
            if self._stopped:
                raise IngestError("not started: another file of this add failed")
        try:
            yield
        finally:
            with self._cond:
                self._next += 1
                self._cond.notify_all()

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify_all()


def _default_parallel() -> int:
    return max(1, min(4, cpus()))


def _index_file(root: Path, spec: TableSpec) -> Path | None:
    if spec.kind is not TableKind.DIRECTOR or spec.allow_duplicate_keys:
        return None
    info = _find(_load(root), spec.name)
    if info is None or not info.index_path:
        return None
    return root / info.index_path


# --- commit and publish ------------------------------------------------------------------


def commit(root: str | os.PathLike, tid: str, *, publish: bool = True,
           show_progress: bool | None = None) -> Status:
    """Build the new version(s) of the transaction's table and (unless
    ``publish=False``: then PREPARED) publish them. Resumes an interrupted commit;
    on error nothing is published and the transaction is OPEN again."""
    root = Path(root)
    recover(root)
    txn = _Txn(root, tid)
    with txn.locked(blocking=False):
        rec = txn.load()
        meta = _load(root)
        if rec.id in meta.published_transactions:
            txn.remove()
            return _published_status(meta, rec.id, rec)
        if rec.state is State.PREPARED:
            if publish:
                return _publish_locked(root, [txn])[0]
            return status(root, tid)
        if not rec.contributions:
            raise IngestError(f"transaction {tid}: nothing to commit (add contributions first)")
        rec = txn.save(replace(rec, state=State.COMMITTING, error=None, note=None))
        crashpoints.reached("commit-started")
        with _family_locked(root, rec.spec) as meta:
            shutil.rmtree(txn.work, ignore_errors=True)
            try:
                b = _build(root, meta, txn, rec, show_progress)
            except BaseException as exc:
                shutil.rmtree(txn.work, ignore_errors=True)
                txn.save(replace(rec, state=State.OPEN,
                                 error=str(exc) if isinstance(exc, SkyshardError) else repr(exc)))
                raise
            if not publish:
                _write_atomic(txn.path / PREPARED, json.dumps(b.to_json()))
                txn.save(replace(rec, state=State.PREPARED))
                return status(root, tid)
            try:
                new_meta = versions.publish(root, [b], fsync=rec.options.fsync)
            except BaseException as exc:
                shutil.rmtree(txn.work, ignore_errors=True)
                txn.save(replace(rec, state=State.OPEN, error=str(exc)))
                raise
            crashpoints.reached("cleanup")
            txn.remove()
    collect_garbage(root, grace_s=rec.options.gc_grace_s)
    return _published_status(new_meta, tid, rec)


def publish(root: str | os.PathLike, tids: Sequence[str]) -> list[Status]:
    """Publish PREPARED transactions together, in one atomic rename of ``skyshard.json``
    (all or none; ``versions.ConflictError`` if a table changed since one was built:
    commit that one again)."""
    root = Path(root)
    recover(root)
    with ExitStack() as stack:
        txns = []
        for tid in sorted(set(tids)):
            txn = _Txn(root, tid)
            stack.enter_context(txn.locked(blocking=False))
            txns.append(txn)
        grace = min((t.load().options.gc_grace_s for t in txns),
                    default=IngestOptions().gc_grace_s)
        result = _publish_locked(root, txns)
    collect_garbage(root, grace_s=grace)
    return result


def _publish_locked(root: Path, txns: list[_Txn]) -> list[Status]:
    """Publish PREPARED transactions whose locks the caller holds."""
    meta = _load(root)
    builds, recs, done = [], [], []
    for txn in txns:
        rec = txn.load()
        if rec.id in meta.published_transactions:
            done.append(_published_status(meta, rec.id, rec))
            txn.remove()
            continue
        if rec.state is not State.PREPARED:
            raise TransactionStateError(f"transaction {rec.id} is {rec.state.value}, not "
                                        "PREPARED: commit it (with --no-publish) first")
        builds.append(versions.Build.from_json(json.loads((txn.path / PREPARED).read_text())))
        recs.append((txn, rec))
    if not builds:
        return done
    names = set()
    for b in builds:
        names |= set(b.bases) | set(b.depends)
    with table_locks(root, names):
        new_meta = versions.publish(root, builds, fsync=all(r.options.fsync for _, r in recs))
        crashpoints.reached("cleanup")
        for txn, rec in recs:
            txn.remove()
            done.append(_published_status(new_meta, rec.id, rec))
    return done


def _build(root: Path, meta: CatalogMeta, txn: _Txn, rec: Record,
           show_progress: bool | None) -> versions.Build:
    schema = txn.schema()
    if schema is None:
        raise IngestError(f"transaction {rec.id}: no schema (no contribution recorded)")
    existing = _find(meta, rec.spec.name)
    if existing is not None:
        have = contributions.table_schema(root, existing)
        if have.names != schema.names or [f.type for f in have] != [f.type for f in schema]:
            raise IngestError(
                f"table {existing.name!r} was created by another transaction with other "
                f"columns ({', '.join(have.names)}) than this transaction's "
                f"({', '.join(schema.names)}); abort it")
        if existing.kind is not rec.spec.kind:
            raise IngestError(f"table {existing.name!r} was created meanwhile as a "
                              f"{existing.kind.value} table; abort this transaction")
        schema = have
    work = txn.work
    work.mkdir(parents=True, exist_ok=True)
    found = [(c, txn.path / c.dirname) for c in rec.contributions]
    for c, d in found:
        if not contributions.spool_file(d).exists():
            raise IngestError(f"transaction {rec.id}: contribution {c.number} ({c.source}) "
                              "is missing its spooled rows; abort the transaction")
    ctx = incremental.BuildContext(
        root=root, meta=meta, spec=rec.spec, contributions=found, schema=schema, work=work,
        out=work / "out", transaction=rec.id, memory_limit=rec.options.memory_limit,
        batch_rows=rec.options.batch_rows, show_progress=show_progress,
        report=txn.path / PROGRESS)
    return incremental.build(ctx)


@contextmanager
def _family_locked(root: Path, spec: TableSpec) -> Iterator[CatalogMeta]:
    """Hold the locks of the table and its family; yields the catalog as published."""
    while True:
        family = _family(_load(root), spec)
        with table_locks(root, family):
            meta = _load(root)
            if _family(meta, spec) == family:
                yield meta
                return


def _family(meta: CatalogMeta, spec: TableSpec) -> frozenset[str]:
    names = {spec.name.lower()}
    if spec.director:
        names.add(spec.director.lower())
    if spec.kind is TableKind.DIRECTOR:
        names |= {t.name.lower() for t in meta.tables.values()
                  if t.director and t.director.lower() == spec.name.lower()}
    return frozenset(names)


# --- abort, status, recovery, garbage collection ------------------------------------------


def abort(root: str | os.PathLike, tid: str) -> None:
    """Remove the transaction and everything it wrote. Refused while another process
    commits it, and once it is published."""
    root = Path(root)
    txn = _Txn(root, tid)
    with txn.locked(blocking=False):
        rec = txn.load()
        if rec.id in _load(root).published_transactions:
            txn.remove()
            raise TransactionStateError(f"transaction {tid} is already published")
        txn.remove()


def status(root: str | os.PathLike, tid: str) -> Status:
    root = Path(root)
    txn = _Txn(root, tid)
    try:
        rec = txn.load()
    except UnknownTransactionError:
        meta = _load(root)
        if tid in meta.published_transactions:
            return _published_status(meta, tid, None)
        raise
    running = []
    for report in [txn.path / PROGRESS, *sorted(txn.path.glob(f"c*.tmp/{PROGRESS}"))]:
        r = read_report(report)
        if r is not None:
            running.append(r)
    return Status(rec.id, rec.spec.name, rec.spec.kind.value, rec.state, rec.created,
                  rec.updated, rec.contributions, tuple(running), rec.note, rec.error)


def list_transactions(root: str | os.PathLike) -> list[Status]:
    """Every transaction of the catalog that is not yet published or aborted."""
    root = Path(root)
    folder = root / TRANSACTIONS
    out = []
    if folder.exists():
        for d in sorted(folder.iterdir()):
            if d.is_dir() and not d.name.startswith("."):
                try:
                    out.append(status(root, d.name))
                except (UnknownTransactionError, IngestError):
                    continue
    return sorted(out, key=lambda s: s.created or 0)


def _published_status(meta: CatalogMeta, tid: str, rec: Record | None) -> Status:
    tables = {t.name: t.version for t in meta.tables.values() if t.transaction == tid}
    tables |= {r.table: r.version for r in meta.retired if r.transaction == tid
               and r.table not in tables}
    table = rec.spec.name if rec else next(iter(tables), "")
    kind = rec.spec.kind.value if rec else (
        meta.tables[table].kind.value if table in meta.tables else "")
    return Status(tid, table, kind, State.PUBLISHED, rec.created if rec else None,
                  time.time(), rec.contributions if rec else (), published=tables)


def recover(root: str | os.PathLike) -> list[str]:
    """Clean what killed processes left: in the catalog (``versions.recover``) and in
    transactions nobody works on (partial contributions, interrupted commits, folders
    of published transactions). Returns what was removed or reset."""
    root = Path(root)
    done = versions.recover(root) + clear_stale(root)
    folder = root / TRANSACTIONS
    if not folder.exists():
        return done
    meta = _load(root)
    for d in sorted(folder.iterdir()):
        if not d.is_dir():
            continue
        if d.name.startswith("."):  # a begin that did not finish
            if not is_locked(d / "lock"):
                shutil.rmtree(d, ignore_errors=True)
                done.append(f"{TRANSACTIONS}/{d.name}")
            continue
        txn = _Txn(root, d.name)
        try:
            with txn.locked(blocking=False):
                done += _recover_one(txn, meta)
        except (TransactionStateError, UnknownTransactionError):
            continue  # busy: a live process works on it
    _remove_if_empty(folder)
    return done


def _recover_one(txn: _Txn, meta: CatalogMeta) -> list[str]:
    done: list[str] = []
    try:
        rec = txn.load()
    except SkyshardError:
        txn.remove()
        return [f"{TRANSACTIONS}/{txn.id}"]
    if rec.id in meta.published_transactions:
        txn.remove()
        return [f"{TRANSACTIONS}/{txn.id} (published)"]
    recorded = {c.dirname for c in rec.contributions}
    for d in txn.path.iterdir():
        if not d.is_dir() or not d.name.startswith("c"):
            continue
        if d.name.endswith(".tmp"):
            if not is_locked(d / "lock"):
                shutil.rmtree(d, ignore_errors=True)
                done.append(f"{TRANSACTIONS}/{txn.id}/{d.name}")
        elif d.name not in recorded:
            shutil.rmtree(d, ignore_errors=True)
            done.append(f"{TRANSACTIONS}/{txn.id}/{d.name}")
    (txn.path / PROGRESS).unlink(missing_ok=True)
    for tmp in txn.path.glob("*.tmp"):
        if tmp.is_file():
            tmp.unlink()
    if rec.state is State.COMMITTING:
        shutil.rmtree(txn.work, ignore_errors=True)
        txn.save(replace(rec, state=State.OPEN,
                         note="a commit was interrupted: run commit again, or abort"))
        done.append(f"{TRANSACTIONS}/{txn.id}: interrupted commit, back to OPEN")
    return done


def collect_garbage(root: str | os.PathLike, *, grace_s: float | None = None) -> list[str]:
    """Recovery, then removal of table versions superseded more than ``grace_s`` seconds
    ago (default one hour; see ``versions``). Returns what was removed."""
    root = Path(root)
    done = recover(root)
    grace = IngestOptions().gc_grace_s if grace_s is None else grace_s
    return done + versions.collect_garbage(root, grace_s=grace)


# --- small pieces ------------------------------------------------------------------------


def _load(root: Path) -> CatalogMeta:
    if (root / layout.CATALOG_META).exists():
        return model.load(root)
    return CatalogMeta(root.resolve().name)


def _find(meta: CatalogMeta, name: str) -> TableInfo | None:
    for t in meta.tables.values():
        if t.name.lower() == name.lower():
            return t
    return None


def _size(n: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1000
    return f"{n} B"


__all__ = ["Adding", "State", "Status", "TransactionStateError", "UnknownTransactionError",
           "abort", "add", "adding", "begin", "collect_garbage", "commit", "list_transactions",
           "publish", "recover", "status"]
