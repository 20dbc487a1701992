"""The ``skyshard`` command: ingest, sql in every format, tables, errors as one line."""

from __future__ import annotations

import json

import pyarrow.parquet as pq

from skyshard.cli import main


def test_ingest_and_query(tmp_path, sky_tables, capsys):
    src = tmp_path / "o.parquet"
    pq.write_table(sky_tables["Object"].slice(0, 300), src)
    cat = tmp_path / "cat"
    assert main(["ingest", str(cat), "Object", str(src), "--ra", "ra", "--dec", "decl",
                 "--key", "objectId", "--max-rows-per-partition", "50"]) == 0
    assert "Object: 300 rows (director," in capsys.readouterr().out
    assert main(["sql", "--catalog", str(cat), "--format", "json",
                 "SELECT COUNT(*) AS n FROM Object"]) == 0
    assert json.loads(capsys.readouterr().out) == {"n": 300}
    assert main(["sql", "--catalog", str(cat), "--format", "csv",
                 "SELECT kind, COUNT(*) AS n FROM Object GROUP BY kind ORDER BY kind"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == '"kind","n"' and len(lines) == 4
    assert main(["sql", "--catalog", str(cat), "SELECT objectId FROM Object ORDER BY objectId LIMIT 2"]) == 0
    assert capsys.readouterr().out.strip().endswith("(2 rows)")
    assert main(["tables", str(cat)]) == 0
    assert capsys.readouterr().out.startswith("Object: director, 300 rows")
    assert main(["sql", "--catalog", str(cat), "--explain",
                 "SELECT * FROM Object WHERE qserv_areaspec_circle(45, 10, 0.1)"]) == 0
    assert capsys.readouterr().out.startswith("partitions: ")


def test_user_errors_are_one_line(tmp_path, sky_root, capsys):
    assert main(["sql", "--catalog", str(sky_root), "SELECT nope FROM Object"]) == 2
    err = capsys.readouterr().err
    assert err == "error: no column 'nope' in Object (line 1, column 8)\n"
    assert main(["sql", "--catalog", str(sky_root), "SELECT * FROM read_csv('/etc/passwd')"]) == 2
    assert capsys.readouterr().err == "error: function read_csv() is not allowed\n"
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n")
    assert main(["ingest", str(tmp_path / "c2"), "T", str(bad), "--ra", "ra", "--dec", "dec",
                 "--key", "a"]) == 2
    assert "column 'ra'" in capsys.readouterr().err
    assert not (tmp_path / "c2" / "T").exists()


def test_ingest_memory_limit(tmp_path, sky_tables, capsys):
    src = tmp_path / "o.parquet"
    pq.write_table(sky_tables["Object"].slice(0, 300), src)
    args = ["ingest", str(tmp_path / "cat"), "Object", str(src), "--ra", "ra", "--dec", "decl",
            "--key", "objectId"]
    assert main([*args, "--memory-limit", "lots"]) == 2
    assert capsys.readouterr().err == (
        "error: memory_limit 'lots' is not a size such as '1GB' or '512MiB'\n")
    assert not (tmp_path / "cat").exists()
    assert main([*args, "--memory-limit", "256MB"]) == 0
    assert "Object: 300 rows (director," in capsys.readouterr().out
