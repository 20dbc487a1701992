"""The in-process executor: fragments run on threads against the process's DuckDB.

With ``fragment_partitions=None`` (the default) a query runs as one DuckDB statement over
all its partition files — the cheapest path on one machine. With a number, partitions
are grouped into fragments of that many, each runs the parallel statement, and the merge
statement combines their results: the path a cluster takes, kept here so it is tested.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pyarrow as pa

from skyshard.engine.duck import Engine
from skyshard.sql.plan import QueryPlan
from skyshard.sql.split import PARTIALS


@dataclass
class LocalExecutor:
    engine: Engine
    fragment_partitions: int | None = None
    threads: int = 2

    def run(self, plan: QueryPlan, *, max_rows: int | None = None) -> pa.Table:
        if self.fragment_partitions is None or plan.partitions is None or plan.split is None:
            return _named(self.engine.query(plan.single_sql(), max_rows=max_rows), plan)
        chosen = [(p.order, p.pixel) for p in plan.partitions]
        size = max(1, self.fragment_partitions)
        fragments = [chosen[i:i + size] for i in range(0, len(chosen), size)] or [[]]
        statements = [plan.parallel_sql(f, orphans=(i == 0)) for i, f in enumerate(fragments)]
        with ThreadPoolExecutor(max_workers=self.threads) as pool:
            partials = list(pool.map(self.engine.query, statements))
        combined = pa.concat_tables(partials, promote_options="permissive")
        merged = self.engine.query(plan.merge_sql(), tables={PARTIALS: combined},
                                   max_rows=max_rows)
        return _named(merged, plan)


def _named(table: pa.Table, plan: QueryPlan) -> pa.Table:
    if plan.names is None or len(plan.names) != table.num_columns:
        return table
    return table.rename_columns(plan.names)
