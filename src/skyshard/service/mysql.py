"""The MySQL-protocol front end (mysql-mimic), as Qserv's proxy on port 4040.

A query in Qserv's dialect runs through the query service on ``Database.sql``; its
columns are declared from the Arrow schema (``columns``), with the names ``Database.sql``
returns. Qserv's asynchronous commands work as in Qserv (``SUBMIT``, ``qserv_result``,
``CANCEL``/``KILL``, ``SHOW PROCESSLIST``, ``information_schema.processlist`` and
``.queries``); what clients send on connect is answered from the session
(``statements``). Errors leave as MySQL error packets with the codes of
``service.errors``.

Ids: query ids and connection ids come from one sequence, so ``KILL n`` names either a
query (cancel it) or a connection (cancel its running query; ``KILL CONNECTION`` also
closes it: what the mysql client sends on Ctrl-C).

Users log in with ``mysql_native_password``; an unknown user fails like a wrong password
(1045), unless anonymous access is allowed.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import AsyncIterator, Iterable, Iterator
from typing import Any

import pyarrow as pa
from mysql_mimic import IdentityProvider, MysqlServer, NativePasswordAuthPlugin, ResultSet, User
from mysql_mimic import errors as mimic_errors
from mysql_mimic.auth import AuthPlugin
from mysql_mimic.constants import KillKind
from mysql_mimic.control import LocalControl
from mysql_mimic.errors import MysqlError
from mysql_mimic.intercept import setitem_kind
from mysql_mimic.session import Session
from mysql_mimic.stream import ConnectionClosed
from sqlglot import exp

from skyshard import __version__
from skyshard.errors import ForbiddenQueryError, SkyshardError, UnsupportedQueryError
from skyshard.service import processlist
from skyshard.service.columns import mysql_columns, rows
from skyshard.service.config import ANONYMOUS, Credentials
from skyshard.service.errors import (
    SQLSTATES,
    ResultGoneError,
    UnknownDatabaseError,
    UnknownQueryError,
    wire,
)
from skyshard.service.queries import QueryService
from skyshard.service.statements import Kind, Statement, classify
from skyshard.sql.metadata import columns_of

log = logging.getLogger("skyshard.service.mysql")

# The protocol's error packet carries a SQLSTATE per code: teach mysql-mimic ours.
mimic_errors.SQLSTATES.update({code: state.encode() for code, state in SQLSTATES.items()})

_BATCH = 10_000


class MysqlFrontend:
    """The MySQL server over a query service."""

    def __init__(self, service: QueryService, credentials: Credentials, *,
                 database: str) -> None:
        self.service = service
        self.credentials = credentials
        self.database = database
        self.sessions: dict[int, SkyshardSession] = {}
        self.control = _Control(service.next_id)
        self.schema = _catalog_schema(service.db, database)
        self.server = _Server(session_factory=lambda: SkyshardSession(self),
                              identity_provider=_Identity(credentials),
                              control=self.control)

    async def start(self, host: str, port: int) -> int:
        """Listen; the port bound (``port=0`` picks a free one)."""
        await self.server.start_server(host=host, port=port)
        return self.server.sockets()[0].getsockname()[1]

    async def close(self) -> None:
        self.server.close()
        await self.server.wait_closed()

    def known_database(self, name: str | None) -> None:
        if name and name.lower() not in (self.database.lower(), "information_schema"):
            raise UnknownDatabaseError(name, self.database)


class SkyshardSession(Session):
    """One client connection."""

    def __init__(self, frontend: MysqlFrontend) -> None:
        super().__init__()
        self.frontend = frontend
        self.service = frontend.service
        self.running: int | None = None  # the id of the query this connection waits for

    # --- connection life ------------------------------------------------------------

    async def init(self, connection: Any) -> None:
        await super().init(connection)
        self.variables.set("version_comment", f"skyshard {__version__}", force=True)
        self.frontend.sessions[connection.connection_id] = self
        try:
            self.frontend.known_database(self.database)
        except UnknownDatabaseError as exc:
            raise MysqlError(str(exc), code=wire(exc).mysql_code) from exc

    async def close(self) -> None:
        if self._connection is not None:
            self.frontend.sessions.pop(self.connection.connection_id, None)
        await self._cancel_running()
        await super().close()

    async def use(self, database: str) -> None:
        try:
            self.frontend.known_database(database)
        except UnknownDatabaseError as exc:
            raise MysqlError(str(exc), code=wire(exc).mysql_code) from exc
        self.database = database

    async def schema(self) -> dict:
        return self.frontend.schema

    @property
    def user(self) -> str:
        return self.username or ANONYMOUS

    @property
    def host(self) -> str | None:
        try:
            peer = self.connection.stream.writer.get_extra_info("peername")
            return f"{peer[0]}:{peer[1]}" if peer else None
        except (AttributeError, IndexError, TypeError):
            return None

    # --- statements -----------------------------------------------------------------

    async def handle_query(self, sql: str, attrs: dict[str, str]) -> Any:
        try:
            return await self._answer(classify(sql), attrs)
        except (MysqlError, asyncio.CancelledError):
            raise
        except Exception as exc:  # noqa: BLE001 - every error leaves as a MySQL error
            if not isinstance(exc, SkyshardError):
                log.exception("internal error on %r", sql[:200])
            w = wire(exc)
            raise MysqlError(w.message, code=w.mysql_code) from exc

    async def query(self, expression: exp.Expression, sql: str, attrs: dict[str, str]) -> Any:
        # Reached only for statements the session layer does not answer itself.
        raise UnsupportedQueryError(f"{expression.key.upper()} statements are not supported")

    async def _answer(self, st: Statement, attrs: dict[str, str]) -> Any:
        kind = st.kind
        if kind is Kind.CATALOG:
            return _result_set(await self._run(st.sql))
        if kind is Kind.SUBMIT:
            q = self.service.submit(st.sql, self.user, mode="async", host=self.host,
                                    timeout_s=self._timeout_s())
            return _result_set(pa.table({"jobId": pa.array([q.id], pa.int64()),
                                         "resultLocation": [f"table:result_{q.id}"]}))
        if kind is Kind.RESULT:
            stored = self.service.result(st.query_id, self.user)
            return _result_set_of(stored.schema, stored.batches(_BATCH))
        if kind is Kind.DELETE_RESULT:
            if not self.service.delete_result(st.query_id, self.user):
                raise ResultGoneError(st.query_id)
            return [], []
        if kind is Kind.CANCEL:
            await self._kill(st.query_id, st.option)
            return [], []
        if kind is Kind.PROCESSLIST:
            return _result_set(processlist.show_processlist(
                self.service.active(self.user), self.frontend.database,
                full=st.option == "FULL"))
        if kind is Kind.QUERIES:
            return _result_set(processlist.information_schema(
                st.tree, self.service.active(self.user), self.service.history(self.user),
                self.frontend.database))
        if kind is Kind.SET:
            self._check_set(st.tree)
        return await super().handle_query(st.sql, attrs)

    async def _run(self, sql: str) -> pa.Table:
        q = self.service.submit(sql, self.user, mode="sync", host=self.host,
                                timeout_s=self._timeout_s())
        self.running = q.id
        try:
            await asyncio.wrap_future(q.done)
        except asyncio.CancelledError:
            await self._cancel_running()
            raise
        finally:
            self.running = None
        return self.service.outcome(q)

    async def _cancel_running(self) -> None:
        if self.running is not None:
            try:
                self.service.cancel(self.running)
            except UnknownQueryError:
                pass

    async def _kill(self, target: int, option: str | None) -> None:
        """``KILL``/``CANCEL`` of a query id, or of a connection id: its running query is
        cancelled, and ``KILL [CONNECTION]`` also closes it (``KILL QUERY`` and ``CANCEL``
        leave it open)."""
        try:
            self.service.cancel(target, self.user)
            return
        except UnknownQueryError:
            session = self.frontend.sessions.get(target)
            if session is None or session.user != self.user:
                raise
        if session.running is not None:
            try:
                self.service.cancel(session.running, self.user)
            except UnknownQueryError:
                pass
        if option in (None, "CONNECTION"):
            await self.frontend.control.kill(target, KillKind.CONNECTION)

    def _check_set(self, tree: exp.Expression) -> None:
        """Client session SETs only (character sets, transaction characteristics, the
        session variables a MySQL client knows): kept in the session, DuckDB untouched."""
        for item in tree.expressions:
            kind = setitem_kind(item)
            if kind in ("NAMES", "CHARACTER SET", "TRANSACTION"):
                continue
            assignment = item.this
            left = assignment.left if isinstance(assignment, exp.EQ) else None
            if isinstance(left, exp.Parameter):
                raise UnsupportedQueryError(
                    "user variables (SET @name = ...) are not supported",
                    construct="user variable", suggestion="write the value in the query")
            if left is None:
                raise ForbiddenQueryError(f"SET {item.sql(dialect='mysql')} is not allowed")
            name = left.name.lower()
            scope = (item.text("kind") or left.text("kind") or "SESSION").upper()
            if scope not in ("SESSION", "LOCAL") or name not in self.variables.schema:
                raise ForbiddenQueryError(
                    f"SET {scope + ' ' if scope not in ('SESSION', 'LOCAL') else ''}{name} "
                    "is not allowed: only the client's session variables can be set "
                    "(character sets, time_zone, sql_mode, autocommit, max_execution_time...)")

    def _timeout_s(self) -> float | None:
        """MySQL's ``max_execution_time`` (milliseconds) of this session, if set."""
        ms = self.variables.get("max_execution_time") or 0
        return ms / 1000.0 if ms > 0 else None


