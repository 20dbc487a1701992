"""The reference database: a real MariaDB, as in Qserv's own integration tests.

``ReferenceServer()`` starts a private ``mariadbd`` as a child process: a fresh data
directory made by ``mariadb-install-db`` in a temporary folder, a unix socket there, no
TCP port, no binary log (about 3 s). ``ReferenceServer(socket=PATH)`` uses a server that
is already running instead. Either way a case lives in its own database
``itest_<case>``, dropped when the case is done; the private server is stopped by its
PID and its folder removed on ``close()`` (also at interpreter exit).

Tables are created from the case's ``.schema`` text (MyISAM, latin1, as Qserv's reference
has them) and loaded with ``LOAD DATA LOCAL INFILE`` of the decompressed data file: the
mysqldump text format is what ``LOAD DATA`` reads natively (``\\N``, backslash escapes,
backslash-newline continuations, raw binary bytes). Bytes go in unconverted
(``CHARACTER SET binary``). Reference queries run with the sciSQL functions of
:mod:`skyshard.itest.scisql` installed in the case's database.

Values come back through PyMySQL's text protocol: DOUBLE as ``float`` (MariaDB prints
the shortest exact form) unless MariaDB printed it with a fixed number of decimals,
FLOAT and DECIMAL as ``decimal.Decimal`` of the printed text (MariaDB prints FLOAT with
6 significant digits; :mod:`skyshard.itest.compare` uses the printed precision), BIT as
``bytes``.
"""

from __future__ import annotations

import atexit
import getpass
import gzip
import math
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from skyshard.errors import ExternalError
from skyshard.itest.case import Case, TableSpec, split_statements
from skyshard.itest.scisql import FUNCTIONS, rewrite_for_mariadb

__all__ = ["LoadedTable", "ReferenceResult", "ReferenceServer", "mariadb_available"]

INSTALL_HINT = "install mariadb-server (apt-get install -y mariadb-server mariadb-client)"
STATEMENT_SECONDS = 120
DATABASE_TAG = "{DBTAG_A}"
_START_SECONDS = 60


def _binary(name: str) -> str | None:
    return shutil.which(name) or next(
        (str(p) for d in ("/usr/sbin", "/usr/local/sbin", "/usr/libexec")
         if (p := Path(d) / name).exists()), None,
    )


def mariadb_available() -> bool:
    """Whether a private MariaDB server can be started here."""
    return _binary("mariadbd") is not None and _binary("mariadb-install-db") is not None


@dataclass(frozen=True)
class ReferenceResult:
    """Rows of one reference query; ``types`` are MySQL field type codes (None when
    unknown, as for stored expected results)."""

    columns: list[str]
    types: list[int | None]
    rows: list[tuple]
    scales: list[int | None] | None = None  # digits after the point of DECIMAL columns


@dataclass
class LoadedTable:
    name: str
    rows: int
    warnings: list[str] = field(default_factory=list)


def _decoders() -> dict:
    import pymysql.converters
    from pymysql.constants import FIELD_TYPE

    conv = dict(pymysql.converters.decoders)
    for code in (FIELD_TYPE.FLOAT, FIELD_TYPE.DECIMAL, FIELD_TYPE.NEWDECIMAL):
        conv[code] = Decimal
    return conv


