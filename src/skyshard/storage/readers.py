"""Streamed input readers: text (mysqldump ``-T`` / CSV / TSV), Parquet, FITS, VOTable.

``read_batches`` yields Arrow record batches of at most ``batch_rows`` rows (all but the
last exactly that many); with a ``schema`` every batch has exactly that schema (names,
order, types, metadata). Bad values raise ``InputError`` naming the file, the 1-based
physical line and the column.

Text follows MySQL ``LOAD DATA``: ``\\N`` is NULL; backslash escapes ``\\t \\n \\r \\0
\\\\ \\Z \\b``, any other escaped character (the delimiter, a quote, a newline that
continues the row) stands for itself; fields may be ``"``-quoted (``""`` or ``\\"``
inside); ``\\r\\n`` ends a line like ``\\n``. An empty field is NULL unless the column
holds strings or bytes. Files are bytes: strings are decoded as UTF-8, value by value
falling back to latin-1; binary columns keep raw bytes; ``bit(1)`` columns (field
metadata ``mysql_type``) take raw bytes 0/1 or the digits. A field starting with ``"``
without a closing quote before the next delimiter is data; a binary field is never
quoted unless the file quotes all its string and binary values (``mysqldump
--fields-enclosed-by``), because mysqldump writes raw binary values that may start
with ``"``.

Speed: blocks of whole lines that need no tokenizing in Python (no quotes or only
simple ones, no escaped delimiter or newline) are parsed by ``pyarrow.csv``; escapes
left inside string fields are resolved afterwards. Other blocks go through an exact
tokenizer in Python. Both give the same table; on any error the block is redone on the
exact path to find the line and column. Memory is bounded by a few 4 MB blocks plus a
batch. FITS tables are memory-mapped (not ``.fits.gz``) and cut into batches; a VOTable
is parsed whole by astropy, then cut. In both, NaN floats and masked values are NULL.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from skyshard.errors import InputError, SchemaError

__all__ = ["FORMATS", "detect_format", "read_batches"]

FORMATS = ("text", "parquet", "fits", "votable")

_BLOCK_BYTES = 4 << 20  # text read per step; a longer row grows the buffer
_MAX_ROW_BYTES = 64 << 20  # past this, an unclosed quote is taken as data
_SAMPLE_BYTES = 1 << 20  # rows used to infer column types when no schema is given
_PROBE_ROWS = 100  # rows looked at to tell whether binary fields are quoted
_SUFFIXES = (
    (".fits.gz", "fits"), (".fit.gz", "fits"), (".fits", "fits"), (".fit", "fits"),
    (".parquet", "parquet"), (".pq", "parquet"),
    (".votable", "votable"), (".vot", "votable"), (".xml", "votable"),
    (".csv", "text"), (".tsv", "text"), (".txt", "text"), (".dat", "text"),
)  # fmt: skip
_COMPRESSED = (".gz", ".bz2", ".zst")


def detect_format(path: str | os.PathLike[str]) -> str:
    """``"text"``, ``"parquet"``, ``"fits"`` or ``"votable"``, from the file name.

    >>> detect_format("Object.tsv.gz"), detect_format("x.fits.gz"), detect_format("x.vot")
    ('text', 'fits', 'votable')
    """
    name = os.fspath(path).lower()
    for suffix, fmt in _SUFFIXES:
        if name.endswith(suffix):
            return fmt
    if name.endswith(_COMPRESSED):
        return "text"
    raise InputError(
        "cannot tell the format from the file name; pass format= one of " + ", ".join(FORMATS),
        path=os.fspath(path),
    )


def read_batches(
    path: str | os.PathLike[str],
    *,
    schema: pa.Schema | None = None,
    format: str | None = None,
    batch_rows: int = 262_144,
    delimiter: str | None = None,
    null: str = "\\N",
    quote: str | None = '"',
) -> Iterator[pa.RecordBatch]:
    """Record batches of at most ``batch_rows`` rows read from ``path``.

    ``format`` defaults to :func:`detect_format`. Text without ``schema`` needs a header
    line and types are inferred from its first megabyte; with ``schema`` rows hold its
    columns in order and a first line equal to the column names is skipped. The
    ``delimiter`` defaults to tab for ``.tsv``, comma for ``.csv``, else whichever the
    first line has; ``null`` is the NULL marker; ``quote=None`` reads ``"`` as data.
    Parquet, FITS and VOTable columns are matched to the schema by name (then ignoring
    case) and cast; a column on one side only is an error.
    """
    name = os.fspath(path)
    if batch_rows < 1:
        raise ValueError("batch_rows must be at least 1")
    fmt = format or detect_format(name)
    if fmt == "text":
        return _read_text(name, schema, _Dialect.make(name, delimiter, null, quote), batch_rows)
    if fmt == "parquet":
        return _read_parquet(name, schema, batch_rows)
    if fmt in ("fits", "votable"):
        return _read_astropy(name, fmt, schema, batch_rows)
    raise InputError(f"unknown format {fmt!r}; expected one of " + ", ".join(FORMATS), path=name)


def prefetch(path: str | os.PathLike[str]) -> bool:
    """Ask the system to start reading a local file into its cache now, in the background
    (``posix_fadvise(WILLNEED)``), so that its reader finds it there instead of waiting on
    the disk block by block; whether the hint was given (not for URLs, missing files or
    systems without it).

    >>> prefetch("s3://bucket/file.parquet")
    False
    """
    name = os.fspath(path)
    if "://" in name or not hasattr(os, "posix_fadvise"):
        return False
    try:
        fd = os.open(name, os.O_RDONLY)
    except OSError:
        return False
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_WILLNEED)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


# --- text: fields -----------------------------------------------------------------------

_UNESCAPE = {b"0": b"\0", b"b": b"\b", b"n": b"\n", b"r": b"\r", b"t": b"\t", b"Z": b"\x1a"}
_ESCAPE_RE = re.compile(rb"\\(.)", re.DOTALL)
_QUOTED_ESCAPE_RE = re.compile(rb'\\(.)|""', re.DOTALL)
_QUOTED_PREFIX = re.compile(rb'"(?:[^"\\]++|\\.|"")*+', re.DOTALL)

Matcher = Any  # the bound ``match`` method of a compiled pattern


def _unescape_match(m: re.Match[bytes]) -> bytes:
    c = m.group(1)
    return b'"' if c is None else _UNESCAPE.get(c, c)


def _unescape(raw: bytes) -> bytes:
    r"""Resolve the backslash escapes of one field.

    >>> _unescape(rb"a\tb\\c\,d\Ne")
    b'a\tb\\c,dNe'
    """
    return _ESCAPE_RE.sub(_unescape_match, raw)


def _unescape_quoted(raw: bytes) -> bytes:
    r"""Resolve backslash escapes and doubled quotes inside a quoted field.

    >>> _unescape_quoted(rb'say ""hi"" \"twice\"')
    b'say "hi" "twice"'
    """
    return _QUOTED_ESCAPE_RE.sub(_unescape_match, raw)


def _decode_value(v: bytes) -> str:
    try:
        return v.decode("utf-8")
    except UnicodeDecodeError:
        return v.decode("latin-1")


def _show(value: bytes) -> str:
    text = value[:80].decode("utf-8", errors="replace")
    return text if len(text) <= 60 else text[:57] + "..."


@dataclass(frozen=True)
class _Dialect:
    """Patterns for one delimiter and NULL marker.

    ``quoted`` matches one field honouring ``"..."`` (falling back to data when there is
    no closing quote right before a terminator), ``plain`` one field ignoring quotes;
    both capture (quoted body, its terminator, unquoted body, its terminator).
    """

    delimiter: bytes
    null: bytes
    quoted: Matcher
    plain: Matcher
    clean_line: Matcher  # a line without quote, CR or backslash but whole-field NULLs
    well_quoted: Matcher | None  # whole lines of simply quoted fields, no escapes

    @staticmethod
    def make(path: str, delimiter: str | None, null: str, quote: str | None) -> _Dialect:
        if delimiter is None:
            delimiter = _sniff_delimiter(path)
        if len(delimiter) != 1 or delimiter in '\\"\r\n' or delimiter.isalnum():
            raise ValueError(f"unusable delimiter {delimiter!r}")
        if quote not in (None, '"'):
            raise ValueError("quote must be '\"' or None")
        d, nul = re.escape(delimiter.encode()), re.escape(null.encode())
        term = rb"(?:" + d + rb"|\r?\n|\Z)"
        chars = rb"(?P<u>(?:[^\\" + d + rb"\n\r]++|\\.|\\\Z|\r(?!\n))*+)(?P<t>" + term + rb")"
        quoted = rb'(?:"(?P<q>(?:[^"\\]++|\\.|"")*+)"(?=' + term + rb")(?P<qt>" + term + rb")|"
        plain = re.compile(rb"(?P<q>(?!))?(?P<qt>(?!))?" + chars, re.DOTALL).match
        q = b'"' if quote else b""
        null_field = nul + rb"(?=[" + d + rb"\n])|" if null else b""
        well_quoted = rb'(?:(?:"(?:[^"\\]|"")*+"|' + null_field + rb'[^"\\' + d + rb"\n\r]*+)"
        well_quoted += rb"(?:" + d + rb"|\n))*+"
        clean = rb"(?:[^" + q + rb"\\\n\r]++"
        clean += rb"|(?<![^" + d + rb"\n])" + nul + rb"(?=[" + d + rb"\n]))*+\n" if null else rb")*+\n"
        return _Dialect(
            delimiter=delimiter.encode(),
            null=null.encode(),
            quoted=re.compile(quoted + chars + rb")", re.DOTALL).match if quote else plain,
            plain=plain,
            clean_line=re.compile(clean).match,
            well_quoted=re.compile(well_quoted).fullmatch if quote else None,
        )


def _sniff_delimiter(path: str) -> str:
    name = path.lower()
    for comp in _COMPRESSED:
        name = name.removesuffix(comp)
    if name.endswith((".tsv", ".csv")):
        return "\t" if name.endswith(".tsv") else ","
    with _open_text(path) as f:
        first = f.read(1 << 16).split(b"\n", 1)[0]
    return "\t" if b"\t" in first else ","


# --- text: tokenizer --------------------------------------------------------------------


@dataclass
class _Rows:
    rows: list[list[bytes | None]]
    lines: list[int]  # physical line of each row
    consumed: int  # bytes of the block that hold whole rows
    next_line: int  # physical line where the next row starts


def _tokenize(
    data: bytes,
    dialect: _Dialect,
    matchers: Sequence[Matcher],
    *,
    line: int,
    final: bool,
    path: str,
    names: Sequence[str] | None = None,
    max_rows: int | None = None,
    quoted_flags: list[list[bool]] | None = None,
) -> _Rows:
    """Split ``data`` into rows of unescaped fields (``None`` for NULL).

    Field ``k`` is matched by ``matchers[k]`` (the last one past the end). Stops before
    a row that does not end in ``data`` unless ``final``. With ``names`` every row must
    have that many fields; a blank line is skipped if there are several. Which fields
    of each row were quoted is appended to ``quoted_flags`` when given.
    """
    ncols = len(names) if names is not None else None
    delim, null, clean = dialect.delimiter, dialect.null, dialect.clean_line
    last = len(matchers) - 1
    quote_final = final or len(data) >= _MAX_ROW_BYTES
    rows: list[list[bytes | None]] = []
    lines: list[int] = []
    row: list[bytes | None] = []
    flags: list[bool] = []
    pos = row_start = 0
    n = len(data)
    while pos < n or row:
        if not row and quoted_flags is None and (c := clean(data, pos)) and c.end() - pos > 1:
            text = data[pos : c.end() - 1]  # a whole row without quotes or escapes
            values: list[bytes | None] = text.split(delim)  # type: ignore[assignment]
            if null and null in text:
                values = [None if v == null else v for v in values]
            if ncols is not None and len(values) != ncols:
                raise InputError(f"expected {ncols} fields, found {len(values)}", path=path, line=line)
            rows.append(values)
            lines.append(line)
            line += 1
            pos = row_start = c.end()
            if max_rows is not None and len(rows) >= max_rows:
                break
            continue
        matcher = matchers[len(row)] if len(row) < last else matchers[last]
        m = matcher(data, pos)
        quoted, qterm, raw, term = m.groups()
        if quoted is not None:
            term = qterm
            if not term and not final:
                break  # the row goes on past this buffer
            if quoted == null and null:
                value = None
            else:
                value = _unescape_quoted(quoted) if b"\\" in quoted or b'"' in quoted else quoted
        else:
            if not term and not final:
                break
            if raw[:1] == b'"' and not quote_final and matcher is not dialect.plain:
                if _QUOTED_PREFIX.match(data, pos).end() >= n - 1:  # type: ignore[union-attr]
                    break  # maybe a quoted field cut by the end of the buffer
            value = None if raw == null else (_unescape(raw) if b"\\" in raw else raw)
        row.append(value)
        if quoted_flags is not None:
            flags.append(quoted is not None)
        pos = m.end()
        if term == delim:
            continue
        if ncols is not None and len(row) != ncols:
            if not (ncols > 1 and pos - row_start == len(term)):  # not a blank line
                raise InputError(f"expected {ncols} fields, found {len(row)}", path=path, line=line)
        else:
            rows.append(row)
            lines.append(line)
            if quoted_flags is not None:
                quoted_flags.append(flags)
        line += data.count(b"\n", row_start, pos)
        row, row_start, flags = [], pos, []
        if max_rows is not None and len(rows) >= max_rows:
            break
    return _Rows(rows, lines, row_start, line)


def _fast_mode(block: bytes, dialect: _Dialect, quotes_everywhere: bool) -> str | None:
    """How ``pyarrow.csv`` may parse ``block`` with the same result, if it may.

    ``"plain"``: every newline ends a row and every delimiter a field (no quotes, no CR,
    no backslash before a delimiter or a newline; other escapes stay inside a field and
    are resolved after parsing). ``"quoted"``: whole lines of fields that are either
    simply quoted (``""`` inside, no backslash) or unquoted without quotes or escapes.
    """
    if b"\r" in block:
        return None
    if dialect.well_quoted is None or b'"' not in block:
        if b"\\" not in block:
            return "plain"
        if b"\\" + dialect.delimiter not in block and b"\\\n" not in block:
            return "plain"
        return None
    if quotes_everywhere and block.endswith(b"\n") and dialect.well_quoted(block):
        return "quoted"
    return None


# --- text: conversion -------------------------------------------------------------------

_PARSED, _STRING, _BINARY, _BIT = "parsed", "string", "binary", "bit"
_BIT_VALUES = np.full(256, -1, dtype=np.int16)
_BIT_VALUES[[0, ord("0")]] = 0
_BIT_VALUES[[1, ord("1")]] = 1


class _Redo(Exception):
    """A check failed on the fast path: redo the block on the exact path to locate it."""


def _kind(field: pa.Field) -> str:
    t = field.type
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return _STRING
    if pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t):
        return _BINARY
    if (field.metadata or {}).get(b"mysql_type", b"").startswith(b"bit") and pa.types.is_integer(t):
        return _BIT
    if pa.types.is_primitive(t) or pa.types.is_decimal(t):
        return _PARSED
    raise SchemaError(f"type {t} cannot be read from text", column=field.name)


def _unescape_column(col: pa.Array) -> pa.Array:
    """Resolve backslash escapes in the values of a binary column that have any."""
    has = pc.fill_null(pc.match_substring(col, "\\"), False)
    if not pc.any(has).as_py():
        return col
    values = col.to_pylist()
    for k in np.flatnonzero(np.asarray(has)):
        values[k] = _unescape(values[k])
    return pa.array(values, pa.binary())


def _decode(arr: pa.Array, typ: pa.DataType) -> pa.Array:
    """Binary to string: UTF-8, or latin-1 for the values that are not UTF-8."""
    try:
        return arr.cast(typ)
    except pa.ArrowInvalid:
        return pa.array([None if v is None else _decode_value(v) for v in arr.to_pylist()], typ)


class _TextConverter:
    """Turns blocks of text or tokenized rows into tables of one schema."""

    def __init__(self, schema: pa.Schema, dialect: _Dialect, path: str) -> None:
        self.schema = schema
        self.dialect = dialect
        self.path = path
        self.kinds = [_kind(f) for f in schema]
        self.keys = [f"c{i}" for i in range(len(schema))]
        self.parsed = [i for i, k in enumerate(self.kinds) if k == _PARSED]
        self.null_values = sorted({dialect.null.decode("latin-1"), ""})
        self.null_scalar = pa.scalar(dialect.null, pa.binary())
        self.read_types = {
            key: (f.type if kind == _PARSED else pa.binary())
            for key, kind, f in zip(self.keys, self.kinds, schema)
        }
        self.matchers: list[Matcher] = []
        has_binary = any(k in (_BINARY, _BIT) for k in self.kinds)
        self.decided = not has_binary or dialect.quoted is dialect.plain

    def choose_quoting(
        self, rows: Sequence[Sequence[bytes | None]], quoted: Sequence[Sequence[bool]]
    ) -> None:
        """Tell from the first row with a string or binary value whether binary fields
        may be ``"``-quoted: they may when that row quotes all such values (the file
        encloses its fields). Until such a row comes, binary fields are read unquoted
        (they were all NULL so far). Other columns always accept quotes.
        """
        textual = {k for k, kind in enumerate(self.kinds) if kind != _PARSED}
        enclosed = False
        for row, flags in zip(rows, quoted):
            seen = [q for k, (q, v) in enumerate(zip(flags, row)) if k in textual and v is not None]
            if seen:
                self.decided, enclosed = True, all(seen)
                break
        d = self.dialect
        binary = d.quoted if enclosed else d.plain
        self.matchers = [binary if k in (_BINARY, _BIT) else d.quoted for k in self.kinds] + [d.quoted]

    @property
    def quotes_everywhere(self) -> bool:
        return all(m is self.dialect.quoted for m in self.matchers)

    def _csv(self, data: bytes, keys: list[str], ignore_empty: bool, quoted: bool = False) -> pa.Table:
        return pacsv.read_csv(
            pa.BufferReader(data),
            read_options=pacsv.ReadOptions(column_names=keys, block_size=1 << 20),
            parse_options=pacsv.ParseOptions(
                delimiter=self.dialect.delimiter.decode(),
                quote_char='"' if quoted else False,
                double_quote=True,
                escape_char=False,
                newlines_in_values=quoted,
                ignore_empty_lines=ignore_empty,
            ),
            convert_options=pacsv.ConvertOptions(
                column_types={k: self.read_types[k] for k in keys},
                null_values=self.null_values,
                strings_can_be_null=False,
                quoted_strings_can_be_null=True,
            ),
        )

    def fast(self, block: bytes, quoted: bool = False) -> pa.Table:
        """Convert a block that :func:`_fast_mode` accepted; raise to have it redone.

        A backslash in a parsed column fails to parse (and the block is redone), unless
        the whole field is the NULL marker; in the other columns escapes are resolved here.
        """
        table = self._csv(block, self.keys, ignore_empty=len(self.keys) > 1, quoted=quoted)
        escapes = not quoted and b"\\" in block
        columns = [c.combine_chunks() for c in table.columns]
        for i, kind in enumerate(self.kinds):
            if kind != _PARSED:
                col = columns[i]
                col = pc.if_else(pc.equal(col, self.null_scalar), pa.nulls(len(col), pa.binary()), col)
                columns[i] = _unescape_column(col) if escapes else col
        return self._finish(columns, None)

    def slow(self, rows: _Rows) -> pa.Table:
        """Convert tokenized rows."""
        columns: list[Any] = [None] * len(self.kinds)
        values = list(zip(*rows.rows)) if rows.rows else [()] * len(self.kinds)
        for i, kind in enumerate(self.kinds):
            if kind != _PARSED:
                columns[i] = pa.array(values[i], pa.binary())
        for i, arr in zip(self.parsed, self._parse(rows.rows, rows.lines)):
            columns[i] = arr
        return self._finish(columns, rows.lines)

    def _parse(self, rows: list[list[bytes | None]], lines: list[int]) -> list[pa.Array]:
        """Parse the other columns of tokenized rows with ``pyarrow.csv``, as fast does."""
        if not rows or not self.parsed:
            return [pa.array([], self.schema.field(i).type) for i in self.parsed]
        d, null = self.dialect.delimiter, self.dialect.null
        width = len(self.parsed)
        everything = width == len(self.kinds)

        def unfit(v: bytes | None) -> bool:  # cannot go through the CSV reader as it is
            return v is not None and (v == null or d in v or b"\n" in v or b"\r" in v)

        out: list[bytes] = []
        bad = None
        for r, row in enumerate(rows):
            values = row if everything else [row[i] for i in self.parsed]
            text = d.join([b"" if v is None else v for v in values])
            if text.count(d) != width - 1 or b"\n" in text or b"\r" in text or (null and null in text):
                if any(unfit(v) for v in values):
                    bad = r
                    break
            out.append(text)
        keys = [self.keys[i] for i in self.parsed]
        try:
            table = self._csv(b"\n".join(out) + b"\n", keys, ignore_empty=False) if out else None
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            self._locate(rows[: len(out)], lines)
            raise InputError(f"cannot read: {exc}", path=self.path, line=lines[0]) from None
        if bad is not None:
            k = next(k for k, i in enumerate(self.parsed) if unfit(rows[bad][i]))
            raise self._cannot(rows[bad][self.parsed[k]] or b"", self.parsed[k], lines[bad])
        assert table is not None and table.num_rows == len(rows)
        return [table.column(k).combine_chunks() for k in range(width)]

    def _locate(self, rows: list[list[bytes | None]], lines: list[int]) -> None:
        """Raise for the first value of ``rows`` that does not parse (earliest row)."""
        found: tuple[int, int] | None = None
        for i in self.parsed:
            r = self._first_bad([row[i] for row in rows], self.keys[i])
            if r is not None and (found is None or r < found[0]):
                found = (r, i)
        if found is not None:
            r, i = found
            raise self._cannot(rows[r][i] or b"", i, lines[r])

    def _first_bad(self, values: list[bytes | None], key: str) -> int | None:
        """Index of the first value that does not parse, by bisection."""

        def ok(k: int) -> bool:
            data = b"\n".join(b"" if v is None else v for v in values[:k]) + b"\n"
            try:
                self._csv(data, [key], ignore_empty=False)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                return False
            return True

        if ok(len(values)):
            return None
        lo, hi = 0, len(values)  # ok(lo) holds, ok(hi) fails
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if ok(mid) else (lo, mid)
        return hi - 1

    def _cannot(self, value: bytes, i: int, line: int) -> InputError:
        f = self.schema.field(i)
        message = f"cannot read {_show(value)!r} as {f.type}"
        return InputError(message, path=self.path, line=line, column=f.name)

    def _finish(self, columns: list[Any], lines: list[int] | None) -> pa.Table:
        """Shared last step: decode strings, bit values, binary widths, NOT NULL."""
        for i, (kind, f) in enumerate(zip(self.kinds, self.schema)):
            col = columns[i]
            if kind == _STRING:
                col = _decode(col, f.type)
            elif kind == _BINARY and col.type != f.type:
                try:
                    col = col.cast(f.type)
                except pa.ArrowInvalid:
                    width = getattr(f.type, "byte_width", -1)
                    self._bad_value(col, i, lines, lambda v: len(v) == width)
            elif kind == _BIT:
                col = self._bits(col, i, lines)
            if not f.nullable and col.null_count:
                if lines is None:
                    raise _Redo()
                r = pc.index(col.is_null(), True).as_py()
                message = "NULL in a NOT NULL column"
                raise InputError(message, path=self.path, line=lines[r], column=f.name)
            columns[i] = col
        return pa.Table.from_arrays(columns, schema=self.schema)

    def _bits(self, col: pa.Array, i: int, lines: list[int] | None) -> pa.Array:
        """``bit(1)`` values: one raw byte 0 or 1, or the digit; empty is NULL."""
        col = pc.if_else(pc.equal(pc.binary_length(col), 0), pa.nulls(len(col), pa.binary()), col)
        valid = np.asarray(col.is_valid())
        values = np.zeros(len(col), np.int16)
        if valid.any():
            try:
                fixed = col.cast(pa.binary(1))
                raw = np.frombuffer(fixed.buffers()[1], np.uint8)[fixed.offset : fixed.offset + len(col)]
                values = _BIT_VALUES[raw]
            except pa.ArrowInvalid:
                values[:] = -1
            if (values[valid] < 0).any():
                self._bad_value(col, i, lines, lambda v: len(v) == 1 and _BIT_VALUES[v[0]] >= 0)
        typ = self.schema.field(i).type
        return pa.array(np.where(valid, values, 0).astype(typ.to_pandas_dtype()), typ, mask=~valid)

    def _bad_value(self, col: pa.Array, i: int, lines: list[int] | None, good: Any) -> None:
        """Raise for the first value of ``col`` that is not ``good``."""
        if lines is None:
            raise _Redo()
        for r, v in enumerate(col.to_pylist()):
            if v is not None and not good(v):
                raise self._cannot(v, i, lines[r])
        raise InputError(f"cannot read as {self.schema.field(i).type}", path=self.path)


# --- text: the reading loop -------------------------------------------------------------


def _open_text(path: str) -> Any:
    """A binary input stream, decompressed when the file starts with a known magic."""
    try:
        with open(path, "rb") as f:
            magic = f.read(4)
        raw = pa.OSFile(path, "rb")
    except OSError as exc:
        raise InputError(f"cannot open: {exc.strerror or exc}", path=path) from None
    for prefix, codec in ((b"\x1f\x8b", "gzip"), (b"BZh", "bz2"), (b"\x28\xb5\x2f\xfd", "zstd")):
        if magic.startswith(prefix):
            return pa.CompressedInputStream(raw, codec)
    return raw


def _blocks(path: str) -> Iterator[tuple[bytes, bool]]:
    """Raw chunks of the file and whether each is the last."""
    with _open_text(path) as f:
        try:
            chunk = f.read(_BLOCK_BYTES)
            while chunk:
                nxt = f.read(_BLOCK_BYTES)
                yield chunk, not nxt
                chunk = nxt
        except (OSError, pa.ArrowException) as exc:
            raise InputError(f"cannot read: {exc}", path=path) from None


def _read_text(
    path: str, schema: pa.Schema | None, dialect: _Dialect, batch_rows: int
) -> Iterator[pa.RecordBatch]:
    header_required = schema is None
    if schema is None:
        schema = _infer_schema(path, dialect)
    conv = _TextConverter(schema, dialect, path)
    yield from _rebatch(_text_tables(path, conv, header_required), schema, batch_rows)


def _text_tables(path: str, conv: _TextConverter, header_required: bool) -> Iterator[pa.Table]:
    dialect, names = conv.dialect, list(conv.schema.names)
    anywhere = [dialect.quoted]
    buf, line = b"", 1
    header_done = False
    for chunk, final in _blocks(path):
        buf += chunk
        while buf:
            cut = len(buf) if final else buf.rfind(b"\n") + 1
            if cut == 0:
                break  # no line end yet: read more
            block, rest = buf[:cut], buf[cut:]
            if not header_done:
                head = _tokenize(block, dialect, anywhere, line=line, final=final, path=path, max_rows=1)
                if not head.rows:
                    break  # the first row is longer than the buffer
                header_done = True
                if header_required or [_decode_value(v or b"") for v in head.rows[0]] == names:
                    buf, line = block[head.consumed :] + rest, head.next_line
                    continue
            if not (conv.matchers and conv.decided):
                flags: list[list[bool]] = []
                probe = _tokenize(
                    block, dialect, anywhere, line=line, final=final, path=path,
                    max_rows=_PROBE_ROWS, quoted_flags=flags,
                )  # fmt: skip
                conv.choose_quoting(probe.rows, flags)
            consumed, line, table = _convert_block(block, conv, line, final)
            if table is not None and table.num_rows:
                yield table
            buf = block[consumed:] + rest
            if consumed == 0:
                break  # a row goes on past this block: read more
    if buf:
        raise InputError("incomplete last row", path=path, line=line)


def _convert_block(
    block: bytes, conv: _TextConverter, line: int, final: bool
) -> tuple[int, int, pa.Table | None]:
    """Convert the whole rows at the start of ``block``: (bytes used, next line, table)."""
    mode = _fast_mode(block, conv.dialect, conv.quotes_everywhere)
    if mode is not None:
        try:
            table = conv.fast(block, quoted=mode == "quoted")
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, _Redo):
            pass  # redone below, which finds the line and column at fault
        else:
            return len(block), line + block.count(b"\n"), table
    rows = _tokenize(
        block, conv.dialect, conv.matchers, line=line, final=final, path=conv.path,
        names=conv.schema.names,
    )  # fmt: skip
    if rows.consumed == 0:
        return 0, line, None
    return rows.consumed, rows.next_line, conv.slow(rows)


def _infer_schema(path: str, dialect: _Dialect) -> pa.Schema:
    """Column names from the header line, types from the first rows (all nullable)."""
    data, final = b"", False
    for chunk, final in _blocks(path):
        data += chunk
        if len(data) >= _SAMPLE_BYTES:
            break
    if not final:
        data = data[: data.rfind(b"\n") + 1]
    sample = _tokenize(data, dialect, [dialect.quoted], line=1, final=final, path=path)
    if not sample.rows:
        raise InputError("no header line with column names", path=path, line=1)
    names = [_decode_value(v or b"") for v in sample.rows[0]]
    for k, name in enumerate(names):
        if not name or name in names[:k]:
            raise InputError(f"header: empty or repeated column name {name!r}", path=path, line=1)
    columns = [[r[k] if k < len(r) else None for r in sample.rows[1:]] for k in range(len(names))]
    return pa.schema([pa.field(name, _infer_type(col, dialect)) for name, col in zip(names, columns)])


def _infer_type(values: list[bytes | None], dialect: _Dialect) -> pa.DataType:
    """What ``pyarrow.csv`` infers for these values; string when unsure."""
    present = [v for v in values if v is not None]
    if not present or any(b"\n" in v or b"\r" in v or v == dialect.null for v in present):
        return pa.string()
    data = b"\n".join(present) + b"\n"
    try:
        typ = pacsv.read_csv(
            pa.BufferReader(data),
            read_options=pacsv.ReadOptions(column_names=["c"]),
            parse_options=pacsv.ParseOptions(
                delimiter="\x01" if b"\x01" not in data else "\x02",
                quote_char=False,
                ignore_empty_lines=False,
            ),
            convert_options=pacsv.ConvertOptions(null_values=[""], strings_can_be_null=False),
        ).column(0).type
    except pa.ArrowInvalid:
        return pa.string()
    if pa.types.is_timestamp(typ):
        return pa.timestamp("us")
    return pa.string() if pa.types.is_null(typ) or pa.types.is_binary(typ) else typ


def _rebatch(tables: Iterable[pa.Table], schema: pa.Schema, batch_rows: int) -> Iterator[pa.RecordBatch]:
    """Batches of exactly ``batch_rows`` rows (the last may be shorter)."""
    pending: list[pa.Table] = []
    count = 0
    for table in tables:
        pending.append(table)
        count += table.num_rows
        if count < batch_rows:
            continue
        merged = pa.concat_tables(pending).combine_chunks()
        full = (count // batch_rows) * batch_rows
        for start in range(0, full, batch_rows):
            yield _to_batch(merged.slice(start, batch_rows), schema)
        pending = [merged.slice(full)] if full < count else []
        count -= full
    if count:
        yield _to_batch(pa.concat_tables(pending).combine_chunks(), schema)


def _to_batch(table: pa.Table, schema: pa.Schema) -> pa.RecordBatch:
    batches = table.to_batches()
    if len(batches) == 1:
        return batches[0]
    return pa.RecordBatch.from_arrays([c.combine_chunks() for c in table.columns], schema=schema)


# --- Parquet, FITS, VOTable -------------------------------------------------------------


def _match_columns(available: Sequence[str], schema: pa.Schema, path: str) -> list[str]:
    """The file's column for each schema field: same name, else the same ignoring case."""
    folded: dict[str, list[str]] = {}
    for name in available:
        folded.setdefault(name.lower(), []).append(name)
    chosen: list[str] = []
    for field in schema:
        if field.name in available:
            chosen.append(field.name)
        elif len(folded.get(field.name.lower(), [])) == 1:
            chosen.append(folded[field.name.lower()][0])
        else:
            message = "column of the schema is missing from the file"
            raise InputError(message, path=path, column=field.name)
    extra = [name for name in available if name not in chosen]
    if extra:
        raise InputError("column of the file is not in the schema", path=path, column=extra[0])
    return chosen


