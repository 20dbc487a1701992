"""Plan: from SQL text to statements bound to partition files.

``plan(sql, catalog, root)`` parses, analyses, chooses partitions (coarse, conservative)
and prepares two ways to run the query:

- ``single``: the whole query as one DuckDB statement over every chosen partition file
  (the cheapest path on one machine, valid for any query the analysis accepted);
- ``split``: a parallel statement per fragment plus a merge statement, for executors that
  spread fragments over threads or workers. ``split`` is None, with ``split_refusal``
  saying why, when the query cannot be split (sub-queries, window functions, ...).

Per-row predicates always stay in the statements: partition choice may over-include,
never drop.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from sqlglot import exp

from skyshard.catalog.model import MAX_ORDER, CatalogMeta, Partition, TableInfo, TableKind
from skyshard.errors import InternalError, UnsupportedQueryError
from skyshard.sql.analyze import Analysis, KeyConstraint, analyze
from skyshard.sql.dialect import to_duckdb
from skyshard.sql.names import output_names
from skyshard.sql.parse import parse
from skyshard.sql.split import NotSplittable, Split, split
from skyshard.sql.variables import NoResult
from skyshard.storage import layout

@dataclass(frozen=True)
class KeyMatch:
    """Where rows with some director keys live: partitions, and for ``=``/``IN`` the rows'
    ``_healpix_29`` values (None when unknown)."""

    partitions: set[tuple[int, int]]
    healpix: set[int] | None = None


#: Looks up director keys in the director index: (table, constraints) -> KeyMatch.
KeyLookup = Callable[[TableInfo, list[KeyConstraint]], KeyMatch]


@dataclass
class QueryPlan:
    sql: str
    analysis: Analysis
    names: list[str] | None
    chosen: dict[str, set[tuple[int, int]]]  # outermost partitioned alias (lower) -> partitions
    healpix: dict[str, set[int]]  # alias (lower) -> the only _healpix_29 values it can need
    partitions: list[Partition] | None  # the one partition group, for split execution
    group_refusal: str | None  # why the partitioned tables do not form one group
    root: Path
    considered: int = 0  # partitions before pruning
    _split: tuple[Split | None, str | None] | None = field(default=None, repr=False)

    @property
    def split(self) -> Split | None:
        """Parallel + merge statements, or None (``split_refusal`` says why). Computed on
        first use: the embedded default runs one statement and never needs it."""
        return self._split_and_reason()[0]

    @property
    def split_refusal(self) -> str | None:
        return self._split_and_reason()[1]

    def _split_and_reason(self) -> tuple[Split | None, str | None]:
        if self._split is None:
            if self.group_refusal is not None:
                self._split = (None, self.group_refusal)
            else:
                try:
                    self._split = (split(self.analysis.tree), None)
                except NotSplittable as exc:
                    self._split = (None, exc.reason)
        return self._split

    @property
    def catalog(self) -> CatalogMeta:
        return self.analysis.catalog

    def single_sql(self) -> str:
        """The whole query over every chosen partition (the caller renames the output
        columns to the user's names by position)."""
        return self._render(self.analysis.tree.copy(), None, orphans=True)

    def parallel_sql(self, fragment: Iterable[tuple[int, int]], *, orphans: bool) -> str:
        assert self.split is not None
        return self._render(self.split.parallel.copy(), set(fragment), orphans=orphans)

    def parallel_sql_over(self, relation: str) -> str:
        """The parallel statement reading the query's one partitioned table from the
        registered relation ``relation`` instead of its files (a shared scan hands one
        read of some partitions to several queries). The relation holds those
        partitions' rows with at least the columns the query uses, without
        ``_healpix_29``; orphans are not in it. Only for a query without pseudo-columns,
        partition-local joins or a coarse ``_healpix_29`` filter."""
        assert self.split is not None
        return self._render(self.split.parallel.copy(), None, orphans=False, scanned=relation)

    def merge_sql(self) -> str:
        assert self.split is not None
        return to_duckdb(self.split.merge)

    # --- rendering -----------------------------------------------------------------------

    def _render(self, tree: exp.Expression, fragment: set[tuple[int, int]] | None, *,
                orphans: bool, scanned: str | None = None) -> str:
        """Replace each catalog table by a placeholder, render, then splice in the scans
        (rendering file lists through sqlglot would cost more than the query)."""
        joins = self.analysis.joins
        local_nn = [n for n in (joins.near if joins else []) if n.local]
        tagged = {n.left for n in local_nn} | {n.right for n in local_nn}
        with_margin = {n.right for n in local_nn}
        if local_nn and isinstance(tree, exp.Select):
            for n in local_nn:
                tree.where(exp.EQ(this=exp.column(PART, table=n.left, quoted=True),
                                  expression=exp.column(PART, table=n.right, quoted=True)),
                           copy=False)
        sources: dict[str, str] = {}
        for table in list(tree.find_all(exp.Table)):
            try:
                info = self.catalog.table(table.name)
            except Exception:
                continue  # a CTE name
            alias = table.alias_or_name
            outermost = table.find_ancestor(exp.Select) is tree
            key = alias.lower()
            if outermost and info.is_partitioned:
                wanted = self.chosen.get(key, set())
                if fragment is not None:
                    wanted = wanted & fragment
            else:
                wanted = {(p.order, p.pixel) for p in info.partitions}
            pseudo = self.analysis.pseudo.get(alias, set()) if outermost else set()
            regions = self.analysis.regions.get(alias, []) if outermost else []
            where = _healpix_filter(regions, self.healpix.get(key) if outermost else None,
                                    orphans=info.kind is TableKind.CHILD)
            if scanned is not None and outermost and info.is_partitioned:
                if where or pseudo or key in tagged:
                    raise InternalError(f"{alias} cannot be read from a shared scan")
                source = f'(SELECT * FROM "{scanned}")'
            else:
                source = self._source(
                    info, wanted, orphans=orphans or not outermost,
                    margin=outermost and key in with_margin, where=where,
                    extra={c: CHUNK_ID_SQL for c in pseudo} | (
                        {PART: CHUNK_ID_SQL} if outermost and key in tagged else {}))
            placeholder = f"__skyshard_source_{len(sources)}__"
            sources[placeholder] = source
            table.replace(exp.Table(this=exp.to_identifier(placeholder),
                                    alias=exp.TableAlias(this=exp.to_identifier(alias, quoted=True))))
        text = to_duckdb(tree, copy=False)  # ``tree`` is this rendering's own copy
        for placeholder, source in sources.items():
            if placeholder not in text:
                raise InternalError(f"lost a table source while rendering: {text}")
            text = text.replace(placeholder, source, 1)
        return text

    def _source(self, info: TableInfo, wanted: set[tuple[int, int]], *, orphans: bool,
                margin: bool = False, extra: dict[str, str] | None = None,
                where: str | None = None) -> str:
        if info.kind is TableKind.REPLICATED:
            return _scan([str(self._abs(info.path))], hidden=False)
        base = self._abs(info.path)
        files = list(self.partition_files(info, wanted).values())
        if margin and info.margin_path:
            mbase = self._abs(info.margin_path)
            files += [layout.partition_path(str(mbase / layout.DATASET), p.order, p.pixel)
                      for p in info.margin_partitions if (p.order, p.pixel) in wanted]
        if orphans and info.orphan_rows:
            files.append(str(base.parent / "orphans.parquet"))
        if not files:
            files = [str(base / layout.DATASET / "_common_metadata")]
        return _scan(files, hidden=True, extra=extra or {}, where=where)

    def partition_files(self, info: TableInfo, wanted: set[tuple[int, int]] | None = None
                        ) -> dict[tuple[int, int], str]:
        """The data file of each partition of ``info`` (order, pixel), or of the
        ``wanted`` ones, in the table's order, as the statements name them."""
        dataset = str(self._abs(info.path) / layout.DATASET)
        return {(p.order, p.pixel): layout.partition_path(dataset, p.order, p.pixel)
                for p in info.partitions if wanted is None or (p.order, p.pixel) in wanted}

    def _abs(self, path: str) -> Path:
        p = Path(path)
        return p if p.is_absolute() else self.root / p


#: A hidden column tagging each row with its partition (for partition-local joins).
PART = "_skyshard_part"
#: The partition id (``Partition.id``) from the path of the file a row comes from.
CHUNK_ID_SQL = (
    "(TRY_CAST(regexp_extract(filename, 'Npix=([0-9]+)', 1) AS BIGINT) << "
    f"(2 * ({MAX_ORDER} - TRY_CAST(regexp_extract(filename, 'Norder=([0-9]+)', 1) AS INTEGER))))"
)


def plan(sql: str, catalog: CatalogMeta, root: Path, key_lookup: KeyLookup, *,
         tree: exp.Expression | None = None) -> QueryPlan:
    """Plan ``sql`` (or its already parsed ``tree``) against ``catalog``."""
    tree = parse(sql) if tree is None else tree
    if isinstance(tree, NoResult):
        raise UnsupportedQueryError("the request only assigns user variables: there is no "
                                    "SELECT to plan", construct="SELECT INTO @variable", sql=sql)
    if not isinstance(tree, exp.Query):
        raise InternalError(f"cannot plan a {type(tree).__name__} statement")
    a = analyze(sql, tree, catalog)
    names = output_names(tree, a.tree, sql)
    chosen, healpix, group, considered, refusal = _choose_partitions(a, key_lookup)
    _check_cross_product(a, chosen)
    return QueryPlan(sql=sql, analysis=a, names=names, chosen=chosen, healpix=healpix,
                     partitions=group,
                     group_refusal=refusal, root=root, considered=considered)


#: The largest cross product of partitioned tables (row pairs, estimated from the chosen
#: partitions' row counts) the planner runs; beyond it the query is refused.
MAX_CROSS_PRODUCT_ROWS = 50_000_000


def _check_cross_product(a: Analysis, chosen: dict[str, set[tuple[int, int]]]) -> None:
    joins = a.joins
    if joins is None or not joins.unlinked:
        return
    estimate = 1
    for group in joins.unlinked:
        rows = 0
        for alias in group:
            info = a.ref(alias).info
            rows = max(rows, sum(p.rows for p in info.partitions
                                 if (p.order, p.pixel) in chosen.get(alias, set())))
        estimate *= max(rows, 1)
    if estimate > MAX_CROSS_PRODUCT_ROWS:
        first, other = a.ref(joins.unlinked[0][0]), a.ref(joins.unlinked[1][0])
        raise UnsupportedQueryError(
            f"{first.alias} and {other.alias} are joined without any condition linking them: "
            f"a cross product of partitioned tables (about {estimate:,} row pairs)",
            construct="cross join of partitioned tables", tables=[first.info.name, other.info.name],
            suggestion=f"join them on a key (e.g. {first.alias}.<key> = {other.alias}.<key>), "
                       "with a near-neighbour predicate scisql_angSep(a.ra, a.dec, b.ra, b.dec) < r, "
                       "or restrict both sides to a few partitions (id lookups, small areas)",
            sql=a.sql)


# --- partition choice ---------------------------------------------------------------------


def _choose_partitions(a: Analysis, key_lookup: KeyLookup):
    """Partitions per outermost partitioned alias.

    Aliases linked by their family key, or by a partition-local near-neighbour join, read
    the same partitions: the intersection of what their restrictors allow (the margin
    side of a near-neighbour join does not prune: its rows may pair with rows of
    partitions its own restrictor does not cover). Returns ``(chosen, group, considered,
    split_refusal)`` where ``group`` is the partition list when one group holds every
    partitioned alias (the split path needs that).
    """
    from skyshard.sphere import coverage

    refs = [r for r in a.outer_refs if r.info.is_partitioned]
    if not refs:
        return {}, {}, None, 0, None
    own: dict[str, set[tuple[int, int]] | None] = {}
    own_h: dict[str, set[int]] = {}
    for r in refs:
        pairs = [(p.order, p.pixel) for p in r.info.partitions]
        allowed: set[tuple[int, int]] | None = set() if r.alias in a.nowhere else None
        for region in a.regions.get(r.alias, []):
            hit = {pr for pr, h in zip(pairs, coverage.overlaps(region, pairs)) if h}
            allowed = hit if allowed is None else allowed & hit
        if a.keys.get(r.alias):
            match = key_lookup(r.info, a.keys[r.alias])
            allowed = match.partitions if allowed is None else allowed & match.partitions
            if match.healpix is not None:
                own_h[r.alias.lower()] = match.healpix
        own[r.alias.lower()] = allowed
    joins = a.joins
    aliases = [r.alias.lower() for r in refs]
    groups = joins.groups(aliases) if joins else [{x} for x in aliases]
    margin_side = {n.right for n in (joins.near if joins else []) if n.local}
    by_alias = {r.alias.lower(): r for r in refs}
    chosen: dict[str, set[tuple[int, int]]] = {}
    healpix: dict[str, set[int]] = {}
    key_groups = joins.key_groups(aliases) if joins else [{x} for x in aliases]
    for g in key_groups:
        hs = [own_h[m] for m in g if m in own_h]
        if hs:
            common = set.intersection(*hs)
            for m in g:
                healpix[m] = common
    considered = 0
    group_parts: list[Partition] | None = None
    for g in groups:
        tiling: dict[tuple[int, int], Partition] = {}
        for m in g:
            for p in by_alias[m].info.partitions:
                tiling.setdefault((p.order, p.pixel), p)
        allowed = set(tiling)
        for m in g:
            if m not in margin_side and own[m] is not None:
                allowed &= own[m]
        considered += len(tiling)
        for m in g:
            chosen[m] = allowed
        if len(groups) == 1:
            group_parts = sorted((tiling[k] for k in allowed), key=lambda p: p.range29[0])
    refusal = None if len(groups) == 1 else (
        "tables of different partitionings (or joined on other columns than their key) "
        "cannot be split into partition-local fragments")
    return chosen, healpix, group_parts, considered, refusal


# --- small pieces ---------------------------------------------------------------------------


def parquet_source(files: list[str]) -> str:
    """A parenthesised DuckDB scan of a partitioned table's ``files``, as the statements
    read them (every column but the hidden ``_healpix_29``).

    >>> parquet_source(["a.parquet"])
    "(SELECT * EXCLUDE (_healpix_29) FROM read_parquet(['a.parquet'], hive_partitioning = false))"
    """
    return _scan(files, hidden=True)


def _scan(files: list[str], *, hidden: bool, extra: dict[str, str] | None = None,
          where: str | None = None) -> str:
    """A parenthesised DuckDB scan of ``files`` (the hidden ``_healpix_29`` left out),
    with ``extra`` computed columns (name -> SQL over the ``filename`` column) and an
    optional coarse ``where`` on ``_healpix_29``."""
    listing = ", ".join("'" + f.replace("'", "''") + "'" for f in files)
    excluded = [layout.HEALPIX_COLUMN] if hidden else []
    options = "hive_partitioning = false"
    if extra:
        excluded.append("filename")
        options += ", filename = true"
    star = f"* EXCLUDE ({', '.join(excluded)})" if excluded else "*"
    cols = "".join(f", {sql} AS \"{name}\"" for name, sql in (extra or {}).items())
    filt = f" WHERE {where}" if where else ""
    return f"(SELECT {star}{cols} FROM read_parquet([{listing}], {options}){filt})"


#: At most this many ``_healpix_29`` ranges per region in a scan's coarse filter.
MAX_RANGES = 12
MAX_FILTER_ORDER = 14


def _healpix_filter(regions: list, values: set[int] | None, *, orphans: bool) -> str | None:
    """Coarse, conservative filter on ``_healpix_29``: the ranges of a director's own
    regions, the values of the director rows a key lookup found. Rows are sorted by it,
    so Parquet row groups outside are skipped unread; the exact predicates stay in the
    query. Child orphans (no director, NULL ``_healpix_29``) always pass."""
    from skyshard.sphere import coverage

    h = layout.HEALPIX_COLUMN
    terms = []
    if values is not None:
        listed = ", ".join(str(v) for v in sorted(values)) or "NULL"
        terms.append(f"{h} IN ({listed})" + (f" OR {h} IS NULL" if orphans else ""))
    for region in regions:
        # Cells about half the region's size: a handful of ranges, tight enough to skip
        # most row groups.
        radius = max(region.bounding_circle().radius_deg, 1e-6)
        order = max(0, min(MAX_FILTER_ORDER, int(math.floor(math.log2(58.6 / radius))) + 1))
        ranges = coverage.healpix29_ranges(region, order)
        while len(ranges) > MAX_RANGES and order > 0:
            order -= 1
            ranges = coverage.healpix29_ranges(region, order)
        terms.append(" OR ".join(f"({h} >= {lo} AND {h} < {hi})" for lo, hi in ranges) or "FALSE")
    return " AND ".join(f"({t})" for t in terms) if terms else None


def _unalias(e: exp.Expression) -> exp.Expression:
    return e.this if isinstance(e, exp.Alias) else e


__all__ = ["QueryPlan", "plan", "InternalError"]
