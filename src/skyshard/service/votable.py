"""Arrow results as VOTable 1.4 documents, BINARY2 serialisation, encoded with numpy.

A row of BINARY2 is a null bitmask (one bit per field, most significant bit first, in
``ceil(fields / 8)`` bytes) followed by each field, big-endian: fixed-size values as they
are, variable-size arrays (``arraysize="*"``) as a 4-byte element count then the
elements. The encoder builds whole batches at once: all-fixed rows are one
``(rows, row_bytes)`` matrix filled a column at a time; rows with variable-size fields
are scattered into one buffer at offsets computed with ``cumsum``. Nothing loops over
rows in Python except nested values (written as JSON text) and non-ASCII text.

Arrow type                          VOTable ``datatype`` / ``arraysize`` / ``xtype``
==================================  ===================================================
bool                                boolean
int8, int16, uint8                  short (int8 widened; VOTable has no signed byte)
int32, uint16                       int
int64, uint32, uint64               long (uint64 above 2**63-1: an error)
float16, float32 / float64, decimal float / double
string, large_string, string_view   char ``*`` (unicodeChar ``*`` if any value is not ASCII)
binary, large_binary / fixed(n)     unsignedByte ``*`` / ``n``
list / fixed_size_list of numbers   the element's datatype, ``*`` / ``n``
date, timestamp                     char ``*``, xtype ``timestamp`` (ISO 8601)
time, duration, null, nested        char ``*`` (text; nested values as JSON)
==================================  ===================================================

>>> import pyarrow as pa
>>> vo_type(pa.int64()), vo_type(pa.string()).arraysize
(VoType(datatype='long', arraysize=None, xtype=None), '*')
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from xml.sax.saxutils import escape, quoteattr

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from skyshard.errors import QueryLimitError

NAMESPACE = "http://www.ivoa.net/xml/VOTable/v1.3"
MEDIA_TYPE = "application/x-votable+xml"
#: rows encoded at once; a multiple of 3 bytes is not needed (the base64 remainder carries)
BATCH_ROWS = 65_536


@dataclass(frozen=True)
class VoType:
    """A FIELD's ``datatype``, ``arraysize`` (None: a scalar) and ``xtype``."""

    datatype: str
    arraysize: str | None = None
    xtype: str | None = None


@dataclass(frozen=True)
class FieldMeta:
    """What is known of a column besides its type."""

    unit: str | None = None
    ucd: str | None = None
    description: str | None = None


_SCALARS: dict[str, tuple[str, str]] = {  # arrow type name -> (datatype, numpy dtype)
    "bool": ("boolean", "u1"),
    "int8": ("short", ">i2"), "int16": ("short", ">i2"), "uint8": ("short", ">i2"),
    "int32": ("int", ">i4"), "uint16": ("int", ">i4"),
    "int64": ("long", ">i8"), "uint32": ("long", ">i8"), "uint64": ("long", ">i8"),
    "halffloat": ("float", ">f4"), "float": ("float", ">f4"), "double": ("double", ">f8"),
}
_ELEMENT_BYTES = {"boolean": 1, "unsignedByte": 1, "short": 2, "int": 4, "long": 8,
                  "float": 4, "double": 8, "char": 1, "unicodeChar": 2}


def _base(t: pa.DataType) -> pa.DataType:
    return t.value_type if pa.types.is_dictionary(t) else t


def is_text(t: pa.DataType) -> bool:
    return (pa.types.is_string(t) or pa.types.is_large_string(t)
            or getattr(pa.types, "is_string_view", lambda _: False)(t))


def _is_binary(t: pa.DataType) -> bool:
    return (pa.types.is_binary(t) or pa.types.is_large_binary(t)
            or getattr(pa.types, "is_binary_view", lambda _: False)(t))


def _numeric_list(t: pa.DataType) -> bool:
    return ((pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t))
            and str(_base(t.value_type)) in _SCALARS and not pa.types.is_boolean(t.value_type))


def vo_type(t: pa.DataType, *, ascii_text: bool = True) -> VoType:
    """The VOTable type of an Arrow type (the table above)."""
    t = _base(t)
    name = str(t)
    if name in _SCALARS:
        return VoType(_SCALARS[name][0])
    if pa.types.is_decimal(t):
        return VoType("double")
    if is_text(t):
        return VoType("char" if ascii_text else "unicodeChar", "*")
    if _is_binary(t):
        return VoType("unsignedByte", "*")
    if pa.types.is_fixed_size_binary(t):
        return VoType("unsignedByte", str(t.byte_width))
    if _numeric_list(t):
        size = str(t.list_size) if pa.types.is_fixed_size_list(t) else "*"
        return VoType(vo_type(t.value_type).datatype, size)
    if pa.types.is_date(t) or pa.types.is_timestamp(t):
        return VoType("char", "*", "timestamp")
    return VoType("char", "*")


