"""Split one SELECT into a parallel statement (run per fragment) and a merge statement
(run over the concatenated partial results, registered as ``partials``).

Aggregates are decomposed so the merge is exact::

    COUNT(x)      -> COUNT(x) AS p                  | COALESCE(SUM(p), 0)
    SUM/MIN/MAX   -> SUM/MIN/MAX(x) AS p            | SUM/MIN/MAX(p)
    AVG(x)        -> SUM(x) AS s, COUNT(x) AS n     | SUM(s) / NULLIF(SUM(n), 0)
    VAR/STDDEV    -> COUNT, AVG, VAR_POP * COUNT    | pooled: (sum(m2) + sum(n*mu^2) - N*mean^2) / N
    COUNT(DISTINCT x) -> x AS _d added to GROUP BY  | COUNT(DISTINCT _d)
    f(...) FILTER (WHERE c) -> each partial aggregate filtered as f's own

Any other aggregate (every name DuckDB lists as one, see ``aggregates``: MEDIAN,
QUANTILE_CONT, MODE, ...), an aggregate with extra arguments or an ORDER BY of its own,
a column neither grouped nor aggregated, and ROLLUP/CUBE/GROUPING SETS raise
``NotSplittable``: the query then runs as one statement over all its partitions.

Rows without aggregates: the parallel statement applies WHERE, DISTINCT and, when there is
a LIMIT, ORDER BY + LIMIT (limit + offset) as a per-fragment top-k; the merge re-applies
DISTINCT, ORDER BY, LIMIT and OFFSET. Output columns are ``_c0..`` in both statements;
the caller renames them to the user's names.

>>> import sqlglot
>>> s = split(sqlglot.parse_one("SELECT f, AVG(x) AS m FROM t GROUP BY f ORDER BY m DESC LIMIT 3", read="mysql"))
>>> s.parallel.sql("duckdb")
'SELECT f AS _g0, SUM(x) AS _a0, COUNT(x) AS _a1 FROM t GROUP BY f'
>>> s.merge.sql("duckdb")
'SELECT _g0 AS _c0, SUM(_a0) / NULLIF(SUM(_a1), 0) AS _c1 FROM partials GROUP BY _g0 ORDER BY _c1 DESC LIMIT 3'
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlglot import exp

from skyshard.errors import UnsupportedQueryError
from skyshard.sql.aggregates import find_aggregate, function_name, is_aggregate

PARTIALS = "partials"


@dataclass(frozen=True)
class Split:
    parallel: exp.Select
    merge: exp.Select
    ncols: int


class NotSplittable(UnsupportedQueryError):
    """The query cannot be split into parallel + merge statements (it may still run as
    one statement over all partitions)."""


def split(select: exp.Expression) -> Split:
    """Split a bound, star-expanded SELECT (see ``analyze``)."""
    _check_splittable(select)
    if _is_aggregate(select):
        return _split_aggregate(select)
    return _split_rows(select)


# --- checks --------------------------------------------------------------------------------


def _check_splittable(select: exp.Expression) -> None:
    if not isinstance(select, exp.Select):
        raise NotSplittable(f"{type(select).__name__.upper()} cannot be split across partitions",
                            construct=type(select).__name__.upper())
    for kind, what in ((exp.Subquery, "sub-query"), (exp.Window, "window function"),
                       (exp.With, "WITH clause")):
        node = select.find(kind)
        if node is not None:
            raise NotSplittable(f"a {what} cannot be split across partitions", construct=what)
    for node in select.find_all(exp.Select):
        if node is not select:
            raise NotSplittable("a sub-query cannot be split across partitions",
                                construct="sub-query")


def _is_aggregate(select: exp.Select) -> bool:
    """An aggregate query: GROUP BY, HAVING, or an aggregate call in SELECT or ORDER BY
    (sub-queries and windows were refused before)."""
    if select.args.get("group") or select.args.get("having") is not None:
        return True
    order = select.args.get("order")
    items = [*select.expressions, *(order.expressions if order is not None else [])]
    return any(find_aggregate(e) is not None for e in items)


# --- rows ------------------------------------------------------------------------------------


def _split_rows(select: exp.Select) -> Split:
    outputs = [_unalias(e) for e in select.expressions]
    distinct = bool(select.args.get("distinct"))
    par_cols = [exp.alias_(e.copy(), f"_c{i}") for i, e in enumerate(outputs)]
    order = select.args.get("order")
    limit, offset = _limit_offset(select)
    merge_order: list[exp.Ordered] = []
    par_order: list[exp.Ordered] = []
    hidden = 0
    if order is not None:
        for o in order.expressions:
            target = _output_ref(o.this, select, outputs)
            if target is None:
                if distinct:
                    raise NotSplittable("ORDER BY of a column not in SELECT DISTINCT",
                                        construct="ORDER BY with DISTINCT")
                name = f"_o{hidden}"
                hidden += 1
                par_cols.append(exp.alias_(o.this.copy(), name))
                target = name
            merge_order.append(_ordered(o, exp.column(target)))
            par_order.append(_ordered(o, exp.column(target)))
    par = select.copy()
    par.set("expressions", par_cols)
    par.set("order", None)
    par.set("limit", None)
    par.set("offset", None)
    if limit is not None:
        top = limit + (offset or 0)
        if par_order:
            par.set("order", exp.Order(expressions=par_order))
        par.set("limit", exp.Limit(expression=exp.Literal.number(top)))
    merge = exp.select(*[exp.column(f"_c{i}") for i in range(len(outputs))]).from_(PARTIALS)
    if distinct:
        merge.set("distinct", exp.Distinct())
    _finish(merge, merge_order, limit, offset)
    return Split(par, merge, len(outputs))


# --- aggregates --------------------------------------------------------------------------------


#: Aggregates whose partials merge exactly (as above); any other aggregate is not split.
_DECOMPOSABLE = (exp.Count, exp.Sum, exp.Min, exp.Max, exp.Avg, exp.AnyValue, exp.VariancePop,
                 exp.Variance, exp.StddevPop, exp.StddevSamp, exp.Stddev)
#: The arguments of a decomposable aggregate besides ``this`` that change nothing
#: (``MAX(x, n)``, top-n as a list, has ``expressions`` and is not decomposable).
_PLAIN_ARGS = {"this", "big_int"}
#: Wrappers of aggregate calls the merge cannot reproduce, by their SQL.
_WRAPPERS = {exp.WithinGroup: "WITHIN GROUP", exp.IgnoreNulls: "IGNORE NULLS",
             exp.RespectNulls: "RESPECT NULLS", exp.HavingMax: "HAVING MAX/MIN"}


def _not_splittable(agg: exp.Expression, why: str | None = None) -> NotSplittable:
    name = function_name(agg).upper() if isinstance(agg, exp.Func) else agg.key.upper()
    return NotSplittable(f"aggregate {name}() cannot be split across partitions"
                         + (f" ({why})" if why else ""), construct=name)


class _Aggregates:
    """Collects partial aggregates for the parallel statement and builds merge expressions."""

    def __init__(self) -> None:
        self.partials: list[exp.Expression] = []
        self.distinct_arg: exp.Expression | None = None
        self.has_plain = False

    def add(self, e: exp.Expression) -> exp.Column:
        for i, p in enumerate(self.partials):
            if p == e:
                return exp.column(f"_a{i}")
        self.partials.append(e)
        return exp.column(f"_a{len(self.partials) - 1}")

    def merge_of(self, agg: exp.Func, where: exp.Expression | None = None) -> exp.Expression:
        """The merge expression of the aggregate call ``agg`` (filtered by ``where``, the
        condition of its FILTER clause), its partials added to the parallel statement."""
        if not isinstance(agg, _DECOMPOSABLE):
            raise _not_splittable(agg)
        if _is_distinct_agg(agg):
            if where is not None:
                raise _not_splittable(agg, "DISTINCT with FILTER")
            return self._distinct(agg)
        extra = {k for k, v in agg.args.items() if v not in (None, [], False)} - _PLAIN_ARGS
        if extra or isinstance(agg.this, (exp.Order, exp.Limit)) or agg.this is None:
            raise _not_splittable(agg, "extra arguments or its own ORDER BY")
        self.has_plain = True

        def filtered(e: exp.Expression) -> exp.Expression:
            """An aggregate under the call's FILTER clause, if it has one."""
            if where is None:
                return e
            return exp.Filter(this=e, expression=exp.Where(this=where.copy()))

        def part(e: exp.Expression) -> exp.Column:
            return self.add(filtered(e))

        arg = agg.this
        if isinstance(agg, exp.Count):
            p = part(agg.copy())
            # SUM of BIGINT is HUGEINT in DuckDB: cast back so the type is COUNT's own.
            return exp.cast(exp.func("COALESCE", exp.func("SUM", p), exp.Literal.number(0)),
                            "BIGINT")
        if isinstance(agg, (exp.Sum, exp.Min, exp.Max)):
            p = part(agg.copy())
            return type(agg)(this=p)
        if isinstance(agg, exp.Avg):
            s = part(exp.Sum(this=arg.copy()))
            n = part(exp.Count(this=arg.copy()))
            return exp.Div(this=exp.Sum(this=s),
                           expression=exp.func("NULLIF", exp.Sum(this=n), exp.Literal.number(0)))
        if isinstance(agg, exp.AnyValue):
            return exp.AnyValue(this=part(agg.copy()))
        return self._variance(agg, part, filtered)

    def _variance(self, agg: exp.AggFunc, part, filtered) -> exp.Expression:
        x = exp.cast(agg.this.copy(), "DOUBLE")
        n = part(exp.Count(this=agg.this.copy()))
        mu = part(exp.Avg(this=x.copy()))
        m2 = self.add(exp.Mul(this=filtered(exp.VariancePop(this=x.copy())),
                              expression=filtered(exp.Count(this=agg.this.copy()))))
        total = exp.Sum(this=n.copy())
        n_d = exp.cast(total.copy(), "DOUBLE")
        sum_mu = exp.Sum(this=exp.Mul(this=n.copy(), expression=mu.copy()))
        mean = exp.Div(this=sum_mu, expression=exp.func("NULLIF", n_d.copy(), exp.Literal.number(0)))
        m2_total = exp.Sub(
            this=exp.Add(this=exp.Sum(this=exp.func("COALESCE", m2.copy(), exp.Literal.number(0))),
                         expression=exp.Sum(this=exp.Mul(this=n.copy(), expression=exp.Mul(
                             this=mu.copy(), expression=mu.copy())))),
            expression=exp.Mul(this=n_d.copy(), expression=exp.Mul(
                this=exp.Paren(this=mean.copy()), expression=exp.Paren(this=mean.copy()))))
        m2_total = exp.func("GREATEST", m2_total, exp.Literal.number(0))
        sample = isinstance(agg, (exp.Variance, exp.StddevSamp, exp.Stddev))
        denom = exp.Sub(this=n_d, expression=exp.Literal.number(1)) if sample else n_d
        var = exp.Div(this=m2_total, expression=exp.func("NULLIF", denom, exp.Literal.number(0)))
        if sample:
            var = exp.If(this=exp.LT(this=total, expression=exp.Literal.number(2)),
                         true=exp.Null(), false=var)
        if isinstance(agg, (exp.StddevPop, exp.StddevSamp, exp.Stddev)):
            return exp.func("SQRT", var)
        return var

    def _distinct(self, agg: exp.AggFunc) -> exp.Expression:
        inner = agg.this.expressions[0] if isinstance(agg.this, exp.Distinct) else agg.this
        if isinstance(agg.this, exp.Distinct) and len(agg.this.expressions) != 1:
            raise NotSplittable("COUNT(DISTINCT) of several columns cannot be split",
                                construct="COUNT(DISTINCT a, b)")
        extra = {k for k, v in agg.args.items() if v not in (None, [], False)} - _PLAIN_ARGS
        if extra or isinstance(inner, (exp.Order, exp.Limit)):
            raise _not_splittable(agg, "DISTINCT with extra arguments")
        if self.distinct_arg is not None and self.distinct_arg != inner:
            raise NotSplittable("DISTINCT aggregates of different expressions cannot be split",
                                construct="several DISTINCT aggregates")
        self.distinct_arg = inner
        new = agg.copy()
        new.set("this", exp.Distinct(expressions=[exp.column("_d")]))
        return new


