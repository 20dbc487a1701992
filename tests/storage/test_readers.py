"""Streamed readers: mysqldump text (fast and exact paths), Parquet, FITS, VOTable."""

from __future__ import annotations

import gzip
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from unittest import mock

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from skyshard.catalog.mysql_schema import parse_create_table, parse_ingest_json_schema
from skyshard.errors import InputError
from skyshard.storage import readers
from skyshard.storage.readers import detect_format, read_batches

REPO = Path(__file__).resolve().parents[2]
QSERV = Path(os.environ.get("SKYSHARD_QSERV_TESTDATA", REPO / "tests" / "data" / "qserv"))


@pytest.fixture
def qserv() -> Path:
    if not (QSERV / "case01").is_dir():
        pytest.skip(f"Qserv test data not found at {QSERV} (set SKYSHARD_QSERV_TESTDATA)")
    return QSERV


def _read(path: Path | str, schema: pa.Schema | None = None, **kwargs: object) -> pa.Table:
    batches = list(read_batches(path, schema=schema, **kwargs))  # type: ignore[arg-type]
    if schema is None:
        return pa.Table.from_batches(batches)
    assert all(b.schema == schema for b in batches)
    return pa.Table.from_batches(batches, schema=schema)


def _schema_of(case: Path, table: str) -> pa.Schema:
    path = case / "data" / "schema" / f"{table}.schema"
    return parse_create_table(path.read_text(encoding="latin-1"), path=str(path)).schema


@contextmanager
def _exact_path_only() -> Iterator[None]:
    """Every block through the Python tokenizer."""
    with mock.patch.object(readers, "_fast_mode", lambda *args: None):
        yield


@contextmanager
def _fast_path_only() -> Iterator[None]:
    """Fail if any block reaches the Python tokenizer."""
    with mock.patch.object(readers._TextConverter, "slow", side_effect=AssertionError("slow path used")):
        yield


@contextmanager
def _small_blocks(size: int) -> Iterator[None]:
    with mock.patch.object(readers, "_BLOCK_BYTES", size):
        yield


def _error(path: Path, schema: pa.Schema | None = None, **kwargs: object) -> InputError:
    with pytest.raises(InputError) as err:
        _read(path, schema, **kwargs)
    return err.value


# --- formats --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "fmt"),
    [
        ("a.csv", "text"), ("a.tsv", "text"), ("a.txt", "text"), ("A.TSV.GZ", "text"),
        ("a.csv.gz", "text"), ("a.gz", "text"), ("a.parquet", "parquet"), ("a.pq", "parquet"),
        ("a.fits", "fits"), ("a.fit", "fits"), ("a.fits.gz", "fits"), ("a.vot", "votable"),
        ("a.xml", "votable"), ("a.votable", "votable"),
    ],
)  # fmt: skip
def test_detect_format(name: str, fmt: str) -> None:
    assert detect_format(name) == fmt


def test_unknown_suffix() -> None:
    with pytest.raises(InputError) as err:
        detect_format("table.xlsx")
    assert str(err.value) == "table.xlsx: cannot tell the format from the file name; pass format= one of text, parquet, fits, votable"


# --- mysqldump text -------------------------------------------------------------------

SCHEMA = pa.schema(
    [
        pa.field("id", pa.int64(), nullable=False),
        pa.field("name", pa.string()),
        pa.field("blob", pa.binary()),
        pa.field("mag", pa.float64()),
    ]
)


