"""Analysis: bind a parsed query to the catalog and find its restrictors.

The rules run in this order, each a function of the same name below::

    RULES = (bind_tables, check_columns, expand_stars, rewrite_areaspec, rewrite_polygons,
             find_restrictors, classify_joins)

``bind_tables`` resolves every table against the catalog; ``check_columns`` names an
unknown column with its line and column; ``expand_stars`` lists the
columns behind ``*`` (never the hidden ``_healpix_29``); ``rewrite_areaspec`` turns
``qserv_areaspec_*`` into exact per-row predicates on every partitioned table with a
position; ``find_restrictors`` collects what chooses partitions (regions and director
keys); ``classify_joins`` finds how partitioned tables are linked (``joins``) and
refuses cross products of them, saying what would make them work.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlglot import exp

from skyshard.catalog.model import CatalogMeta, TableInfo, TableKind
from skyshard.errors import UnknownNameError, UnsupportedQueryError
from skyshard.sphere.regions import Box, Circle, Ellipse, Polygon
from skyshard.sql.joins import JoinGraph

Region = Circle | Box | Ellipse | Polygon


@dataclass
class TableRef:
    """One table occurrence in the query: the name it goes by and what it is."""

    alias: str
    info: TableInfo
    node: exp.Table
    outermost: bool


@dataclass
class KeyConstraint:
    """Director-key values (``=``/``IN``) or a closed range (``BETWEEN``)."""

    values: tuple | None = None
    low: object = None
    high: object = None


@dataclass
class Analysis:
    """Everything the planner needs to know about one query."""

    sql: str
    tree: exp.Query
    catalog: CatalogMeta
    refs: list[TableRef] = field(default_factory=list)
    regions: dict[str, list[Region]] = field(default_factory=dict)  # alias -> regions
    keys: dict[str, list[KeyConstraint]] = field(default_factory=dict)  # alias -> keys
    joins: JoinGraph | None = None
    pseudo: dict[str, set[str]] = field(default_factory=dict)  # alias -> pseudo-columns used
    nowhere: set[str] = field(default_factory=set)  # aliases restricted to an empty region

    @property
    def outer_refs(self) -> list[TableRef]:
        return [r for r in self.refs if r.outermost]

    def ref(self, alias: str) -> TableRef:
        for r in self.outer_refs:
            if r.alias.lower() == alias.lower():
                return r
        raise KeyError(alias)


Rule = Callable[[Analysis], None]


def analyze(sql: str, tree: exp.Query, catalog: CatalogMeta) -> Analysis:
    """Run every rule on a copy of ``tree``."""
    a = Analysis(sql=sql, tree=tree.copy(), catalog=catalog)
    for rule in RULES:
        rule(a)
    return a


# --- rules ----------------------------------------------------------------------------------


def bind_tables(a: Analysis) -> None:
    """Resolve table names; database qualifiers are dropped (a catalog is one database)."""
    ctes = {c.alias_or_name.lower() for c in a.tree.find_all(exp.CTE)}
    outer = _outer_select(a.tree)
    outer_tables = set()
    if outer is not None:
        for t in _from_tables(outer):
            outer_tables.add(id(t))
    for table in list(a.tree.find_all(exp.Table)):
        if table.name.lower() in ctes and not table.args.get("db"):
            continue
        try:
            info = a.catalog.table(table.name)
        except Exception:
            line, column = _position(table.this)
            raise UnknownNameError(
                kind="table", message=f"no table {table.name!r} in catalog {a.catalog.name!r} "
                f"(tables: {', '.join(sorted(a.catalog.tables)) or 'none'})",
                line=line, column=column, sql=a.sql) from None
        a.refs.append(TableRef(table.alias_or_name, info, table, id(table) in outer_tables))
    for col in a.tree.find_all(exp.Column):
        for part in ("db", "catalog"):
            if col.args.get(part) is not None:
                col.set(part, None)
    names = [r.alias.lower() for r in a.outer_refs]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise UnsupportedQueryError(
            f"table name {sorted(dup)[0]!r} is used twice", construct="duplicate table alias",
            suggestion="give each occurrence its own alias", sql=a.sql)


def expand_stars(a: Analysis) -> None:
    """Replace ``*`` and ``t.*`` in the outermost SELECT by the tables' columns."""
    outer = _outer_select(a.tree)
    if outer is None:
        return
    refs = a.outer_refs
    new: list[exp.Expression] = []
    changed = False
    for e in outer.expressions:
        if isinstance(e, exp.Star):
            changed = True
            for r in refs:
                new.extend(exp.column(c, table=r.alias, quoted=True) for c in r.info.column_names)
        elif isinstance(e, exp.Column) and isinstance(e.this, exp.Star):
            changed = True
            r = _ref_by_alias(a, e.table)
            new.extend(exp.column(c, table=r.alias, quoted=True) for c in r.info.column_names)
        else:
            new.append(e)
    if changed:
        outer.set("expressions", new)


