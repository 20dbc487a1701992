"""HTTP answers without avoidable waits: Nagle's algorithm off on every connection, small
synchronous TAP results sent as one body (the same bytes as when streamed)."""

from __future__ import annotations

import asyncio
import io
import socket

import pyarrow.parquet as pq
import pytest
import requests
from served import TOKENS

from skyshard.service import tap, tap_output
from skyshard.service.server import http_socket


def test_the_http_socket_is_tcp_so_asyncio_turns_nagle_off():
    async def main() -> tuple[int, int]:
        sock = http_socket("127.0.0.1")
        sock.bind(("127.0.0.1", 0))
        seen: asyncio.Future = asyncio.get_running_loop().create_future()

        async def accepted(reader, writer) -> None:
            s = writer.get_extra_info("socket")
            seen.set_result((s.proto, s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)))
            writer.close()

        server = await asyncio.start_server(accepted, sock=sock)
        async with server:
            _, writer = await asyncio.open_connection("127.0.0.1", sock.getsockname()[1])
            got = await asyncio.wait_for(seen, 5)
            writer.close()
        return got

    proto, nodelay = asyncio.run(main())
    assert proto == socket.IPPROTO_TCP and nodelay != 0


def _sync(port: int, session: requests.Session, fmt: str) -> requests.Response:
    resp = session.post(f"http://127.0.0.1:{port}/tap/sync",
                        data={"LANG": "ADQL", "RESPONSEFORMAT": fmt, "QUERY":
                              "SELECT TOP 7 objectId, gMag, kind FROM cat.Object ORDER BY objectId"},
                        headers={"Authorization": f"Bearer {TOKENS['alice']}"}, timeout=30)
    assert resp.status_code == 200, resp.text
    return resp


@pytest.mark.parametrize("fmt", ["votable", "csv", "tsv", "json", "parquet"])
def test_small_results_are_one_body_and_the_same_bytes_as_streamed(server, monkeypatch, fmt):
    with requests.Session() as session:  # one kept-alive connection for all
        inline = _sync(server.http_port, session, fmt)  # encoded on the event loop
        monkeypatch.setattr(tap, "INLINE_BYTES", -1)
        buffered = _sync(server.http_port, session, fmt)  # encoded on a worker thread
        monkeypatch.setattr(tap_output, "BUFFERED_BYTES", -1)
        streamed = _sync(server.http_port, session, fmt)
    for one in (inline, buffered):
        assert one.headers.get("content-length") == str(len(one.content))
        assert one.headers["content-type"] == streamed.headers["content-type"]
        assert one.headers["x-query-status"] == "OK"
    assert streamed.headers.get("transfer-encoding") == "chunked"
    assert streamed.headers["x-query-status"] == "OK"
    if fmt == "parquet":  # the writer stamps its own metadata: compare the rows
        tables = [pq.read_table(io.BytesIO(r.content)) for r in (inline, buffered, streamed)]
        assert tables[0].equals(tables[2]) and tables[1].equals(tables[2])
        assert tables[2].num_rows == 7
    else:
        assert inline.content == buffered.content == streamed.content
        assert b"objectId" in streamed.content
