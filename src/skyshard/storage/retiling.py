"""Growing an existing tiling: where new rows go, which partitions split, which are new.

An increment keeps every existing partition that stays within ``max_rows`` (or is at the
deepest order) under its own name, and retiles only

- partitions that grow past ``max_rows``: split to order+1, recursively (HATS's rule
  applied to the partition's old and new rows together), and
- free sky (new rows outside every partition): new partitions at the lowest order whose
  pixel holds at most ``max_rows`` rows and contains no kept partition.

So partitions stay disjoint, kept partitions keep their files, and a partition is never
merged with its neighbours.

>>> kept = [Partition(1, 0, 10)]
>>> # 30 new rows in pixel (1, 1): free sky; (0, 0) holds a kept partition, so order 1
>>> cells = np.array([4]); counts = np.array([30])   # order-2 cell 4 is in (1, 1)
>>> [(p.order, p.pixel, p.rows) for p in retile(kept, cells, counts, order=2, max_rows=50)]
[(1, 1, 30)]
>>> # far away, nothing kept nearby: one order-0 partition
>>> [(p.order, p.pixel) for p in retile(kept, np.array([11 * 16]), np.array([5]), 2, 50)]
[(0, 11)]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from skyshard.catalog.model import Partition
from skyshard.storage import partitioning

#: Up to this order a histogram is handled as a dense array (order 10: 12.6 M cells,
#: 100 MB), much faster than sparse arrays of millions of cells.
DENSE_ORDER = 10


def retile(kept: Sequence[Partition], cells: np.ndarray, counts: np.ndarray, order: int,
           max_rows: int) -> list[Partition]:
    """New partitions for the rows counted in ``(cells, counts)`` (a sparse histogram at
    ``order``, no cell inside a ``kept`` partition), sorted by position."""
    cells = np.asarray(cells, dtype=np.int64)
    counts = np.asarray(counts, dtype=np.int64)
    if not _increasing(cells):
        by_cell = np.argsort(cells, kind="stable")
        cells, _, counts = _runs(cells[by_cell], counts[by_cell])
    blocked = _ancestors(kept)
    if order <= DENSE_ORDER:
        dense = np.zeros(12 * 4 ** order, dtype=np.int64)
        dense[cells] = counts
        return partitioning.align(dense, max_rows, blocked)
    out: list[Partition] = []
    remaining = np.ones(len(cells), dtype=bool)
    for k in range(order + 1):
        if not remaining.any():
            break
        shift = 2 * (order - k)
        pix = cells[remaining] >> shift  # sorted, as cells are
        uniq, inverse, sums = _runs(pix, counts[remaining])
        final = (sums <= max_rows) | (k == order)
        if k in blocked:
            final &= ~np.isin(uniq, blocked[k])
        out.extend(Partition(k, int(p), int(n)) for p, n in zip(uniq[final], sums[final]))
        done = np.zeros(len(cells), dtype=bool)
        done[remaining] = final[inverse]
        remaining &= ~done
    out.sort(key=lambda p: p.range29[0])
    return out


def _ancestors(partitions: Sequence[Partition]) -> dict[int, np.ndarray]:
    """Pixels at each order that strictly contain one of ``partitions``."""
    by_order: dict[int, set[int]] = {}
    for p in partitions:
        for k in range(p.order):
            by_order.setdefault(k, set()).add(p.pixel >> 2 * (p.order - k))
    return {k: np.array(sorted(v), dtype=np.int64) for k, v in by_order.items()}


@dataclass(frozen=True)
class Plan:
    """The tiling after an increment.

    ``tiling``: every partition, sorted; ``rewritten``: old partitions whose files are
    rewritten (they gain rows, or split); ``written``: new-tiling partitions whose files
    are written (kept partitions that gain rows, children of split partitions, new
    partitions in free sky); ``split``: old partitions replaced by finer ones.
    """

    tiling: list[Partition]
    rewritten: list[Partition]
    written: list[Partition]
    split: list[Partition]

    @property
    def untouched(self) -> list[Partition]:
        written = {(p.order, p.pixel) for p in self.written}
        return [p for p in self.tiling if (p.order, p.pixel) not in written]


def plan(old: Sequence[Partition], new_cells: np.ndarray, new_counts: np.ndarray, order: int,
         max_rows: int, old_cells_of) -> Plan:
    """Where an increment's rows go.

    ``(new_cells, new_counts)``: sparse histogram of the new rows at ``order``;
    ``old_cells_of(partition)`` returns the sparse histogram ``(cells, counts)`` at
    ``order`` of a partition's existing rows (read only for partitions that split).

    >>> old = [Partition(1, 0, 40), Partition(1, 1, 10)]
    >>> cells = np.array([0, 1, 4]); counts = np.array([20, 5, 3])   # order-2 cells
    >>> p = plan(old, cells, counts, 2, 50, lambda q: (np.array([2, 3]), np.array([20, 20])))
    >>> [(q.order, q.pixel, q.rows) for q in p.tiling]
    [(2, 0, 20), (2, 1, 5), (2, 2, 20), (2, 3, 20), (1, 1, 13)]
    >>> [(q.order, q.pixel) for q in p.split], [(q.order, q.pixel) for q in p.untouched]
    ([(1, 0)], [])
    """
    old = sorted(old, key=lambda p: p.range29[0])
    new_cells = np.asarray(new_cells, dtype=np.int64)
    new_counts = np.asarray(new_counts, dtype=np.int64)
    shift = partitioning.histogram_order_shift(order)
    idx = partitioning.locate(new_cells << shift, partitioning.starts29(old),
                              partitioning.ends29(old))
    gained = np.bincount(idx[idx >= 0], weights=new_counts[idx >= 0],
                         minlength=len(old)).astype(np.int64)
    kept: list[Partition] = []
    split: list[Partition] = []
    rewritten: list[Partition] = []
    written: list[Partition] = []
    cell_parts = [new_cells[idx < 0]]
    count_parts = [new_counts[idx < 0]]
    for i, p in enumerate(old):
        if not gained[i]:
            kept.append(p)
            continue
        rewritten.append(p)
        total = p.rows + int(gained[i])
        if total <= max_rows or p.order >= order:
            q = Partition(p.order, p.pixel, total)
            kept.append(q)
            written.append(q)
        else:
            split.append(p)
            oc, on = old_cells_of(p)
            cell_parts += [new_cells[idx == i], np.asarray(oc, dtype=np.int64)]
            count_parts += [new_counts[idx == i], np.asarray(on, dtype=np.int64)]
    cells = np.concatenate(cell_parts)
    counts = np.concatenate(count_parts)
    if len(cell_parts) > 1 or not _increasing(cells):  # a new table's cells are unique, sorted
        by_cell = np.argsort(cells, kind="stable")
        cells, _, counts = _runs(cells[by_cell], counts[by_cell])
    fresh = retile(kept, cells, counts, order, max_rows) if len(cells) else []
    written += fresh
    tiling = sorted(kept + fresh, key=lambda p: p.range29[0])
    written.sort(key=lambda p: p.range29[0])
    return Plan(tiling=tiling, rewritten=rewritten, written=written, split=split)


def fresh(counts: np.ndarray, max_rows: int) -> Plan:
    """The plan of a new table: the HATS tiling of a dense histogram of its rows
    (``partitioning.align``), every partition written."""
    tiling = partitioning.align(counts, max_rows)
    return Plan(tiling=tiling, rewritten=[], written=list(tiling), split=[])


def _increasing(a: np.ndarray) -> bool:
    """Whether ``a`` is strictly increasing (sorted, no repeats)."""
    return bool(np.all(a[1:] > a[:-1]))


def _runs(values: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``np.unique(values, return_inverse=True)`` and the summed ``weights`` per value,
    for sorted ``values``, in linear time.

    >>> _runs(np.array([2, 2, 5, 7, 7]), np.array([1, 2, 3, 4, 5]))
    (array([2, 5, 7]), array([0, 0, 1, 2, 2]), array([3, 3, 9]))
    """
    if not len(values):
        return values, np.zeros(0, np.intp), np.zeros(0, np.int64)
    first = np.r_[True, values[1:] != values[:-1]]
    starts = np.flatnonzero(first)
    return (values[starts], np.cumsum(first) - 1,
            np.add.reduceat(np.asarray(weights, dtype=np.int64), starts))


def sparse_histogram(h29: np.ndarray, order: int) -> tuple[np.ndarray, np.ndarray]:
    """``(cells, counts)`` of ``_healpix_29`` values at ``order``."""
    return np.unique(np.asarray(h29, dtype=np.int64) >> partitioning.histogram_order_shift(order),
                     return_counts=True)