def _conform(columns: Sequence[Any], schema: pa.Schema, path: str, first_row: int) -> pa.RecordBatch:
    """Cast the columns to the schema; NULL in a NOT NULL field is an error."""
    arrays = []
    for col, field in zip(columns, schema):
        if isinstance(col, pa.ChunkedArray):
            col = col.combine_chunks()
        if col.type != field.type:
            try:
                col = col.cast(field.type)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                message = f"cannot convert {col.type} to {field.type}: {exc}"
                raise InputError(message, path=path, column=field.name) from None
        if not field.nullable and col.null_count:
            r = first_row + pc.index(col.is_null(), True).as_py() + 1
            raise InputError(f"NULL in a NOT NULL column (row {r})", path=path, column=field.name)
        arrays.append(col)
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def _read_parquet(path: str, schema: pa.Schema | None, batch_rows: int) -> Iterator[pa.RecordBatch]:
    try:
        with pq.ParquetFile(path) as pf:
            if schema is None:
                yield from pf.iter_batches(batch_size=batch_rows)
                return
            names = pf.schema_arrow.names
            if len(set(names)) != len(names):
                raise InputError("the file has repeated column names", path=path)
            columns = _match_columns(names, schema, path)
            row = 0
            for batch in pf.iter_batches(batch_size=batch_rows, columns=columns):
                yield _conform([batch.column(c) for c in columns], schema, path, row)
                row += batch.num_rows
    except (OSError, pa.ArrowInvalid) as exc:
        raise InputError(f"cannot read Parquet: {exc}", path=path) from None