def test_mysqldump_escapes(tmp_path: Path) -> None:
    path = tmp_path / "t.tsv"
    path.write_bytes(
        b"1\ta\\tb\\nc\\rd\\0e\\\\f\\Zg\\bh\t\\N\t1.5\n"
        b"2\tline one\\\nline two\\\ttab\t\\0\\\\\\\n\t\\N\n"
        b"3\t\\N\t\t-2e3\n"
        b"4\tx\\Ny\\qz\\\"\t\\\\N\t\n"
    )
    table = _read(path, SCHEMA)
    assert table.to_pylist() == [
        {"id": 1, "name": "a\tb\nc\rd\0e\\f\x1ag\bh", "blob": None, "mag": 1.5},
        {"id": 2, "name": "line one\nline two\ttab", "blob": b"\0\\\n", "mag": None},
        {"id": 3, "name": None, "blob": b"", "mag": -2000.0},
        {"id": 4, "name": 'xNyqz"', "blob": b"\\N", "mag": None},
    ]
    with _exact_path_only():
        assert _read(path, SCHEMA).equals(table)


def test_blob_with_every_byte_round_trips(tmp_path: Path) -> None:
    values = [bytes(range(256)), bytes(range(255, -1, -1)), b'"starts with a quote', b"\n\t,\\", b""]

    def escape(v: bytes) -> bytes:
        out = v.replace(b"\\", b"\\\\").replace(b"\0", b"\\0").replace(b"\t", b"\\\t")
        return out.replace(b"\n", b"\\\n").replace(b",", b"\\,")

    schema = pa.schema([("id", pa.int32()), ("b", pa.binary())])
    for delimiter in ("\t", ","):
        path = tmp_path / f"blob{ord(delimiter)}.txt"
        path.write_bytes(b"".join(b"%d%s%s\n" % (k, delimiter.encode(), escape(v)) for k, v in enumerate(values)))
        assert _read(path, schema, delimiter=delimiter).column("b").to_pylist() == values


