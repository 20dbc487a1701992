"""Moving copies without a cluster: the plan of ``rebalance`` (workers joined) and
``drain`` (workers about to leave), from ``placement.plan_moves``."""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import replace

import pytest

from skyshard.dispatch.placement import (
    SHARED,
    MovePlan,
    Placement,
    TooFewWorkers,
    Unit,
    plan_moves,
    unit_key,
    unit_weight,
)
from skyshard.errors import UserError


def catalog(n: int, *, seed: int = 0, replication: int = 2, equal: bool = False) -> Placement:
    """``n`` partitions of 5-70 kB (or all 10 kB), nobody holding anything yet."""
    rnd = random.Random(seed)
    units = {unit_key(5, i): Unit({f"T/Norder=5/Npix={i}.parquet":
                                   (10_000 if equal else rnd.randint(5_000, 70_000), "x")},
                                  rows=100)
             for i in range(n)}
    units[SHARED] = Unit({"F/F.parquet": (300, "y")})
    return Placement("c", replication, units)


def names(n: int) -> list[str]:
    return [f"w{i}" for i in range(n)]


def settled(pl: Placement, plan: MovePlan) -> tuple[Placement, dict[str, set[str]]]:
    """The placement once ``plan`` has run: the record, and what each worker holds."""
    after = pl.with_holders(plan.holders)
    holds = {w: {k for k, u in after.units.items() if w in u.holders}
             for u in after.units.values() for w in u.holders}
    return after, holds


def placed(n_units: int, workers: int, **kw) -> tuple[Placement, dict[str, set[str]]]:
    pl = catalog(n_units, **kw)
    return settled(pl, plan_moves(pl, {}, names(workers), replication=pl.replication))


def load(pl: Placement, workers) -> dict[str, tuple[int, int]]:
    """worker -> (partitions, bytes) it is recorded for."""
    count, size = Counter(), Counter()
    for k in pl.partition_units:
        for h in pl.holders(k):
            count[h] += 1
            size[h] += unit_weight(pl.units[k])
    return {w: (count[w], size[w]) for w in workers}


def assert_balanced(pl: Placement, workers) -> None:
    """Within 10 % of the mean in bytes, or within one partition of the mean count."""
    by = load(pl, workers)
    mean_bytes = sum(b for _, b in by.values()) / len(by)
    mean_count = sum(n for n, _ in by.values()) / len(by)
    for w, (n, b) in by.items():
        assert abs(b - mean_bytes) <= 0.10 * mean_bytes or abs(n - mean_count) <= 1, (w, by)


def assert_replicated(pl: Placement, workers, replication: int) -> None:
    for k in pl.partition_units:
        hs = pl.holders(k)
        assert len(hs) == len(set(hs)) == replication and set(hs) <= set(workers), (k, hs)
    assert set(pl.holders(SHARED)) == set(workers)


@pytest.mark.parametrize("n_units,replication,before,after", [
    (50, 2, 3, 4), (50, 1, 2, 3), (200, 2, 4, 6), (50, 3, 3, 5), (20, 2, 2, 5)])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_scale_up_spreads_bytes_and_moves_only_onto_the_new_workers(
        n_units, replication, before, after, seed):
    pl, holds = placed(n_units, before, seed=seed, replication=replication)
    assert_balanced(pl, names(before))
    out = plan_moves(pl, holds, names(after), replication=replication)
    new = set(names(after)[before:])
    done, _ = settled(pl, out)
    assert_replicated(done, names(after), replication)
    assert_balanced(done, names(after))
    # Fewest moves: every partition copy made lands on a new worker, each one replaces
    # exactly one old copy, and the old copies stay where they were otherwise.
    parts = [c for c in out.copies if c.unit != SHARED]
    assert parts and all(c.target in new and c.source is None for c in parts)
    assert {c.target for c in out.copies if c.unit == SHARED} == new
    removed = [(w, k) for w, ks in out.removals.items() for k in ks]
    assert len(removed) == len(parts) == out.moved
    assert all(w not in new for w, _ in removed)
    for k in pl.partition_units:
        kept = set(pl.holders(k)) & set(done.holders(k))
        assert len(kept) == replication - sum(c.unit == k for c in parts)
    # A balanced placement is left alone.
    _, holds_after = settled(pl, out)
    again = plan_moves(done, holds_after, names(after), replication=replication)
    assert again.copies == [] and again.removals == {} and again.moved == 0
    assert again.holders == {k: u.holders for k, u in done.units.items()}


def test_equal_partitions_end_within_one_of_each_other():
    pl, holds = placed(31, 3, equal=True)
    out = plan_moves(pl, holds, names(5), replication=2)
    done, _ = settled(pl, out)
    counts = [n for n, _ in load(done, names(5)).values()]
    assert max(counts) - min(counts) <= 1, counts
    assert len([c for c in out.copies if c.unit != SHARED]) == sum(counts[3:])


