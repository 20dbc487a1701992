"""Aggregates and the parallel/merge split: every DuckDB aggregate is recognised as one;
those the merge cannot compute exactly run as one statement. Each query is compared with
one unpartitioned DuckDB (the oracle) on the embedded default, on the local executor one
partition per fragment, and on a Dask cluster of 2 workers."""

from __future__ import annotations

import duckdb
import pytest
import sqlglot
from same_rows import assert_same_rows
from test_oracle import oracle_sql

import skyshard
from skyshard.errors import SqlError
from skyshard.sql.aggregates import aggregate_names, is_aggregate
from skyshard.sql.dialect import QservDialect
from skyshard.sql.split import NotSplittable, split

#: Aggregates the merge computes exactly from partials (everything else is refused).
DECOMPOSABLE = {"count", "sum", "min", "max", "avg", "any_value", "stddev", "stddev_pop",
                "stddev_samp", "variance", "var_pop", "var_samp"}

#: Not split: one statement over all partitions.
WHOLE = [
    "SELECT quantile_cont(ra, 0.5) FROM Object",
    "SELECT quantile_disc(gMag, 0.9), quantile_cont(ra, [0.1, 0.9]) FROM Object",
    "SELECT quantile_cont(ra, 0.75) - quantile_cont(ra, 0.25) AS iqr FROM Object",
    "SELECT ROUND(median(DISTINCT nEpochs), 3), entropy(DISTINCT kind) FROM Object",
    "SELECT median(gMag), mad(gMag), mode(kind), mode(gMag > 21) FROM Object",
    "SELECT product(1 + nEpochs / 1000.0), fsum(gFlux), favg(ra), kahan_sum(ra), sem(ra) "
    "FROM Object",
    "SELECT kurtosis(gMag), kurtosis_pop(gMag), skewness(gMag), entropy(nEpochs) FROM Object",
    "SELECT histogram(kind), histogram(flags % 4) FROM Object",
    "SELECT bit_and(flags), bit_or(flags), bit_xor(flags), bool_and(gMag > 15), "
    "bool_or(gMag > 25), count_if(gMag > 22) FROM Object",
    "SELECT arg_min(objectId, gMag), arg_max(objectId, ra), min_by(objectId, decl), "
    "max_by(kind, decl) FROM Object",
    "SELECT corr(ra, decl), covar_pop(ra, decl), covar_samp(ra, gMag), regr_slope(decl, ra), "
    "regr_intercept(decl, ra), regr_r2(decl, ra), regr_count(gMag, ra), regr_avgx(gMag, ra), "
    "regr_sxx(gMag, ra), regr_syy(gMag, ra), regr_sxy(gMag, ra) FROM Object",
    "SELECT list_sort(list(objectId)), length(string_agg(kind, ',')), "
    "json_array_length(json_group_array(objectId)) FROM Object WHERE decl > 80",
    "SELECT max(ra, 3), min(gMag, 2) FROM Object",
    "SELECT approx_count_distinct(objectId), geomean(ra), weighted_avg(gMag, rMag), "
    "count_star() FROM Object",
    "SELECT COUNT(*), SUM(nEpochs), quantile_disc(nEpochs, 0.25) FROM Object",
    "SELECT kind, quantile_cont(gMag, 0.5), mode(gMag > 21), COUNT(*) FROM Object "
    "GROUP BY kind ORDER BY kind",
    "SELECT kind, COUNT(*) FROM Object GROUP BY kind "
    "HAVING quantile_cont(gMag, 0.5) > 21.9 ORDER BY kind",
    "SELECT nEpochs % 5 AS k, COUNT(*) FROM Object GROUP BY k ORDER BY median(ra), k",
    "SELECT flags % 3 AS f, list_sort(list(DISTINCT kind)) FROM Object GROUP BY f ORDER BY f",
    "SELECT COUNT(*) FILTER (WHERE gMag > 22), quantile_cont(ra, 0.5) FILTER (WHERE decl > 0) "
    "FROM Object",
    "SELECT quantile_cont(gMag, 0.5), COUNT(*) FROM Object WHERE qserv_areaspec_circle(45, 10, 1)",
    "SELECT o.kind, quantile_cont(s.psfFlux, 0.5), COUNT(*) FROM Object o "
    "JOIN Source s ON o.objectId = s.objectId GROUP BY o.kind ORDER BY o.kind",
]

#: Still split, exactly.
SPLIT = [
    "SELECT COUNT(*) FILTER (WHERE gMag > 22), AVG(ra) FILTER (WHERE kind = 'qso'), "
    "VARIANCE(gMag) FILTER (WHERE kind = 'star'), STDDEV_SAMP(rMag) FILTER (WHERE decl < 0), "
    "MIN(gMag) FILTER (WHERE kind = 'galaxy') FROM Object",
    "SELECT kind, SUM(nEpochs) FILTER (WHERE flags > 100), COUNT(*) FROM Object GROUP BY kind "
    "ORDER BY kind",
    "SELECT kind, COUNT(*) AS n FROM Object GROUP BY kind HAVING MAX(gMag) > 25 ORDER BY n",
    "SELECT AVG(DISTINCT nEpochs), SUM(DISTINCT nEpochs) FROM Object",
    "SELECT 1 AS one FROM Object HAVING COUNT(*) > 0",
    "SELECT 1 AS one FROM Object ORDER BY MAX(ra)",
]

