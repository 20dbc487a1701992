"""MySQL ``CREATE TABLE`` statements (mysqldump, Qserv ``.schema`` files) to Arrow schemas.

Each column becomes one Arrow field, nullable unless ``NOT NULL`` (or part of the
primary key); the original type text, lower-cased, is kept in the field metadata under
``b"mysql_type"`` so readers can treat ``bit(1)`` or ``blob`` columns as MySQL does.

>>> t = parse_create_table('''
... CREATE TABLE `Filter` (
...   `filterId` tinyint(4) NOT NULL,
...   `filterName` char(3) NOT NULL,
...   `photClam` float DEFAULT NULL,
...   PRIMARY KEY (`filterId`)
... ) ENGINE=MyISAM DEFAULT CHARSET=latin1;''')
>>> t.name, t.primary_key
('Filter', ('filterId',))
>>> [(f.name, str(f.type), f.nullable) for f in t.schema]
[('filterId', 'int8', False), ('filterName', 'string', False), ('photClam', 'float', True)]
>>> t.schema.field("filterId").metadata
{b'mysql_type': b'tinyint(4)'}
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Sequence
from dataclasses import dataclass

import pyarrow as pa

from skyshard.errors import SchemaError

__all__ = [
    "MYSQL_TYPE_KEY",
    "TableSchema",
    "arrow_type",
    "parse_create_table",
    "parse_create_tables",
    "parse_ingest_json_schema",
]

MYSQL_TYPE_KEY = b"mysql_type"


@dataclass(frozen=True)
class TableSchema:
    """One table of a ``CREATE TABLE`` statement."""

    name: str
    schema: pa.Schema
    primary_key: tuple[str, ...]


# --- tokens ---------------------------------------------------------------------------

_TOKEN = re.compile(
    r"""
      (?P<space>\s+|/\*!\d*|\*/)
    | (?P<comment>--[^\n]*|\#[^\n]*|/\*.*?(?:\*/|\Z))
    | (?P<bquote>`(?:[^`]|``)*`)
    | (?P<dquote>"(?:[^"\\]|\\.|"")*")
    | (?P<squote>'(?:[^'\\]|\\.|'')*')
    | (?P<word>[A-Za-z0-9_$.+\-]+)
    | (?P<punct>[(),;=])
    | (?P<other>.)
    """,
    re.VERBOSE | re.DOTALL,
)


@dataclass(frozen=True)
class _Tok:
    kind: str  # "name" (quoted identifier), "word", "string", "punct", "other"
    text: str  # identifier unquoted, word as written, string with its quotes
    pos: int

    def is_word(self, *words: str) -> bool:
        return self.kind == "word" and self.text.upper() in words


class _Source:
    """Text plus the file it came from, to turn offsets into 1-based line numbers."""

    def __init__(self, text: str, path: str | None) -> None:
        self.text = text
        self.path = path
        self._starts = [0] + [m.end() for m in re.finditer("\n", text)]

    def line(self, pos: int) -> int:
        return bisect.bisect_right(self._starts, pos)

    def error(self, message: str, pos: int, column: str | None = None) -> SchemaError:
        return SchemaError(message, path=self.path, line=self.line(pos), column=column)


def _tokens(src: _Source) -> list[_Tok]:
    """Tokens without spaces and comments; the body of a ``/*!40101 ... */`` is code."""
    toks: list[_Tok] = []
    for m in _TOKEN.finditer(src.text):
        kind, text = m.lastgroup or "other", m.group()
        if kind in ("space", "comment"):
            continue
        if kind == "bquote":
            toks.append(_Tok("name", text[1:-1].replace("``", "`"), m.start()))
        elif kind == "dquote":
            toks.append(_Tok("name", _unquote(text), m.start()))
        elif kind == "squote":
            toks.append(_Tok("string", text, m.start()))
        else:
            toks.append(_Tok("word" if kind == "word" else kind, text, m.start()))
    return toks


def _unquote(text: str) -> str:
    q = text[0]
    body = text[1:-1].replace(q + q, q)
    return re.sub(r"\\(.)", r"\1", body, flags=re.DOTALL)


def _ident(tok: _Tok) -> str | None:
    if tok.kind == "name":
        return tok.text
    if tok.kind == "word" and re.fullmatch(r"[A-Za-z0-9_$]+", tok.text):
        return tok.text
    return None


# --- type map -------------------------------------------------------------------------

