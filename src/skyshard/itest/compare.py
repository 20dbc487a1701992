"""Compare skyshard's answer (an Arrow table) with the reference rows.

The answers must have the same number of columns and of rows, and equal values:

- integers, strings, bytes, dates exactly; NULL only equals NULL;
- DOUBLE within a relative 1e-9 (absolute 1e-12 near zero): the two engines may add
  in a different order, and skyshard merges partial aggregates;
- FLOAT, DECIMAL and fixed-decimals DOUBLE (``STDDEV``, ``PI()``) reference values
  come as the text MariaDB prints (FLOAT with 6 significant digits, ``310565000000``
  for 310565011456; DECIMAL with its scale, e.g. ``AVG`` of integers with 4 decimals):
  they match any number within half a unit of their last significant digit, or within
  a relative 1e-9 when skyshard's value is a double (``AVG`` of 15-digit integers is
  an exact DECIMAL in MySQL, a double in DuckDB). The tolerance is looser than 1e-9
  only where the reference itself says no more;
- ``BIT`` values (raw bytes in MySQL) equal the integer of their bytes; booleans equal
  0 and 1, as MySQL has no boolean type.

Row order. Qserv's own test sorts the printed lines when the query has ``-- pragma
sortresult`` and otherwise compares them in order. skyshard runs partitions in
parallel, so without ``ORDER BY`` its row order is as arbitrary as SQL allows; we
therefore compare:

- with ``ORDER BY`` and no ``sortresult``: in order, except that rows tied on the
  ORDER BY keys may come in any order among themselves (when the keys are not output
  columns the reference is asked for them too, see :func:`with_order_keys`); with a
  ``LIMIT`` the last group of ties may be cut differently, so only its keys are
  compared;
- without ``ORDER BY``, or with ``sortresult``: as multisets (sorted);
- ``LIMIT`` without ``ORDER BY``: any rows may be chosen, so the reference runs without
  its ``LIMIT`` and skyshard's rows must be as many as the limit allows and all be found
  among the reference's.

The first difference is reported: row, column and both values.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Protocol

import pyarrow as pa

from skyshard.itest.bulk_compare import bulk_difference

__all__ = ["Ordering", "Reference", "compare", "ordering_of", "same_value", "with_order_keys", "without_limit"]

REL_TOL = 1e-9
ABS_TOL = 1e-12
_FIELD_BIT = 16  # MySQL field type codes
FIELD_FLOAT = 4
FLOAT_DIGITS = 6  # MariaDB prints FLOAT values with 6 significant digits


#: Answers at least this long are compared column-wise first (bulk_compare); a
#: difference in one longer than EXACT_MAX_ROWS is reported from there.
BULK_ROWS = 5_000
EXACT_MAX_ROWS = 50_000


class Reference(Protocol):
    """The reference answer: column names, MySQL type codes, rows, DECIMAL scales."""

    columns: list[str]
    types: list[int | None]
    rows: list[tuple]
    scales: list[int | None] | None


@dataclass(frozen=True)
class Ordering:
    """What the query says about row order: ORDER BY (and which output columns are its
    keys, when they all are), LIMIT."""

    ordered: bool = False
    keys: tuple[int, ...] | None = None
    limit: int | None = None


# --- the query's ordering -------------------------------------------------------------


def ordering_of(sql: str, columns: Sequence[str]) -> Ordering:
    """ORDER BY and LIMIT of the top-level statement (MySQL), keys mapped to ``columns``."""
    import sqlglot
    from sqlglot import exp

    try:
        tree = sqlglot.parse_one(sql, read="mysql")
    except Exception:  # noqa: BLE001 - unparsable: no ordering known
        return Ordering()
    limit = None
    if (lim := tree.args.get("limit")) is not None:
        value = lim.args.get("expression")
        if isinstance(value, exp.Literal) and value.is_int:
            limit = int(value.this)
    order = tree.args.get("order")
    if order is None:
        return Ordering(limit=limit)
    selects = tree.selects if isinstance(tree, exp.Select) else []
    star = any(isinstance(s, exp.Star) or (isinstance(s, exp.Column) and s.is_star) for s in selects)
    keys: list[int] = []
    for item in order.expressions:
        index = _key_index(item.this, selects if not star else [], columns)
        if index is None:
            return Ordering(ordered=True, keys=None, limit=limit)
        keys.append(index)
    return Ordering(ordered=True, keys=tuple(keys), limit=limit)


def _key_index(key: Any, selects: list, columns: Sequence[str]) -> int | None:
    from sqlglot import exp

    if isinstance(key, exp.Literal) and key.is_int:
        i = int(key.this) - 1
        return i if 0 <= i < len(columns) else None
    for i, item in enumerate(selects):
        bare = item.this if isinstance(item, exp.Alias) else item
        if bare == key or (isinstance(key, exp.Column) and not key.table
                           and item.alias_or_name.lower() == key.name.lower()):
            return i
    if isinstance(key, exp.Column):
        matches = [i for i, c in enumerate(columns) if c.lower() == key.name.lower()]
        if len(matches) == 1:
            return matches[0]
    return None


KEY_PREFIX = "_itest_key"


def with_order_keys(sql: str) -> tuple[str, int] | None:
    """``sql`` (MySQL) with its ORDER BY expressions appended to the select list, and
    how many: run on the reference when the keys are not output columns, so that rows
    tied on them can be told apart. None for DISTINCT, UNION or text sqlglot cannot
    read."""
    import sqlglot
    from sqlglot import exp

    try:
        tree = sqlglot.parse_one(sql, read="mysql")
    except Exception:  # noqa: BLE001
        return None
    order = tree.args.get("order")
    if not isinstance(tree, exp.Select) or order is None or tree.args.get("distinct"):
        return None
    keys = [exp.alias_(o.this.copy(), f"{KEY_PREFIX}{i}") for i, o in enumerate(order.expressions)]
    tree.set("expressions", [*tree.expressions, *keys])
    try:
        return tree.sql(dialect="mysql"), len(keys)
    except Exception:  # noqa: BLE001
        return None


_TRAILING_LIMIT = re.compile(r"\s+LIMIT\s+\d+(?:\s*(?:,|OFFSET)\s*\d+)?\s*;?\s*$", re.IGNORECASE)


def without_limit(sql: str) -> str | None:
    """``sql`` without its trailing ``LIMIT``, or None when it has none."""
    m = _TRAILING_LIMIT.search(sql)
    return sql[: m.start()] if m else None


# --- values ---------------------------------------------------------------------------


def _printed_tolerance(value: Decimal) -> Decimal:
    """Half a unit of the last printed digit (and a hair more, for binary rounding)."""
    exponent = value.as_tuple().exponent
    if not isinstance(exponent, int):
        return Decimal(0)
    return Decimal((0, (5, 0, 0, 0, 0, 0, 0, 0, 1), exponent - 9))


def _significant_tolerance(value: Decimal, digits: int) -> Decimal:
    """Half a unit of the ``digits``-th significant digit of ``value``."""
    return _printed_tolerance(Decimal((0, (1,), value.adjusted() - digits + 1)))


def _number(v: Any) -> float | int | Decimal | None:
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, (int, float, Decimal)):
        return v
    return None


def same_value(mine: Any, ref: Any, ref_type: int | None = None) -> bool:
    """Whether skyshard's value ``mine`` equals the reference value ``ref``."""
    if mine is None or ref is None:
        return mine is None and ref is None
    if isinstance(ref, bytes) and ref_type == _FIELD_BIT:
        ref = int.from_bytes(ref, "big")
    if isinstance(ref, (bool, int, float, Decimal)):
        m = _number(mine)
        if m is None:
            return False
        if isinstance(m, float) and math.isnan(m):
            return False
        if isinstance(ref, Decimal):
            if isinstance(m, float) and math.isinf(m):
                return False
            tol = _printed_tolerance(ref)
            if ref_type == FIELD_FLOAT and ref:
                tol = max(tol, _significant_tolerance(ref, FLOAT_DIGITS))
            if isinstance(m, float):  # a double holds no more: its own precision rules
                tol = max(tol, Decimal(REL_TOL) * abs(ref))
            return abs(Decimal(m) - ref) <= tol
        if isinstance(ref, float) or isinstance(m, float):
            a, b = float(m), float(ref)
            if math.isinf(a) or math.isinf(b):
                return a == b
            return abs(a - b) <= max(ABS_TOL, REL_TOL * max(abs(a), abs(b)))
        return int(m) == int(ref) if not isinstance(m, Decimal) else m == ref
    if isinstance(ref, dt.timedelta) and isinstance(mine, dt.time):
        mine = dt.timedelta(hours=mine.hour, minutes=mine.minute, seconds=mine.second,
                            microseconds=mine.microsecond)
    if isinstance(ref, dt.datetime) and isinstance(mine, dt.datetime):
        return ref.replace(tzinfo=None) == mine.replace(tzinfo=None)
    return type(mine) is type(ref) and mine == ref