#: DuckDB refuses these (a column neither grouped nor aggregated): so must every path.
REFUSED = [
    "SELECT objectId, quantile_cont(ra, 0.5) FROM Object",
    "SELECT objectId, COUNT(*) FROM Object",
    "SELECT kind, COUNT(*) FROM Object GROUP BY kind ORDER BY ra",
    "SELECT kind FROM Object ORDER BY MAX(ra)",
    "SELECT kind, COUNT(*) FROM Object GROUP BY kind HAVING gMag > 1",
]


@pytest.fixture(scope="module")
def dask_db(sky_root):
    pytest.importorskip("distributed")
    from skyshard.dispatch.dask_executor import DaskExecutor

    with DaskExecutor(sky_root, workers=2) as ex:
        db = skyshard.open(sky_root)
        db.executor = ex
        yield db


def _runs(sky_db, sky_db_split, dask_db):
    return {"embedded": sky_db, "local split": sky_db_split, "dask": dask_db}


@pytest.mark.parametrize("sql", WHOLE + SPLIT)
def test_same_answer_as_the_oracle(sky_db, sky_db_split, dask_db, oracle, sql):
    want = oracle.sql(oracle_sql(sky_db, sql)).to_arrow_table()
    ordered = " order by " in sql.lower()
    for name, db in _runs(sky_db, sky_db_split, dask_db).items():
        got = db.sql(sql)
        assert got.num_rows == want.num_rows, name
        assert_same_rows(got, want, ordered=ordered)
    plan = sky_db.plan(sql)
    assert (plan.split is not None) == (sql in SPLIT), plan.split_refusal


@pytest.mark.parametrize("sql", REFUSED)
def test_ungrouped_columns_are_refused_everywhere(sky_db, sky_db_split, dask_db, oracle, sql):
    with pytest.raises(duckdb.Error):
        oracle.sql(oracle_sql(sky_db, sql)).fetchall()
    for db in _runs(sky_db, sky_db_split, dask_db).values():
        with pytest.raises(SqlError, match="GROUP BY"):
            db.sql(sql)
    assert "neither grouped nor aggregated" in sky_db.plan(sql).split_refusal


def test_refusal_names_the_aggregate(sky_db):
    plan = sky_db.plan("SELECT kind, quantile_cont(ra, 0.5) FROM Object GROUP BY kind")
    assert plan.split is None and "QUANTILE_CONT()" in plan.split_refusal
    plan = sky_db.plan("SELECT MAX(ra, 3) FROM Object")
    assert plan.split is None and "MAX()" in plan.split_refusal


def _parse(sql: str):
    return sqlglot.parse_one(sql, read=QservDialect)


def test_every_duckdb_aggregate_is_split_exactly_or_not_at_all():
    """Each aggregate DuckDB knows, called as sqlglot parses it, is either one of the
    decomposable few or refused by the split (never taken for a row query)."""
    names = aggregate_names()
    assert {"quantile_cont", "mode", "product", "list", "geomean", "json_group_array"} <= names
    checked = 0
    for name in sorted(names):
        for args in ("ra", "ra, decl", "ra, 0.5"):
            try:
                tree = _parse(f"SELECT {name}({args}) FROM Object")
            except sqlglot.errors.ParseError:
                continue
            checked += 1
            assert is_aggregate(tree.expressions[0]), name
            try:
                s = split(tree)
            except NotSplittable:
                continue
            assert name in DECOMPOSABLE and args == "ra", name
            assert "partials" in s.merge.sql() and s.merge.args.get("group") is None
    assert checked > len(names)


@pytest.mark.parametrize("sql", [
    "SELECT LIST(x) FROM t",                         # a typed function, not an AggFunc
    "SELECT main.quantile_cont(x, 0.5) FROM t",      # qualified
    "SELECT 1 + ROUND(entropy(x), 2) FROM t",        # nested in scalar functions
    "SELECT weighted_avg(x, y) FROM t",              # an aggregate macro
])
def test_recognised_wherever_it_is(sql):
    assert any(is_aggregate(n) for n in _parse(sql).walk())
    with pytest.raises(NotSplittable):
        split(_parse(sql))


def test_scalar_functions_are_not_aggregates():
    tree = _parse("SELECT SQRT(x), COALESCE(x, 1), list_value(x), CAST(x AS DOUBLE) FROM t")
    assert not any(is_aggregate(n) for n in tree.walk())
    assert split(tree).merge.args.get("group") is None