def _numpy_to_arrow(col: Any) -> pa.Array:
    """An astropy / numpy (masked) column as an Arrow array: native byte order, NaN and
    masked values NULL, vector cells as fixed-size lists."""
    data = np.ma.getdata(col)
    mask = np.ma.getmaskarray(col) if np.ma.isMaskedArray(col) else np.zeros(data.shape, bool)
    if data.dtype.byteorder not in ("=", "|"):
        data = data.astype(data.dtype.newbyteorder("="))
    if data.dtype.kind == "f":
        mask = mask | np.isnan(data)
    if data.dtype.kind == "S":
        data = np.array([_decode_value(v) for v in data.tolist()], dtype=object)
    if data.ndim > 1:
        width = int(np.prod(data.shape[1:]))
        flat = pa.array(data.reshape(-1), mask=mask.reshape(-1) if mask.any() else None)
        arr = pa.FixedSizeListArray.from_arrays(flat, width)
        rows = mask.reshape(len(mask), -1).all(axis=1)
        return pc.if_else(pa.array(rows), pa.nulls(len(arr), arr.type), arr) if rows.any() else arr
    if data.dtype.kind == "O":
        values = [None if masked else v for masked, v in zip(mask, data.tolist())]
        return pa.array([v.tolist() if isinstance(v, np.ndarray) else v for v in values])
    return pa.array(data, mask=mask if mask.any() else None)