def test_an_intact_copy_on_the_new_worker_is_used_instead_of_copied():
    pl, holds = placed(40, 3, equal=True)
    leftover = sorted(holds["w0"] - {SHARED})[:5]  # copies w3 kept from an earlier life
    out = plan_moves(pl, {**holds, "w3": set(leftover)}, names(4), replication=2)
    done, _ = settled(pl, out)
    assert set(leftover) <= {k for k in pl.partition_units if "w3" in done.holders(k)}
    assert not {c.unit for c in out.copies} & set(leftover)


def test_copies_beyond_the_replication_factor_are_removed():
    pl, holds = placed(12, 3, equal=True)
    extra = {k for k in pl.partition_units if "w0" not in pl.holders(k)}
    out = plan_moves(pl, {**holds, "w0": holds["w0"] | extra}, names(3), replication=2,
                     balance=False)
    assert set(out.removals["w0"]) == extra and not out.copies
    assert all(len(hs) == 2 for k, hs in out.holders.items() if k != SHARED)


def test_drain_moves_every_copy_off_the_drained_and_keeps_the_rest_in_place():
    pl, holds = placed(50, 4, seed=3)
    out = plan_moves(pl, holds, names(4), replication=2, exclude=["w3"])
    done, _ = settled(pl, out)
    rest = names(3)
    assert_replicated(done, rest, 2)
    assert_balanced(done, rest)
    assert "w3" not in {h for hs in out.holders.values() for h in hs}
    assert set(out.removals["w3"]) == holds["w3"]  # the shared files too
    drained = holds["w3"] - {SHARED}
    parts = [c for c in out.copies if c.unit != SHARED]
    assert {c.unit for c in parts} >= drained and all(c.target in rest for c in parts)
    # Evening the rest out costs a few more moves, far fewer than what was drained.
    assert len(parts) - len(drained) <= len(drained) // 3
    untouched = [k for k in pl.partition_units
                 if k not in drained and k not in {c.unit for c in parts}]
    assert all(done.holders(k) == pl.holders(k) for k in untouched)


def test_drain_of_a_worker_that_is_gone_drops_it_from_the_record():
    pl, holds = placed(20, 3)
    alive = {w: holds[w] for w in ("w0", "w1")}
    out = plan_moves(pl, alive, ["w0", "w1"], replication=2, exclude=["w2"])
    assert "w2" not in {h for hs in out.holders.values() for h in hs}
    assert "w2" not in out.removals  # nothing to remove on a worker that is not there
    # Not drained, a worker that is down stays listed: it may come back with its data.
    kept = plan_moves(pl, alive, ["w0", "w1"], replication=2)
    assert any("w2" in hs for hs in kept.holders.values())


@pytest.mark.parametrize("workers,drain,replication", [
    (3, ["w1", "w2"], 2), (2, ["w0"], 2), (4, ["w0", "w1", "w2", "w3"], 1)])
def test_drain_refuses_when_too_few_workers_remain(workers, drain, replication):
    pl, holds = placed(10, workers, replication=replication)
    with pytest.raises(TooFewWorkers) as info:
        plan_moves(pl, holds, names(workers), replication=replication, exclude=drain)
    err = info.value
    assert isinstance(err, UserError) and err.replication == replication
    assert err.excluded == tuple(sorted(drain))
    assert set(err.remaining) == set(names(workers)) - set(drain)
    assert "nothing was moved" in str(err) and f"replication factor {replication}" in str(err)


def test_a_failed_copy_keeps_the_old_holders_and_removes_nothing_of_its_unit():
    pl, holds = placed(30, 3, seed=1)
    out = plan_moves(pl, holds, names(4), replication=2)
    victim = next(c for c in out.copies if c.unit != SHARED)
    after = out.without({(victim.unit, victim.target)}, pl, holds)
    assert victim.target not in after.holders[victim.unit]
    assert set(pl.holders(victim.unit)) <= set(after.holders[victim.unit])
    assert all(victim.unit not in units for units in after.removals.values())
    others = {(w, k) for w, ks in out.removals.items() for k in ks if k != victim.unit}
    assert {(w, k) for w, ks in after.removals.items() for k in ks} == others


def test_under_replicated_units_are_filled_before_balancing():
    pl, holds = placed(24, 3, equal=True)
    raised = replace(pl, replication=3)
    out = plan_moves(raised, holds, names(3), replication=3)
    done, _ = settled(raised, out)
    assert_replicated(done, names(3), 3)
    assert not out.removals and out.moved == 0


def test_drained_workers_round_trip_in_the_record(tmp_path):
    pl = replace(catalog(3), drained=("w3", "w4"))
    pl.save(tmp_path)
    assert Placement.load(tmp_path) == pl
    assert Placement.load(tmp_path).drained == ("w3", "w4")