def is_ascii(columns: Iterable[pa.Array | pa.ChunkedArray]) -> bool:
    """Whether every value of these text columns is ASCII."""
    for col in columns:
        col = _decoded(col)
        if not is_text(col.type):
            continue
        if not _is_plain_string(col.type):
            col = col.cast(pa.large_string())
        if len(col) and not pc.all(pc.or_kleene(pc.string_is_ascii(col), pc.is_null(col))).as_py():
            return False
    return True


def _is_plain_string(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t)


def _decoded(col: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    if pa.types.is_dictionary(col.type):
        if isinstance(col, pa.ChunkedArray):
            return pa.chunked_array([c.dictionary_decode() for c in col.chunks],
                                    col.type.value_type)
        return col.dictionary_decode()
    return col


# --- the document -------------------------------------------------------------------------


def field_types(schema: pa.Schema, non_ascii: Iterable[str] = ()) -> list[VoType]:
    bad = set(non_ascii)
    return [vo_type(f.type, ascii_text=f.name not in bad) for f in schema]


def _field_xml(name: str, t: VoType, meta: FieldMeta | None) -> str:
    attrs = f"name={quoteattr(name)} datatype={quoteattr(t.datatype)}"
    if t.arraysize:
        attrs += f" arraysize={quoteattr(t.arraysize)}"
    if t.xtype:
        attrs += f" xtype={quoteattr(t.xtype)}"
    if meta is not None and meta.unit:
        attrs += f" unit={quoteattr(meta.unit)}"
    if meta is not None and meta.ucd:
        attrs += f" ucd={quoteattr(meta.ucd)}"
    if meta is not None and meta.description:
        return (f"<FIELD {attrs}>\n<DESCRIPTION>{escape(meta.description)}</DESCRIPTION>\n"
                "</FIELD>\n")
    return f"<FIELD {attrs}/>\n"


def info_xml(name: str, value: str, text: str | None = None) -> str:
    if text is None:
        return f"<INFO name={quoteattr(name)} value={quoteattr(value)}/>\n"
    return f"<INFO name={quoteattr(name)} value={quoteattr(value)}>{escape(text)}</INFO>\n"


def document(schema: pa.Schema, batches: Iterable[pa.RecordBatch], *,
             infos: Mapping[str, str] = {}, overflow: bool = False,
             fields: Mapping[str, FieldMeta] = {}, non_ascii: Iterable[str] = (),
             max_rows: int | None = None) -> Iterator[bytes]:
    """A whole VOTable document, in pieces: header, base64 BINARY2 chunks, trailer.

    ``infos`` are INFO elements after ``QUERY_STATUS=OK``; ``overflow`` adds DALI's
    ``QUERY_STATUS=OVERFLOW`` after the table; ``max_rows`` cuts the rows there. An error
    while reading or encoding rows (the header is sent by then) ends the table where it
    is, followed by ``QUERY_STATUS=ERROR`` with the message, as DALI asks.
    """
    types = field_types(schema, non_ascii)
    head = ['<?xml version="1.0" encoding="UTF-8"?>\n',
            (f'<VOTABLE version="1.4" xmlns="{NAMESPACE}" '
             'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">\n'),
            '<RESOURCE type="results">\n', info_xml("QUERY_STATUS", "OK")]
    head += [info_xml(k, v) for k, v in infos.items()]
    head.append("<TABLE>\n")
    head += [_field_xml(f.name, t, fields.get(f.name)) for f, t in zip(schema, types)]
    head.append('<DATA><BINARY2><STREAM encoding="base64">\n')
    yield "".join(head).encode()
    encoder = Binary2Encoder(schema, types)
    carry = b""
    left = max_rows
    failure: Exception | None = None
    try:
        for batch in batches:
            if left is not None:
                if left <= 0:
                    break
                batch = batch.slice(0, left)
                left -= batch.num_rows
            for start in range(0, batch.num_rows, BATCH_ROWS):
                raw = carry + encoder.encode(batch.slice(start, BATCH_ROWS))
                cut = len(raw) - len(raw) % 57 if len(raw) >= 57 else 0
                carry = raw[cut:]
                if cut:
                    yield _base64_lines(raw[:cut])
    except Exception as exc:  # noqa: BLE001 - reported in the document (DALI)
        failure = exc
    if carry:
        yield base64.encodebytes(carry)
    tail = "</STREAM></BINARY2></DATA>\n</TABLE>\n"
    if failure is not None:  # DALI: an error while writing goes after the table
        tail += info_xml("QUERY_STATUS", "ERROR", str(failure) or type(failure).__name__)
    elif overflow:
        tail += info_xml("QUERY_STATUS", "OVERFLOW")
    yield (tail + "</RESOURCE>\n</VOTABLE>\n").encode()


def _base64_lines(raw: bytes) -> bytes:
    """Base64 of a multiple of 57 bytes in lines of 76 characters (as ``encodebytes``,
    without its Python loop)."""
    text = np.frombuffer(base64.b64encode(raw), dtype=np.uint8).reshape(-1, 76)
    lines = np.empty((text.shape[0], 77), dtype=np.uint8)
    lines[:, :76] = text
    lines[:, 76] = ord("\n")
    return lines.tobytes()


def to_bytes(table: pa.Table, **options) -> bytes:
    """The whole document of one table (tests, small results)."""
    return b"".join(document(table.schema, table.to_batches(), **options))


# --- BINARY2 ------------------------------------------------------------------------------


@dataclass
class _Fixed:
    values: np.ndarray  # (n, width) uint8, big-endian bytes of each row's value


@dataclass
class _Variable:
    counts: np.ndarray  # (n,) int64 elements per row (0 for NULL)
    data: np.ndarray    # uint8 bytes of all rows' elements, big-endian, in row order
    element_bytes: int


class Binary2Encoder:
    """Record batches of one schema as BINARY2 bytes."""

    def __init__(self, schema: pa.Schema, types: list[VoType] | None = None) -> None:
        self.schema = schema
        self.types = types if types is not None else field_types(schema)
        self.mask_bytes = (len(schema) + 7) // 8

    def encode(self, batch: pa.RecordBatch) -> bytes:
        n = batch.num_rows
        if n == 0:
            return b""
        nulls = np.zeros((n, max(1, len(self.schema))), dtype=bool)
        parts: list[_Fixed | _Variable] = []
        for i, (col, t) in enumerate(zip(batch.columns, self.types)):
            col = _decoded(col)
            if col.null_count:
                nulls[:, i] = col.is_null().to_numpy(zero_copy_only=False)
            parts.append(_encode_column(col, t, nulls[:, i]))
        mask = np.packbits(nulls[:, :len(self.schema)], axis=1, bitorder="big")
        if all(isinstance(p, _Fixed) for p in parts):
            return _fixed_rows(mask, parts)  # type: ignore[arg-type]
        return _variable_rows(mask, parts)


def _fixed_rows(mask: np.ndarray, parts: list[_Fixed]) -> bytes:
    n = mask.shape[0]
    widths = [mask.shape[1]] + [p.values.shape[1] for p in parts]
    out = np.empty((n, sum(widths)), dtype=np.uint8)
    at = 0
    for block, w in zip([mask] + [p.values for p in parts], widths):
        out[:, at:at + w] = block
        at += w
    return out.tobytes()


def _variable_rows(mask: np.ndarray, parts: list[_Fixed | _Variable]) -> bytes:
    n = mask.shape[0]
    row_bytes = np.full(n, mask.shape[1], dtype=np.int64)
    for p in parts:
        if isinstance(p, _Fixed):
            row_bytes += p.values.shape[1]
        else:
            row_bytes += 4 + p.counts * p.element_bytes
    starts = np.zeros(n, dtype=np.int64)
    np.cumsum(row_bytes[:-1], out=starts[1:])
    out = np.empty(int(starts[-1] + row_bytes[-1]), dtype=np.uint8)
    cursor = starts.copy()
    _scatter(out, cursor, mask)
    cursor += mask.shape[1]
    for p in parts:
        if isinstance(p, _Fixed):
            _scatter(out, cursor, p.values)
            cursor += p.values.shape[1]
            continue
        _scatter(out, cursor, p.counts.astype(">u4").view(np.uint8).reshape(n, 4))
        cursor += 4
        sizes = p.counts * p.element_bytes
        total = int(sizes.sum())
        if total:
            # byte j of row i goes to cursor[i] + j: its source position is first[i] + j
            first = np.zeros(n, dtype=np.int64)
            np.cumsum(sizes[:-1], out=first[1:])
            shift = np.repeat(cursor - first, sizes)
            out[shift + np.arange(total, dtype=np.int64)] = p.data[:total]
        cursor += sizes
    return out.tobytes()


def _scatter(out: np.ndarray, at: np.ndarray, block: np.ndarray) -> None:
    """``out[at[i] + j] = block[i, j]`` for every row i."""
    w = block.shape[1]
    if w == 1:
        out[at] = block[:, 0]
    else:
        out[at[:, None] + np.arange(w, dtype=np.int64)] = block


def _encode_column(col: pa.Array, t: VoType, null: np.ndarray) -> _Fixed | _Variable:
    n = len(col)
    at = col.type
    if t.arraysize is None:
        if t.datatype == "boolean":
            v = np.where(col.fill_null(False).to_numpy(zero_copy_only=False), ord("T"), ord("F"))
            v = np.where(null, ord("?"), v).astype(np.uint8)
            return _Fixed(v.reshape(n, 1))
        return _Fixed(_numbers(col, t).view(np.uint8).reshape(n, -1))
    if t.datatype == "unsignedByte" and pa.types.is_fixed_size_binary(at):
        width = at.byte_width
        raw = np.frombuffer(col.buffers()[1], dtype=np.uint8)
        v = raw[col.offset * width:(col.offset + n) * width].reshape(n, width).copy()
        v[null] = 0
        return _Fixed(v)
    if pa.types.is_fixed_size_list(at):
        size = at.list_size
        values = col.values.slice(col.offset * size, n * size)
        return _Fixed(_numbers(values, vo_type(at.value_type)).view(np.uint8).reshape(n, -1))
    if pa.types.is_list(at) or pa.types.is_large_list(at):
        counts = pc.fill_null(pc.list_value_length(col), 0).to_numpy().astype(np.int64)
        values = pc.list_flatten(col)
        data = _numbers(values, vo_type(at.value_type)).view(np.uint8)
        return _Variable(counts, data, _ELEMENT_BYTES[t.datatype])
    if t.datatype == "unicodeChar":
        encoded = [b"" if v is None else v.encode("utf-16-be") for v in col.to_pylist()]
        counts = np.fromiter((len(b) // 2 for b in encoded), dtype=np.int64, count=n)
        return _Variable(counts, np.frombuffer(b"".join(encoded), dtype=np.uint8), 2)
    return _bytes_column(_as_bytes(col), null)


def _numbers(col: pa.Array, t: VoType) -> np.ndarray:
    """Big-endian values of a numeric column; NULLs as 0 (or NaN)."""
    at = col.type
    dtype = {"short": ">i2", "int": ">i4", "long": ">i8", "float": ">f4", "double": ">f8"}[
        t.datatype]
    if pa.types.is_decimal(at) or pa.types.is_float16(at):
        col = col.cast(pa.float64())
    if pa.types.is_uint64(at) and len(col):
        top = pc.max(col).as_py()
        if top is not None and top > np.iinfo(np.int64).max:
            raise QueryLimitError(f"an unsigned 64-bit value ({top}) does not fit VOTable's "
                                  "long; CAST it to DOUBLE or VARCHAR in the query")
    if col.null_count:
        fill = 0.0 if pa.types.is_floating(col.type) else 0
        col = col.fill_null(pa.scalar(fill, col.type))
    return col.to_numpy(zero_copy_only=False).astype(dtype, copy=False)


def _as_bytes(col: pa.Array) -> pa.Array:
    """A column as a binary or large_binary array: text as UTF-8, binary as is, other
    values as text (ISO 8601 dates and times, JSON for nested values)."""
    at = col.type
    if is_text(at) or _is_binary(at):
        if not (_is_plain_string(at) or pa.types.is_binary(at) or pa.types.is_large_binary(at)):
            col = col.cast(pa.large_binary() if _is_binary(at) else pa.large_string())
        return col
    if pa.types.is_timestamp(at):
        if at.tz is not None:
            col = col.cast(pa.timestamp(at.unit))
        return pc.strftime(col, format="%Y-%m-%dT%H:%M:%S")
    if pa.types.is_date(at) or pa.types.is_time(at) or pa.types.is_duration(at):
        return col.cast(pa.string())
    if pa.types.is_null(at):
        return pa.nulls(len(col), pa.string())
    if pa.types.is_nested(at):
        return pa.array([None if v is None else json.dumps(v, default=str)
                         for v in col.to_pylist()], pa.string())
    return col.cast(pa.string())


def _bytes_column(col: pa.Array, null: np.ndarray) -> _Variable:
    """Count-prefixed bytes of a string/binary array; NULLs as empty."""
    n = len(col)
    wide = pa.types.is_large_string(col.type) or pa.types.is_large_binary(col.type)
    buffers = col.buffers()
    offsets = np.frombuffer(buffers[1], dtype=np.int64 if wide else np.int32)[
        col.offset:col.offset + n + 1].astype(np.int64)
    data = np.frombuffer(buffers[2], dtype=np.uint8) if buffers[2] is not None else np.empty(
        0, np.uint8)
    counts = np.diff(offsets)
    if null.any():
        counts = np.where(null, 0, counts)
    first, last = int(offsets[0]), int(offsets[-1])
    if int(counts.sum()) == last - first:  # contiguous: every row's bytes in order
        return _Variable(counts, data[first:last], 1)
    starts = offsets[:-1]
    shift = np.repeat(starts - np.concatenate(([0], np.cumsum(counts)[:-1])), counts)
    return _Variable(counts, data[shift + np.arange(int(counts.sum()), dtype=np.int64)], 1)
