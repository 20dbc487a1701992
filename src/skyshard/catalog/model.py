"""What a catalog holds: its tables, their roles and where their data lives.

The roles are Qserv's: a *director* table is partitioned by its own position and has a
unique key; a *child* table's rows live in the partition of their director row; a
*replicated* table is small and stored whole. The description is one JSON file,
``skyshard.json``, at the root of the catalog directory, rewritten atomically.

Tables are versioned: an incremental ingest publishes a new version of a table under new
file names (``Object/v2/...``) and retires the old one, which stays on disk (listed in
``retired``) until garbage-collected, so a reader holding the old description keeps
reading consistent files. Fields added after the first format are written only when
they differ from their defaults, so catalogs that never used them read as before.

>>> t = TableInfo(name="Object", kind=TableKind.DIRECTOR, columns=(("objectId", "int64"),),
...               ra="ra", dec="decl", key="objectId")
>>> t.is_partitioned
True
"""

from __future__ import annotations

import enum
import json
import os
import tempfile
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from skyshard.errors import CatalogError
from skyshard.storage import layout, remote
from skyshard.storage.remote import RemotePath

FORMAT_VERSION = 1
MAX_ORDER = 12  # deepest partition order; keeps chunkId within 32 bits


class TableKind(str, enum.Enum):
    DIRECTOR = "director"
    CHILD = "child"
    REPLICATED = "replicated"


@dataclass(frozen=True)
class Partition:
    """One HEALPix pixel of the adaptive tiling, with its row count."""

    order: int
    pixel: int
    rows: int = 0

    @property
    def id(self) -> int:
        """A single integer naming the partition, exposed to SQL as ``chunkId``: the
        partition's first pixel at order 12. Partitions of one tiling never overlap,
        so ids are unique within a table.

        >>> Partition(0, 4).id, Partition(1, 17).id
        (67108864, 71303168)
        """
        return self.pixel << 2 * (MAX_ORDER - self.order)

    @property
    def range29(self) -> tuple[int, int]:
        return layout.pixel_range29(self.order, self.pixel)


@dataclass(frozen=True)
class TableInfo:
    """A table as the planner sees it.

    ``columns`` are ``(name, arrow type string)`` pairs in table order, without the
    hidden ``_healpix_29`` column. ``path`` is relative to the catalog root unless
    absolute (a HATS catalog served in place).
    """

    name: str
    kind: TableKind
    columns: tuple[tuple[str, str], ...]
    ra: str | None = None
    dec: str | None = None
    key: str | None = None
    director: str | None = None
    director_key: str | None = None
    path: str = ""
    margin_path: str | None = None
    margin_arcsec: float | None = None
    margin_partitions: tuple[Partition, ...] = ()
    index_path: str | None = None
    partitions: tuple[Partition, ...] = ()
    orphan_rows: int = 0
    rows: int = 0
    #: per column: (MySQL type as declared, or "" when unknown; nullable)
    column_sql: tuple[tuple[str, bool], ...] = ()
    #: 1 for the first version (files under ``<name>/``), N for ``<name>/vN/``
    version: int = 1
    #: id of the ingest transaction that published this version (None: one-shot ingest
    #: of an older skyshard)
    transaction: str | None = None
    #: the tiling rule the table was built with (HATS ``pixel_threshold``, deepest
    #: order); later increments split partitions by the same rule
    max_rows_per_partition: int | None = None
    max_order: int | None = None

    @property
    def is_partitioned(self) -> bool:
        return self.kind is not TableKind.REPLICATED

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(c for c, _ in self.columns)

    def to_json(self) -> dict:
        d = asdict(self)
        d["kind"] = self.kind.value
        d["columns"] = [list(c) for c in self.columns]
        d["column_sql"] = [list(c) for c in self.column_sql]
        d["partitions"] = [[p.order, p.pixel, p.rows] for p in self.partitions]
        d["margin_partitions"] = [[p.order, p.pixel, p.rows] for p in self.margin_partitions]
        for name, default in _LATER_FIELDS.items():
            if d[name] == default:
                del d[name]
        return d

    @classmethod
    def from_json(cls, d: dict) -> TableInfo:
        d = dict(d)
        d["kind"] = TableKind(d["kind"])
        d["columns"] = tuple(tuple(c) for c in d["columns"])
        d["column_sql"] = tuple(tuple(c) for c in d.get("column_sql", ()))
        d["partitions"] = tuple(Partition(*p) for p in d.get("partitions", ()))
        d["margin_partitions"] = tuple(Partition(*p) for p in d.get("margin_partitions", ()))
        return cls(**d)


