"""``skyshard itest`` on one case, against a MariaDB that is already running."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from skyshard.cli import main
from skyshard.itest.reference import ReferenceServer, mariadb_available
from skyshard.itest.runner import default_cases_dir

QSERV = default_cases_dir()  # $SKYSHARD_QSERV_TESTDATA, else ../shared/testdata/qserv


def test_one_case_on_an_existing_server(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    if not (QSERV / "case04").is_dir():
        pytest.skip(f"Qserv test data not found at {QSERV} (set SKYSHARD_QSERV_TESTDATA)")
    if not mariadb_available() or importlib.util.find_spec("pymysql") is None:
        pytest.skip("mariadb-server is not installed; .ci/run installs it")
    report = tmp_path / "report.json"
    with ReferenceServer() as server:
        args = ["itest", str(QSERV / "case04"), "--reference-socket", server.socket,
                "--catalog", str(tmp_path / "cat"), "--report", str(report)]
        assert main(args) == 0
        with server.connect() as conn, conn.cursor() as cur:  # the case's database is gone
            cur.execute("SHOW DATABASES LIKE 'itest_%'")
            assert cur.fetchall() == ()
    out = capsys.readouterr().out
    assert "PASS case04/0011_selectDeepCoadd" in out
    assert "SKIP case04/0030_largeResult: needs absent table DeepForcedSource" in out
    doc = json.loads(report.read_text())
    (case,) = doc["cases"]
    assert case["case"] == "case04" and case["counts"]["PASS"] >= 3
    assert (tmp_path / "cat" / "skyshard.json").exists()


def test_usage_errors() -> None:
    assert main(["itest"]) == 2
