"""Table versions on disk: where each lives, publishing, garbage collection, recovery.

Version 1 of a table is where a one-shot ingest always put it; later versions sit in
numbered folders inside it, each a complete HATS collection::

    CATALOG/Object/                   version 1 (and the table's folder)
      collection.properties           HATS collection of the *current* version
      .skyshard-version               marker: skyshard wrote this folder
      Object/ Object_60arcs/ Object_objectId_index/
      v2/                             version 2: collection.properties, Object/, ...
      v3/ ...

A version's files are never modified after it is published. A new version writes the
partitions an increment touches and hard-links the others (no copy; the old names stay
valid for readers of the old version). Publishing moves the new version folders into
place and renames ``skyshard.json`` over the old one, under the catalog lock: a
``Database`` opened before keeps reading the old version, one opened after reads the
new one.

**Garbage collection rule.** A superseded version is listed in ``skyshard.json``
(``retired``, with the time it was superseded) and removed by ``collect_garbage`` once
it has been superseded for longer than the grace period (``DEFAULT_GRACE_S``, one hour;
run at the end of every commit, and by ``skyshard ingest gc``) and no live reader lease
names it (``storage.leases``: every open ``Database`` pins the versions its queries read,
and moves to the new version at its next query).

**Recovery** (``recover``, under the catalog lock, at every begin, commit and gc) removes
what a killed process left behind: version folders that ``skyshard.json`` does not
reference (marked as ours), temporary ``skyshard.json`` files, old staging folders, and
brings ``collection.properties`` back in line with the current versions.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from skyshard.catalog import model
from skyshard.catalog.model import CatalogMeta, Retired, TableInfo, TableKind
from skyshard.errors import IngestError
from skyshard.storage import crashpoints, layout, leases
from skyshard.storage.locks import catalog_lock

DEFAULT_GRACE_S = 3600.0
MARKER = ".skyshard-version"
_VERSION_DIR = re.compile(r"^v(\d+)$")


def version_root(table: str, version: int) -> str:
    """The folder (relative to the catalog) holding one version of a table.

    >>> version_root("Object", 1), version_root("Object", 3)
    ('Object', 'Object/v3')
    """
    return table if version == 1 else f"{table}/v{version}"


def version_paths(info: TableInfo) -> tuple[str, ...]:
    """What belongs to one version of a table and only to it (relative to the catalog),
    removed when the version is garbage-collected.

    >>> version_paths(TableInfo("F", TableKind.REPLICATED, (), path="F/F.parquet"))
    ('F/F.parquet',)
    >>> version_paths(TableInfo("S", TableKind.CHILD, (), path="S/v2/S", version=2))
    ('S/v2',)
    """
    if info.version > 1:
        return (version_root(info.name, info.version),)
    if info.kind is TableKind.REPLICATED:
        return (info.path,)
    top = Path(info.path).parent
    paths = [info.path]
    for p in (info.margin_path, info.index_path):
        if p:
            rel = Path(p).relative_to(top)
            paths.append(str(top / rel.parts[0]))
    if info.orphan_rows:
        paths.append(str(top / "orphans.parquet"))
    return tuple(paths)


def is_local(info: TableInfo) -> bool:
    """Whether the table lives in the catalog folder (not a HATS catalog served in place)."""
    return not Path(info.path).is_absolute()


def write_marker(version_dir: Path, table: str, version: int, transaction: str) -> None:
    version_dir.mkdir(parents=True, exist_ok=True)
    (version_dir / MARKER).write_text(json.dumps(
        {"table": table, "version": version, "transaction": transaction}) + "\n")


# --- publishing ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Build:
    """New versions of one or more tables, built under ``out`` (a folder laid out like
    the catalog), waiting to be published. ``bases``: the version each table was built
    on (0 for a new table); ``depends``: versions of other tables the build read (a
    child's director, a director's children), which must not change before publishing."""

    transaction: str
    out: Path
    tables: dict[str, TableInfo]
    bases: dict[str, int]
    depends: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"transaction": self.transaction, "out": str(self.out),
                "tables": {n: t.to_json() for n, t in self.tables.items()},
                "bases": self.bases, "depends": self.depends}

    @classmethod
    def from_json(cls, d: dict) -> Build:
        return cls(d["transaction"], Path(d["out"]),
                   {n: TableInfo.from_json(t) for n, t in d["tables"].items()},
                   {n: int(v) for n, v in d["bases"].items()},
                   {n: int(v) for n, v in d.get("depends", {}).items()})


class ConflictError(IngestError):
    """A prepared build no longer applies: its table changed since it was built."""


def current_version(meta: CatalogMeta, table: str) -> int:
    for t in meta.tables.values():
        if t.name.lower() == table.lower():
            return t.version
    return 0


def publish(root: Path, builds: Sequence[Build], *, fsync: bool = True,
            now: float | None = None) -> CatalogMeta:
    """Make ``builds`` visible at once: move their folders into place and rewrite
    ``skyshard.json`` (the one atomic step). Raises ``ConflictError`` (and changes
    nothing) when a table's published version is no longer the one a build started from."""
    now = time.time() if now is None else now
    with catalog_lock(root):
        meta = _load(root)
        seen: set[str] = set()
        for b in builds:
            for name, base in b.bases.items():
                if name.lower() in seen:
                    raise ConflictError(f"table {name!r} is changed by two of the transactions "
                                        "being published")
                seen.add(name.lower())
                if current_version(meta, name) != base:
                    raise ConflictError(
                        f"table {name!r} changed since transaction {b.transaction} was built "
                        f"(version {current_version(meta, name)}, built on {base}); "
                        "commit it again")
            for name, version in b.depends.items():
                if current_version(meta, name) != version:
                    raise ConflictError(
                        f"table {name!r}, which transaction {b.transaction} depends on, "
                        "changed since it was built; commit it again")
        _remove_unreferenced(root, meta)
        moved: list[tuple[Path, Path]] = []
        try:
            for b in builds:
                for info in b.tables.values():
                    rel = version_root(info.name, info.version)
                    src, dst = b.out / rel, root / rel
                    if fsync:
                        _fsync_tree(src)
                    if dst.exists():
                        raise IngestError(f"{dst} exists but is not a table version of the "
                                          "catalog; remove it first")
                    dst.parent.mkdir(parents=True, exist_ok=True)
                    os.rename(src, dst)
                    moved.append((src, dst))
                    crashpoints.reached("publish-moved")
            if fsync:
                for _, dst in moved:
                    _fsync_dir(dst.parent)
            tables = dict(meta.tables)
            retired = list(meta.retired)
            for b in builds:
                for info in b.tables.values():
                    old = _find(tables, info.name)
                    if old is not None:
                        del tables[old.name]
                        if is_local(old):
                            retired.append(Retired(old.name, old.version, version_paths(old), now,
                                                   old.transaction))
                    tables[info.name] = info
            new_meta = replace(meta, tables=tables, retired=tuple(retired),
                               generation=meta.generation + 1)
            crashpoints.reached("publish-before-save")
            model.save(root, new_meta)
        except BaseException:
            for src, dst in reversed(moved):
                if dst.exists() and not src.exists():
                    os.rename(dst, src)
            raise
        crashpoints.reached("publish-after-save")
        for b in builds:
            for info in b.tables.values():
                sync_collection(root, info)
        return new_meta