def test_strings_fall_back_to_latin1_per_value(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_bytes("1,café\n2,".encode() + "café".encode("latin-1") + b"\n3,\\N\n")
    schema = pa.schema([("id", pa.int8()), ("s", pa.string())])
    assert _read(path, schema).column("s").to_pylist() == ["café", "café", None]


def test_bit1_columns_take_raw_bytes_or_digits(tmp_path: Path) -> None:
    schema = pa.schema([pa.field("f", pa.int8(), metadata={b"mysql_type": b"bit(1)"}), ("i", pa.int8())])
    path = tmp_path / "bits.csv"
    path.write_bytes(b"\x00,1\n\x01,2\n\\0,3\n0,4\n1,5\n\\N,6\n,7\n")
    expected = [0, 1, 0, 0, 1, None, None]
    assert _read(path, schema).column("f").to_pylist() == expected
    with _exact_path_only():
        assert _read(path, schema).column("f").to_pylist() == expected
    path.write_bytes(b"\x00,1\n\x07,2\n")
    err = _error(path, schema)
    assert (err.line, err.column, err.reason) == (2, "f", "cannot read '\\x07' as int8")


def test_header_line_equal_to_names_is_skipped(tmp_path: Path) -> None:
    path = tmp_path / "h.csv"
    path.write_text("id,name,blob,mag\n7,x,y,0.5\n")
    assert _read(path, SCHEMA).to_pylist() == [{"id": 7, "name": "x", "blob": b"y", "mag": 0.5}]


def test_without_schema_header_and_inferred_types(tmp_path: Path) -> None:
    path = tmp_path / "plain.csv"
    path.write_text('id,ra,name,when\n1,10.5,"a,b",2020-01-02 03:04:05\n2,\\N,x\\ty,\n3,-1,"say ""hi""",\n')
    table = _read(path)
    assert table.schema == pa.schema(
        [("id", pa.int64()), ("ra", pa.float64()), ("name", pa.string()), ("when", pa.timestamp("us"))]
    )
    assert table.column("name").to_pylist() == ["a,b", "x\ty", 'say "hi"']
    assert table.column("ra").to_pylist() == [10.5, None, -1.0]


def test_quoted_csv_fields(tmp_path: Path) -> None:
    schema = pa.schema([("id", pa.int32()), ("s", pa.string()), ("x", pa.float32())])
    path = tmp_path / "q.csv"
    path.write_bytes(b'1,"a,b",\n2,"two\nlines",""\n3,"x""y",3\n4,plain "inner",\\N\n5,"",4\n')
    expected = [
        {"id": 1, "s": "a,b", "x": None},
        {"id": 2, "s": "two\nlines", "x": None},
        {"id": 3, "s": 'x"y', "x": 3.0},
        {"id": 4, "s": 'plain "inner"', "x": None},
        {"id": 5, "s": "", "x": 4.0},
    ]
    assert _read(path, schema).to_pylist() == expected
    with _exact_path_only():
        assert _read(path, schema).to_pylist() == expected
    path.write_bytes(b'1,"a,b",\n2,"two\nlines",""\n3,"x""y",3\n5,"",4\n')  # simply quoted
    with _fast_path_only():
        assert _read(path, schema).to_pylist() == expected[:3] + expected[4:]


def test_malformed_quotes_are_data(tmp_path: Path) -> None:
    schema = pa.schema([("id", pa.int32()), ("s", pa.string())])
    path = tmp_path / "q.csv"
    path.write_bytes(b'1,"ab"c\n2,"open\n')
    assert _read(path, schema).column("s").to_pylist() == ['"ab"c', '"open']


def test_fast_path_handles_nulls_and_inner_escapes(tmp_path: Path) -> None:
    path = tmp_path / "t.tsv"
    path.write_bytes(b"1\ta\\\\b\\tc\t\\N\t\\N\n2\t\\N\tz\\0\t\n\n3\t\tq\t4\n")
    expected = [
        {"id": 1, "name": "a\\b\tc", "blob": None, "mag": None},
        {"id": 2, "name": None, "blob": b"z\0", "mag": None},
        {"id": 3, "name": "", "blob": b"q", "mag": 4.0},
    ]
    with _fast_path_only():
        assert _read(path, SCHEMA).to_pylist() == expected
    with _exact_path_only():
        assert _read(path, SCHEMA).to_pylist() == expected


def test_crlf_line_ends(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_bytes(b"1,a,b,2\r\n2,c\rd,e,\r\n")
    assert _read(path, SCHEMA).to_pylist() == [
        {"id": 1, "name": "a", "blob": b"b", "mag": 2.0},
        {"id": 2, "name": "c\rd", "blob": b"e", "mag": None},
    ]


def test_gzip_detected_by_content(tmp_path: Path) -> None:
    path = tmp_path / "t.tsv"
    path.write_bytes(gzip.compress(b"1\tx\ty\t2\n"))
    assert _read(path, SCHEMA).num_rows == 1


# --- errors ---------------------------------------------------------------------------


@pytest.mark.parametrize("escaped", [False, True], ids=["fast", "exact"])
def test_bad_value_names_file_line_and_column(tmp_path: Path, escaped: bool) -> None:
    path = tmp_path / "bad.tsv"
    first = b"1\tcontinued\\\nhere\tb\t1\n" if escaped else b"1\tone line\tb\t1\n"
    path.write_bytes(first + b"2\tx\tb\t2\nabc\ty\tb\t3\n")
    line = 4 if escaped else 3
    err = _error(path, SCHEMA)
    assert (err.path, err.line, err.column, err.reason) == (str(path), line, "id", "cannot read 'abc' as int64")
    assert str(err) == f"{path}, line {line}, column 'id': cannot read 'abc' as int64"


def test_out_of_range_value(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_bytes(b"1,100\n2,300\n")
    err = _error(path, pa.schema([("id", pa.int64()), ("t", pa.int8())]))
    assert (err.line, err.column, err.reason) == (2, "t", "cannot read '300' as int8")


def test_wrong_field_count(tmp_path: Path) -> None:
    path = tmp_path / "bad.tsv"
    path.write_bytes(b"1\ta\tb\t1\n2\ta\tb\t2\t9\n")
    err = _error(path, SCHEMA)
    assert (err.path, err.line, err.column, err.reason) == (str(path), 2, None, "expected 4 fields, found 5")


def test_null_in_not_null_column(tmp_path: Path) -> None:
    path = tmp_path / "bad.tsv"
    path.write_bytes(b"1\ta\tb\t1\n\\N\ta\tb\t2\n")
    err = _error(path, SCHEMA)
    assert (err.line, err.column, err.reason) == (2, "id", "NULL in a NOT NULL column")


def test_escaped_null_marker_is_not_a_number(tmp_path: Path) -> None:
    path = tmp_path / "bad.tsv"
    path.write_bytes(b"1\ta\tb\t\\\\N\n")
    err = _error(path, SCHEMA)
    assert (err.line, err.column, err.reason) == (1, "mag", "cannot read '\\\\N' as double")


def test_error_line_in_a_later_block(tmp_path: Path) -> None:
    path = tmp_path / "many.tsv"
    rows = [b"%d\tn%d\tb\t%d.5\n" % (k, k, k) for k in range(1, 5001)]
    rows[3999] = b"4000\tname\\\nsplit\tb\t1\n"  # one row on two lines
    rows[4499] = b"4500\tn\tb\tnot-a-number\n"
    path.write_bytes(b"".join(rows))
    with _small_blocks(1000):
        err = _error(path, SCHEMA)
    assert (err.line, err.column, err.reason) == (4501, "mag", "cannot read 'not-a-number' as double")


def test_missing_file(tmp_path: Path) -> None:
    err = _error(tmp_path / "none.tsv", SCHEMA)
    assert err.path == str(tmp_path / "none.tsv")
    assert err.reason.startswith("cannot open")


# --- fast path and exact path agree ---------------------------------------------------

_TEXT = st.text(alphabet=st.sampled_from(list("ab ,\t\n\r\\\"'N0é€\0Z")) | st.characters(codec="utf-8"), max_size=12)
_ROW = st.tuples(
    st.integers(-(2**63), 2**63 - 1),
    st.none() | st.floats(allow_nan=False, allow_infinity=False),
    st.none() | st.integers(-128, 127),
    st.none() | _TEXT,
    st.none() | st.binary(max_size=12),
)
_GEN_SCHEMA = pa.schema(
    [
        pa.field("id", pa.int64(), nullable=False),
        pa.field("x", pa.float64()),
        pa.field("n", pa.int8()),
        pa.field("s", pa.string()),
        pa.field("b", pa.binary()),
    ]
)


def _escape(v: bytes, delimiter: bytes, newline_escape: bytes) -> bytes:
    v = v.replace(b"\\", b"\\\\").replace(b'"', b'\\"').replace(b"\r", b"\\r").replace(b"\0", b"\\0")
    return v.replace(delimiter, b"\\" + delimiter).replace(b"\n", newline_escape)


def _write(rows: list[tuple], style: str, delimiter: bytes, newline_escape: bytes) -> bytes:
    lines = []
    for k, (i, x, n, s, b) in enumerate(rows):
        fields = [b"%d" % i, b"\\N" if x is None else repr(x).encode(), b"" if n is None else b"%d" % n]
        for v in (None if s is None else s.encode(), b):
            if v is None:
                fields.append(b"\\N")
            elif style == "enclosed" or (style == "minimal" and v is not b and (k + len(v)) % 2):
                fields.append(b'"' + v.replace(b"\\", b"\\\\").replace(b'"', b'""') + b'"')
            else:
                fields.append(_escape(v, delimiter, newline_escape))
        lines.append(delimiter.join(fields) + b"\n")
    return b"".join(lines)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rows=st.lists(_ROW, min_size=1, max_size=25),
    style=st.sampled_from(["escaped", "enclosed", "minimal"]),
    delimiter=st.sampled_from([b"\t", b","]),
    newline_escape=st.sampled_from([b"\\n", b"\\\n"]),
    block=st.sampled_from([64, 1 << 20]),
)
def test_fast_and_exact_paths_agree(rows: list[tuple], style: str, delimiter: bytes, newline_escape: bytes, block: int) -> None:
    expected = pa.table(list(zip(*rows)), schema=_GEN_SCHEMA)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "gen.txt"
        path.write_bytes(_write(rows, style, delimiter, newline_escape))
        with _small_blocks(block):
            read = _read(path, _GEN_SCHEMA, delimiter=delimiter.decode())
            with _exact_path_only():
                exact = _read(path, _GEN_SCHEMA, delimiter=delimiter.decode())
    assert read.equals(expected)
    assert exact.equals(expected)


@settings(max_examples=30, deadline=None)
@given(rows=st.lists(st.tuples(st.integers(-(2**63), 2**63 - 1), st.none() | st.floats(allow_nan=False)), min_size=1, max_size=40))
def test_clean_files_take_the_fast_path(rows: list[tuple]) -> None:
    schema = pa.schema([("id", pa.int64()), ("x", pa.float64())])
    text = b"".join(b"%d\t%s\n" % (i, b"\\N" if x is None else repr(x).encode()) for i, x in rows)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "clean.tsv"
        path.write_bytes(text)
        with _fast_path_only():
            fast = _read(path, schema)
        with _exact_path_only():
            exact = _read(path, schema)
    expected = pa.table(list(zip(*rows)), schema=schema)
    assert fast.equals(expected) and exact.equals(expected)


# --- the Qserv integration data -------------------------------------------------------

QSERV_TEXT = sorted(QSERV.glob("case0*/data/*.*sv.gz"))


def _expected_count(path: Path) -> int | None:
    case, table = path.parts[-3], path.name.split(".")[0]
    count = QSERV / "expected" / case / "dbbench-expected" / f"count{table}.csv"
    return int(count.read_text()) if count.exists() else None


@pytest.mark.parametrize("path", QSERV_TEXT, ids=lambda p: f"{p.parts[-3]}/{p.name}")
def test_every_qserv_data_file_reads(path: Path) -> None:
    case = path.parents[1]
    table = path.name.split(".")[0]
    if table == "RefDeepSrcMatch":  # match table: the data also holds Qserv's flags column
        ingest = json.loads((case / "data" / "ingest" / "RefDeepSrcMatch.json").read_text())
        schema = pa.schema(list(parse_ingest_json_schema(ingest["schema"]))[:12])
    else:
        schema = _schema_of(case, table)
    data = _read(path, schema)
    assert data.schema == schema
    expected = _expected_count(path)
    if expected is not None:
        assert data.num_rows == expected


def test_case01_object_and_source(qserv: Path) -> None:
    case = qserv / "case01"
    obj = _read(case / "data/Object.tsv.gz", _schema_of(case, "Object"))
    src = _read(case / "data/Source.tsv.gz", _schema_of(case, "Source"), batch_rows=1000)
    assert (obj.num_rows, src.num_rows) == (88, 3339)
    # expected results of Qserv's queries 0001.2 and 0007.1 (dbbench 1.csv, 11.csv)
    wanted = pc.is_in(obj.column("objectId"), pa.array([390034570102582, 396210733076852, 393126946553816, 390030275138483]))
    picked = sorted(zip(obj.filter(wanted).column("ra_PS").to_pylist(), obj.filter(wanted).column("decl_PS").to_pylist()))
    assert picked == [(0.596752111833034, -4.1272591904035), (1.810030163801, -5.50527151254398), (1.84513599224457, -5.01378174121599)]
    mine = src.filter(pc.equal(src.column("objectId"), 386942193651348)).column("sourceId").to_pylist()
    lines = (qserv / "expected/case01/dbbench-expected/11.csv").read_text().split()
    assert sorted(mine) == [int(line.split(",")[0]) for line in lines]


def test_case03_science_ccd_exposure_continuation_lines(qserv: Path) -> None:
    case = qserv / "case03"
    path = case / "data/Science_Ccd_Exposure.csv.gz"
    schema = _schema_of(case, "Science_Ccd_Exposure")
    with gzip.open(path) as f:
        assert sum(1 for _ in f) == 7661
    table = _read(path, schema)
    assert table.num_rows == 3053
    assert set(pc.binary_length(table.column("poly")).to_pylist()) == {120}
    polys = np.frombuffer(b"".join(table.column("poly").to_pylist()), "<f8")
    assert np.isfinite(polys).all() and np.abs(polys).max() < 4  # 15 doubles of a scisql polygon each
    with _small_blocks(4096):
        assert _read(path, schema).equals(table)
    # Qserv's query 0002.2.1 (dbbench 3.csv)
    row = table.filter(pc.equal(table.column("scienceCcdExposureId"), 94110535)).to_pylist()[0]
    names = "scienceCcdExposureId filterName field camcol run filterId ra decl crpix1 crpix2 crval1 crval2 cd1_1 cd1_2 cd2_1 cd2_2 fluxMag0 fluxMag0Sigma fwhm"
    expected = (qserv / "expected/case03/dbbench-expected/3.csv").read_text().strip().split(",")
    for name, text in zip(names.split(), expected):
        typ = schema.field(name).type
        value = text if typ == pa.string() else int(text) if pa.types.is_integer(typ) else float(np.array(text, dtype=typ.to_pandas_dtype()))
        assert row[name] == value, name
    assert str(row["obsStart"]) == "1998-09-19 15:52:54"


def test_case04_enclosed_fields_with_binary(qserv: Path) -> None:
    case = qserv / "case04"
    table = _read(case / "data/DeepCoadd.csv.gz", _schema_of(case, "DeepCoadd"))
    assert table.num_rows == 48
    assert set(pc.binary_length(table.column("poly")).to_pylist()) == {120}
    assert table.column("patch")[0].as_py() == "406,11"


def test_case03_bit_columns(qserv: Path) -> None:
    case = qserv / "case03"
    table = _read(case / "data/RunDeepSource.csv.gz", _schema_of(case, "RunDeepSource"))
    bits = [f.name for f in table.schema if f.metadata[b"mysql_type"] == b"bit(1)"]
    assert len(bits) == 53
    assert set().union(*(set(table.column(b).to_pylist()) for b in bits)) == {0, 1}


def test_batches_are_bounded(qserv: Path) -> None:
    case = qserv / "case01"
    sizes = [b.num_rows for b in read_batches(case / "data/Source.tsv.gz", schema=_schema_of(case, "Source"), batch_rows=1000)]
    assert sizes == [1000, 1000, 1000, 339]


def test_batches_are_bounded_across_blocks(tmp_path: Path) -> None:
    path = tmp_path / "n.tsv"
    path.write_bytes(b"".join(b"%d\n" % k for k in range(10_000)))
    schema = pa.schema([("k", pa.int32())])
    with _small_blocks(777):
        batches = list(read_batches(path, schema=schema, batch_rows=999))
    assert [b.num_rows for b in batches] == [999] * 10 + [10]
    assert pa.Table.from_batches(batches).column("k").to_pylist() == list(range(10_000))


# --- Parquet --------------------------------------------------------------------------

PQ_SCHEMA = pa.schema([pa.field("id", pa.int64(), nullable=False), pa.field("ra", pa.float64()), pa.field("name", pa.string())])


def test_parquet_round_trip_by_name_with_casts(tmp_path: Path) -> None:
    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({"name": ["a", None, "c"], "ID": pa.array([1, 2, 3], pa.int32()), "ra": [0.5, None, 2.5]}), path)
    batches = list(read_batches(path, schema=PQ_SCHEMA, batch_rows=2))
    assert [b.num_rows for b in batches] == [2, 1]
    assert all(b.schema == PQ_SCHEMA for b in batches)
    assert pa.Table.from_batches(batches).to_pydict() == {"id": [1, 2, 3], "ra": [0.5, None, 2.5], "name": ["a", None, "c"]}


@pytest.mark.parametrize(
    ("table", "column", "reason"),
    [
        ({"id": [1], "ra": [1.0], "name": ["a"], "extra": [1]}, "extra", "column of the file is not in the schema"),
        ({"id": [1], "name": ["a"]}, "ra", "column of the schema is missing from the file"),
        ({"id": ["x"], "ra": [1.0], "name": ["a"]}, "id", "cannot convert string to int64: Failed to parse string: 'x' as a scalar of type int64"),
        ({"id": [1, None], "ra": [1.0, 2.0], "name": ["a", "b"]}, "id", "NULL in a NOT NULL column (row 2)"),
    ],
)  # fmt: skip
def test_parquet_errors(tmp_path: Path, table: dict, column: str, reason: str) -> None:
    path = tmp_path / "t.parquet"
    pq.write_table(pa.table(table), path)
    err = _error(path, PQ_SCHEMA)
    assert (err.path, err.column, err.reason) == (str(path), column, reason)


def test_parquet_without_schema(tmp_path: Path) -> None:
    path = tmp_path / "t.pq"
    data = pa.table({"a": [1, 2], "b": ["x", "y"]})
    pq.write_table(data, path)
    assert _read(path).equals(data)


# --- FITS and VOTable -----------------------------------------------------------------


def _astropy_table():  # noqa: ANN202
    from astropy.table import MaskedColumn, Table

    return Table(
        {
            "id": np.array([1, 2, 3, 4, 5], dtype=">i8"),
            "ra": np.array([10.0, np.nan, 30.5, 40.0, 50.0], dtype=">f8"),
            "flux": np.array([1.5, 2.5, 3.5, 4.5, 5.5], dtype=">f4"),
            "name": ["a", "bb", "ccc", "", "e"],
            "flag": MaskedColumn([1, 2, 3, 4, 5], mask=[False, True, False, False, True], dtype=np.int32),
        }
    )


ASTRO_SCHEMA = pa.schema(
    [
        pa.field("id", pa.int64(), nullable=False),
        pa.field("ra", pa.float64()),
        pa.field("flux", pa.float32()),
        pa.field("name", pa.string()),
        pa.field("flag", pa.int64()),
    ]
)
ASTRO_EXPECTED = {
    "id": [1, 2, 3, 4, 5],
    "ra": [10.0, None, 30.5, 40.0, 50.0],
    "flux": [1.5, 2.5, 3.5, 4.5, 5.5],
    "name": ["a", "bb", "ccc", "", "e"],
    "flag": [1, None, 3, 4, None],
}


@pytest.mark.parametrize("suffix", [".fits", ".fits.gz", ".vot"])
def test_fits_and_votable_round_trip(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"t{suffix}"
    _astropy_table().write(path, format="votable" if suffix == ".vot" else "fits")
    batches = list(read_batches(path, schema=ASTRO_SCHEMA, batch_rows=2))
    assert [b.num_rows for b in batches] == [2, 2, 1]
    assert all(b.schema == ASTRO_SCHEMA for b in batches)
    assert pa.Table.from_batches(batches).to_pydict() == ASTRO_EXPECTED


def test_fits_without_schema_is_native_endian(tmp_path: Path) -> None:
    path = tmp_path / "t.fits"
    _astropy_table().write(path)
    table = _read(path)
    assert [str(t) for t in table.schema.types] == ["int64", "double", "float", "string", "int32"]
    assert table.to_pydict() == ASTRO_EXPECTED


def test_fits_unknown_column(tmp_path: Path) -> None:
    path = tmp_path / "t.fits"
    _astropy_table().write(path)
    schema = pa.schema([f for f in ASTRO_SCHEMA if f.name != "flux"])
    err = _error(path, schema)
    assert (err.path, err.column, err.reason) == (str(path), "flux", "column of the file is not in the schema")
