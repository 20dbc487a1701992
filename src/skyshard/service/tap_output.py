"""TAP results in their RESPONSEFORMAT: VOTable (BINARY2), CSV, TSV, JSON, Parquet.

A result is a ``pa.Table`` (synchronous queries, TAP_SCHEMA) or a ``StoredResult``
(asynchronous jobs, in memory or spilled to Parquet), read batch by batch and cut at
MAXREC. Overflow is flagged in the format where it has a place: VOTable's
``QUERY_STATUS=OVERFLOW`` INFO (DALI), ``"overflow": true`` in JSON, the Parquet
key-value metadata ``IVOA.QUERY_STATUS``; CSV and TSV have none, so every format also
carries the ``X-Query-Status`` response header.

JSON is ``{"metadata": [{"name", "datatype", "arraysize", "xtype", "unit", "ucd"}],
"data": [[...], ...], "overflow": bool}``: NaN and infinities as null, binary as hex.
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from starlette.responses import Response, StreamingResponse

from skyshard.service import votable
from skyshard.service.results import StoredResult
from skyshard.service.tap_query import OutputFormat
from skyshard.service.votable import FieldMeta

BATCH = 65_536


@dataclass(frozen=True)
class Result:
    """The rows to send: a table or a stored result, at most ``rows`` of them."""

    source: pa.Table | StoredResult
    rows: int
    overflow: bool
    fields: Mapping[str, FieldMeta]
    infos: Mapping[str, str]

    @property
    def schema(self) -> pa.Schema:
        return self.source.schema

    def batches(self) -> Iterator[pa.RecordBatch]:
        """The first ``rows`` rows, batch by batch."""
        left = self.rows
        source = (self.source.to_batches(max_chunksize=BATCH)
                  if isinstance(self.source, pa.Table) else self.source.batches(BATCH))
        for batch in source:
            if left <= 0:
                return
            if batch.num_rows > left:
                batch = batch.slice(0, left)
            left -= batch.num_rows
            yield batch

    def non_ascii(self) -> list[str]:
        """Text columns holding any non-ASCII value (sent as unicodeChar)."""
        text = [f.name for f in self.schema if votable.is_text(_plain(f.type))]
        if not text:
            return []
        found: set[str] = set()
        batches = self.batches()
        if isinstance(self.source, StoredResult) and self.source.path is not None:
            batches = pq.ParquetFile(self.source.path).iter_batches(BATCH, columns=text)
        for batch in batches:
            for name in text:
                if name not in found and not votable.is_ascii([batch.column(name)]):
                    found.add(name)
        return [n for n in text if n in found]


def _plain(t: pa.DataType) -> pa.DataType:
    return t.value_type if pa.types.is_dictionary(t) else t


#: A synchronous result whose Arrow data is at most this big is encoded at once, on one
#: worker thread, and sent as one body (``respond_buffered``): streaming it would cost a
#: thread hop per chunk, more than the encoding of a small result.
BUFFERED_BYTES = 1 << 20


def respond(result: Result, fmt: OutputFormat) -> Response:
    """The HTTP response carrying ``result`` in ``fmt``, streamed chunk by chunk."""
    return StreamingResponse(_chunks(result, fmt), media_type=_media_type(fmt),
                             headers=_headers(result))


def encode(result: Result, fmt: OutputFormat) -> bytes:
    """The whole body of ``result`` in ``fmt`` (blocking: on the event loop only for a
    small result)."""
    return b"".join(_chunks(result, fmt))


def respond_buffered(result: Result, fmt: OutputFormat, body: bytes) -> Response:
    """The response for a body made by ``encode``."""
    return Response(body, media_type=_media_type(fmt), headers=_headers(result))


def small(result: Result, limit: int | None = None) -> bool:
    """Whether ``result`` is an in-memory table of at most ``limit`` Arrow bytes
    (default ``BUFFERED_BYTES``: small enough to buffer)."""
    limit = BUFFERED_BYTES if limit is None else limit
    return isinstance(result.source, pa.Table) and result.source.nbytes <= limit


def _headers(result: Result) -> dict[str, str]:
    return {"X-Query-Status": "OVERFLOW" if result.overflow else "OK"}


def _media_type(fmt: OutputFormat) -> str:
    return votable.MEDIA_TYPE if fmt.name == "votable" else fmt.media_type


def _chunks(result: Result, fmt: OutputFormat) -> Iterator[bytes]:
    writers = {"votable": _votable, "csv": _csv, "tsv": _tsv, "json": _json}
    return writers.get(fmt.name, _parquet)(result)


def _votable(result: Result) -> Iterator[bytes]:
    non_ascii = result.non_ascii()
    yield from votable.document(result.schema, result.batches(), infos=result.infos,
                                overflow=result.overflow, fields=result.fields,
                                non_ascii=non_ascii)


# --- text formats -------------------------------------------------------------------------


def _text_ready(batch: pa.RecordBatch) -> pa.RecordBatch:
    """Binary as hex, nested values as JSON, dates ISO 8601, NULL columns as text."""
    arrays = []
    for col in batch.columns:
        t = _plain(col.type)
        if pa.types.is_dictionary(col.type):
            col = col.dictionary_decode()
        if (pa.types.is_binary(t) or pa.types.is_large_binary(t)
                or pa.types.is_fixed_size_binary(t)):
            col = pa.array([None if v is None else v.hex() for v in col.to_pylist()],
                           pa.string())
        elif pa.types.is_nested(t):
            col = pa.array([None if v is None else json.dumps(v, default=str)
                            for v in col.to_pylist()], pa.string())
        elif pa.types.is_timestamp(t):
            col = pc.strftime(col.cast(pa.timestamp(t.unit)) if t.tz else col,
                              format="%Y-%m-%dT%H:%M:%S")
        elif pa.types.is_null(t):
            col = pa.nulls(len(col), pa.string())
        arrays.append(col)
    return pa.RecordBatch.from_arrays(arrays, names=batch.schema.names)


def _csv(result: Result) -> Iterator[bytes]:
    header = True
    for batch in result.batches():
        buf = io.BytesIO()
        pacsv.write_csv(_text_ready(batch), buf, pacsv.WriteOptions(include_header=header))
        header = False
        yield buf.getvalue()
    if header:
        yield (",".join(_csv_name(n) for n in result.schema.names) + "\n").encode()


def _csv_name(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _tsv(result: Result) -> Iterator[bytes]:
    """Tab-separated, no quoting: tabs and line breaks inside values become spaces."""
    yield ("\t".join(_tsv_clean(n) for n in result.schema.names) + "\n").encode()
    for batch in result.batches():
        cells = []
        for col in _text_ready(batch).columns:
            text = col.cast(pa.string()) if not pa.types.is_string(col.type) else col
            text = pc.replace_substring_regex(text, r"[\t\r\n]", " ")
            cells.append(pc.fill_null(text, ""))
        rows = pc.binary_join_element_wise(*cells, "\t") if len(cells) > 1 else cells[0]
        yield ("\n".join(rows.to_pylist()) + "\n").encode()


def _tsv_clean(text: str) -> str:
    return text.replace("\t", " ").replace("\n", " ").replace("\r", " ")


def _json(result: Result) -> Iterator[bytes]:
    non_ascii = result.non_ascii()
    types = votable.field_types(result.schema, non_ascii)
    metadata = []
    for f, t in zip(result.schema, types):
        meta = result.fields.get(f.name) or FieldMeta()
        metadata.append({"name": f.name, "datatype": t.datatype, "arraysize": t.arraysize,
                         "xtype": t.xtype, "unit": meta.unit, "ucd": meta.ucd})
    yield b'{"metadata":' + _dumps(metadata) + b',"data":['
    first = True
    for batch in result.batches():
        columns = [_json_values(c) for c in _text_ready(batch).columns]
        rows = [list(r) for r in zip(*columns)]
        if rows:
            chunk = _dumps(rows)[1:-1]
            yield chunk if first else b"," + chunk
            first = False
    yield b'],"overflow":' + (b"true" if result.overflow else b"false") + b"}"


def _json_values(col: pa.Array) -> list:
    values = col.to_pylist()
    t = col.type
    if pa.types.is_floating(t):
        return [v if v is None or math.isfinite(v) else None for v in values]
    if pa.types.is_decimal(t):
        return [None if v is None else float(v) for v in values]
    if pa.types.is_temporal(t):
        return [None if v is None else v.isoformat() if hasattr(v, "isoformat") else str(v)
                for v in values]
    return values


def _dumps(data: object) -> bytes:
    return json.dumps(data, default=str, allow_nan=False, separators=(",", ":")).encode()


# --- Parquet ------------------------------------------------------------------------------


def _parquet(result: Result) -> Iterator[bytes]:
    """One piece, written in the server's thread pool (as every streamed body)."""
    status = b"OVERFLOW" if result.overflow else b"OK"
    schema = result.schema.with_metadata({**(result.schema.metadata or {}),
                                          b"IVOA.QUERY_STATUS": status})
    buf = io.BytesIO()
    with pq.ParquetWriter(buf, schema) as writer:
        wrote = False
        for batch in result.batches():
            writer.write_batch(pa.RecordBatch.from_arrays(batch.columns, schema=schema))
            wrote = True
        if not wrote:
            writer.write_table(schema.empty_table())
    yield buf.getvalue()
