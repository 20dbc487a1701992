"""The comparison of large answers, column by column with NumPy and Arrow.

Near-neighbour self-joins return up to a million rows; comparing them value by value in
Python takes minutes. Here each column becomes one typed array on each side (integers,
floats, strings or bytes), both sides are sorted the same way (rounded values first,
then exact ones, NULLs first), and columns are compared at once with the tolerances of
:mod:`skyshard.itest.compare`. Columns of other kinds make it give up (None), and the
exact Python comparison runs instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["bulk_difference"]

_FIELD_BIT = 16
_FIELD_FLOAT = 4
_FIELD_DOUBLE = 5
_NOT_FIXED_DEC = 31
_DECIMALS = (0, 246)  # DECIMAL, NEWDECIMAL
_REL_TOL = 1e-9
_ABS_TOL = 1e-12


def _column(mine: pa.Array, ref: list[Any], ref_type: int | None) -> tuple[str, pa.Array, pa.Array] | None:
    """(kind, skyshard array, reference array) in a common type, or None. Kinds: int,
    float (skyshard's values are doubles), exact (skyshard's are integers or decimals
    compared with fractional reference values), str, bytes."""
    present = [v for v in ref if v is not None]
    typ = mine.type
    if ref_type == _FIELD_BIT:
        ref = [None if v is None else int.from_bytes(v, "big") for v in ref]
        present = [v for v in ref if v is not None]
    if pa.types.is_boolean(typ):
        mine, typ = mine.cast(pa.int8()), pa.int8()
    if all(type(v) is int for v in present) and (pa.types.is_integer(typ) or pa.types.is_null(typ)):
        try:
            return "int", mine.cast(pa.int64()), pa.array(ref, pa.int64())
        except (pa.ArrowInvalid, OverflowError):
            return None
    numeric = pa.types.is_integer(typ) or pa.types.is_floating(typ) or pa.types.is_decimal(typ)
    if numeric and all(isinstance(v, (int, float, Decimal)) and not isinstance(v, bool) for v in present):
        if any(isinstance(v, Decimal) for v in present) and ref_type not in (_FIELD_FLOAT, _FIELD_DOUBLE,
                                                                            *_DECIMALS):
            return None  # a tolerance read from each value's text: the exact path
        kind = "float" if pa.types.is_floating(typ) else "exact"
        return kind, mine.cast(pa.float64()), pa.array([None if v is None else float(v) for v in ref],
                                                       pa.float64())
    if pa.types.is_string(typ) and all(isinstance(v, str) for v in present):
        return "str", mine, pa.array(ref, pa.string())
    if pa.types.is_binary(typ) and all(isinstance(v, bytes) for v in present):
        return "bytes", mine, pa.array(ref, pa.binary())
    return None


def _coarse(values: pa.Array) -> pa.Array:
    """Floats rounded to 4 significant digits."""
    x = values.to_numpy(zero_copy_only=False)
    with np.errstate(divide="ignore", invalid="ignore"):
        scale = np.where((x == 0) | ~np.isfinite(x), 1.0, 10.0 ** np.floor(np.log10(np.abs(x))))
        rounded = np.round(x / scale, 3) * scale
    return pa.array(rounded, pa.float64(), mask=np.asarray(values.is_null()))


def _sorted(columns: list[tuple[str, pa.Array]]) -> np.ndarray:
    numeric = ("float", "exact")
    keys = {f"c{i}": (_coarse(a) if kind in numeric else a) for i, (kind, a) in enumerate(columns)}
    keys |= {f"f{i}": a for i, (kind, a) in enumerate(columns) if kind in numeric}
    table = pa.table(keys)
    order = [(k, "ascending", "at_start") for k in keys]
    return pc.sort_indices(table, sort_keys=order).to_numpy()


def _mismatch(kind: str, a: pa.Array, b: pa.Array, ref_type: int | None, scale: int | None) -> np.ndarray:
    null_a, null_b = np.asarray(a.is_null()), np.asarray(b.is_null())
    both = ~null_a & ~null_b
    if kind not in ("float", "exact"):
        equal = pc.fill_null(pc.equal(a, b), False).to_numpy(zero_copy_only=False)
        return (null_a != null_b) | (both & ~equal)
    x = a.to_numpy(zero_copy_only=False)
    y = b.to_numpy(zero_copy_only=False)
    with np.errstate(divide="ignore", invalid="ignore"):
        printed = None  # half a unit of the reference's last printed digit
        if ref_type == _FIELD_FLOAT:
            printed = np.where(y == 0, 0.5e-5, 0.5 * 10.0 ** (np.floor(np.log10(np.abs(y))) - 5))
        elif scale is not None and (ref_type in _DECIMALS or (
                ref_type == _FIELD_DOUBLE and scale < _NOT_FIXED_DEC)):
            printed = np.full(len(y), 0.5 * 10.0 ** -scale)
        rel = np.maximum(_ABS_TOL, _REL_TOL * np.maximum(np.abs(x), np.abs(y)))
        if printed is None:
            tol = rel
        else:
            printed = printed * (1 + 1e-9)
            tol = np.maximum(printed, rel) if kind == "float" else printed
        close = (np.abs(x - y) <= tol) | ((x == y) & np.isinf(x))
    return (null_a != null_b) | (both & ~close)


def bulk_difference(mine: pa.Table, ref_rows: Sequence[tuple], ref_types: Sequence[int | None],
                    ref_scales: Sequence[int | None] | None, *, sort: bool,
                    ) -> tuple[bool, tuple[int, int, Any, Any] | None] | None:
    """Compare equally long answers: (True, None) when equal; (False, (row, column,
    skyshard value, reference value)) at the first difference (rows counted after
    sorting when ``sort``); None when some column is of a kind this cannot compare."""
    scales = list(ref_scales) if ref_scales is not None else [None] * mine.num_columns
    columns: list[tuple[str, pa.Array, pa.Array]] = []
    for i in range(mine.num_columns):
        col = _column(mine.column(i).combine_chunks(), [r[i] for r in ref_rows], ref_types[i])
        if col is None:
            return None
        columns.append(col)
    if sort:
        mine_order = _sorted([(k, a) for k, a, _ in columns])
        ref_order = _sorted([(k, b) for k, _, b in columns])
        columns = [(k, a.take(mine_order), b.take(ref_order)) for k, a, b in columns]
    first: tuple[int, int] | None = None
    for c, (kind, a, b) in enumerate(columns):
        bad = np.flatnonzero(_mismatch(kind, a, b, ref_types[c], scales[c]))
        if len(bad) and (first is None or bad[0] < first[0]):
            first = (int(bad[0]), c)
    if first is None:
        return True, None
    r, c = first
    return False, (r, c, columns[c][1][r].as_py(), columns[c][2][r].as_py())