_INTS = {
    "TINYINT": (pa.int8(), pa.uint8()),
    "BOOL": (pa.int8(), pa.uint8()),
    "BOOLEAN": (pa.int8(), pa.uint8()),
    "SMALLINT": (pa.int16(), pa.uint16()),
    "MEDIUMINT": (pa.int32(), pa.uint32()),
    "INT": (pa.int32(), pa.uint32()),
    "INTEGER": (pa.int32(), pa.uint32()),
    "BIGINT": (pa.int64(), pa.uint64()),
    "YEAR": (pa.int16(), pa.int16()),
}
_STRINGS = {
    "CHAR", "VARCHAR", "NCHAR", "NVARCHAR", "NATIONAL", "CHARACTER",
    "TEXT", "TINYTEXT", "MEDIUMTEXT", "LONGTEXT", "ENUM", "SET", "JSON",
}  # fmt: skip
_BINARIES = {"BINARY", "VARBINARY", "BLOB", "TINYBLOB", "MEDIUMBLOB", "LONGBLOB"}
_DECIMALS = {"DECIMAL", "NUMERIC", "DEC", "FIXED"}
_TIMES = {
    "DATE": pa.date32(),
    "DATETIME": pa.timestamp("us"),
    "TIMESTAMP": pa.timestamp("us"),
    "TIME": pa.time64("us"),
}


def arrow_type(base: str, args: Sequence[int] = (), *, unsigned: bool = False) -> pa.DataType | None:
    """The Arrow type of a MySQL type, or None if it has none.

    >>> arrow_type("bigint", [20], unsigned=True)
    DataType(uint64)
    >>> arrow_type("decimal", [12, 3])
    Decimal128Type(decimal128(12, 3))
    >>> arrow_type("geometry") is None
    True
    """
    b = base.upper()
    if b in _INTS:
        return _INTS[b][1 if unsigned else 0]
    if b == "FLOAT":
        return pa.float64() if len(args) == 1 and args[0] > 24 else pa.float32()
    if b in ("DOUBLE", "REAL"):
        return pa.float64()
    if b in _DECIMALS:
        precision = args[0] if args else 10
        scale = args[1] if len(args) > 1 else 0
        if not 0 < precision <= 76 or not 0 <= scale <= precision:
            return None
        return pa.decimal128(precision, scale) if precision <= 38 else pa.decimal256(precision, scale)
    if b in _STRINGS:
        return pa.string()
    if b in _BINARIES:
        return pa.binary()
    if b == "BIT":
        return pa.int8() if not args or args[0] == 1 else pa.binary()
    return _TIMES.get(b)


# --- statements -----------------------------------------------------------------------

_KEY_WORDS = (
    "PRIMARY", "KEY", "INDEX", "UNIQUE", "CONSTRAINT", "FULLTEXT", "SPATIAL", "FOREIGN", "CHECK",
)  # fmt: skip