def _sort_key(v: Any, ref_type: int | None = None, *, fine: bool = False) -> tuple:
    """A key that sorts equal-enough values next to each other, whatever their type:
    numbers rounded to 4 significant digits (``fine``: exact)."""
    if v is None:
        return (0,)
    if isinstance(v, bytes) and ref_type == _FIELD_BIT:
        v = int.from_bytes(v, "big")
    n = _number(v)
    if n is not None:
        f = float(n)
        if math.isnan(f):
            return (1, math.inf, 1)
        if fine:
            return (1, n if isinstance(n, int) else f, 0)
        return (1, float(f"{f:.4g}"), 0)
    if isinstance(v, str):
        return (2, v)
    if isinstance(v, bytes):
        return (3, v)
    return (4, str(v))


def show(v: Any) -> str:
    if v is None:
        return "NULL"
    if isinstance(v, bytes):
        text = v[:24].hex()
        return f"0x{text}{'...' if len(v) > 24 else ''} ({len(v)} bytes)"
    if isinstance(v, float):
        return repr(v)
    text = repr(v) if isinstance(v, str) else str(v)
    return text if len(text) <= 80 else text[:77] + "..."


# --- rows -----------------------------------------------------------------------------


def arrow_rows(table: pa.Table) -> list[tuple]:
    columns = [c.to_pylist() for c in table.columns]
    return list(zip(*columns)) if columns else [() for _ in range(table.num_rows)]


