"""Adaptive HEALPix tiling: from a row-count histogram to partitions, and rows to them.

The tiling is HATS's: a pixel becomes a partition at the lowest order where it holds at
most ``max_rows`` rows (or at ``max_order``); empty pixels get no partition. Because the
NESTED scheme keeps every pixel's descendants contiguous, partitions are disjoint ranges
of ``_healpix_29`` and a sorted stream of rows can be cut into them in one pass.

>>> counts = np.zeros(12 * 4**2, dtype=np.int64); counts[0:16] = 10; counts[20] = 5
>>> [(p.order, p.pixel, p.rows) for p in align(counts, max_rows=200)]
[(0, 0, 160), (0, 1, 5)]
>>> [(p.order, p.pixel, p.rows) for p in align(counts, max_rows=50)]
[(1, 0, 40), (1, 1, 40), (1, 2, 40), (1, 3, 40), (0, 1, 5)]
"""

from __future__ import annotations

import math

import numpy as np

from skyshard.catalog.model import Partition
from skyshard.storage.layout import HEALPIX_ORDER


def histogram_order_shift(order: int) -> int:
    return 2 * (HEALPIX_ORDER - order)


def align(counts: np.ndarray, max_rows: int,
          blocked: dict[int, np.ndarray] | None = None) -> list[Partition]:
    """Partitions from a histogram of row counts at order ``log4(len(counts)/12)``.

    ``blocked``: pixels (sorted, per order) that may not become partitions, because
    they contain a partition kept from before; their rows go to finer pixels.

    >>> counts = np.zeros(12 * 4**2, dtype=np.int64); counts[0:16] = 10
    >>> [(p.order, p.pixel) for p in align(counts, 200, blocked={0: np.array([0])})]
    [(1, 0), (1, 1), (1, 2), (1, 3)]
    """
    max_order = int(round(math.log(len(counts) / 12, 4)))
    levels = [np.asarray(counts, dtype=np.int64)]
    for _ in range(max_order):
        levels.append(levels[-1].reshape(-1, 4).sum(axis=1))
    levels.reverse()  # levels[k] = counts at order k

    result: list[Partition] = []
    active = np.nonzero(levels[0])[0]
    for order in range(max_order + 1):
        rows = levels[order][active]
        final = (rows <= max_rows) | (order == max_order)
        if blocked and order in blocked and order < max_order:
            final &= ~np.isin(active, blocked[order])
        result.extend(
            Partition(order, int(p), int(n)) for p, n in zip(active[final], rows[final])
        )
        split = active[~final]
        if not len(split):
            break
        children = (split[:, None] * 4 + np.arange(4)).ravel()
        active = children[levels[order + 1][children] > 0]
    result.sort(key=lambda p: p.range29[0])
    return result


def starts29(partitions: list[Partition]) -> np.ndarray:
    """Sorted first ``_healpix_29`` value of each partition (partitions sorted likewise)."""
    return np.array([p.range29[0] for p in partitions], dtype=np.int64)


def ends29(partitions: list[Partition]) -> np.ndarray:
    return np.array([p.range29[1] for p in partitions], dtype=np.int64)


def locate(h29: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Index of the partition holding each ``_healpix_29`` value, -1 where none does.

    >>> parts = [Partition(0, 1), Partition(0, 3)]
    >>> locate(np.array([1 << 58, (2 << 58) + 5, (3 << 58) + 1]), starts29(parts), ends29(parts)).tolist()
    [0, -1, 1]
    """
    idx = np.searchsorted(starts, h29, side="right") - 1
    ok = idx >= 0
    ok[ok] = h29[ok] < ends[idx[ok]]
    return np.where(ok, idx, -1)


def margin_order(margin_arcsec: float) -> int:
    """Deepest order whose pixels are at least twice as wide as the margin, so rows
    within the margin of a partition fall in that partition's adjacent pixels at this
    order. (The mean pixel side at order k is about 58.6 deg / 2**k.)

    >>> margin_order(60.0)
    10
    """
    side_arcsec = 58.6 * 3600
    order = int(math.floor(math.log2(side_arcsec / (2 * margin_arcsec))))
    return max(0, min(order, HEALPIX_ORDER))


def margin_map(partitions: list[Partition], order: int) -> tuple[np.ndarray, np.ndarray]:
    """For every pixel at ``order`` adjacent to a partition (outside it), which partition
    wants it in its margin: parallel arrays ``(pixels, partition_index)`` sorted by pixel.
    """
    import cdshealpix.nested as healpix

    pix_parts: list[np.ndarray] = []
    idx_parts: list[np.ndarray] = []
    by_order: dict[int, list[int]] = {}
    for i, p in enumerate(partitions):
        by_order.setdefault(p.order, []).append(i)
    for k, indices in by_order.items():
        if k > order:
            raise ValueError(f"partition order {k} is deeper than the margin order {order}")
        pixels = np.array([partitions[i].pixel for i in indices], dtype=np.uint64)
        edges, corners = healpix.external_neighbours(pixels, k, order - k)
        both = np.concatenate([edges, corners], axis=1).astype(np.int64)
        owner = np.repeat(np.array(indices, dtype=np.int64), both.shape[1])
        flat = both.ravel()
        keep = flat >= 0
        pix_parts.append(flat[keep])
        idx_parts.append(owner[keep])
    if not pix_parts:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    pix = np.concatenate(pix_parts)
    idx = np.concatenate(idx_parts)
    # A margin pixel inside the partition that owns it is not a margin.
    order_ = np.lexsort((idx, pix))
    return pix[order_], idx[order_]


def margin_pairs(
    h29: np.ndarray, own: np.ndarray, pixels: np.ndarray, owners: np.ndarray, order: int
) -> tuple[np.ndarray, np.ndarray]:
    """Rows (by position in ``h29``) and the partitions whose margin they belong to.

    A row lands in the margin of every partition adjacent to its pixel at ``order``,
    except the partition that holds it.
    """
    pm = h29 >> histogram_order_shift(order)
    lo = np.searchsorted(pixels, pm, side="left")
    hi = np.searchsorted(pixels, pm, side="right")
    n = hi - lo
    rows = np.repeat(np.arange(len(h29)), n)
    if len(rows) == 0:
        return rows, rows
    offsets = np.arange(len(rows)) - np.repeat(np.cumsum(n) - n, n)
    parts = owners[np.repeat(lo, n) + offsets]
    keep = parts != own[rows]
    return rows[keep], parts[keep]
