"""Comparing query results: same rows, floats within a tolerance."""

from __future__ import annotations

import decimal
import math

import pyarrow as pa


def _norm(v):
    if isinstance(v, decimal.Decimal):
        return float(v)
    if isinstance(v, float) and math.isnan(v):
        return "NaN"
    return v


def _sort_key(row):
    return tuple((0, "") if v is None else
                 (1, round(v, 6)) if isinstance(v, float) else (2, str(v)) for v in row)


def rows_of(table: pa.Table) -> list[tuple]:
    return [tuple(_norm(v) for v in r.values()) for r in table.to_pylist()] if table.num_columns \
        else []


def assert_same_rows(got: pa.Table, want: pa.Table, *, ordered: bool, rel: float = 1e-7) -> None:
    """Same rows (as multisets unless ``ordered``), floats within ``rel``."""
    assert got.num_columns == want.num_columns, (got.column_names, want.column_names)
    a, b = rows_of(got), rows_of(want)
    assert len(a) == len(b), f"{len(a)} rows, expected {len(b)}"
    if not ordered:
        a, b = sorted(a, key=_sort_key), sorted(b, key=_sort_key)
    for i, (x, y) in enumerate(zip(a, b)):
        for u, v in zip(x, y):
            if isinstance(u, float) and isinstance(v, float | int) and not isinstance(v, bool):
                assert math.isclose(u, v, rel_tol=rel, abs_tol=1e-9), f"row {i}: {x} != {y}"
            elif isinstance(v, float) and isinstance(u, int):
                assert math.isclose(u, v, rel_tol=rel, abs_tol=1e-9), f"row {i}: {x} != {y}"
            else:
                assert u == v, f"row {i}: {x} != {y}"