def _split_aggregate(select: exp.Select) -> Split:
    outputs = [_unalias(e) for e in select.expressions]
    group = select.args.get("group")
    if group is not None and any(v not in (None, [], False) for k, v in group.args.items()
                                 if k != "expressions"):
        raise NotSplittable("ROLLUP, CUBE and GROUPING SETS cannot be split across partitions",
                            construct="GROUP BY ROLLUP")
    groups = [_group_target(g, select, outputs) for g in (group.expressions if group else [])]
    aggs = _Aggregates()

    def to_merge(e: exp.Expression) -> exp.Expression:
        e = e.copy()
        for i, g in enumerate(groups):
            if e == g:
                return exp.column(f"_g{i}")

        def rewrite(node: exp.Expression) -> exp.Expression:
            for i, g in enumerate(groups):
                if node == g:
                    return exp.column(f"_g{i}")
            if isinstance(node, exp.Filter) and is_aggregate(node.this):
                return aggs.merge_of(node.this, node.expression.this)
            if type(node) in _WRAPPERS:
                inner = node.this if isinstance(node.this, exp.Func) else node
                raise _not_splittable(inner, _WRAPPERS[type(node)])
            if is_aggregate(node):
                return aggs.merge_of(node)
            if isinstance(node, exp.Column):
                # Neither grouped nor aggregated: DuckDB refuses it (MySQL would take any
                # value); the one statement over all partitions says so.
                raise NotSplittable(f"column {node.sql('mysql')} is neither grouped nor "
                                    "aggregated", construct="ungrouped column")
            return node

        return _transform_outside_aggs(e, rewrite)

    merge_cols = [exp.alias_(to_merge(e), f"_c{i}") for i, e in enumerate(outputs)]
    having = select.args.get("having")
    merge_having = None
    if having is not None:
        merge_having = _replace_output_aliases(having.this, select, outputs)
        merge_having = to_merge(merge_having)
    merge_order = []
    order = select.args.get("order")
    if order is not None:
        for o in order.expressions:
            target = _output_ref(o.this, select, outputs)
            expr = exp.column(target) if target else to_merge(o.this)
            merge_order.append(_ordered(o, expr))
    if aggs.distinct_arg is not None and aggs.has_plain:
        raise NotSplittable("DISTINCT aggregates mixed with other aggregates cannot be split",
                            construct="DISTINCT aggregate with other aggregates")
    par_cols = [exp.alias_(g.copy(), f"_g{i}") for i, g in enumerate(groups)]
    par_cols += [exp.alias_(p, f"_a{i}") for i, p in enumerate(aggs.partials)]
    par_group = [g.copy() for g in groups]
    if aggs.distinct_arg is not None:
        par_cols.append(exp.alias_(aggs.distinct_arg.copy(), "_d"))
        par_group.append(aggs.distinct_arg.copy())
    if not par_cols:
        par_cols = [exp.alias_(exp.Count(this=exp.Star()), "_a0")]
    par = select.copy()
    par.set("expressions", par_cols)
    for arg in ("having", "order", "limit", "offset", "distinct"):
        par.set(arg, None)
    par.set("group", exp.Group(expressions=par_group) if par_group else None)
    merge = exp.select(*merge_cols).from_(PARTIALS)
    if groups:
        merge.set("group", exp.Group(expressions=[exp.column(f"_g{i}") for i in range(len(groups))]))
    if merge_having is not None:
        merge.set("having", exp.Having(this=merge_having))
    if select.args.get("distinct"):
        merge.set("distinct", exp.Distinct())
    limit, offset = _limit_offset(select)
    _finish(merge, merge_order, limit, offset)
    return Split(par, merge, len(outputs))


