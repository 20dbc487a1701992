"""Results of asynchronous queries: in memory up to a budget, spilled to Parquet above it.

``put`` keeps a table in memory while the total held stays within ``memory_bytes``,
otherwise writes ``<dir>/result_<id>.parquet`` and forgets the table. ``get`` hands
back a ``StoredResult`` that reads either way, batch by batch, so a large result is
streamed to a client without being loaded whole. Results older than ``ttl_s`` are
deleted by ``expire`` (the query service calls it on every submission).

>>> import pyarrow as pa, tempfile
>>> store = ResultStore(tempfile.mkdtemp(), memory_bytes=0)
>>> store.put(7, pa.table({"x": [1, 2, 3]})).spilled
True
>>> store.get(7).table().column("x").to_pylist()
[1, 2, 3]
>>> store.close()
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq


@dataclass
class StoredResult:
    """One query's result, in memory or in a Parquet file."""

    query_id: int
    schema: pa.Schema
    num_rows: int
    nbytes: int
    created: float = field(default_factory=time.time)
    memory: pa.Table | None = None
    path: Path | None = None

    @property
    def spilled(self) -> bool:
        return self.path is not None

    def batches(self, size: int = 10_000) -> Iterator[pa.RecordBatch]:
        if self.memory is not None:
            yield from self.memory.to_batches(max_chunksize=size)
            return
        yield from pq.ParquetFile(self.path).iter_batches(batch_size=size)

    def table(self) -> pa.Table:
        if self.memory is not None:
            return self.memory
        return pq.read_table(self.path)


class ResultStore:
    """Results by query id. Thread-safe."""

    def __init__(self, directory: str | Path | None, *, memory_bytes: int,
                 ttl_s: float = 3600.0) -> None:
        self._own_dir = directory is None
        self.directory = Path(directory) if directory is not None else Path(
            tempfile.mkdtemp(prefix="skyshard-results-"))
        self.directory.mkdir(parents=True, exist_ok=True)
        self.memory_bytes = memory_bytes
        self.ttl_s = ttl_s
        self._results: dict[int, StoredResult] = {}
        self._held = 0
        self._lock = threading.Lock()

    def put(self, query_id: int, table: pa.Table) -> StoredResult:
        size = table.nbytes
        with self._lock:
            keep = self._held + size <= self.memory_bytes
            if keep:
                self._held += size
        if keep:
            stored = StoredResult(query_id, table.schema, table.num_rows, size, memory=table)
        else:
            path = self.directory / f"result_{query_id}.parquet"
            pq.write_table(table, path)
            stored = StoredResult(query_id, table.schema, table.num_rows, size, path=path)
        with self._lock:
            self._results[query_id] = stored
        return stored

    def get(self, query_id: int) -> StoredResult | None:
        with self._lock:
            return self._results.get(query_id)

    def delete(self, query_id: int) -> bool:
        with self._lock:
            stored = self._results.pop(query_id, None)
            if stored is not None and stored.memory is not None:
                self._held -= stored.nbytes
        if stored is not None and stored.path is not None:
            stored.path.unlink(missing_ok=True)
        return stored is not None

    def expire(self, now: float | None = None) -> list[int]:
        """Delete results older than the time to live; their query ids."""
        now = time.time() if now is None else now
        with self._lock:
            old = [i for i, r in self._results.items() if now - r.created > self.ttl_s]
        for i in old:
            self.delete(i)
        return old

    @property
    def held_bytes(self) -> int:
        return self._held

    def close(self) -> None:
        for i in list(self._results):
            self.delete(i)
        if self._own_dir:
            shutil.rmtree(self.directory, ignore_errors=True)