def compare(mine: pa.Table, ref: Reference, ordering: Ordering, *, sort: bool = False,
            subset: bool = False, ref_keys: Sequence[tuple] | None = None) -> str | None:
    """None if the answers agree, else the first difference in words.

    ``sort`` compares as multisets even when ordered (``-- pragma sortresult``);
    ``subset``: ``ref.rows`` is the answer without LIMIT and ``mine`` must be a part of
    it as large as the limit allows; ``ref_keys``: the ORDER BY key values of each
    reference row, when the keys are not output columns (see :func:`with_order_keys`).
    """
    names = mine.column_names
    if len(names) != len(ref.columns):
        return (f"skyshard returned {len(names)} columns ({', '.join(names)}), the reference "
                f"{len(ref.columns)} ({', '.join(ref.columns)})")
    types = list(ref.types)
    ref_rows = list(ref.rows)
    if subset:
        rows = arrow_rows(mine)
        expected = min(len(ref_rows), ordering.limit if ordering.limit is not None else len(ref_rows))
        if len(rows) != expected:
            return f"skyshard returned {len(rows)} rows, the reference (LIMIT {ordering.limit}) {expected}"
        missing = _unmatched(rows, ref_rows, types, mine_first=True)
        if missing is not None:
            return f"skyshard's row {show_row(missing, names)} is not in the reference's answer"
        return None
    unordered = not ordering.ordered or sort
    if mine.num_rows == len(ref_rows) and mine.num_rows >= BULK_ROWS:
        verdict = bulk_difference(mine, ref_rows, types, ref.scales, sort=unordered)
        if verdict is not None and (verdict[0] or mine.num_rows > EXACT_MAX_ROWS):
            if verdict[0]:
                return None
            r, c, x, y = verdict[1]
            note = "after sorting" if unordered else "in ORDER BY order"
            return f"row {r + 1} ({note}), column {names[c]!r}: skyshard {show(x)}, reference {show(y)}"
    rows = arrow_rows(mine)
    if len(rows) != len(ref_rows):
        return _count_difference(rows, ref_rows, types, names)
    if not unordered:
        return _ordered(rows, ref_rows, types, names, ordering, ref_keys)
    return _unordered(rows, ref_rows, types, names, "after sorting")


def show_row(row: tuple, names: Sequence[str]) -> str:
    parts = [f"{n}={show(v)}" for n, v in zip(names, row)]
    text = "(" + ", ".join(parts[:8]) + (", ..." if len(parts) > 8 else "") + ")"
    return text


def _first_difference(rows: list[tuple], ref: list[tuple], types: list, names: Sequence[str],
                      offset: int, note: str) -> str | None:
    for r, (a, b) in enumerate(zip(rows, ref)):
        for c, (x, y) in enumerate(zip(a, b)):
            if not same_value(x, y, types[c]):
                where = f"row {offset + r + 1}{f' ({note})' if note else ''}"
                return f"{where}, column {names[c]!r}: skyshard {show(x)}, reference {show(y)}"
    return None


def _sorted(rows: list[tuple], types: list) -> list[tuple]:
    """Rows by their rounded values, then by their exact values: rows that differ only
    by rounding noise stay in the same order on both sides."""
    def key(row: tuple) -> tuple:
        return (tuple(_sort_key(v, t) for v, t in zip(row, types)),
                tuple(_sort_key(v, t, fine=True) for v, t in zip(row, types)))
    return sorted(rows, key=key)


