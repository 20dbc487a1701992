"""What every executor offers: run a planned query, return an Arrow table.

``LocalExecutor`` (threads in this process) and ``DaskExecutor`` (worker processes of a
Dask cluster) both satisfy ``Executor``; ``Database`` only calls ``run``.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import pyarrow as pa

from skyshard.sql.plan import QueryPlan


@runtime_checkable
class Executor(Protocol):
    """Runs a ``QueryPlan``; the result has the user's column names."""

    def run(self, plan: QueryPlan, *, max_rows: int | None = None) -> pa.Table:
        """The query's rows; ``QueryLimitError`` when there are more than ``max_rows``."""
        ...


def named(table: pa.Table, plan: QueryPlan) -> pa.Table:
    """``table`` with the user's output column names (by position), when the plan has them."""
    if plan.names is None or len(plan.names) != table.num_columns:
        return table
    return table.rename_columns(plan.names)


__all__ = ["Executor", "named"]