class ReferenceServer:
    """A MariaDB server to load cases into and run reference queries on."""

    def __init__(self, socket: str | os.PathLike | None = None, *, user: str = "root",
                 password: str = "") -> None:
        self.user = user
        self.password = password
        self._external = socket is not None
        self._socket = str(socket) if socket is not None else None
        self._dir: Path | None = None
        self._proc: subprocess.Popen | None = None
        self.started_seconds = 0.0
        self.version = ""

    # --- life cycle ---------------------------------------------------------------------

    def __enter__(self) -> ReferenceServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def socket(self) -> str:
        if self._socket is None:
            raise ExternalError("the reference server is not started")
        return self._socket

    def start(self) -> None:
        t0 = time.monotonic()
        try:
            if not self._external:
                self._start_private()
            with self.connect() as conn, conn.cursor() as cur:
                cur.execute("SELECT VERSION()")
                self.version = cur.fetchone()[0]
        except BaseException:
            self.close()
            raise
        self.started_seconds = time.monotonic() - t0

    def _start_private(self) -> None:
        mariadbd, install = _binary("mariadbd"), _binary("mariadb-install-db")
        if mariadbd is None or install is None:
            raise ExternalError(f"mariadbd not found: {INSTALL_HINT}")
        self._dir = Path(tempfile.mkdtemp(prefix="skyshard-mariadb-"))
        data, log = self._dir / "data", self._dir / "error.log"
        self._socket = str(self._dir / "mysqld.sock")
        user = ["--user=" + getpass.getuser()] if os.geteuid() == 0 else []
        done = subprocess.run(
            [install, "--no-defaults", "--auth-root-authentication-method=normal",
             f"--datadir={data}", "--skip-test-db", "--skip-name-resolve", *user],
            capture_output=True, text=True,
        )
        if done.returncode != 0:
            raise ExternalError("mariadb-install-db failed: " + (done.stderr or done.stdout).strip()[-800:])
        self._proc = subprocess.Popen(
            [mariadbd, "--no-defaults", f"--datadir={data}", f"--socket={self._socket}",
             "--skip-networking", f"--pid-file={self._dir / 'mysqld.pid'}", f"--log-error={log}",
             "--skip-log-bin", "--local-infile=1", "--skip-name-resolve",
             "--innodb-buffer-pool-size=64M", "--key-buffer-size=64M", f"--tmpdir={self._dir}",
             "--max-allowed-packet=256M", *user],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        atexit.register(self.close)
        deadline = time.monotonic() + _START_SECONDS
        while True:
            if self._proc.poll() is not None:
                tail = log.read_text(errors="replace")[-1500:] if log.exists() else ""
                raise ExternalError(f"mariadbd exited with status {self._proc.returncode}: {tail}")
            if Path(self._socket).exists():
                try:
                    self.connect().close()
                    return
                except ExternalError:
                    pass
            if time.monotonic() > deadline:
                raise ExternalError(f"mariadbd did not accept connections within {_START_SECONDS} s")
            time.sleep(0.05)

    def close(self) -> None:
        """Stop the private server (SIGTERM, then SIGKILL) and remove its folder."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None
        if not self._external:
            self._socket = None

    # --- connections --------------------------------------------------------------------

    def connect(self, database: str | None = None) -> Any:
        """A PyMySQL connection (autocommit, UTC, statements limited in time)."""
        try:
            import pymysql
        except ImportError:
            raise ExternalError("PyMySQL is not installed: pip install pymysql") from None
        try:
            conn = pymysql.connect(
                unix_socket=self.socket, user=self.user, password=self.password,
                database=database, local_infile=True, charset="utf8mb4", autocommit=True,
                conv=_decoders(), connect_timeout=10,
            )
        except pymysql.err.MySQLError as exc:
            raise ExternalError(f"cannot connect to MariaDB at {self._socket}: {exc}") from None
        with conn.cursor() as cur:
            cur.execute("SET time_zone = '+00:00'")
            cur.execute(f"SET SESSION max_statement_time = {STATEMENT_SECONDS}")
        return conn

    # --- cases --------------------------------------------------------------------------

    @staticmethod
    def database_name(case: Case) -> str:
        return f"itest_{case.name}"

    def load(self, case: Case, workdir: str | os.PathLike) -> ReferenceDatabase:
        """Create the case's database with its present tables and the sciSQL functions."""
        name = self.database_name(case)
        with self.connect() as conn, conn.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
            cur.execute(f"CREATE DATABASE `{name}` CHARACTER SET latin1")
        db = ReferenceDatabase(self, name)
        db.install_functions()
        for spec in case.tables.values():
            if spec.present:
                db.tables.append(db.load_table(spec, Path(workdir)))
        return db

    def drop(self, case: Case) -> None:
        with self.connect() as conn, conn.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{self.database_name(case)}`")


class ReferenceDatabase:
    """One case's database on the reference server."""

    def __init__(self, server: ReferenceServer, name: str) -> None:
        self.server = server
        self.name = name
        self.tables: list[LoadedTable] = []
        self._conn: Any = None

    def _connection(self) -> Any:
        if self._conn is None or not self._conn.open:
            self._conn = self.server.connect(self.name)
        return self._conn

    def close(self) -> None:
        if self._conn is not None and self._conn.open:
            self._conn.close()
        self._conn = None

    def new_session(self) -> None:
        """Start the next statement in a new session: user variables set by one query
        (``SET @poly = ...``) are not seen by the next, as in Qserv's ``itest``, which
        runs each query file with its own client."""
        self.close()

    def install_functions(self) -> None:
        with self._connection().cursor() as cur:
            for ddl in FUNCTIONS:
                cur.execute(ddl)

    def load_table(self, spec: TableSpec, workdir: Path) -> LoadedTable:
        import pymysql

        assert spec.data_path is not None
        plain = workdir / f"{spec.name}.txt"
        opener = gzip.open if spec.data_path.name.endswith(".gz") else open
        with opener(spec.data_path, "rb") as src, open(plain, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
        fields = f"FIELDS TERMINATED BY {_quote(spec.delimiter)}"
        if spec.enclosed_by:
            fields += f" OPTIONALLY ENCLOSED BY {_quote(spec.enclosed_by)}"
        columns = ", ".join(f"`{c}`" for c in spec.schema.names)
        conn = self._connection()
        try:
            with conn.cursor() as cur:
                for statement in split_statements(spec.schema_text):
                    cur.execute(statement)
                for column in spec.extra_columns:
                    typ = spec.schema.field(column).metadata[b"mysql_type"].decode()
                    cur.execute(f"ALTER TABLE `{spec.name}` ADD COLUMN `{column}` {typ}")
                rows = cur.execute(
                    f"LOAD DATA LOCAL INFILE {_quote(str(plain))} INTO TABLE `{spec.name}` "
                    f"CHARACTER SET binary {fields} ESCAPED BY '\\\\' "
                    f"LINES TERMINATED BY '\\n' ({columns})"
                )
                cur.execute("SHOW COUNT(*) WARNINGS")
                count = cur.fetchone()[0]
                cur.execute("SHOW WARNINGS LIMIT 3")
                warnings = [f"{r[1]}: {r[2]}" for r in cur.fetchall()]
                if count > len(warnings):
                    warnings.append(f"... {count} warnings in all")
        except pymysql.err.MySQLError as exc:
            raise ExternalError(f"MariaDB cannot load {spec.data_path.name}: {exc}") from None
        finally:
            plain.unlink(missing_ok=True)
        return LoadedTable(spec.name, rows, warnings)

    def column_names(self, sql: str) -> list[str]:
        """The column names MariaDB gives the answer to ``sql`` as written (sciSQL calls
        not inlined), without computing its rows."""
        import pymysql

        text = rewrite_for_mariadb(sql.replace(DATABASE_TAG, f"`{self.name}`."), inline=False)
        names: list[str] = []
        try:
            with self._connection().cursor() as cur:
                cur.execute("SET SESSION sql_select_limit = 0")
                try:
                    for statement in split_statements(text):
                        cur.execute(statement)
                        if cur.description is not None:
                            names = [d[0] for d in cur.description]
                            cur.fetchall()
                finally:
                    cur.execute("SET SESSION sql_select_limit = DEFAULT")
        except pymysql.err.MySQLError as exc:
            raise ExternalError(f"MariaDB error: {exc}") from None
        return names

    def run(self, sql: str) -> ReferenceResult:
        """Rows of the last statement of ``sql`` that returns rows; no columns and no rows
        when none does (``SELECT ... INTO @v`` only assigns)."""
        import pymysql

        result: ReferenceResult | None = None
        try:
            with self._connection().cursor() as cur:
                text = rewrite_for_mariadb(sql.replace(DATABASE_TAG, f"`{self.name}`."))
                for statement in split_statements(text):
                    cur.execute(statement)
                    if cur.description is not None:
                        result = _result(cur.description, list(cur.fetchall()))
        except pymysql.err.MySQLError as exc:
            code = exc.args[0] if exc.args else ""
            message = exc.args[1] if len(exc.args) > 1 else str(exc)
            raise ExternalError(f"MariaDB error {code}: {message}") from None
        return result if result is not None else ReferenceResult([], [], [], [])


def _quote(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


_FIELD_DOUBLE = 5
_NOT_FIXED_DEC = 31  # MySQL: "no fixed number of decimals"


def _result(description: Sequence[tuple], rows: list[tuple]) -> ReferenceResult:
    """Rows with DOUBLE values printed with fixed decimals (``STDDEV`` with 4, ``PI()``
    with 6) turned back into the ``Decimal`` of their text, so that they are compared
    at their printed precision like DECIMAL values."""
    fixed = [i for i, d in enumerate(description)
             if d[1] == _FIELD_DOUBLE and d[5] is not None and d[5] < _NOT_FIXED_DEC]
    if fixed:
        quantum = {i: Decimal(1).scaleb(-description[i][5]) for i in fixed}
        rows = [tuple(Decimal(v).quantize(quantum[i]) if i in quantum and isinstance(v, float)
                      and math.isfinite(v) else v for i, v in enumerate(row)) for row in rows]
    return ReferenceResult(columns=[d[0] for d in description], types=[d[1] for d in description],
                           rows=rows, scales=[d[5] for d in description])
