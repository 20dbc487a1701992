"""STILTS ``taplint`` against the TAP service: no errors, and none of the warnings that
mean a document was missing (GONO, TBNF, NOTM, GONE), which would let an empty service
pass. Skipped when ``stilts`` is not installed (Debian: ``apt-get install stilts``)."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from served import start_server

STILTS = shutil.which("stilts")
NO_DOCUMENT = {"GONO", "TBNF", "NOTM", "GONE"}


@pytest.fixture(scope="module")
def tap_url(served_catalog, tmp_path_factory):
    srv = start_server(served_catalog, tmp_path_factory.mktemp("lint-results"),
                       anonymous_tap=True)
    yield f"http://127.0.0.1:{srv.http_port}/tap"
    srv.stop()


@pytest.mark.skipif(STILTS is None, reason="stilts is not installed (apt-get install stilts)")
def test_taplint_finds_no_errors(tap_url):
    out = subprocess.run([STILTS, "taplint", f"tapurl={tap_url}", "report=EWFS"],
                         check=False, capture_output=True, text=True, timeout=600)
    lines = out.stdout.splitlines()
    errors = [line for line in lines if line.startswith("E-")]
    missing = [line for line in lines if line[:1] in "WF" and line[6:10] in NO_DOCUMENT]
    totals = [line for line in lines if line.startswith("Totals:")]
    assert totals, out.stdout[-2000:] + out.stderr[-2000:]
    assert not errors, "\n".join(errors)
    assert not missing, "\n".join(missing)
    assert "Errors: 0; Warnings: 0" in totals[0], "\n".join(
        line for line in lines if line.startswith("W-"))
    # the stages that must have run: tables, TAP_SCHEMA, queries, UWS, examples
    summaries = "\n".join(line for line in lines if line.startswith("S-"))
    for stage in ("TMS", "QGE", "QPO", "QAS", "MDQ", "EXA"):
        assert f"S-{stage}-" in summaries, stage
