"""MySQL CREATE TABLE → Arrow: the Qserv test schemas, the type map, and errors."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pyarrow as pa
import pytest

from skyshard.catalog.mysql_schema import (
    TableSchema,
    parse_create_table,
    parse_create_tables,
    parse_ingest_json_schema,
)
from skyshard.errors import SchemaError

REPO = Path(__file__).resolve().parents[2]
QSERV = Path(os.environ.get("SKYSHARD_QSERV_TESTDATA", REPO / "tests" / "data" / "qserv"))
SCHEMA_FILES = sorted(QSERV.glob("case0*/data/schema/*.schema"))
VIEWS = {"case03/DeepSource", "case03/DeepForcedSource"}  # mysqldump view definitions


def _label(path: Path) -> str:
    return f"{path.parts[-4]}/{path.stem}"


def _meta(text: str) -> dict[bytes, bytes]:
    return {b"mysql_type": text.encode()}


@pytest.fixture
def qserv() -> Path:
    if not SCHEMA_FILES:
        pytest.skip(f"Qserv test data not found at {QSERV} (set SKYSHARD_QSERV_TESTDATA)")
    return QSERV


# --- the Qserv integration-test schemas -----------------------------------------------


@pytest.mark.parametrize("path", SCHEMA_FILES, ids=_label)
def test_every_qserv_schema_file_parses(path: Path) -> None:
    text = path.read_text(encoding="latin-1")
    if _label(path) in VIEWS:
        with pytest.raises(SchemaError) as err:
            parse_create_table(text, path=str(path))
        view_line = next(k for k, line in enumerate(text.splitlines(), 1) if " VIEW `" in line and "DROP" not in line)
        assert (err.value.path, err.value.line) == (str(path), view_line)
        assert err.value.reason == "defines a view, not a table: no CREATE TABLE statement"
        return
    table = parse_create_table(text, path=str(path))
    assert table.name == path.stem
    columns = [line.split("`")[1] for line in text.splitlines() if line.startswith("  `")]
    assert table.schema.names == columns
    assert all(f.metadata and b"mysql_type" in f.metadata for f in table.schema)


def test_qserv_file_set_is_complete(qserv: Path) -> None:
    assert len(SCHEMA_FILES) == 35


def test_case01_filter_whole_schema(qserv: Path) -> None:
    path = qserv / "case01/data/schema/Filter.schema"
    table = parse_create_table(path.read_text(), path=str(path))
    assert table == TableSchema(
        name="Filter",
        schema=pa.schema(
            [
                pa.field("filterId", pa.int8(), nullable=False, metadata=_meta("tinyint(4)")),
                pa.field("filterName", pa.string(), nullable=False, metadata=_meta("char(3)")),
                pa.field("photClam", pa.float32(), nullable=False, metadata=_meta("float")),
                pa.field("photBW", pa.float32(), nullable=False, metadata=_meta("float")),
            ]
        ),
        primary_key=(),
    )


def test_case03_science_ccd_exposure_types(qserv: Path) -> None:
    path = qserv / "case03/data/schema/Science_Ccd_Exposure.schema"
    table = parse_create_table(path.read_text(), path=str(path))
    assert table.primary_key == ("scienceCcdExposureId",)
    picked = {n: (str(table.schema.field(n).type), table.schema.field(n).metadata[b"mysql_type"]) for n in
              ("scienceCcdExposureId", "camcol", "filterName", "poly", "obsStart", "expMidpt", "fwhm")}  # fmt: skip
    assert picked == {
        "scienceCcdExposureId": ("int64", b"bigint(20)"),
        "camcol": ("int8", b"tinyint(4)"),
        "filterName": ("string", b"char(3)"),
        "poly": ("binary", b"binary(120)"),
        "obsStart": ("timestamp[us]", b"timestamp"),
        "expMidpt": ("string", b"varchar(30)"),
        "fwhm": ("double", b"double"),
    }


def test_ingest_json_matches_schema_file(qserv: Path) -> None:
    ingest = json.loads((qserv / "case01/data/ingest/Source.json").read_text())
    from_json = parse_ingest_json_schema(ingest["schema"])
    from_ddl = parse_create_table((qserv / "case01/data/schema/Source.schema").read_text()).schema
    assert from_json.names[-2:] == ["chunkId", "subChunkId"]
    assert pa.schema(list(from_json)[:-2]) == from_ddl
    assert from_json.field("chunkId") == pa.field("chunkId", pa.int32(), nullable=False, metadata=_meta("int(11)"))


# --- syntax ---------------------------------------------------------------------------

DUMP = """-- MySQL dump 10.13
/*!40101 SET @OLD_CHARACTER_SET_CLIENT=@@CHARACTER_SET_CLIENT */;
/*!40101 SET NAMES utf8 */;
DROP TABLE IF EXISTS `Obj`;
/*!40101 SET @saved_cs_client     = @@character_set_client */;
/*!40101 SET character_set_client = utf8 */;
CREATE TABLE IF NOT EXISTS `db`.`Obj` (
  `id` bigint(20) unsigned NOT NULL AUTO_INCREMENT COMMENT 'key, (unique)',
  `ra` double NOT NULL DEFAULT '0',
  name varchar(64) CHARACTER SET latin1 COLLATE latin1_bin DEFAULT NULL,
  `kind` enum('star','gal''axy') NOT NULL DEFAULT 'star',
  `flux` decimal(12,3) DEFAULT NULL,
  `amount` NUMERIC,
  `flag` tinyint(1) unsigned zerofill DEFAULT b'0',
  `ts` timestamp NOT NULL DEFAULT CURRENT_TIMESTAMP ON UPDATE CURRENT_TIMESTAMP,
  `raw` mediumblob,
  -- a comment line inside the table
  PRIMARY KEY (`id`, `ra`),
  UNIQUE KEY `u_name` (`name`(10)),
  KEY `i_ra` (`ra`) USING BTREE,
  INDEX i_kind (kind),
  CONSTRAINT `fk` FOREIGN KEY (`kind`) REFERENCES `Kinds` (`kind`) ON DELETE CASCADE
) ENGINE=InnoDB AUTO_INCREMENT=17 DEFAULT CHARSET=latin1 COMMENT='objects';
/*!40101 SET character_set_client = @saved_cs_client */;
"""


def test_mysqldump_statement_whole_result() -> None:
    assert parse_create_table(DUMP, path="Obj.sql") == TableSchema(
        name="Obj",
        schema=pa.schema(
            [
                pa.field("id", pa.uint64(), nullable=False, metadata=_meta("bigint(20) unsigned")),
                pa.field("ra", pa.float64(), nullable=False, metadata=_meta("double")),
                pa.field("name", pa.string(), metadata=_meta("varchar(64)")),
                pa.field("kind", pa.string(), nullable=False, metadata=_meta("enum('star','gal''axy')")),
                pa.field("flux", pa.decimal128(12, 3), metadata=_meta("decimal(12,3)")),
                pa.field("amount", pa.decimal128(10, 0), metadata=_meta("numeric")),
                pa.field("flag", pa.uint8(), metadata=_meta("tinyint(1) unsigned zerofill")),
                pa.field("ts", pa.timestamp("us"), nullable=False, metadata=_meta("timestamp")),
                pa.field("raw", pa.binary(), metadata=_meta("mediumblob")),
            ]
        ),
        primary_key=("id", "ra"),
    )


TYPES = [
    ("tinyint(4)", pa.int8()),
    ("tinyint(3) unsigned", pa.uint8()),
    ("tinyint(1)", pa.int8()),
    ("bool", pa.int8()),
    ("boolean", pa.int8()),
    ("bit(1)", pa.int8()),
    ("bit", pa.int8()),
    ("bit(8)", pa.binary()),
    ("smallint(6)", pa.int16()),
    ("smallint unsigned", pa.uint16()),
    ("mediumint(9)", pa.int32()),
    ("int(11)", pa.int32()),
    ("INTEGER", pa.int32()),
    ("int(10) unsigned", pa.uint32()),
    ("bigint(20)", pa.int64()),
    ("bigint(20) unsigned", pa.uint64()),
    ("float", pa.float32()),
    ("float(7,4)", pa.float32()),
    ("float(30)", pa.float64()),
    ("double", pa.float64()),
    ("double precision", pa.float64()),
    ("real", pa.float64()),
    ("decimal(10,2)", pa.decimal128(10, 2)),
    ("decimal(7)", pa.decimal128(7, 0)),
    ("decimal", pa.decimal128(10, 0)),
    ("numeric(5,5)", pa.decimal128(5, 5)),
    ("decimal(65,30)", pa.decimal256(65, 30)),
    ("char(3)", pa.string()),
    ("varchar(255)", pa.string()),
    ("text", pa.string()),
    ("tinytext", pa.string()),
    ("mediumtext", pa.string()),
    ("longtext", pa.string()),
    ("enum('a','b')", pa.string()),
    ("set('x','y')", pa.string()),
    ("binary(120)", pa.binary()),
    ("varbinary(100)", pa.binary()),
    ("blob", pa.binary()),
    ("tinyblob", pa.binary()),
    ("mediumblob", pa.binary()),
    ("longblob", pa.binary()),
    ("date", pa.date32()),
    ("datetime", pa.timestamp("us")),
    ("datetime(6)", pa.timestamp("us")),
    ("timestamp", pa.timestamp("us")),
    ("time", pa.time64("us")),
    ("year(4)", pa.int16()),
]


@pytest.mark.parametrize(("mysql", "arrow"), TYPES, ids=[t for t, _ in TYPES])
def test_type_map(mysql: str, arrow: pa.DataType) -> None:
    table = parse_create_table(f"CREATE TABLE t (`c` {mysql} DEFAULT NULL);")
    assert table.schema == pa.schema([pa.field("c", arrow, metadata=_meta(mysql.lower()))])
    (column,) = parse_ingest_json_schema([{"name": "c", "type": f" {mysql} DEFAULT NULL"}])
    assert column == table.schema.field("c")


def test_inline_primary_key_and_bare_names() -> None:
    table = parse_create_table("create table T (id INT PRIMARY KEY, x FLOAT NOT NULL, y FLOAT NULL)")
    assert [(f.name, f.nullable) for f in table.schema] == [("id", False), ("x", False), ("y", True)]
    assert table.primary_key == ("id",)


def test_several_tables() -> None:
    text = "CREATE TABLE a (x int);\nCREATE TABLE b (y int);"
    assert [t.name for t in parse_create_tables(text)] == ["a", "b"]
    with pytest.raises(SchemaError) as err:
        parse_create_table(text, path="two.sql")
    assert str(err.value) == "two.sql: expected one CREATE TABLE statement, found 2 (a, b)"


# --- errors ---------------------------------------------------------------------------


def test_unknown_type_names_file_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "Bad.schema"
    path.write_text("-- header\nCREATE TABLE `Bad` (\n  `id` bigint(20) NOT NULL,\n  `shape` geometry NOT NULL\n);\n")
    with pytest.raises(SchemaError) as err:
        parse_create_table(path.read_text(), path=str(path))
    e = err.value
    assert (e.path, e.line, e.column, e.reason) == (str(path), 4, "shape", "unknown column type 'geometry'")
    assert str(e) == f"{path}, line 4, column 'shape': unknown column type 'geometry'"


def test_missing_create_table() -> None:
    with pytest.raises(SchemaError) as err:
        parse_create_table("-- nothing here\nDROP TABLE IF EXISTS x;\n", path="empty.schema")
    assert (err.value.path, err.value.line, err.value.reason) == ("empty.schema", 3, "no CREATE TABLE statement")


@pytest.mark.parametrize(
    ("text", "line", "reason"),
    [
        ("CREATE TABLE t (\n  a int,\n  b int", 3, "unexpected end of statement, expected ',' or ')'"),
        ("CREATE TABLE t\n  AS SELECT 1;", 2, "CREATE TABLE t: expected a column list, found 'AS'"),
        ("CREATE TABLE t (\n  a int,\n  a int\n);", 3, "duplicate column"),
        ("CREATE TABLE t (\n a int,\n PRIMARY KEY (b)\n);", 1, "PRIMARY KEY names an unknown column 'b'"),
        ("CREATE TABLE t (\n  a decimal(x)\n);", 2, "bad type arguments (x)"),
    ],
)
def test_unparseable_create_table(text: str, line: int, reason: str) -> None:
    with pytest.raises(SchemaError) as err:
        parse_create_table(text, path="t.schema")
    assert (err.value.path, err.value.line, err.value.reason) == ("t.schema", line, reason)


def test_ingest_json_errors() -> None:
    with pytest.raises(SchemaError) as err:
        parse_ingest_json_schema([{"name": "a", "type": "int"}, {"name": "g", "type": "point NOT NULL"}])
    assert (err.value.column, err.value.reason) == ("g", "unknown column type 'point'")
    with pytest.raises(SchemaError) as err:
        parse_ingest_json_schema([{"name": "a"}])
    assert err.value.reason == "schema entry 1 needs a 'name' and a 'type' string: {'name': 'a'}"
