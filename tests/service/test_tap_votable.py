"""The VOTable BINARY2 writer: every Arrow type, NULLs, slices, overflow; read back by
astropy (and STILTS votlint when installed). The throughput measurement runs with
``-m slow``."""

from __future__ import annotations

import datetime
import decimal
import io
import shutil
import subprocess
import time
import warnings

import numpy as np
import pyarrow as pa
import pytest
from astropy.io.votable import parse

from skyshard.service import votable


def _all_types() -> pa.Table:
    return pa.table({
        "b": pa.array([True, False, None, True]),
        "i8": pa.array([1, -128, None, 127], pa.int8()),
        "u8": pa.array([0, 255, None, 7], pa.uint8()),
        "i16": pa.array([1, -2, None, 32767], pa.int16()),
        "u16": pa.array([1, 65535, None, 3], pa.uint16()),
        "i32": pa.array([1, -2, None, 2**31 - 1], pa.int32()),
        "u32": pa.array([1, 2**32 - 1, None, 3], pa.uint32()),
        "i64": pa.array([1, -2, None, 2**62], pa.int64()),
        "u64": pa.array([1, 2, None, 2**63 - 1], pa.uint64()),
        "f16": pa.array(np.array([1.5, 2, 0, 4], np.float16), mask=np.array([0, 0, 1, 0], bool)),
        "f32": pa.array([1.5, float("nan"), None, -4.25], pa.float32()),
        "f64": pa.array([1.5, float("inf"), None, -1e300]),
        "dec": pa.array([decimal.Decimal("1.25"), None, decimal.Decimal("-3.5"),
                         decimal.Decimal(0)], pa.decimal128(10, 2)),
        "s": pa.array(["a", "", None, "x" * 300]),
        "ls": pa.array(["a", "bb", None, "ccc"], pa.large_string()),
        "bin": pa.array([b"\x00\xff", b"", None, b"abc"]),
        "lbin": pa.array([b"\x01", b"", None, b"z"], pa.large_binary()),
        "fbin": pa.array([b"ab", b"cd", None, b"ef"], pa.binary(2)),
        "lst": pa.array([[1.0, 2.0], [], None, [3.0]]),
        "ilst": pa.array([[1, 2, 3], None, [4], []], pa.list_(pa.int32())),
        "fl": pa.array([[1, 2], [3, 4], None, [5, 6]], pa.list_(pa.int16(), 2)),
        "d": pa.array([datetime.date(2020, 1, 2), None, datetime.date(1999, 12, 31),
                       datetime.date(2024, 2, 29)]),
        "ts": pa.array([datetime.datetime(2020, 1, 1, 12, 0, 5), None,
                        datetime.datetime(2021, 6, 1), datetime.datetime(1970, 1, 1)],
                       pa.timestamp("us")),
        "tstz": pa.array([0, None, 86400, 1], pa.timestamp("s", tz="UTC")),
        "t": pa.array([3600, None, 0, 59], pa.time32("s")),
        "nul": pa.nulls(4),
        "st": pa.array([{"a": 1}, None, {"a": 2}, {"a": None}]),
        "dict": pa.array(["x", "y", None, "x"]).dictionary_encode(),
    })


def _parse(data: bytes):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # astropy warns on anything out of spec
        return parse(io.BytesIO(data))


def test_every_arrow_type_is_declared_and_read_back():
    table = _all_types()
    data = votable.to_bytes(table)
    vot = _parse(data)
    fields = {f.name: f for f in vot.get_first_table().fields}
    expected = {
        "b": ("boolean", None), "i8": ("short", None), "u8": ("short", None),
        "i16": ("short", None), "u16": ("int", None), "i32": ("int", None),
        "u32": ("long", None), "i64": ("long", None), "u64": ("long", None),
        "f16": ("float", None), "f32": ("float", None), "f64": ("double", None),
        "dec": ("double", None), "s": ("char", "*"), "ls": ("char", "*"),
        "bin": ("unsignedByte", "*"), "lbin": ("unsignedByte", "*"),
        "fbin": ("unsignedByte", "2"), "lst": ("double", "*"), "ilst": ("int", "*"),
        "fl": ("short", "2"), "d": ("char", "*"), "ts": ("char", "*"),
        "tstz": ("char", "*"), "t": ("char", "*"), "nul": ("char", "*"),
        "st": ("char", "*"), "dict": ("char", "*"),
    }
    assert {n: (f.datatype, f.arraysize) for n, f in fields.items()} == expected
    assert fields["ts"].xtype == "timestamp" and fields["d"].xtype == "timestamp"

    got = vot.get_first_table().array
    for name in ("i8", "u8", "i16", "u16", "i32", "u32", "i64", "u64", "f64", "dec", "b"):
        want = table.column(name).to_pylist()
        col = got[name]
        assert [None if m else v for v, m in zip(col.data.tolist(), col.mask.tolist())] == [
            None if w is None else (float(w) if name == "dec" else w) for w in want], name
    assert got["f32"][0] == 1.5 and got["f32"].mask[2]
    assert got["s"].tolist()[3] == "x" * 300 and got["s"].tolist()[:2] == ["a", ""]
    assert list(got["bin"][0]) == [0, 255] and list(got["bin"][3]) == list(b"abc")
    assert got["bin"].mask[2]
    assert list(got["fbin"][3]) == list(b"ef") and got["fbin"][2].mask.all()
    assert list(got["lst"][0]) == [1.0, 2.0] and list(got["ilst"][0]) == [1, 2, 3]
    assert list(got["fl"][3]) == [5, 6]
    assert list(got["d"]) == ["2020-01-02", "", "1999-12-31", "2024-02-29"]
    assert got["ts"][0] == "2020-01-01T12:00:05.000000"
    assert got["tstz"][2] == "1970-01-02T00:00:00"
    assert got["st"][0] == '{"a": 1}' and got["dict"][1] == "y"