def _unordered(rows: list[tuple], ref: list[tuple], types: list, names: Sequence[str],
               note: str, offset: int = 0) -> str | None:
    a, b = _sorted(rows, types), _sorted(ref, types)
    diff = _first_difference(a, b, types, names, offset, note)
    if diff is None:
        return None
    # rounding in the sort key can separate equal-enough rows: match them one by one
    if _unmatched(rows, ref, types, mine_first=False) is None:
        return None
    return diff


def _ordered(rows: list[tuple], ref: list[tuple], types: list, names: Sequence[str],
             ordering: Ordering, ref_keys: Sequence[tuple] | None = None) -> str | None:
    if ordering.keys is None and ref_keys is None:
        diff = _first_difference(rows, ref, types, names, 0, "in ORDER BY order")
        if diff is not None and _unordered(rows, ref, types, names, "") is None:
            return diff + " (the same rows in another order; the ORDER BY keys are not output columns)"
        return diff
    if ordering.keys is not None:
        keys = ordering.keys
        key_of = [tuple(r[k] for k in keys) for r in ref]
        key_types = [types[k] for k in keys]
    else:
        assert ref_keys is not None
        keys = ()
        key_of = list(ref_keys)
        key_types = [None] * (len(key_of[0]) if key_of else 0)
    start = 0
    while start < len(ref):
        end = start + 1
        while end < len(ref) and all(same_value(a, b, t) for a, b, t in
                                     zip(key_of[end], key_of[start], key_types)):
            end += 1
        group_mine, group_ref = rows[start:end], ref[start:end]
        if end - start == 1 and ordering.limit is None:
            diff = _first_difference(group_mine, group_ref, types, names, start, "in ORDER BY order")
            if diff is not None:
                return diff
            start = end
            continue
        last_cut = ordering.limit is not None and end == len(ref)
        if last_cut and keys:
            group_mine = [tuple(r[k] for k in keys) for r in group_mine]
            group_ref = [tuple(r[k] for k in keys) for r in group_ref]
            diff = _first_difference(group_mine, group_ref, [types[k] for k in keys],
                                     [names[k] for k in keys], start, "in ORDER BY order")
        else:
            diff = _unordered(group_mine, group_ref, types, names, "in ORDER BY order", start)
        if diff is not None:
            return diff
        start = end
    return None


def _bucket(row: tuple, types: list, *, exact: bool) -> tuple:
    """A key shared by equal rows. ``exact``: integral numbers by their value (a cheap
    index; equal numbers may still differ in it by rounding noise), else all numbers
    alike."""
    out = []
    for v, t in zip(row, types):
        if isinstance(v, bytes) and t == _FIELD_BIT:
            v = int.from_bytes(v, "big")
        n = _number(v)
        if v is None:
            out.append(None)
        elif n is not None:
            integral = exact and (isinstance(n, int) or (math.isfinite(float(n)) and n == int(n)))
            out.append(("i", int(n)) if integral else "n")
        else:
            out.append(v if isinstance(v, (str, bytes)) else str(v))
    return tuple(out)


def _unmatched(rows: list[tuple], ref: list[tuple], types: list, *, mine_first: bool) -> tuple | None:
    """The first row of ``rows`` (mine_first) or of ``ref`` without a distinct equal row
    on the other side, or None if every one has its match."""
    probe, other = (rows, ref) if mine_first else (ref, rows)
    exact: dict[tuple, list[int]] = defaultdict(list)
    loose: dict[tuple, list[int]] = defaultdict(list)
    for i, row in enumerate(other):
        exact[_bucket(row, types, exact=True)].append(i)
        loose[_bucket(row, types, exact=False)].append(i)
    used = [False] * len(other)

    def equal(row: tuple, cand: tuple) -> bool:
        a, b = (row, cand) if mine_first else (cand, row)
        return all(same_value(x, y, t) for x, y, t in zip(a, b, types))

    for row in probe:
        for pool, key in ((exact, _bucket(row, types, exact=True)), (loose, _bucket(row, types, exact=False))):
            found = next((i for i in pool.get(key, ()) if not used[i] and equal(row, other[i])), None)
            if found is not None:
                used[found] = True
                break
        else:
            return row
    return None


def _count_difference(rows: list[tuple], ref: list[tuple], types: list, names: Sequence[str]) -> str:
    text = f"skyshard returned {len(rows)} rows, the reference {len(ref)}"
    if len(rows) + len(ref) > 200_000:
        return text
    extra = _unmatched(rows, ref, types, mine_first=True)
    if extra is not None:
        return text + f"; skyshard's row {show_row(extra, names)} is not in the reference's answer"
    missing = _unmatched(rows, ref, types, mine_first=False)
    if missing is not None:
        return text + f"; the reference's row {show_row(missing, names)} is missing"
    return text
