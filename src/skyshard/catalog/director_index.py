"""The director index: which partition holds a director key.

Stored as a HATS index catalog (``dataset/index/part.0.parquet``: the key, ``Norder``,
``Npix``, sorted by key). Integer keys are loaded once into sorted numpy arrays, so a
lookup is a binary search (microseconds, ~17 bytes per key in memory); other key types
are looked up with a DuckDB query on the sorted file.

>>> import pyarrow as pa
>>> idx = DirectorIndex.from_table(pa.table({"id": [5, 1, 9], "Norder": [1, 1, 2],
...                                          "Npix": [4, 4, 33]}), "id")
>>> sorted(idx.partitions_of([9, 1, 7]))
[(1, 4), (2, 33)]
>>> idx.healpix_of([1]) is None
True
>>> sorted(idx.partitions_between(2, 9))
[(1, 4), (2, 33)]
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from skyshard.errors import ExternalError
from skyshard.storage.remote import RemotePath

HEALPIX = "_healpix_29"


class DirectorIndex:
    def __init__(self, keys: np.ndarray, orders: np.ndarray, pixels: np.ndarray,
                 healpix: np.ndarray | None = None) -> None:
        order = np.argsort(keys, kind="stable")
        self.keys = keys[order]
        self.orders = orders[order].astype(np.uint8)
        self.pixels = pixels[order].astype(np.int64)
        self.healpix = healpix[order].astype(np.int64) if healpix is not None else None

    @classmethod
    def from_table(cls, table: pa.Table, key: str) -> DirectorIndex:
        h = (table.column(HEALPIX).to_numpy(zero_copy_only=False)
             if HEALPIX in table.column_names else None)
        return cls(table.column(key).to_numpy(zero_copy_only=False),
                   table.column("Norder").to_numpy(zero_copy_only=False),
                   table.column("Npix").to_numpy(zero_copy_only=False), h)

    @classmethod
    def load(cls, path: str | Path | RemotePath, key: str) -> DirectorIndex | None:
        """The index in memory, or None when its keys are not integers. ``path`` (a file
        or a glob pattern of files) may be on object storage (``storage.remote``)."""
        if isinstance(path, RemotePath):
            fs = path.fs
            files: list = [url.split("://", 1)[1] for url in path.glob()]
        else:
            fs = None
            files = sorted(Path(path).parent.glob(Path(path).name))
        if not files:
            return None
        try:
            schema = pq.read_schema(files[0], filesystem=fs)
            if not pa.types.is_integer(schema.field(key).type):
                return None
            columns = [key, "Norder", "Npix"] + ([HEALPIX] if HEALPIX in schema.names else [])
            table = pa.concat_tables(pq.read_table(f, columns=columns, filesystem=fs)
                                     for f in files)
        except (OSError, pa.ArrowException) as exc:
            if fs is None:
                raise
            raise ExternalError(f"{path}: cannot read the director index: {exc}") from exc
        if table.column(key).null_count:
            return None
        return cls.from_table(table, key)

    def partitions_of(self, values: Iterable[object]) -> set[tuple[int, int]]:
        wanted = np.array([v for v in values if isinstance(v, (int, np.integer))], dtype=np.int64)
        lo = np.searchsorted(self.keys, wanted, side="left")
        hi = np.searchsorted(self.keys, wanted, side="right")
        out: set[tuple[int, int]] = set()
        for a, b in zip(lo, hi):
            out.update(zip(self.orders[a:b].tolist(), self.pixels[a:b].tolist()))
        return out

    def healpix_of(self, values: Iterable[object]) -> set[int] | None:
        """The ``_healpix_29`` of the rows with these keys (None if the index lacks it)."""
        if self.healpix is None:
            return None
        wanted = np.array([v for v in values if isinstance(v, (int, np.integer))], dtype=np.int64)
        lo = np.searchsorted(self.keys, wanted, side="left")
        hi = np.searchsorted(self.keys, wanted, side="right")
        out: set[int] = set()
        for a, b in zip(lo, hi):
            out.update(self.healpix[a:b].tolist())
        return out

    def partitions_between(self, low: object, high: object) -> set[tuple[int, int]]:
        a = np.searchsorted(self.keys, np.ceil(low), side="left")
        b = np.searchsorted(self.keys, np.floor(high), side="right")
        if b - a > 1_000_000:
            # A wide range: summarise with numpy rather than a Python set of pairs.
            pairs = np.unique(self.orders[a:b].astype(np.int64) << 58 | self.pixels[a:b])
            return {(int(p >> 58), int(p & ((1 << 58) - 1))) for p in pairs}
        return set(zip(self.orders[a:b].tolist(), self.pixels[a:b].tolist()))