# --- results ----------------------------------------------------------------------------


#: A result of at most this many Arrow bytes is converted to rows on the event loop at
#: once: cheaper than the two thread hops of ``_rows_off_loop`` (id lookups, cones).
_SMALL_BYTES = 64 * 1024


def _result_set(table: pa.Table) -> ResultSet:
    if table.nbytes <= _SMALL_BYTES:
        columns = [c.result_column() for c in mysql_columns(table.schema)]
        return ResultSet(rows=list(rows(table.to_batches())), columns=columns)
    return _result_set_of(table.schema, table.to_batches(max_chunksize=_BATCH))


def _result_set_of(schema: pa.Schema, batches: Iterable[pa.RecordBatch]) -> ResultSet:
    columns = [c.result_column() for c in mysql_columns(schema)]
    return ResultSet(rows=_rows_off_loop(batches), columns=columns)


async def _rows_off_loop(batches: Iterable[pa.RecordBatch]) -> AsyncIterator[tuple]:
    """Rows, each batch read (from memory or Parquet) and converted on a worker thread,
    so a large result does not hold up the other connections."""
    it = iter(batches)
    while True:
        chunk = await asyncio.to_thread(_next_rows, it)
        if chunk is None:
            return
        for row in chunk:
            yield row


def _next_rows(it: Iterator[pa.RecordBatch]) -> list[tuple] | None:
    batch = next(it, None)
    return None if batch is None else list(rows([batch]))


