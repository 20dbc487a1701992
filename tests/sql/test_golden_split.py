"""Golden rewrite fixtures: SQL in, parallel and merge statements out.

Each ``tests/golden/*.sql`` block is::

    -- title: what the case shows
    <query>
    -- parallel:
    <parallel statement, table sources not yet bound to files>
    -- merge:
    <merge statement>

A change to the planner that alters a statement shows up here as a diff to review.
Regenerate after a deliberate change with ``SKYSHARD_REGEN_GOLDEN=1 pytest tests/sql``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from skyshard.sql.analyze import analyze
from skyshard.sql.dialect import to_duckdb
from skyshard.sql.parse import parse
from skyshard.sql.split import split

GOLDEN = Path(__file__).parent.parent / "golden" / "split.sql"
BLOCK = re.compile(r"-- title: (?P<title>.*?)\n(?P<query>.*?)-- parallel:\n(?P<parallel>.*?)"
                   r"-- merge:\n(?P<merge>.*?)(?=\n-- title:|\Z)", re.S)


def cases() -> list[dict[str, str]]:
    return [{k: v.strip() for k, v in m.groupdict().items()} for m in BLOCK.finditer(GOLDEN.read_text())]


def render(meta, query: str) -> tuple[str, str]:
    a = analyze(query, parse(query), meta)
    s = split(a.tree)
    return to_duckdb(s.parallel), to_duckdb(s.merge)


@pytest.mark.parametrize("case", cases(), ids=lambda c: c["title"])
def test_golden(sky_db, case):
    parallel, merge = render(sky_db.meta, case["query"])
    if os.environ.get("SKYSHARD_REGEN_GOLDEN"):
        text = GOLDEN.read_text()
        old = f"-- parallel:\n{case['parallel']}\n-- merge:\n{case['merge']}"
        new = f"-- parallel:\n{parallel}\n-- merge:\n{merge}"
        GOLDEN.write_text(text.replace(f"{case['query']}\n{old}", f"{case['query']}\n{new}", 1))
        return
    assert (parallel, merge) == (case["parallel"], case["merge"])


def test_golden_file_is_complete():
    assert len(cases()) >= 10
