"""Stored expected results (lsst-dm/qserv-ingest ``itest/datasets/caseNN``).

``dbbench.ini`` has one section per query: ``query=`` the SQL, ``query-results-file=``
the file (its base name is in ``dbbench-expected/``), and a ``; NNNN_name.sql`` comment
naming the query file it came from. Results are headerless CSV, ``"``-quoted when a
value holds a comma, ``\\N`` for NULL, bytes as they are (``bit(1)`` as one raw byte).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import pyarrow as pa

from skyshard.errors import InputError

__all__ = ["ExpectedQuery", "read_dbbench", "typed_rows"]


@dataclass(frozen=True)
class ExpectedQuery:
    case: str
    name: str  # the query file's name without .sql, else the section name
    sql: str
    result_path: Path

    @property
    def id(self) -> str:
        return f"expected/{self.case}/{self.name}"

    @property
    def query_class(self) -> str:
        return f"{self.name[0]}xxx" if self.name[:1].isdigit() else "count"


def read_dbbench(folder: str | Path, case: str) -> list[ExpectedQuery]:
    """The queries of ``folder/dbbench.ini``; an empty list when there is none."""
    root = Path(folder)
    ini = root / "dbbench.ini"
    if not ini.exists():
        return []
    out: list[ExpectedQuery] = []
    section: dict[str, Any] | None = None

    def finish(sec: dict[str, Any] | None) -> None:
        if sec is None:
            return
        if "query" not in sec or "query-results-file" not in sec:
            raise InputError("section without query= and query-results-file=", path=str(ini),
                             line=sec["line"])
        name = sec.get("file") or sec["name"]
        result = root / "dbbench-expected" / Path(sec["query-results-file"]).name
        out.append(ExpectedQuery(case, name, sec["query"].strip().rstrip(";"), result))

    for number, line in enumerate(ini.read_text(encoding="utf-8").splitlines(), 1):
        text = line.strip()
        if text.startswith("[") and text.endswith("]"):
            finish(section)
            section = {"name": text[1:-1], "line": number}
        elif text.startswith(";") or text.startswith("#"):
            words = text.lstrip(";# ").split()
            if section is not None and words and words[0].endswith(".sql") and "file" not in section:
                section["file"] = words[0][:-4]
        elif "=" in text:
            if section is None:
                raise InputError("key outside a section", path=str(ini), line=number)
            key, _, value = text.partition("=")
            section[key.strip()] = value
        elif text:
            raise InputError(f"cannot read {text[:40]!r}", path=str(ini), line=number)
    finish(section)
    return out


def read_rows(path: Path) -> list[list[bytes | None]]:
    """Rows of a result file as raw bytes (None for ``\\N``)."""
    if not path.exists():
        raise InputError("expected result file not found", path=str(path))
    text = path.read_bytes().decode("latin-1")
    reader = csv.reader(io.StringIO(text, newline=""), escapechar=None, strict=False)
    return [[None if v == "\\N" else v.encode("latin-1") for v in row] for row in reader]


def typed_rows(raw: Sequence[Sequence[bytes | None]], schema: pa.Schema) -> list[tuple]:
    """Expected values typed after skyshard's answer: numbers as ``Decimal`` of their
    text (compared within their printed precision), strings decoded (UTF-8, else
    latin-1), bytes kept, a one-byte value in an integer column read as that byte."""
    types = [f.type for f in schema]
    return [tuple(_typed(v, types[i] if i < len(types) else pa.string()) for i, v in enumerate(row))
            for row in raw]


def _typed(v: bytes | None, typ: pa.DataType) -> Any:
    if v is None:
        return None
    try:
        if pa.types.is_integer(typ) or pa.types.is_boolean(typ):
            if len(v) == 1 and not v.isdigit():
                return v[0]
            return int(v)
        if pa.types.is_floating(typ) or pa.types.is_decimal(typ):
            return Decimal(v.decode("ascii"))
        if pa.types.is_binary(typ) or pa.types.is_large_binary(typ) or pa.types.is_fixed_size_binary(typ):
            return v
        if pa.types.is_timestamp(typ):
            return dt.datetime.fromisoformat(v.decode("ascii"))
        if pa.types.is_date(typ):
            return dt.date.fromisoformat(v.decode("ascii"))
    except (ValueError, InvalidOperation, UnicodeDecodeError):
        pass
    try:
        return v.decode("utf-8")
    except UnicodeDecodeError:
        return v.decode("latin-1")