#: Fields added to TableInfo after format 1, with the defaults that are not written.
_LATER_FIELDS = {"version": 1, "transaction": None, "max_rows_per_partition": None,
                 "max_order": None}


@dataclass(frozen=True)
class Retired:
    """A superseded table version still on disk: ``paths`` (relative to the catalog
    root) are removed by garbage collection once ``since`` (seconds since the epoch) is
    older than the grace period."""

    table: str
    version: int
    paths: tuple[str, ...]
    since: float
    #: the transaction that had published this version (None: a one-shot ingest)
    transaction: str | None = None

    def to_json(self) -> dict:
        return {"table": self.table, "version": self.version, "paths": list(self.paths),
                "since": self.since, "transaction": self.transaction}

    @classmethod
    def from_json(cls, d: dict) -> Retired:
        return cls(d["table"], int(d["version"]), tuple(d["paths"]), float(d["since"]),
                   d.get("transaction"))


@dataclass(frozen=True)
class CatalogMeta:
    """The whole catalog description: a name, its tables by name, the superseded table
    versions awaiting garbage collection, and a counter bumped by every publish."""

    name: str
    tables: dict[str, TableInfo] = field(default_factory=dict)
    retired: tuple[Retired, ...] = ()
    generation: int = 0

    def table(self, name: str) -> TableInfo:
        for t in self.tables.values():
            if t.name.lower() == name.lower():
                return t
        known = ", ".join(sorted(self.tables)) or "none"
        raise CatalogError(f"no table {name!r} in catalog {self.name!r} (tables: {known})")

    def with_table(self, info: TableInfo) -> CatalogMeta:
        tables = dict(self.tables)
        tables[info.name] = info
        return replace(self, tables=tables)

    @property
    def published_transactions(self) -> set[str]:
        """Ids of the transactions whose versions are current or retired (not yet
        garbage-collected)."""
        ids = {t.transaction for t in self.tables.values()} | {r.transaction for r in self.retired}
        return {i for i in ids if i}

    def to_json(self) -> dict:
        d: dict = {
            "format": FORMAT_VERSION,
            "name": self.name,
            "tables": {n: t.to_json() for n, t in sorted(self.tables.items())},
        }
        if self.generation:
            d["generation"] = self.generation
        if self.retired:
            d["retired"] = [r.to_json() for r in self.retired]
        return d

    @classmethod
    def from_json(cls, d: dict) -> CatalogMeta:
        if d.get("format") != FORMAT_VERSION:
            raise CatalogError(f"unsupported catalog format {d.get('format')!r}")
        return cls(d["name"], {n: TableInfo.from_json(t) for n, t in d["tables"].items()},
                   retired=tuple(Retired.from_json(r) for r in d.get("retired", ())),
                   generation=int(d.get("generation", 0)))


def load(root: str | os.PathLike | RemotePath) -> CatalogMeta:
    """Read ``skyshard.json`` from a catalog directory, local or at a URL
    (``storage.remote``: a ``RemotePath`` or a URL string, read with default storage
    options)."""
    if isinstance(root, RemotePath) or remote.is_url(root):
        root = remote.catalog_root(root)
        path = root / layout.CATALOG_META
        try:
            text = path.read_text()
        except FileNotFoundError as exc:
            detail = str(exc).strip()
            detail = "" if not detail or detail.endswith(layout.CATALOG_META) else f": {detail}"
            raise CatalogError(f"{root}: not a skyshard catalog (no {layout.CATALOG_META}"
                               f"{detail})") from exc
    else:
        path = Path(root) / layout.CATALOG_META
        if not path.exists():
            raise CatalogError(f"{root}: not a skyshard catalog (no {layout.CATALOG_META})")
        text = path.read_text()
    try:
        return CatalogMeta.from_json(json.loads(text))
    except (ValueError, KeyError, TypeError) as exc:
        raise CatalogError(f"{path}: malformed catalog description: {exc}") from exc


def save(root: str | os.PathLike, meta: CatalogMeta) -> None:
    """Write ``skyshard.json`` atomically (write a temporary file, fsync, rename, fsync
    the directory). Concurrent writers must hold the catalog lock (``storage.locks``)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=root, prefix=TEMP_PREFIX, suffix=".json")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(meta.to_json(), f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, root / layout.CATALOG_META)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    try:
        dir_fd = os.open(root, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)


#: Prefix of the temporary files ``save`` writes (a crash may leave one behind).
TEMP_PREFIX = ".skyshard."
