"""Ingest: input files -> a table of the catalog, published atomically.

``ingest`` is the one-shot form of a transaction (``transactions``): begin, add every
file, commit; on any error the transaction is aborted, so the catalog is left exactly as
it was. The work happens in ``CATALOG/.transactions/<id>/`` and becomes visible in one
atomic rename of ``skyshard.json``.

Director tables (memory bounded by the batch size and the memory limit)::

    add      read batches -> check -> add _healpix_29 -> sort each batch by it ->
             spool (Arrow IPC); histogram
    commit   histogram -> adaptive partitions (retiling: partitioning.align's rule);
             one region of the sky at a time, the spooled batches' slices are merged
             by _healpix_29; the sorted stream is cut into one file per partition,
             copied into the margins of adjacent partitions, and its (key, partition)
             pairs go to the director index

Child tables take the ``_healpix_29`` of their director row (looked up in the director
index), so they share the director's partitions. A child row whose director row is
missing goes to the table's ``orphans.parquet``, which every query on the table reads.
Replicated tables are stored whole. ``append=True`` loads into an existing table
(``incremental``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import pyarrow as pa

from skyshard.catalog import model
from skyshard.catalog.model import TableInfo
from skyshard.errors import IngestError
from skyshard.storage import layout, transactions
from skyshard.storage.options import (
    DEFAULT_MARGIN_ARCSEC,
    DEFAULT_MAX_ORDER,
    DEFAULT_MAX_ROWS,
    IngestOptions,
)

__all__ = ["DEFAULT_MARGIN_ARCSEC", "DEFAULT_MAX_ORDER", "DEFAULT_MAX_ROWS", "IngestOptions",
           "ingest"]


def ingest(
    catalog_dir: str | os.PathLike,
    table: str,
    files: Sequence[str | os.PathLike],
    *,
    ra: str | None = None,
    dec: str | None = None,
    key: str | None = None,
    director: str | None = None,
    director_key: str | None = None,
    replicated: bool = False,
    schema: pa.Schema | str | os.PathLike | None = None,
    options: IngestOptions | None = None,
    append: bool = False,
) -> TableInfo:
    """Load ``files`` (paths or URLs) into a new table of the catalog at ``catalog_dir``
    (created if needed) and publish it. Returns the published table description.

    The role follows from the arguments: ``replicated=True`` -> replicated;
    ``director=`` -> child (keyed by ``director_key``, default the director's key);
    otherwise ``ra``/``dec``/``key`` make a director table. With ``append=True`` the
    table may exist: the rows are added to it (role arguments may then be left out).
    """
    opts = options or IngestOptions()
    root = Path(catalog_dir)
    if not files:
        raise IngestError("no input files given")
    missing = [str(f) for f in files if "://" not in str(f) and not Path(f).exists()]
    if missing:
        raise IngestError(f"input file not found: {', '.join(missing)}")
    if not append and (root / layout.CATALOG_META).exists():
        meta = model.load(root)
        if any(t.lower() == table.lower() for t in meta.tables):
            raise IngestError(f"table {table!r} already exists in catalog {str(root)!r} "
                              "(append=True / --append adds rows to it)")
    created = not root.exists()
    tid = None
    try:
        tid = transactions.begin(root, table, ra=ra, dec=dec, key=key, director=director,
                                 director_key=director_key, replicated=replicated,
                                 schema=schema, options=opts).id
        transactions.add(root, tid, files, show_progress=opts.progress)
        done = transactions.commit(root, tid, show_progress=opts.progress)
    except BaseException:
        if tid is not None:
            try:
                transactions.abort(root, tid)
            except transactions.UnknownTransactionError:
                pass
        if created and not (root / layout.CATALOG_META).exists():
            _remove_empty_tree(root)
        raise
    meta = model.load(root)
    return meta.table(done.table)


def _remove_empty_tree(root: Path) -> None:
    """Remove a catalog folder this call created, if nothing was published in it."""
    for dirpath, _, files in os.walk(root, topdown=False):
        if files:
            return
        try:
            os.rmdir(dirpath)
        except OSError:
            return
