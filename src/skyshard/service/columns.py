"""Arrow column types as MySQL column types: the protocol's type code and character set,
the SQL type name, and how a value is written as text.

Declared from the Arrow schema, never guessed from values, so an empty result or a
column of NULLs keeps its type, and binary columns are sent with the binary character
set (clients return bytes, not text).

>>> import pyarrow as pa
>>> c = mysql_column(pa.field("n", pa.int16()))
>>> c.type_name, int(c.code)
('SMALLINT', 2)
>>> mysql_column(pa.field("b", pa.binary())).type_name
'BLOB'
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
from mysql_mimic import ColumnType, ResultColumn
from mysql_mimic.charset import CharacterSet


@dataclass(frozen=True)
class MysqlColumn:
    name: str
    code: ColumnType
    type_name: str
    binary: bool = False
    text: Callable[[Any], bytes] | None = None  # None: the protocol's default encoding

    def result_column(self) -> ResultColumn:
        encode = None if self.text is None else (lambda _col, v, f=self.text: f(v))
        charset = CharacterSet.binary if self.binary else CharacterSet.utf8mb4
        return ResultColumn(self.name, self.code, character_set=charset, text_encoder=encode)


def _float32_text(v: Any) -> bytes:
    return str(np.float32(v)).encode()


def _bool_text(v: Any) -> bytes:
    return b"1" if v else b"0"


def _json_text(v: Any) -> bytes:
    return json.dumps(v, default=str).encode()


def _ints(t: pa.DataType) -> tuple[ColumnType, str]:
    bits = {8: (ColumnType.TINY, "TINYINT"), 16: (ColumnType.SHORT, "SMALLINT"),
            32: (ColumnType.LONG, "INT"), 64: (ColumnType.LONGLONG, "BIGINT")}
    code, name = bits[t.bit_width]
    return code, name + (" UNSIGNED" if pa.types.is_unsigned_integer(t) else "")


def mysql_column(f: pa.Field) -> MysqlColumn:
    """The MySQL column for an Arrow field."""
    t = f.type
    if pa.types.is_dictionary(t):
        t = t.value_type
    if pa.types.is_integer(t):
        code, name = _ints(t)
        return MysqlColumn(f.name, code, name)
    if pa.types.is_boolean(t):
        return MysqlColumn(f.name, ColumnType.TINY, "BOOLEAN", text=_bool_text)
    if pa.types.is_float16(t) or pa.types.is_float32(t):
        return MysqlColumn(f.name, ColumnType.FLOAT, "FLOAT", text=_float32_text)
    if pa.types.is_float64(t):
        return MysqlColumn(f.name, ColumnType.DOUBLE, "DOUBLE")
    if pa.types.is_decimal(t):
        return MysqlColumn(f.name, ColumnType.NEWDECIMAL, f"DECIMAL({t.precision},{t.scale})")
    if pa.types.is_string(t) or pa.types.is_large_string(t) or _is(t, "is_string_view"):
        return MysqlColumn(f.name, ColumnType.VAR_STRING, "VARCHAR")
    if (pa.types.is_binary(t) or pa.types.is_large_binary(t)
            or pa.types.is_fixed_size_binary(t) or _is(t, "is_binary_view")):
        return MysqlColumn(f.name, ColumnType.BLOB, "BLOB", binary=True)
    if pa.types.is_null(t):
        return MysqlColumn(f.name, ColumnType.NULL, "NULL")
    if pa.types.is_date(t):
        return MysqlColumn(f.name, ColumnType.DATE, "DATE")
    if pa.types.is_timestamp(t):
        return MysqlColumn(f.name, ColumnType.DATETIME, "DATETIME")
    if pa.types.is_time(t):
        return MysqlColumn(f.name, ColumnType.TIME, "TIME")
    if pa.types.is_nested(t):
        return MysqlColumn(f.name, ColumnType.JSON, "JSON", text=_json_text)
    return MysqlColumn(f.name, ColumnType.VAR_STRING, "VARCHAR",
                       text=lambda v: str(v).encode())


def _is(t: pa.DataType, predicate: str) -> bool:
    check = getattr(pa.types, predicate, None)
    return bool(check and check(t))


def mysql_columns(schema: pa.Schema) -> list[MysqlColumn]:
    return [mysql_column(f) for f in schema]


def rows(batches: Iterable[pa.RecordBatch]) -> Iterator[tuple]:
    """Rows as tuples of Python values, batch by batch."""
    for batch in batches:
        columns = [c.to_pylist() for c in batch.columns]
        yield from zip(*columns)