AREASPEC = {
    "qserv_areaspec_box": "box",
    "qserv_areaspec_circle": "circle",
    "qserv_areaspec_ellipse": "ellipse",
    "qserv_areaspec_poly": "poly",
}


def rewrite_areaspec(a: Analysis) -> None:
    """``qserv_areaspec_*(...)`` -> exact predicates on each partitioned table with a position.

    It must be a top-level AND term of the outermost WHERE (as Qserv requires). A box
    whose ``dec_min`` exceeds its ``dec_max`` is empty, as in Qserv (an empty latitude
    interval) and sciSQL (``scisql_s2PtInBox`` is 0): the query reads nothing.
    """
    outer = _outer_select(a.tree)
    where = outer.args.get("where") if outer is not None else None
    top_terms = _conjuncts(where.this) if where is not None else []
    for fn in list(a.tree.find_all(exp.Anonymous)):
        kind = AREASPEC.get(fn.name.lower())
        if kind is None:
            continue
        term = fn.parent if _is_eq_one(fn.parent, fn) else fn
        if not any(term is t for t in top_terms):
            raise UnsupportedQueryError(
                f"{fn.name}() must be a top-level AND term of the outermost WHERE clause",
                construct=fn.name, sql=a.sql,
                suggestion="inside OR or a sub-query, write scisql_s2PtIn*(ra, dec, ...) = 1 instead")
        region = _region(kind, fn, a.sql)
        targets = [r for r in a.outer_refs if r.info.is_partitioned and r.info.ra and r.info.dec]
        if not targets:
            raise UnsupportedQueryError(
                f"{fn.name}() needs a partitioned table with a position in FROM",
                construct=fn.name, sql=a.sql)
        if region is EMPTY:
            # No row can match: the WHERE clause is false, no partition is read.
            a.nowhere.update(r.alias for r in a.outer_refs if r.info.is_partitioned)
            term.replace(exp.false())
            continue
        preds = [_region_predicate(region, r.alias, r.info) for r in targets]
        for r in targets:
            # Only a director's partitions follow its own position: child rows live where
            # their director row is, so a region on a child's columns prunes nothing.
            if r.info.kind is TableKind.DIRECTOR:
                a.regions.setdefault(r.alias, []).append(region)
        term.replace(_and_all(preds))


def rewrite_polygons(a: Analysis) -> None:
    """``scisql_s2PtInCPoly(ra, dec, v1ra, v1dec, ...)`` -> a vectorised SQL expression."""
    import sqlglot

    from skyshard.engine.macros import pt_in_polygon_sql
    from skyshard.sql.dialect import to_duckdb

    for fn in list(a.tree.find_all(exp.Anonymous)):
        if fn.name.lower() != "scisql_s2ptincpoly":
            continue
        args = fn.expressions
        consts = [_const(x) for x in args[2:]]
        if len(args) < 8 or len(args) % 2 or any(c is None for c in consts):
            raise UnsupportedQueryError(
                "scisql_s2PtInCPoly() takes ra, dec and at least 3 vertices as numeric constants",
                construct="scisql_s2PtInCPoly", sql=a.sql,
                suggestion="write the vertices inline, or SET @poly = scisql_s2CPolyToBin(...) "
                           "before the SELECT in the same request")
        poly = Polygon(tuple(zip(consts[0::2], consts[1::2])))
        text = pt_in_polygon_sql(to_duckdb(args[0]), to_duckdb(args[1]), poly)
        fn.replace(exp.Paren(this=sqlglot.parse_one(text, read="duckdb")))