# --- small pieces --------------------------------------------------------------------------------


def _unalias(e: exp.Expression) -> exp.Expression:
    return e.this if isinstance(e, exp.Alias) else e


def _is_distinct_agg(agg: exp.AggFunc) -> bool:
    return isinstance(agg.this, exp.Distinct)


def _transform_outside_aggs(e: exp.Expression, fn) -> exp.Expression:
    """Apply ``fn`` top-down; do not descend into the nodes ``fn`` replaced."""
    new = fn(e)
    if new is not e:
        return new
    for key, value in list(e.args.items()):
        if isinstance(value, exp.Expression):
            e.set(key, _transform_outside_aggs(value, fn))
        elif isinstance(value, list):
            e.set(key, [_transform_outside_aggs(v, fn) if isinstance(v, exp.Expression) else v
                        for v in value])
    return e


def _output_ref(e: exp.Expression, select: exp.Select, outputs) -> str | None:
    """``_cN`` if ``e`` names output N: by position, by alias or by equal expression."""
    if isinstance(e, exp.Literal) and not e.is_string and e.this.isdigit():
        n = int(e.this)
        if not 1 <= n <= len(outputs):
            raise UnsupportedQueryError(f"ORDER BY position {n} is out of range",
                                        construct="ORDER BY position")
        return f"_c{n - 1}"
    if isinstance(e, exp.Column) and not e.table:
        for i, s in enumerate(select.expressions):
            if isinstance(s, exp.Alias) and s.alias.lower() == e.name.lower():
                return f"_c{i}"
    for i, o in enumerate(outputs):
        if o == e:
            return f"_c{i}"
    return None