def _find(tables: dict[str, TableInfo], name: str) -> TableInfo | None:
    for t in tables.values():
        if t.name.lower() == name.lower():
            return t
    return None


def _load(root: Path) -> CatalogMeta:
    if (root / layout.CATALOG_META).exists():
        return model.load(root)
    return CatalogMeta(root.resolve().name)


def sync_collection(root: Path, info: TableInfo) -> None:
    """Point ``TABLE/collection.properties`` at the table's current version, so HATS
    readers (``lsdb.open_catalog("CATALOG/TABLE")``) open what skyshard serves."""
    if not is_local(info) or info.kind is TableKind.REPLICATED or info.version == 1:
        return
    src = root / version_root(info.name, info.version) / layout.COLLECTION_PROPERTIES
    dst = root / info.name / layout.COLLECTION_PROPERTIES
    if not src.exists():
        return
    prefix = f"v{info.version}/"
    lines = []
    for line in src.read_text().splitlines():
        key, eq, value = line.partition("=")
        if eq and key.strip() in ("hats_primary_table_url", "all_margins", "default_margin"):
            value = " ".join(prefix + v for v in value.split())
        elif eq and key.strip() == "all_indexes":
            words = value.split()
            value = " ".join(w if i % 2 == 0 else prefix + w for i, w in enumerate(words))
        lines.append(f"{key}{eq}{value}" if eq else line)
    text = "\n".join(lines) + "\n"
    if dst.exists() and dst.read_text() == text:
        return
    tmp = dst.with_name(dst.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, dst)


