"""How the partitioned tables of a query are joined, and which joins stay partition-local.

Two partitioned tables of the outermost SELECT may be linked by

- a **key link**: equality of their family keys (``Object.objectId = Source.objectId``,
  in ``ON``, ``USING`` or ``WHERE``): matching rows live in the same partition;
- a **near-neighbour link**: ``scisql_angSep(a.ra, a.dec, b.ra, b.dec) < r`` (or ``<=``,
  or ``scisql_s2PtInCircle(b.ra, b.dec, a.ra, a.dec, r) = 1``) on two directors' own
  positions. When both share a tiling and ``r`` fits in the right table's margin, the
  join is partition-local: the left side reads a partition, the right side reads the same
  partition plus its margin, and rows are paired only within one partition.
- an **equality link** of other columns (``s.exposureId = e.exposureId``): correct in one
  statement over all partitions (a hash join), but not partition-local.

Partitioned tables with no link at all form a cross product: the planner runs it only
when the chosen partitions make it small (two id lookups, say) and otherwise refuses it,
saying what would make it work. Every near-neighbour link also gets the implied
``b.dec BETWEEN a.dec - r AND a.dec + r``, which lets DuckDB use a range join.

>>> NearNeighbour("o1", "o2", 0.01, local=True).radius_arcsec
36.0
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlglot import exp

from skyshard.catalog.model import TableKind


@dataclass(frozen=True)
class NearNeighbour:
    left: str
    right: str
    radius_deg: float
    local: bool  # partition-local with the right table's margin

    @property
    def radius_arcsec(self) -> float:
        return self.radius_deg * 3600


@dataclass
class JoinGraph:
    """Links between the outermost partitioned aliases (lower-cased)."""

    key_links: list[tuple[str, str]]
    equality_links: list[tuple[str, str]]
    near: list[NearNeighbour]
    #: groups of partitioned aliases with no join condition between groups: a cross
    #: product, allowed only when the planner estimates it small (see plan.py)
    unlinked: list[list[str]] | None = None

    def groups(self, aliases: list[str]) -> list[set[str]]:
        """Aliases that must read the same partitions: key links and local near-neighbour
        links (right follows left)."""
        return _components(aliases, self.key_links + [(n.left, n.right) for n in self.near if n.local])

    def key_groups(self, aliases: list[str]) -> list[set[str]]:
        """Aliases whose rows of one result row share a director row (key links only)."""
        return _components(aliases, self.key_links)


def _components(aliases: list[str], links: list[tuple[str, str]]) -> list[set[str]]:
    parent = {a: a for a in aliases}

    def find(x: str) -> str:
        while parent[x] != x:
            x = parent[x]
        return x

    for x, y in links:
        parent[find(x)] = find(y)
    out: dict[str, set[str]] = {}
    for a in aliases:
        out.setdefault(find(a), set()).add(a)
    return list(out.values())


def classify(a) -> JoinGraph:
    """Build the join graph of an :class:`~skyshard.sql.analyze.Analysis`; refuse cross
    products of partitioned tables; add the dec band of each near-neighbour link."""
    from skyshard.sql.analyze import _conjuncts, _const, _outer_select, _resolve_column

    outer = _outer_select(a.tree)
    graph = JoinGraph([], [], [])
    if outer is None:
        return graph
    parts = [r for r in a.outer_refs if r.info.is_partitioned]
    if len(parts) < 2:
        return graph
    terms: list[exp.Expression] = []
    where = outer.args.get("where")
    if where is not None:
        terms += _conjuncts(where.this)
    # Equality of columns of any two tables (replicated ones included) connects them: a
    # match table joined to two directors links those directors.
    connections: list[tuple[str, str]] = []
    for j in outer.args.get("joins") or []:
        if j.args.get("on") is not None:
            terms += _conjuncts(j.args["on"])
        right = _ref_of_table(a, j.this)
        for ident in j.args.get("using") or []:
            if right is None:
                continue
            for left in a.outer_refs:
                if left is right or ident.name.lower() not in (
                        c.lower() for c in left.info.column_names):
                    continue
                connections.append((left.alias.lower(), right.alias.lower()))
                if left.info.is_partitioned and right.info.is_partitioned:
                    _link_columns(graph, left, ident.name, right, ident.name)
    for term in terms:
        if isinstance(term, exp.EQ) and isinstance(term.this, exp.Column) \
                and isinstance(term.expression, exp.Column):
            rl, rr = _resolve_column(a, term.this), _resolve_column(a, term.expression)
            if rl and rr and rl is not rr:
                connections.append((rl.alias.lower(), rr.alias.lower()))
                if rl.info.is_partitioned and rr.info.is_partitioned:
                    _link_columns(graph, rl, term.this.name, rr, term.expression.name)
            continue
        nn = _near_neighbour(a, term, _const, _resolve_column)
        if nn is not None:
            graph.near.append(nn)
    _add_dec_bands(a, outer, graph)
    _find_cross_products(a, parts, graph, connections)
    return graph


def _ref_of_table(a, table: exp.Expression):
    for r in a.outer_refs:
        if r.node is table:
            return r
    return None


def _family_key(info) -> str | None:
    if info.kind is TableKind.DIRECTOR:
        return info.key
    if info.kind is TableKind.CHILD:
        return info.director_key
    return None


def _family(info) -> str:
    return info.name if info.kind is TableKind.DIRECTOR else (info.director or info.name)


def _link_columns(graph: JoinGraph, left, lcol: str, right, rcol: str) -> None:
    kl, kr = _family_key(left.info), _family_key(right.info)
    pair = (left.alias.lower(), right.alias.lower())
    if (kl and kr and lcol.lower() == kl.lower() and rcol.lower() == kr.lower()
            and _family(left.info) == _family(right.info)):
        graph.key_links.append(pair)
    else:
        graph.equality_links.append(pair)


def _near_neighbour(a, term, const, resolve) -> NearNeighbour | None:
    call, radius = None, None
    if isinstance(term, (exp.LT, exp.LTE)) and _is_func(term.this, "scisql_angsep"):
        call, radius = term.this, const(term.expression)
    elif isinstance(term, (exp.GT, exp.GTE)) and _is_func(term.expression, "scisql_angsep"):
        call, radius = term.expression, const(term.this)
    elif isinstance(term, exp.EQ):
        for fn, other in ((term.this, term.expression), (term.expression, term.this)):
            if _is_func(fn, "scisql_s2ptincircle") and const(other) == 1 and len(fn.expressions) == 5:
                args = fn.expressions
                call = exp.Anonymous(this="scisql_angSep", expressions=[args[2], args[3], args[0], args[1]])
                radius = const(args[4])
    if call is None or radius is None or len(call.expressions) != 4:
        return None
    cols = call.expressions
    if not all(isinstance(c, exp.Column) for c in cols):
        return None
    left, left2 = resolve(a, cols[0]), resolve(a, cols[1])
    right, right2 = resolve(a, cols[2]), resolve(a, cols[3])
    if not (left and right and left is left2 and right is right2 and left is not right):
        return None
    for ref, ra, dec in ((left, cols[0], cols[1]), (right, cols[2], cols[3])):
        if ref.info.kind is not TableKind.DIRECTOR or (ra.name.lower(), dec.name.lower()) != (
                (ref.info.ra or "").lower(), (ref.info.dec or "").lower()):
            return None
    # The side with restrictors reads partitions; the other reads partitions + margins.
    if right.alias in a.regions or right.alias in a.keys:
        left, right = right, left
    same_tiling = left.info.partitions == right.info.partitions
    fits = right.info.margin_path is not None and radius * 3600 <= (right.info.margin_arcsec or 0)
    return NearNeighbour(left.alias.lower(), right.alias.lower(), float(radius),
                         local=same_tiling and fits and radius > 0)


def _is_func(node: exp.Expression, name: str) -> bool:
    return isinstance(node, exp.Anonymous) and node.name.lower() == name


def _add_dec_bands(a, outer: exp.Select, graph: JoinGraph) -> None:
    extra = []
    for nn in graph.near:
        left, right = a.ref(nn.left), a.ref(nn.right)
        ldec = exp.column(left.info.dec, table=left.alias, quoted=True)
        rdec = exp.column(right.info.dec, table=right.alias, quoted=True)
        r = exp.Literal.number(repr(nn.radius_deg))
        extra.append(exp.Between(this=rdec, low=exp.Sub(this=ldec.copy(), expression=r.copy()),
                                 high=exp.Add(this=ldec.copy(), expression=r.copy())))
    if extra:
        where = outer.args.get("where")
        cond = where.this if where is not None else None
        for e in extra:
            cond = e if cond is None else exp.And(this=cond, expression=e)
        outer.set("where", exp.Where(this=cond))


def _find_cross_products(a, parts, graph: JoinGraph, connections) -> None:
    linked = {frozenset(p) for p in graph.key_links + graph.equality_links + connections}
    linked |= {frozenset((n.left, n.right)) for n in graph.near}
    names = [r.alias.lower() for r in parts]
    parent = {r.alias.lower(): r.alias.lower() for r in a.outer_refs}

    def find(x):
        while parent[x] != x:
            x = parent[x]
        return x

    for pair in linked:
        x, y = tuple(pair) if len(pair) == 2 else (next(iter(pair)),) * 2
        parent[find(x)] = find(y)
    components: dict[str, list[str]] = {}
    for n in names:
        components.setdefault(find(n), []).append(n)
    if len(components) > 1:
        graph.unlinked = list(components.values())