def find_restrictors(a: Analysis) -> None:
    """Regions from top-level ``scisql_s2PtIn*(ra, dec, ...) = 1`` on a director's own
    position, and director keys from ``=``, ``IN`` and ``BETWEEN``."""
    outer = _outer_select(a.tree)
    where = outer.args.get("where") if outer is not None else None
    if where is None:
        return
    for term in _conjuncts(where.this):
        fn = _eq_one_function(term)
        if fn is not None and fn.name.lower() in _PT_IN:
            alias = _position_alias(a, fn.expressions[0], fn.expressions[1])
            consts = [_const(x) for x in fn.expressions[2:]]
            if (fn.name.lower() == "scisql_s2ptinbox" and len(consts) == 4
                    and all(c is not None for c in consts) and _empty_box(*consts)):
                a.nowhere.update(r.alias for r in a.outer_refs if r.info.is_partitioned)
                continue
            if alias and all(c is not None for c in consts):
                try:
                    region = _PT_IN[fn.name.lower()](*consts)
                except Exception:
                    region = None  # an invalid region is the macro's business; no pruning
                if region is not None:
                    a.regions.setdefault(alias, []).append(region)
            continue
        key = _key_constraint(a, term)
        if key is not None:
            alias, constraint = key
            a.keys.setdefault(alias, []).append(constraint)


def classify_joins(a: Analysis) -> None:
    """Key, equality and near-neighbour links between partitioned tables (see ``joins``);
    cross products of partitioned tables are refused there."""
    from skyshard.sql.joins import classify

    a.joins = classify(a)


#: Columns every partitioned table has without storing them: ``chunkId`` is the id of
#: the partition a row lives in (see ``catalog.model.Partition.id``).
PSEUDO_COLUMNS = {"chunkid": "chunkId"}


def check_columns(a: Analysis) -> None:
    """Every column of the outermost SELECT names a column of its tables (or an output
    alias); otherwise say which, where, and what exists."""
    outer = _outer_select(a.tree)
    if outer is None:
        return
    aliases = {e.alias.lower() for e in outer.expressions if isinstance(e, exp.Alias)}
    refs = a.outer_refs
    subquery_names = {s.alias_or_name.lower() for s in outer.find_all(exp.Subquery)
                      if s.find_ancestor(exp.Select) is outer}
    for col in outer.find_all(exp.Column):
        if isinstance(col.this, exp.Star) or col.find_ancestor(exp.Select) is not outer:
            continue
        name = col.name.lower()
        line, column = _position(col)
        if col.table:
            if col.table.lower() in subquery_names:
                continue
            try:
                ref = a.ref(col.table)
            except KeyError:
                raise UnknownNameError(f"no table or alias {col.table!r} in FROM", kind="table",
                                       line=line,
                                       column=column, sql=a.sql) from None
            if name not in (c.lower() for c in ref.info.column_names):
                if name in PSEUDO_COLUMNS and ref.info.is_partitioned:
                    a.pseudo.setdefault(ref.alias, set()).add(PSEUDO_COLUMNS[name])
                    continue
                raise UnknownNameError(
                    f"no column {col.name!r} in table {ref.info.name}", kind="column",
                    line=line, column=column,
                    sql=a.sql)
        elif not subquery_names and name not in aliases and not any(
                name in (c.lower() for c in r.info.column_names) for r in refs):
            owners = [r for r in refs if r.info.is_partitioned]
            if name in PSEUDO_COLUMNS and len(owners) == 1:
                a.pseudo.setdefault(owners[0].alias, set()).add(PSEUDO_COLUMNS[name])
                continue
            tables = ", ".join(r.info.name for r in refs) or "the FROM clause"
            raise UnknownNameError(f"no column {col.name!r} in {tables}", kind="column",
                                   line=line, column=column,
                                   sql=a.sql)


def _position(node: exp.Expression) -> tuple[int | None, int | None]:
    ident = node.this if isinstance(node, exp.Column) else node
    meta = getattr(ident, "meta", None) or {}
    line, end_col = meta.get("line"), meta.get("col")
    if end_col is not None and meta.get("start") is not None and meta.get("end") is not None:
        return line, end_col - (meta["end"] - meta["start"])  # sqlglot marks the last character
    return line, end_col


RULES: tuple[Rule, ...] = (
    bind_tables, check_columns, expand_stars, rewrite_areaspec, rewrite_polygons,
    find_restrictors, classify_joins,
)


# --- helpers ----------------------------------------------------------------------------------


def _outer_select(tree: exp.Expression) -> exp.Select | None:
    return tree if isinstance(tree, exp.Select) else None