def test_null_flags_follow_binary2():
    """One bit per field, most significant first, then the fields."""
    table = pa.table({"a": pa.array([None, 5], pa.int32()), "b": pa.array(["x", None])})
    raw = votable.Binary2Encoder(table.schema).encode(table.to_batches()[0])
    # row 1: mask 0b10000000, a=0 (4 bytes), b = count 1 + "x"
    # row 2: mask 0b01000000, a=5, b = count 0
    assert raw == (b"\x80" + b"\0\0\0\0" + b"\0\0\0\x01x"
                   + b"\x40" + b"\0\0\0\x05" + b"\0\0\0\0")


def test_more_than_eight_fields_take_two_mask_bytes():
    table = pa.table({f"c{i}": pa.array([None if i == 8 else i], pa.int8()) for i in range(9)})
    raw = votable.Binary2Encoder(table.schema).encode(table.to_batches()[0])
    assert raw[:2] == b"\x00\x80" and len(raw) == 2 + 9 * 2


def test_slices_and_many_batches_encode_like_the_whole():
    rng = np.random.default_rng(3)
    n = 70_000  # over one encoder batch
    table = pa.table({"x": rng.normal(size=n),
                      "s": pa.array([None if i % 7 == 0 else "v" * (i % 5) for i in range(n)]),
                      "k": pa.array(np.arange(n), pa.int64())})
    whole = votable.to_bytes(table)
    pieces = b"".join(votable.document(table.schema, table.to_batches(max_chunksize=9_999)))
    assert whole == pieces
    sliced = table.slice(12_345, 40_000)
    got = _parse(votable.to_bytes(sliced)).get_first_table().array
    assert got["k"].tolist() == sliced.column("k").to_pylist()
    assert got["x"].tolist() == sliced.column("x").to_pylist()
    want = ["" if v is None else v for v in sliced.column("s").to_pylist()]
    assert got["s"].tolist() == want


def test_non_ascii_text_is_unicode_char():
    table = pa.table({"name": ["Ångström", "plain", None, "東京 😀"]})
    assert not votable.is_ascii([table.column("name")])
    vot = _parse(votable.to_bytes(table, non_ascii=["name"]))
    field = vot.get_first_table().fields[0]
    assert (field.datatype, field.arraysize) == ("unicodeChar", "*")
    assert vot.get_first_table().array["name"].tolist()[:2] == ["Ångström", "plain"]


def test_infos_overflow_and_max_rows():
    table = pa.table({"a": [1, 2, 3]})
    data = votable.to_bytes(table, infos={"QUERY": "SELECT <a> & 'b'"}, overflow=True,
                            max_rows=2,
                            fields={"a": votable.FieldMeta("deg", "pos.eq.ra", "an <angle>")})
    vot = _parse(data)
    infos = [(i.name, i.value) for i in vot.resources[0].infos]
    assert infos == [("QUERY_STATUS", "OK"), ("QUERY", "SELECT <a> & 'b'"),
                     ("QUERY_STATUS", "OVERFLOW")]
    f = vot.get_first_table().fields[0]
    assert (str(f.unit), f.ucd, f.description) == ("deg", "pos.eq.ra", "an <angle>")
    assert vot.get_first_table().array["a"].tolist() == [1, 2]
    assert vot.resources[0].type == "results"


def test_empty_result_keeps_its_fields():
    table = pa.table({"a": pa.array([], pa.int64()), "s": pa.array([], pa.string())})
    vot = _parse(votable.to_bytes(table))
    assert [f.name for f in vot.get_first_table().fields] == ["a", "s"]
    assert len(vot.get_first_table().array) == 0


def test_an_error_while_encoding_is_reported_after_the_table():
    table = pa.table({"u": pa.array([1, 2**64 - 1], pa.uint64())})
    vot = parse(io.BytesIO(votable.to_bytes(table)))
    infos = [(i.name, i.value) for i in vot.resources[0].infos]
    assert infos == [("QUERY_STATUS", "OK"), ("QUERY_STATUS", "ERROR")]
    assert "CAST" in vot.resources[0].infos[1].content


@pytest.mark.skipif(shutil.which("stilts") is None, reason="stilts is not installed")
def test_votlint_accepts_the_output(tmp_path):
    table = _all_types().drop_columns(["u64"])
    path = tmp_path / "all.vot"
    path.write_bytes(votable.to_bytes(table, overflow=True))
    out = subprocess.run(["stilts", "votlint", f"votable={path}"], check=False,
                         capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0 and "ERROR" not in out.stdout + out.stderr, out.stdout


@pytest.mark.slow
def test_throughput_of_numeric_columns(request):
    """Rows per second for 6 numeric columns, 1 M rows (target: 500 k rows/s)."""
    if "slow" not in (request.config.getoption("markexpr") or ""):
        pytest.skip("a measurement, not a check: run with -m slow")
    rng = np.random.default_rng(1)
    n = 1_000_000
    table = pa.table({
        "objectId": np.arange(n, dtype=np.int64), "ra": rng.uniform(0, 360, n),
        "dec": rng.uniform(-90, 90, n),
        "g": pa.array(rng.normal(20, 1, n), mask=rng.random(n) < 0.1),
        "r": rng.normal(20, 1, n).astype(np.float32), "n": rng.integers(0, 50, n, dtype=np.int32)})
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for _piece in votable.document(table.schema, table.to_batches(max_chunksize=65_536)):
            pass
        best = min(best, time.perf_counter() - start)
    rate = n / best
    print(f"\nVOTable BINARY2: {rate / 1e3:,.0f} k rows/s (6 numeric columns, 1 M rows)")
    assert rate >= 500_000