class _Parser:
    def __init__(self, src: _Source, toks: list[_Tok]) -> None:
        self.src = src
        self.toks = toks
        self.i = 0

    # navigation
    def peek(self, k: int = 0) -> _Tok | None:
        j = self.i + k
        return self.toks[j] if j < len(self.toks) else None

    def next(self, what: str) -> _Tok:
        tok = self.peek()
        if tok is None:
            end = self.toks[-1].pos if self.toks else len(self.src.text)
            raise self.src.error(f"unexpected end of statement, expected {what}", end)
        self.i += 1
        return tok

    def expect(self, text: str) -> _Tok:
        tok = self.next(repr(text))
        if tok.text.upper() != text.upper() or tok.kind == "name":
            raise self.src.error(f"expected {text!r}, found {tok.text!r}", tok.pos)
        return tok

    def skip_group(self) -> None:
        """Skip a parenthesised group starting at the current '('."""
        depth = 0
        while True:
            tok = self.next("')'")
            if tok.text == "(" and tok.kind == "punct":
                depth += 1
            elif tok.text == ")" and tok.kind == "punct":
                depth -= 1
                if depth == 0:
                    return

    # grammar
    def create_table(self) -> TableSchema:
        start = self.expect("CREATE")
        if (t := self.peek()) is not None and t.is_word("TEMPORARY"):
            self.i += 1
        self.expect("TABLE")
        if (t := self.peek()) is not None and t.is_word("IF"):
            self.expect("IF"), self.expect("NOT"), self.expect("EXISTS")
        name = self.table_name()
        tok = self.next("'('")
        if tok.text != "(":
            raise self.src.error(
                f"CREATE TABLE {name}: expected a column list, found {tok.text!r}", tok.pos
            )
        fields: list[pa.Field] = []
        primary: tuple[str, ...] = ()
        while True:
            first = self.next("a column definition")
            self.i -= 1
            if first.is_word(*_KEY_WORDS):
                pk = self.key_definition()
                if pk:
                    if primary:
                        raise self.src.error("more than one PRIMARY KEY", first.pos)
                    primary = pk
            else:
                field, inline_pk = self.column_definition()
                if any(f.name.lower() == field.name.lower() for f in fields):
                    raise self.src.error("duplicate column", first.pos, column=field.name)
                fields.append(field)
                if inline_pk:
                    primary = (field.name,)
            sep = self.next("',' or ')'")
            if sep.text == ")":
                break
            if sep.text != ",":
                raise self.src.error(f"expected ',' or ')', found {sep.text!r}", sep.pos)
        while (t := self.peek()) is not None and t.text != ";":  # table options
            self.i += 1
        if not fields:
            raise self.src.error(f"CREATE TABLE {name} has no columns", start.pos)
        by_name = {f.name.lower(): f for f in fields}
        for col in primary:
            if col.lower() not in by_name:
                raise self.src.error(f"PRIMARY KEY names an unknown column {col!r}", start.pos)
        fields = [f.with_nullable(False) if f.name in primary else f for f in fields]
        return TableSchema(name=name, schema=pa.schema(fields), primary_key=primary)

    def table_name(self) -> str:
        """A table name, maybe qualified by its database: the last part."""
        tok = self.next("a table name")
        text = tok.text if tok.kind == "name" else tok.text.rsplit(".", 1)[-1]
        while (t := self.peek()) is not None and t.kind == "word" and t.text.startswith("."):
            self.i += 1
            text = t.text[1:] or self.next("a table name").text
        if not text or (tok.kind != "name" and _ident(_Tok("word", text, 0)) is None):
            raise self.src.error(f"expected a table name, found {tok.text!r}", tok.pos)
        return text

    def key_definition(self) -> tuple[str, ...]:
        """Skip an index or constraint; return the columns if it is the primary key."""
        is_primary = False
        while True:
            tok = self.next("a key definition")
            if tok.is_word("PRIMARY"):
                is_primary = True
            if tok.text == "(":
                self.i -= 1
                break
        cols: list[str] = []
        if is_primary:
            self.i += 1
            while True:
                tok = self.next("a column name")
                col = _ident(tok)
                if col is None:
                    raise self.src.error(f"expected a column name, found {tok.text!r}", tok.pos)
                cols.append(col)
                while (t := self.peek()) is not None and t.text not in (",", ")"):
                    if t.text == "(":
                        self.skip_group()  # prefix length
                    else:
                        self.i += 1  # ASC / DESC
                if self.next("')'").text == ")":
                    break
        else:
            self.skip_group()
        self.skip_to_comma()
        return tuple(cols)

    def skip_to_comma(self) -> None:
        while (t := self.peek()) is not None and t.text not in (",", ")"):
            if t.text == "(":
                self.skip_group()
            else:
                self.i += 1

    def column_definition(self) -> tuple[pa.Field, bool]:
        tok = self.next("a column name")
        name = _ident(tok)
        if name is None:
            raise self.src.error(f"expected a column name, found {tok.text!r}", tok.pos)
        type_tok = self.next("a column type")
        if type_tok.kind != "word":
            raise self.src.error(f"expected a type, found {type_tok.text!r}", type_tok.pos, column=name)
        words = [type_tok.text.lower()]
        base = type_tok.text.upper()
        if base in ("DOUBLE",) and (t := self.peek()) is not None and t.is_word("PRECISION"):
            self.i += 1
            words.append("precision")
        if base in ("NATIONAL", "CHARACTER", "CHAR") and (t := self.peek()) is not None and t.is_word(
            "VARCHAR", "CHAR", "CHARACTER", "VARYING"
        ):
            self.i += 1
            words.append(t.text.lower())
        args_text, args = self.type_args(name)
        text = " ".join(words) + args_text
        unsigned = False
        while (t := self.peek()) is not None and t.is_word("UNSIGNED", "SIGNED", "ZEROFILL"):
            self.i += 1
            unsigned = unsigned or t.is_word("UNSIGNED", "ZEROFILL")
            text += " " + t.text.lower()
        typ = arrow_type(base, args, unsigned=unsigned) if args is not None else None
        if typ is None:
            raise self.src.error(f"unknown column type {text!r}", type_tok.pos, column=name)
        nullable, primary = self.column_attributes(name)
        meta = {MYSQL_TYPE_KEY: text.encode()}
        field = pa.field(name, typ, nullable=nullable and not primary, metadata=meta)
        return field, primary

    def type_args(self, column: str) -> tuple[str, list[int] | None]:
        """``(20)`` / ``(10,2)`` / ``('a','b')`` after a type: its text and integer args."""
        t = self.peek()
        if t is None or t.text != "(":
            return "", []
        self.i += 1
        parts: list[str] = []
        ints: list[int] | None = []
        while True:
            tok = self.next("')'")
            if tok.text == ")":
                break
            if tok.text == ",":
                parts.append(",")
                continue
            parts.append(tok.text if tok.kind == "string" else tok.text.lower())
            if ints is not None:
                ints = ints + [int(tok.text)] if tok.kind == "word" and tok.text.isdigit() else None
        if ints is None and not any(p.startswith("'") for p in parts):
            raise self.src.error(f"bad type arguments ({''.join(parts)})", t.pos, column=column)
        return "(" + "".join(parts) + ")", ints if ints is not None else []

    def column_attributes(self, column: str) -> tuple[bool, bool]:
        """Read attributes up to ',' or ')': (nullable, inline primary key)."""
        nullable, primary = True, False
        while (t := self.peek()) is not None and t.text not in (",", ")"):
            self.i += 1
            if t.is_word("NOT") and (n := self.peek()) is not None and n.is_word("NULL"):
                self.i += 1
                nullable = False
            elif t.is_word("PRIMARY"):
                primary = True
            elif t.is_word("KEY") and not self.toks[self.i - 2].is_word("UNIQUE", "PRIMARY"):
                primary = True  # a bare KEY in a column definition means PRIMARY KEY
            elif t.is_word("DEFAULT", "COMMENT", "COLLATE", "CHARSET", "ON", "UPDATE"):
                if (n := self.peek()) is not None and n.text == "(":
                    self.skip_group()
                elif n is not None and n.text not in (",", ")"):
                    self.i += 1
                    if (m := self.peek()) is not None and m.text == "(":
                        self.skip_group()  # DEFAULT CURRENT_TIMESTAMP(6)
            elif t.is_word("CHARACTER") and (n := self.peek()) is not None and n.is_word("SET"):
                self.i += 2
            elif t.text == "(":
                self.i -= 1
                self.skip_group()  # GENERATED ALWAYS AS (...), CHECK (...)
        return nullable, primary