# --- garbage collection and recovery ----------------------------------------------------


def collect_garbage(root: Path, *, grace_s: float = DEFAULT_GRACE_S,
                    now: float | None = None) -> list[str]:
    """Remove retired versions superseded more than ``grace_s`` seconds ago; returns the
    removed paths (relative to the catalog)."""
    now = time.time() if now is None else now
    if not (root / layout.CATALOG_META).exists():
        return []
    with catalog_lock(root):
        meta = model.load(root)
        pinned = leases.live_versions(root, now=now)
        due = [r for r in meta.retired
               if now - r.since >= grace_s and (r.table, r.version) not in pinned]
        if not due:
            return []
        removed = []
        for r in due:
            for rel in r.paths:
                _remove(root / rel)
                removed.append(rel)
            crashpoints.reached("gc-removed")
        keep = tuple(r for r in meta.retired if r not in due)
        model.save(root, replace(meta, retired=keep))
        return removed


def recover(root: Path) -> list[str]:
    """Remove what killed writers left behind (see the module docstring); returns the
    removed paths. Safe at any time: it runs under the catalog lock, and live writers
    only add files to a catalog under that lock."""
    if not root.exists():
        return []
    with catalog_lock(root):
        meta = _load(root)
        removed = _remove_unreferenced(root, meta) + leases.remove_dead(root)
        for info in meta.tables.values():
            sync_collection(root, info)
        return removed


def _remove_unreferenced(root: Path, meta: CatalogMeta) -> list[str]:
    removed: list[str] = []
    for tmp in root.glob(model.TEMP_PREFIX + "*.json"):
        tmp.unlink(missing_ok=True)
        removed.append(tmp.name)
    staging = root / layout.STAGING
    if staging.exists():
        shutil.rmtree(staging, ignore_errors=True)
        removed.append(layout.STAGING)
    names = {t.name for t in meta.tables.values() if is_local(t)}
    for child in root.iterdir():
        if child.name.startswith(".") or not child.is_dir():
            continue
        if child.name not in names and (child / MARKER).exists():
            shutil.rmtree(child)  # a new table whose publish was interrupted
            removed.append(child.name)
    for info in meta.tables.values():
        if not is_local(info):
            continue
        keep = {info.version} | {r.version for r in meta.retired if r.table == info.name}
        folder = root / info.name
        if not folder.is_dir():
            continue
        for child in folder.iterdir():
            m = _VERSION_DIR.match(child.name)
            if m and int(m.group(1)) not in keep and (child / MARKER).exists():
                shutil.rmtree(child)
                removed.append(f"{info.name}/{child.name}")
        tmp = folder / (layout.COLLECTION_PROPERTIES + ".tmp")
        tmp.unlink(missing_ok=True)
    return removed


def live_paths(meta: CatalogMeta) -> set[str]:
    """Paths (relative to the catalog) of every current and retired version."""
    out: set[str] = set()
    for info in meta.tables.values():
        if is_local(info):
            out.update(version_paths(info))
    for r in meta.retired:
        out.update(r.paths)
    return out


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _fsync_tree(top: Path) -> None:
    """Flush a freshly written tree to disk before it becomes visible."""
    for dirpath, _, files in os.walk(top):
        for name in files:
            fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _fsync_dir(Path(dirpath))


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
