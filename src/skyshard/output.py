"""Writing query results: an aligned text table, CSV, JSON lines or Parquet.

>>> import pyarrow as pa
>>> print(format_table(pa.table({"id": [1, 22], "name": ["a", None]})))
id | name
---+-----
 1 | a
22 | NULL
(2 rows)
"""

from __future__ import annotations

import json
import sys
from typing import BinaryIO

import pyarrow as pa

FORMATS = ("table", "csv", "json", "parquet")


def format_table(table: pa.Table, limit: int | None = None) -> str:
    names = table.column_names
    shown = table if limit is None else table.slice(0, limit)
    cols = [[_cell(v) for v in shown.column(i).to_pylist()] for i in range(shown.num_columns)]
    widths = [max([len(n)] + [len(c) for c in col]) for n, col in zip(names, cols)]
    numeric = [pa.types.is_integer(f.type) or pa.types.is_floating(f.type)
               or pa.types.is_decimal(f.type) for f in table.schema]
    lines = [" | ".join(n.ljust(w) for n, w in zip(names, widths)).rstrip(),
             "-+-".join("-" * w for w in widths)]
    for r in range(shown.num_rows):
        cells = [col[r].rjust(w) if num else col[r].ljust(w)
                 for col, w, num in zip(cols, widths, numeric)]
        lines.append(" | ".join(cells).rstrip())
    more = f", {table.num_rows - shown.num_rows} not shown" if shown.num_rows < table.num_rows else ""
    lines.append(f"({table.num_rows} row{'s' if table.num_rows != 1 else ''}{more})")
    return "\n".join(lines)


def _cell(v: object) -> str:
    if v is None:
        return "NULL"
    if isinstance(v, float):
        return f"{v:.10g}"
    if isinstance(v, bytes):
        return "0x" + v.hex()
    return str(v)


def write(table: pa.Table, fmt: str, out: BinaryIO | None = None) -> None:
    """Write ``table`` to ``out`` (stdout by default) in ``fmt``."""
    out = out or sys.stdout.buffer
    if fmt == "table":
        out.write((format_table(table) + "\n").encode())
    elif fmt == "csv":
        import pyarrow.csv as pacsv

        pacsv.write_csv(table, out)
    elif fmt == "json":
        for row in table.to_pylist():
            out.write((json.dumps(row, default=_json_default) + "\n").encode())
    elif fmt == "parquet":
        import pyarrow.parquet as pq

        pq.write_table(table, out)
    else:
        raise ValueError(f"unknown format {fmt!r} (one of {', '.join(FORMATS)})")


def _json_default(v: object) -> object:
    if isinstance(v, bytes):
        return v.hex()
    return str(v)