def _from_tables(select: exp.Select) -> list[exp.Table]:
    out = []
    src = select.args.get("from_") or select.args.get("from")
    if src is not None and isinstance(src.this, exp.Table):
        out.append(src.this)
    for j in select.args.get("joins") or []:
        if isinstance(j.this, exp.Table):
            out.append(j.this)
    return out


def _ref_by_alias(a: Analysis, alias: str) -> TableRef:
    try:
        return a.ref(alias)
    except KeyError:
        raise UnknownNameError(f"no table {alias!r} in the FROM clause", kind="table", sql=a.sql) from None


def _conjuncts(e: exp.Expression | None) -> list[exp.Expression]:
    if e is None:
        return []
    if isinstance(e, exp.Paren):
        return _conjuncts(e.this)
    if isinstance(e, exp.And):
        return _conjuncts(e.left) + _conjuncts(e.right)
    return [e]


def _and_all(preds: list[exp.Expression]) -> exp.Expression:
    out = preds[0]
    for p in preds[1:]:
        out = exp.And(this=out, expression=p)
    return exp.Paren(this=out) if len(preds) > 1 else out


def _is_eq_one(parent: exp.Expression | None, fn: exp.Expression) -> bool:
    if not isinstance(parent, exp.EQ):
        return False
    other = parent.expression if parent.this is fn else parent.this
    return _const(other) == 1


def _eq_one_function(term: exp.Expression) -> exp.Anonymous | None:
    if isinstance(term, exp.EQ):
        for fn, other in ((term.this, term.expression), (term.expression, term.this)):
            if isinstance(fn, exp.Anonymous) and _const(other) == 1:
                return fn
    return None


def _const(e: exp.Expression) -> float | None:
    """Value of a numeric constant expression, or None."""
    if isinstance(e, exp.Literal) and not e.is_string:
        return float(e.this)
    if isinstance(e, exp.Neg):
        v = _const(e.this)
        return -v if v is not None else None
    if isinstance(e, exp.Paren):
        return _const(e.this)
    ops = {exp.Add: float.__add__, exp.Sub: float.__sub__, exp.Mul: float.__mul__}
    for kind, op in ops.items():
        if isinstance(e, kind):
            x, y = _const(e.this), _const(e.expression)
            return op(x, y) if x is not None and y is not None else None
    if isinstance(e, exp.Div):
        x, y = _const(e.this), _const(e.expression)
        return x / y if x is not None and y not in (None, 0.0) else None
    return None


#: The region of a box with ``dec_min > dec_max``: no point.
EMPTY = object()


def _empty_box(ra_min: float, dec_min: float, ra_max: float, dec_max: float) -> bool:
    """A box of valid latitudes with ``dec_min > dec_max``."""
    return all(math.isfinite(v) for v in (ra_min, ra_max)) and \
        all(math.isfinite(d) and -90.0 <= d <= 90.0 for d in (dec_min, dec_max)) and dec_min > dec_max


def _region(kind: str, fn: exp.Anonymous, sql: str) -> Region | object:
    consts = [_const(x) for x in fn.expressions]
    if any(c is None for c in consts):
        raise UnsupportedQueryError(f"{fn.name}() takes numeric constants only",
                                    construct=fn.name, sql=sql)
    arity = {"box": 4, "circle": 3, "ellipse": 5}
    if kind in arity and len(consts) != arity[kind]:
        raise UnsupportedQueryError(f"{fn.name}() takes {arity[kind]} arguments, got {len(consts)}",
                                    construct=fn.name, sql=sql)
    try:
        if kind == "box":
            if _empty_box(*consts):
                return EMPTY
            return Box(*consts)
        if kind == "circle":
            return Circle(*consts)
        if kind == "ellipse":
            return Ellipse(*consts)
        if len(consts) < 6 or len(consts) % 2:
            raise ValueError("a polygon needs at least 3 vertices as ra, dec pairs")
        return Polygon(tuple(zip(consts[0::2], consts[1::2])))
    except Exception as exc:
        raise UnsupportedQueryError(f"{fn.name}(): {exc}", construct=fn.name, sql=sql) from None


