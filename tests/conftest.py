from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest
from hypothesis import settings

# Generated tests explore the same examples on every run, so CI is reproducible; run
# with --hypothesis-profile=explore to search new ones.
settings.register_profile("ci", derandomize=True)
settings.register_profile("explore", derandomize=False)
settings.load_profile("ci")

import small_sky


@pytest.fixture(scope="session")
def sky_tables() -> dict[str, pa.Table]:
    return small_sky.make_tables()


@pytest.fixture(scope="session")
def sky_root(tmp_path_factory, sky_tables) -> Path:
    root = tmp_path_factory.mktemp("sky") / "catalog"
    small_sky.build(root, sky_tables)
    return root


@pytest.fixture(scope="session")
def sky_db(sky_root):
    import skyshard

    return skyshard.open(sky_root)


@pytest.fixture(scope="session")
def sky_db_split(sky_root):
    """The same catalog, run fragment by fragment (one partition each) and merged."""
    import skyshard

    return skyshard.open(sky_root, fragment_partitions=1)


@pytest.fixture(scope="session")
def oracle(sky_tables):
    return small_sky.oracle(sky_tables)