# --- entry points ---------------------------------------------------------------------


def parse_create_tables(text: str, *, path: str | None = None) -> list[TableSchema]:
    """Every ``CREATE TABLE`` statement in ``text``; other statements are skipped."""
    src = _Source(text, path)
    toks = _tokens(src)
    tables: list[TableSchema] = []
    i = 0
    while i < len(toks):
        tok = toks[i]
        if tok.is_word("CREATE"):
            j = i + 1
            if j < len(toks) and toks[j].is_word("TEMPORARY"):
                j += 1
            if j < len(toks) and toks[j].is_word("TABLE"):
                parser = _Parser(src, toks)
                parser.i = i
                tables.append(parser.create_table())
                i = parser.i
                continue
        i += 1
    if not tables:
        views = (
            t.pos for k, t in enumerate(toks) if t.is_word("VIEW") and not toks[k - 1].is_word("DROP")
        )
        view = next(views, None)
        if view is not None:
            raise src.error("defines a view, not a table: no CREATE TABLE statement", view)
        raise src.error("no CREATE TABLE statement", len(text))
    return tables


def parse_create_table(text: str, *, path: str | None = None) -> TableSchema:
    """The one table that ``text`` (a ``.schema`` file, a mysqldump) creates."""
    tables = parse_create_tables(text, path=path)
    if len(tables) > 1:
        names = ", ".join(t.name for t in tables)
        message = f"expected one CREATE TABLE statement, found {len(tables)} ({names})"
        raise SchemaError(message, path=path)
    return tables[0]


def parse_ingest_json_schema(columns: list[dict]) -> pa.Schema:
    """The Arrow schema of a Qserv ingest JSON ``schema`` list.

    >>> s = parse_ingest_json_schema([{"name": "sourceId", "type": " bigint(20) NOT NULL"},
    ...                               {"name": "ra", "type": "double DEFAULT NULL"}])
    >>> [(f.name, str(f.type), f.nullable) for f in s]
    [('sourceId', 'int64', False), ('ra', 'double', True)]
    """
    fields: list[pa.Field] = []
    for k, col in enumerate(columns):
        name, typ = col.get("name"), col.get("type")
        if not isinstance(name, str) or not name or not isinstance(typ, str):
            raise SchemaError(f"schema entry {k + 1} needs a 'name' and a 'type' string: {col!r}")
        src = _Source(typ, None)
        toks = _tokens(src)
        parser = _Parser(src, [_Tok("name", name, 0), *toks])
        try:
            field, _ = parser.column_definition()
        except SchemaError as exc:
            raise SchemaError(exc.reason, column=name) from None
        if parser.peek() is not None:
            raise SchemaError(f"unexpected {parser.peek().text!r} in type {typ!r}", column=name)
        if any(f.name.lower() == name.lower() for f in fields):
            raise SchemaError("duplicate column", column=name)
        fields.append(field)
    return pa.schema(fields)
