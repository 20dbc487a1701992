"""``skyshard serve``: starts both servers, logs where, never logs secrets, stops cleanly."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pymysql
import pytest

from skyshard.cli import main


def _start(args: list[str]) -> tuple[subprocess.Popen, list[str]]:
    proc = subprocess.Popen([sys.executable, "-m", "skyshard.cli", "serve", *args],
                            stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    deadline = time.monotonic() + 60
    while not any("users:" in line for line in lines):
        line = proc.stderr.readline()
        assert line or proc.poll() is None, "".join(lines)
        lines.append(line)
        assert time.monotonic() < deadline, "".join(lines)
    return proc, lines


def test_serve_anonymous_then_stop(served_catalog, tmp_path):
    conf = tmp_path / "serve.toml"
    conf.write_text('[users]\nalice = "pw-in-file"\n[limits]\nmax_rows = 7\n')
    proc, lines = _start(["--catalog", str(served_catalog), "--mysql-port", "0",
                          "--http-port", "0", "--config", str(conf), "--allow-anonymous",
                          "--user", "bob:pw-on-line", "--token", "tok-secret-value",
                          "--results-dir", str(tmp_path / "results")])
    try:
        log = "".join(lines)
        mysql_port = int(re.search(r"MySQL protocol on 127\.0\.0\.1:(\d+)", log).group(1))
        http_port = int(re.search(r"HTTP on http://127\.0\.0\.1:(\d+)", log).group(1))
        assert "users: alice, bob; 1 token(s); anonymous allowed" in log

        conn = pymysql.connect(host="127.0.0.1", port=mysql_port, user="guest",
                               password="", database="cat")
        with conn.cursor() as cur:
            cur.execute("SELECT COUNT(*) FROM Filter")
            assert cur.fetchone() == (6,)
            cur.execute("SELECT CURRENT_USER()")
            assert cur.fetchone() == ("guest",)
        conn.close()
        with pytest.raises(pymysql.err.OperationalError) as denied:  # still needs its password
            pymysql.connect(host="127.0.0.1", port=mysql_port, user="alice", password="no")
        assert denied.value.args[0] == 1045
        req = urllib.request.Request(f"http://127.0.0.1:{http_port}/query", method="POST",
                                     data=json.dumps({"query": "SELECT * FROM Filter"}).encode())
        with urllib.request.urlopen(req, timeout=10) as resp:  # anonymous, no token
            assert len(json.load(resp)["rows"]) == 6
        req = urllib.request.Request(f"http://127.0.0.1:{http_port}/query", method="POST",
                                     data=json.dumps({"query": "SELECT * FROM Object"}).encode())
        with pytest.raises(urllib.error.HTTPError) as info:  # the config file's limit
            urllib.request.urlopen(req, timeout=10)
        assert info.value.code == 413
        assert "7 rows" in json.load(info.value)["error"]["message"]
    finally:
        proc.send_signal(signal.SIGINT)
        rest = proc.communicate(timeout=30)[1]
    assert proc.returncode == 0, rest
    assert "stopped" in rest
    everything = log + rest
    for secret in ("pw-in-file", "pw-on-line", "tok-secret-value"):
        assert secret not in everything


def test_serve_refuses_to_start_without_credentials(served_catalog, capsys):
    assert main(["serve", "--catalog", str(served_catalog)]) == 2
    assert "--allow-anonymous" in capsys.readouterr().err