def _catalog_schema(db: Any, database: str) -> dict:
    """``{database: {table: {column: MySQL type}}}`` for SHOW and information_schema."""
    tables = {}
    for name, info in db.tables.items():
        described = columns_of(info).to_pylist()
        tables[name] = {c["Field"]: c["Type"] for c in described}
    return {database: tables}


# --- connections and users --------------------------------------------------------------


class _Server(MysqlServer):
    """mysql-mimic's server, quiet about clients that hang up during the handshake (a TCP
    health check, a port scan): one debug line instead of an unhandled-error traceback."""

    async def _client_connected_cb(self, reader: asyncio.StreamReader,
                                   writer: asyncio.StreamWriter) -> None:
        try:
            await super()._client_connected_cb(reader, writer)
        except (ConnectionError, ConnectionClosed, asyncio.IncompleteReadError) as exc:
            log.debug("client %s went away: %s", writer.get_extra_info("peername"),
                      type(exc).__name__)


class _Control(LocalControl):
    """Connection ids from the query service's sequence."""

    def __init__(self, next_id: Any) -> None:
        super().__init__(server_id=0)
        self._next_id = next_id

    def _new_connection_id(self) -> int:
        return self._next_id()


class _NativePassword(NativePasswordAuthPlugin):
    """mysql_native_password; a user without a stored hash is an anonymous one."""

    def password_matches(self, user: User, scramble: bytes, nonce: bytes) -> bool:
        if user.auth_string is None:
            return True
        return super().password_matches(user, scramble, nonce)


class _Identity(IdentityProvider):
    def __init__(self, credentials: Credentials) -> None:
        self.credentials = credentials
        self._plugin = _NativePassword()

    def get_plugins(self) -> list[AuthPlugin]:
        return [self._plugin]

    async def get_user(self, username: str) -> User | None:
        stored = self.credentials.password_hash(username)
        if stored is None and not self.credentials.allow_anonymous:
            stored = secrets.token_hex(20)  # matches nothing: 1045, as a wrong password
        return User(name=username, auth_string=stored, auth_plugin=self._plugin.name)


__all__ = ["MysqlFrontend", "SkyshardSession"]
