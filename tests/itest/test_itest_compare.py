"""Comparing skyshard's answers with reference rows: tolerances, order, LIMIT, bulk path."""

from __future__ import annotations

import random
from dataclasses import dataclass
from decimal import Decimal

import numpy as np
import pyarrow as pa
import pytest

from skyshard.itest import compare as cmp
from skyshard.itest.compare import Ordering, compare, ordering_of, same_value, with_order_keys, without_limit

FLOAT, DOUBLE, LONGLONG, NEWDECIMAL, BIT, VARSTRING = 4, 5, 8, 246, 16, 253


@dataclass
class Ref:
    columns: list[str]
    types: list[int | None]
    rows: list[tuple]
    scales: list[int | None] | None = None


def test_values() -> None:
    assert same_value(1.2976699e-05, Decimal("0.0000129767"), FLOAT)  # FLOAT printed with 6 digits
    assert same_value(310565011456.0, Decimal("310565000000"), FLOAT)
    assert not same_value(310575011456.0, Decimal("310565000000"), FLOAT)
    assert same_value(-7.888888888888889, Decimal("-7.8889"), NEWDECIMAL)  # AVG: 4 decimals
    assert not same_value(8647474690358575881, Decimal("8647474690358575880"), NEWDECIMAL)
    assert same_value(0.1 + 0.2, 0.3, DOUBLE) and not same_value(0.3001, 0.3, DOUBLE)
    assert same_value(1, b"\x01", BIT) and same_value(True, 1, LONGLONG)
    assert same_value(None, None) and not same_value(0, None) and not same_value(float("nan"), 0.0)
    assert same_value(b"\x00ab", b"\x00ab") and not same_value("ab", b"ab")


def test_ordering_of_queries() -> None:
    sql = "SELECT objectId AS o, ra FROM Object ORDER BY o, 2 LIMIT 5"
    assert ordering_of(sql, ["o", "ra"]) == Ordering(ordered=True, keys=(0, 1), limit=5)
    assert ordering_of("SELECT a FROM t ORDER BY b", ["a"]) == Ordering(ordered=True, keys=None)
    assert ordering_of("SELECT COUNT(*) FROM t LIMIT 10", ["n"]) == Ordering(limit=10)
    assert without_limit("SELECT a FROM t\nLIMIT 10") == "SELECT a FROM t"
    keyed = with_order_keys("SELECT a FROM t ORDER BY b + 1")
    assert keyed is not None and keyed[1] == 1 and "_itest_key0" in keyed[0]


def test_unordered_and_tied_rows() -> None:
    mine = pa.table({"k": [1, 1, 2], "v": ["b", "a", "c"]})
    ref = Ref(["k", "v"], [LONGLONG, VARSTRING], [(1, "a"), (1, "b"), (2, "c")])
    assert compare(mine, ref, Ordering()) is None
    assert compare(mine, ref, ordering_of("SELECT k, v FROM t ORDER BY k", ["k", "v"])) is None
    diff = compare(mine, ref, ordering_of("SELECT k, v FROM t ORDER BY k, v", ["k", "v"]))
    assert diff == "row 1 (in ORDER BY order), column 'v': skyshard 'b', reference 'a'"


def test_counts_and_columns_differ() -> None:
    ref = Ref(["a"], [LONGLONG], [(1,), (2,)])
    assert compare(pa.table({"a": [1]}), ref, Ordering()).startswith(
        "skyshard returned 1 rows, the reference 2; the reference's row (a=2) is missing")
    assert "2 columns" in compare(pa.table({"a": [1, 2], "b": [1, 2]}), ref, Ordering())


def test_limit_without_order_by_is_a_subset() -> None:
    ref = Ref(["a"], [LONGLONG], [(i,) for i in range(10)])
    assert compare(pa.table({"a": [7, 3]}), ref, Ordering(limit=2), subset=True) is None
    assert "not in the reference" in compare(pa.table({"a": [7, 30]}), ref, Ordering(limit=2), subset=True)


def test_order_keys_outside_the_output() -> None:
    ref = Ref(["a"], [LONGLONG], [(1,), (2,), (3,)])
    ordered = Ordering(ordered=True)
    assert compare(pa.table({"a": [2, 1, 3]}), ref, ordered, ref_keys=[(None,), (None,), (5,)]) is None
    assert compare(pa.table({"a": [2, 1, 3]}), ref, ordered, ref_keys=[(1,), (2,), (3,)]) is not None


@pytest.mark.parametrize("broken", [False, True])
def test_bulk_path_agrees_with_the_exact_one(monkeypatch: pytest.MonkeyPatch, broken: bool) -> None:
    rng = random.Random(7)
    n = 3000
    ids = list(range(n))
    flux = [float(np.float32(rng.uniform(-1, 1) * 10 ** rng.randint(-30, 3))) for _ in range(n)]
    names = [rng.choice(["u", "g", None]) for _ in range(n)]
    rows = [(i, Decimal(f"{f:.6g}"), s) for i, f, s in zip(ids, flux, names)]  # as MariaDB prints FLOAT
    if broken:
        rows[1234] = (1234, Decimal("1.5"), rows[1234][2])
    rng.shuffle(rows)
    mine = pa.table({"id": ids, "flux": pa.array(flux, pa.float32()), "name": names})
    ref = Ref(["id", "flux", "name"], [LONGLONG, FLOAT, VARSTRING], rows)
    exact = compare(mine, ref, Ordering())
    monkeypatch.setattr(cmp, "BULK_ROWS", 100)
    monkeypatch.setattr(cmp, "EXACT_MAX_ROWS", 100)
    bulk = compare(mine, ref, Ordering())
    assert (exact is None, bulk is None) == (not broken, not broken)
    if broken:
        assert "column 'flux'" in exact and "column 'flux'" in bulk
