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

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from sqlglot import exp

from skyshard.catalog.model import CatalogMeta, Partition, TableInfo, TableKind
from skyshard.errors import InternalError
from skyshard.sql.analyze import Analysis, KeyConstraint, analyze
from skyshard.sql.dialect import QservDialect, to_duckdb
from skyshard.sql.parse import parse
from skyshard.sql.split import NotSplittable, Split, split
from skyshard.storage import layout

#: Looks up the partitions of director keys: (table, constraints) -> {(order, pixel)}.
KeyLookup = Callable[[TableInfo, list[KeyConstraint]], set[tuple[int, int]]]


@dataclass
class QueryPlan:
    sql: str
    analysis: Analysis
    names: list[str] | None
    partitions: list[Partition] | None  # the family's chosen partitions; None: no partitioned table
    split: Split | None
    split_refusal: str | None
    root: Path
    considered: int = 0  # partitions before pruning
    notes: list[str] = field(default_factory=list)

    @property
    def catalog(self) -> CatalogMeta:
        return self.analysis.catalog

    def single_sql(self) -> str:
        """The whole query over every chosen partition (the caller renames the output
        columns to the user's names by position)."""
        tree = self.analysis.tree.copy()
        return self._render(tree, self._chosen(), orphans=True)

    def parallel_sql(self, fragment: Iterable[tuple[int, int]], *, orphans: bool) -> str:
        assert self.split is not None
        return self._render(self.split.parallel.copy(), set(fragment), orphans=orphans)

    def merge_sql(self) -> str:
        assert self.split is not None
        return to_duckdb(self.split.merge)

    # --- rendering -----------------------------------------------------------------------

    def _chosen(self) -> set[tuple[int, int]]:
        return {(p.order, p.pixel) for p in self.partitions or ()}

    def _render(self, tree: exp.Expression, chosen: set[tuple[int, int]], *, orphans: bool) -> str:
        """Replace each catalog table by a placeholder, render, then splice in the scans
        (rendering file lists through sqlglot would cost more than the query)."""
        sources: dict[str, str] = {}
        for table in list(tree.find_all(exp.Table)):
            try:
                info = self.catalog.table(table.name)
            except Exception:
                continue  # a CTE name
            alias = table.alias_or_name
            outermost = table.find_ancestor(exp.Select) is tree
            wanted = chosen if outermost else {(p.order, p.pixel) for p in info.partitions}
            key = f"__skyshard_source_{len(sources)}__"
            sources[key] = self._source(info, wanted, orphans=orphans or not outermost)
            table.replace(exp.Table(this=exp.to_identifier(key),
                                    alias=exp.TableAlias(this=exp.to_identifier(alias, quoted=True))))
        text = to_duckdb(tree)
        for key, source in sources.items():
            if key not in text:
                raise InternalError(f"lost a table source while rendering: {text}")
            text = text.replace(key, source, 1)
        return text

    def _source(self, info: TableInfo, wanted: set[tuple[int, int]], *, orphans: bool) -> str:
        if info.kind is TableKind.REPLICATED:
            return _scan([str(self._abs(info.path))], hidden=False)
        base = self._abs(info.path)
        files = [layout.partition_path(str(base / layout.DATASET), p.order, p.pixel)
                 for p in info.partitions if (p.order, p.pixel) in wanted]
        if orphans and info.orphan_rows:
            files.append(str(base.parent / "orphans.parquet"))
        if not files:
            files = [str(base / layout.DATASET / "_common_metadata")]
        return _scan(files, hidden=True)

    def _abs(self, path: str) -> Path:
        p = Path(path)
        return p if p.is_absolute() else self.root / p


def plan(sql: str, catalog: CatalogMeta, root: Path, key_lookup: KeyLookup) -> QueryPlan:
    tree = parse(sql)
    a = analyze(sql, tree, catalog)
    names = _output_names(a.tree)
    partitions, considered = _choose_partitions(a, key_lookup)
    try:
        s, refusal = split(a.tree), None
    except NotSplittable as exc:
        s, refusal = None, exc.reason
    return QueryPlan(sql=sql, analysis=a, names=names, partitions=partitions, split=s,
                     split_refusal=refusal, root=root, considered=considered)


# --- partition choice ---------------------------------------------------------------------


def _choose_partitions(a: Analysis, key_lookup: KeyLookup) -> tuple[list[Partition] | None, int]:
    from skyshard.sphere import coverage

    parts = [r for r in a.refs if r.info.is_partitioned]
    if not parts:
        return None, 0
    directors = [r.info for r in parts if r.info.kind is TableKind.DIRECTOR]
    if directors:
        tiling = list(directors[0].partitions)
    else:
        seen: dict[tuple[int, int], Partition] = {}
        for r in parts:
            for p in r.info.partitions:
                seen.setdefault((p.order, p.pixel), p)
        tiling = sorted(seen.values(), key=lambda p: p.range29[0])
    considered = len(tiling)
    keep = [True] * len(tiling)
    pairs = [(p.order, p.pixel) for p in tiling]
    for alias, regions in a.regions.items():
        for region in regions:
            hit = coverage.overlaps(region, pairs)
            keep = [k and h for k, h in zip(keep, hit)]
    for alias, constraints in a.keys.items():
        ref = a.ref(alias)
        found = key_lookup(ref.info, constraints)
        keep = [k and pr in found for k, pr in zip(keep, pairs)]
    return [p for p, k in zip(tiling, keep) if k], considered


# --- small pieces ---------------------------------------------------------------------------


def _scan(files: list[str], *, hidden: bool) -> str:
    """A parenthesised DuckDB scan of ``files`` (the hidden ``_healpix_29`` left out)."""
    listing = ", ".join("'" + f.replace("'", "''") + "'" for f in files)
    star = f"* EXCLUDE ({layout.HEALPIX_COLUMN})" if hidden else "*"
    return f"(SELECT {star} FROM read_parquet([{listing}], hive_partitioning = false))"


def _unalias(e: exp.Expression) -> exp.Expression:
    return e.this if isinstance(e, exp.Alias) else e


def _output_names(tree: exp.Expression) -> list[str] | None:
    if not isinstance(tree, exp.Select):
        return None
    names = []
    for e in tree.expressions:
        if isinstance(e, exp.Alias):
            names.append(e.alias)
        elif isinstance(e, exp.Column) and not isinstance(e.this, exp.Star):
            names.append(e.name)
        else:
            names.append(e.sql(dialect=QservDialect))
    return names


__all__ = ["QueryPlan", "plan", "InternalError"]
