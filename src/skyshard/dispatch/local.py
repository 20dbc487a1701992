"""The in-process executor: fragments run on threads against the process's DuckDB.

With ``fragment_partitions=None`` (the default) a query runs as one DuckDB statement over
all its partition files — the cheapest path on one machine — except a full scan of a
big table, which rides that table's shared scan (``scans.SharedScans``: concurrent full
scans read the files once) unless ``shared_scans=False`` (``Database`` passes False
unless opened with ``shared_scans=True``). With a number, partitions
are grouped into fragments of that many, each runs the parallel statement, and the merge
statement combines their results: the path a cluster takes, kept here so it is tested
(shared scans are not used then).
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import pyarrow as pa

from skyshard.dispatch.scans import SharedScans, orphan_sql, scan_request
from skyshard.engine.duck import Engine
from skyshard.errors import SqlError
from skyshard.sql.plan import QueryPlan
from skyshard.sql.split import PARTIALS

log = logging.getLogger("skyshard.dispatch")


@dataclass
class LocalExecutor:
    engine: Engine
    fragment_partitions: int | None = None
    threads: int = 2
    shared_scans: bool = True
    #: The convoys (built from ``engine`` when ``shared_scans``; pass one to tune it).
    scans: SharedScans | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.shared_scans and self.scans is None:
            self.scans = SharedScans(self.engine)

    def run(self, plan: QueryPlan, *, max_rows: int | None = None) -> pa.Table:
        if self.fragment_partitions is None:
            info = self.scans.rides(plan) if self.shared_scans and self.scans else None
            if info is not None:
                try:
                    orphans = orphan_sql(plan, info)
                    partials = [self.engine.query(orphans)] if orphans else []
                    partials += self.scans.partials(scan_request(plan, info), self.engine)
                    return self._merge(plan, partials, max_rows)
                except SqlError as exc:
                    # A statement the split made may fail where the whole query does
                    # not (a function it cannot split): the one statement decides.
                    log.warning("shared scan of %s failed (%s); running it alone",
                                info.name, exc)
            return _named(self.engine.query(plan.single_sql(), max_rows=max_rows), plan)
        if plan.partitions is None or plan.split is None:
            return _named(self.engine.query(plan.single_sql(), max_rows=max_rows), plan)
        chosen = [(p.order, p.pixel) for p in plan.partitions]
        size = max(1, self.fragment_partitions)
        fragments = [chosen[i:i + size] for i in range(0, len(chosen), size)] or [[]]
        statements = [plan.parallel_sql(f, orphans=(i == 0)) for i, f in enumerate(fragments)]
        with ThreadPoolExecutor(max_workers=self.threads) as pool:
            partials = list(pool.map(self.engine.query, statements))
        return self._merge(plan, partials, max_rows)

    def close(self) -> None:
        """Stop the shared scans' threads (``Database.close`` calls this); idempotent."""
        if self.scans is not None:
            self.scans.close()

    def _merge(self, plan: QueryPlan, partials: list[pa.Table],
               max_rows: int | None) -> pa.Table:
        combined = pa.concat_tables(partials, promote_options="permissive")
        merged = self.engine.query(plan.merge_sql(), tables={PARTIALS: combined},
                                   max_rows=max_rows)
        return _named(merged, plan)


def _named(table: pa.Table, plan: QueryPlan) -> pa.Table:
    if plan.names is None or len(plan.names) != table.num_columns:
        return table
    return table.rename_columns(plan.names)
