"""Files kept in memory: within the budget, in the order given, moved to a new list."""

from __future__ import annotations

from pathlib import Path

import pytest

from skyshard.storage.resident import (
    Residency,
    ResidentFiles,
    director_files,
    memory_budget,
)


def _files(tmp_path: Path, sizes: list[int]) -> list[Path]:
    paths = []
    for i, size in enumerate(sizes):
        p = tmp_path / f"f{i}.parquet"
        p.write_bytes(bytes([i % 256]) * size)
        paths.append(p)
    return paths


def test_files_are_kept_in_order_until_the_budget_is_spent(tmp_path):
    a, b, c = _files(tmp_path, [4000, 5000, 3000])
    kept = ResidentFiles(budget=7500)
    try:
        # a fits, b would pass the budget, c still fits after a
        assert kept.keep([a, b, c]) == Residency(files=2, bytes=7000, skipped_files=1,
                                                 skipped_bytes=5000)
        assert kept.keep([a, b, c]) == Residency(2, 7000, 1, 5000)  # nothing changes
    finally:
        kept.close()


def test_a_new_list_releases_the_files_it_no_longer_names(tmp_path):
    a, b, c = _files(tmp_path, [4000, 5000, 3000])
    kept = ResidentFiles(budget=9000)
    try:
        assert kept.keep([a, b]).files == 2
        # a newer version: b and c. a is released first, so both fit
        assert kept.keep([b, c]) == Residency(files=2, bytes=8000)
        assert kept.keep([]) == Residency(files=0, bytes=0)
    finally:
        kept.close()


def test_missing_and_empty_files_are_passed_over(tmp_path):
    (a,) = _files(tmp_path, [100])
    empty = tmp_path / "empty.parquet"
    empty.write_bytes(b"")
    kept = ResidentFiles(budget=10**6)
    try:
        assert kept.keep([tmp_path / "gone.parquet", empty, a]) == Residency(1, 100)
    finally:
        kept.close()


def test_a_zero_budget_keeps_nothing_and_a_negative_one_is_refused(tmp_path):
    (a,) = _files(tmp_path, [100])
    assert ResidentFiles(budget=0).keep([a]) == Residency(0, 0, 1, 100)
    with pytest.raises(ValueError, match="budget"):
        ResidentFiles(budget=-1)


def test_the_kept_bytes_are_the_files_bytes(tmp_path):
    (a,) = _files(tmp_path, [3 * 4096 + 17])
    kept = ResidentFiles(budget=10**6)
    try:
        kept.keep([a])
        (mapped,) = kept._maps.values()
        assert mapped.read() == a.read_bytes()
    finally:
        kept.close()
    assert kept._maps == {}
    kept.close()  # idempotent


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="Linux: counts descriptors")
def test_kept_files_hold_no_file_descriptor(tmp_path):
    files = _files(tmp_path, [5000] * 20)
    before = len(list(Path("/proc/self/fd").iterdir()))
    kept = ResidentFiles(budget=10**6)
    try:
        assert kept.keep(files).files == 20
        assert len(list(Path("/proc/self/fd").iterdir())) == before
    finally:
        kept.close()


def test_nothing_is_kept_after_close(tmp_path):
    (a,) = _files(tmp_path, [100])
    kept = ResidentFiles(budget=10**6)
    kept.close()
    assert kept.keep([a]) == Residency(0, 0)


def test_director_files_are_the_partitions_of_director_tables(sky_db):
    db = sky_db
    files = director_files(db.meta, db.root)
    directors = [t for t in db.meta.tables.values() if t.kind.value == "director"]
    assert directors and len(files) == sum(len(t.partitions) for t in directors)
    assert all(Path(f).is_file() and f.endswith(".parquet") for f in files)
    children = [t for t in db.meta.tables.values() if t.kind.value == "child"]
    assert all(f"/{t.name}/" not in f for t in children for f in files)


def test_the_budget_is_a_share_of_the_memory():
    assert memory_budget(0) == 0
    quarter, half = memory_budget(0.25), memory_budget(0.5)
    assert 0 < quarter < half <= 2 * quarter + 2