def _region_predicate(region: Region, alias: str, info: TableInfo) -> exp.Expression:
    import sqlglot

    from skyshard.engine.macros import pt_in_polygon_sql

    ra = exp.column(info.ra, table=alias, quoted=True)
    dec = exp.column(info.dec, table=alias, quoted=True)
    if isinstance(region, Polygon):
        text = pt_in_polygon_sql(ra.sql("duckdb"), dec.sql("duckdb"), region)
        return exp.EQ(this=exp.Paren(this=sqlglot.parse_one(text, read="duckdb")),
                      expression=exp.Literal.number(1))
    if isinstance(region, Box):
        name, args = "scisql_s2PtInBox", (region.ra_min_deg, region.dec_min_deg,
                                          region.ra_max_deg, region.dec_max_deg)
    elif isinstance(region, Circle):
        name, args = "scisql_s2PtInCircle", (region.ra_deg, region.dec_deg, region.radius_deg)
    else:
        name, args = "scisql_s2PtInEllipse", (region.ra_deg, region.dec_deg,
                                              region.semi_major_arcsec, region.semi_minor_arcsec,
                                              region.pos_angle_deg)
    call = exp.Anonymous(this=name, expressions=[ra, dec, *(_num(x) for x in args)])
    return exp.EQ(this=call, expression=exp.Literal.number(1))


def _num(x: float) -> exp.Expression:
    lit = exp.Literal.number(repr(abs(float(x))))
    return exp.Neg(this=lit) if x < 0 else lit


def _box(ra_min, dec_min, ra_max, dec_max):
    return Box(ra_min, dec_min, ra_max, dec_max)


def _poly(*v):
    return Polygon(tuple(zip(v[0::2], v[1::2])))


_PT_IN = {
    "scisql_s2ptinbox": _box,
    "scisql_s2ptincircle": lambda ra, dec, r: Circle(ra, dec, r),
    "scisql_s2ptinellipse": lambda *v: Ellipse(*v),
}


def _resolve_column(a: Analysis, col: exp.Column) -> TableRef | None:
    if not isinstance(col, exp.Column) or isinstance(col.this, exp.Star):
        return None
    if col.table:
        try:
            return a.ref(col.table)
        except KeyError:
            return None
    owners = [r for r in a.outer_refs if col.name.lower() in
              (c.lower() for c in r.info.column_names)]
    return owners[0] if len(owners) == 1 else None


def _position_alias(a: Analysis, ra: exp.Expression, dec: exp.Expression) -> str | None:
    """The alias whose director position the two columns are (pruning is only exact for
    directors: child rows live where their director row is, not where they are)."""
    if not (isinstance(ra, exp.Column) and isinstance(dec, exp.Column)):
        return None
    r1, r2 = _resolve_column(a, ra), _resolve_column(a, dec)
    if r1 is None or r1 is not r2 or r1.info.kind is not TableKind.DIRECTOR:
        return None
    if ra.name.lower() == (r1.info.ra or "").lower() and dec.name.lower() == (r1.info.dec or "").lower():
        return r1.alias
    return None


def _family_key_column(info: TableInfo) -> str | None:
    if info.kind is TableKind.DIRECTOR:
        return info.key
    if info.kind is TableKind.CHILD:
        return info.director_key
    return None


def _key_constraint(a: Analysis, term: exp.Expression) -> tuple[str, KeyConstraint] | None:
    def key_ref(col) -> TableRef | None:
        r = _resolve_column(a, col)
        if r is None:
            return None
        k = _family_key_column(r.info)
        return r if k and col.name.lower() == k.lower() else None

    def literal(e):
        if isinstance(e, exp.Literal):
            return int(e.this) if not e.is_string and e.this.lstrip("-").isdigit() else (
                float(e.this) if not e.is_string else e.this)
        if isinstance(e, exp.Neg) and isinstance(e.this, exp.Literal) and not e.this.is_string:
            v = literal(e.this)
            return -v
        return None

    if isinstance(term, exp.EQ):
        for c, v in ((term.this, term.expression), (term.expression, term.this)):
            if isinstance(c, exp.Column) and (r := key_ref(c)) and (val := literal(v)) is not None:
                return r.alias, KeyConstraint(values=(val,))
    if isinstance(term, exp.In) and isinstance(term.this, exp.Column) and not term.args.get("query"):
        r = key_ref(term.this)
        vals = [literal(v) for v in term.expressions]
        if r and vals and all(v is not None for v in vals):
            return r.alias, KeyConstraint(values=tuple(vals))
    if isinstance(term, exp.Between) and isinstance(term.this, exp.Column):
        r = key_ref(term.this)
        lo, hi = literal(term.args["low"]), literal(term.args["high"])
        if r and lo is not None and hi is not None:
            return r.alias, KeyConstraint(low=lo, high=hi)
    return None