def _read_astropy(
    path: str, fmt: str, schema: pa.Schema | None, batch_rows: int
) -> Iterator[pa.RecordBatch]:
    from astropy.table import Table

    try:
        if fmt == "fits":
            from astropy.io import fits

            with fits.open(path, memmap=not path.lower().endswith(".gz")) as hdul:
                kinds = (fits.BinTableHDU, fits.TableHDU)
                index = next((k for k, h in enumerate(hdul) if isinstance(h, kinds)), None)
                if index is None:
                    raise InputError("no table HDU in the FITS file", path=path)
                table = Table.read(hdul, hdu=index, character_as_bytes=False, mask_invalid=False)
                yield from _table_batches(table, path, schema, batch_rows)
        else:
            from astropy.io.votable import parse_single_table

            table = parse_single_table(path).to_table(use_names_over_ids=True)
            yield from _table_batches(table, path, schema, batch_rows)
    except (OSError, ValueError) as exc:
        what = "FITS" if fmt == "fits" else "VOTable"
        raise InputError(f"cannot read {what}: {exc}", path=path) from None


def _table_batches(
    table: Any, path: str, schema: pa.Schema | None, batch_rows: int
) -> Iterator[pa.RecordBatch]:
    names = list(table.colnames)
    columns = names if schema is None else _match_columns(names, schema, path)
    for start in range(0, len(table), batch_rows):
        part = table[start : start + batch_rows]
        arrays = [_numpy_to_arrow(part[c]) for c in columns]
        if schema is None:
            yield pa.RecordBatch.from_arrays(arrays, names=columns)
        else:
            yield _conform(arrays, schema, path, start)