def _group_target(g: exp.Expression, select: exp.Select, outputs) -> exp.Expression:
    """A GROUP BY item as an expression (positions and output aliases resolved)."""
    if isinstance(g, exp.Literal) and not g.is_string and g.this.isdigit():
        return outputs[int(g.this) - 1]
    if isinstance(g, exp.Column) and not g.table:
        for s in select.expressions:
            if isinstance(s, exp.Alias) and s.alias.lower() == g.name.lower():
                return s.this
    return g


def _replace_output_aliases(e: exp.Expression, select: exp.Select, outputs) -> exp.Expression:
    aliases = {s.alias.lower(): s.this for s in select.expressions if isinstance(s, exp.Alias)}

    def fn(node):
        if isinstance(node, exp.Column) and not node.table and node.name.lower() in aliases:
            return aliases[node.name.lower()].copy()
        return node

    return e.copy().transform(fn)


def _ordered(o: exp.Ordered, this: exp.Expression) -> exp.Ordered:
    return exp.Ordered(this=this, desc=o.args.get("desc"), nulls_first=o.args.get("nulls_first"))


def _limit_offset(select: exp.Select) -> tuple[int | None, int | None]:
    def num(node, what):
        if node is None:
            return None
        v = node.args.get("expression") if isinstance(node, (exp.Limit, exp.Offset)) else node
        if isinstance(v, exp.Literal) and not v.is_string and v.this.isdigit():
            return int(v.this)
        raise UnsupportedQueryError(f"{what} must be a non-negative integer constant",
                                    construct=what)

    limit_node = select.args.get("limit")
    limit = num(limit_node, "LIMIT")
    offset = num(select.args.get("offset"), "OFFSET")
    if limit_node is not None and limit_node.args.get("offset") is not None:
        offset = num(limit_node.args["offset"], "OFFSET")
    return limit, offset


def _finish(merge: exp.Select, order: list[exp.Ordered], limit, offset) -> None:
    if order:
        merge.set("order", exp.Order(expressions=order))
    if limit is not None:
        merge.set("limit", exp.Limit(expression=exp.Literal.number(limit)))
    if offset:
        merge.set("offset", exp.Offset(expression=exp.Literal.number(offset)))
