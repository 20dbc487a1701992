"""A catalog on S3-compatible object storage: the same rows as the local copy, through the
embedded executor, a 2-worker Dask cluster and the server; the sandbox still closed; clear
errors for a wrong bucket, a missing catalog and bad credentials.

The store is a real HTTP S3 endpoint on localhost (moto's server mode), started once for
this module, with the small test catalog uploaded by ``skyshard upload``'s code.
"""

from __future__ import annotations

import io
import logging

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

pytest.importorskip("s3fs")
moto_server = pytest.importorskip("moto.server")

import skyshard  # noqa: E402
from same_rows import assert_same_rows  # noqa: E402
from skyshard.cli import main  # noqa: E402
from skyshard.errors import (  # noqa: E402
    CatalogError,
    ExternalError,
    ForbiddenQueryError,
    UserError,
)
from skyshard.storage import remote  # noqa: E402
from skyshard.storage.remote import RemotePath  # noqa: E402

URL = "s3://sky/surveys/catalog"


@pytest.fixture(scope="module")
def s3():
    """A moto S3 server on a free port; its storage options (endpoint, keys)."""
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    options = {"key": "testing", "secret": "testing", "endpoint_url": f"http://{host}:{port}"}
    yield options
    server.stop()


@pytest.fixture(scope="module")
def s3_catalog(s3, sky_root):
    """The small sky uploaded to ``URL``, plus files the sandbox must keep out of reach:
    another bucket and a sibling prefix whose name starts like the catalog's."""
    fs = remote.filesystem("s3", s3)
    fs.mkdir("sky")
    fs.mkdir("other")
    buf = io.BytesIO()
    pq.write_table(pa.table({"secret": [42]}), buf)
    fs.pipe_file("other/private.parquet", buf.getvalue())
    fs.pipe_file("sky/surveys/catalog-private/x.parquet", buf.getvalue())
    copied = remote.upload(sky_root, URL, s3)
    assert copied > 10
    return URL


@pytest.fixture(scope="module")
def s3_db(s3, s3_catalog):
    db = skyshard.open(s3_catalog, storage_options=s3)
    yield db
    db.close()


@pytest.fixture(scope="module")
def ids(sky_tables):
    oids = sky_tables["Object"].column("objectId").to_pylist()
    orphan = sky_tables["Source"].column("objectId").to_pylist()[-1]
    return {"oid": oids[17], "oid2": oids[4000], "orphan": orphan}


#: A cone, id lookups (director index, orphans), joins (child, replicated), a full-scan
#: aggregate, a query that cannot be split.
QUERIES = [
    "SELECT objectId, ra, decl FROM Object WHERE qserv_areaspec_circle(45, 10, 0.7) ORDER BY objectId",
    "SELECT * FROM Object WHERE objectId = {oid}",
    "SELECT sourceId FROM Source WHERE objectId IN ({oid}, {orphan}) ORDER BY sourceId",
    "SELECT o.objectId, s.sourceId, s.psfFlux FROM Object o JOIN Source s ON o.objectId = s.objectId "
    "WHERE o.objectId IN ({oid}, {oid2}) ORDER BY s.sourceId",
    "SELECT o.kind, COUNT(*) AS n, AVG(s.psfFlux) FROM Object o, Source s "
    "WHERE o.objectId = s.objectId GROUP BY o.kind ORDER BY o.kind",
    "SELECT f.filterName, COUNT(*) FROM Source s JOIN Filter f ON s.filterId = f.filterId "
    "WHERE qserv_areaspec_box(359, -1, 1, 1) GROUP BY f.filterName ORDER BY f.filterName",
    "SELECT kind, COUNT(*) AS n, SUM(nEpochs), MIN(gMag), MAX(gMag), AVG(rMag) FROM Object "
    "GROUP BY kind ORDER BY kind",
    "SELECT kind, n FROM (SELECT kind, COUNT(*) AS n FROM Object "
    "WHERE scisql_s2PtInBox(ra, decl, 40, 5, 50, 15) = 1 GROUP BY kind) t ORDER BY n",
]


# --- the same rows as the local copy -------------------------------------------------------


@pytest.mark.parametrize("template", QUERIES)
def test_same_rows_as_the_local_copy(sky_db, s3_db, ids, template):
    sql = template.format(**ids)
    want = sky_db.sql(sql)
    got = s3_db.sql(sql)
    assert got.num_rows == want.num_rows
    assert_same_rows(got, want, ordered=" order by " in sql.lower())
    assert got.column_names == want.column_names


def test_statements_name_the_store(s3_db, ids):
    """The plan reads the partition files at the URL, not any local copy."""
    p = s3_db.plan(f"SELECT * FROM Object WHERE objectId = {ids['oid']}")
    single = p.single_sql()
    assert f"'{URL}/Object/" in single and "Npix=" in single


def test_id_lookup_uses_the_director_index_read_from_the_store(s3_db, ids):
    snap = s3_db._current()
    director = snap.meta.table("Object")
    index = s3_db._index(snap, director)
    assert index is not None and len(index.keys) == 6000
    p = s3_db.plan(f"SELECT * FROM Object WHERE objectId = {ids['oid']}")
    assert len(p.chosen["object"]) == 1  # one partition of many, from the index
    assert p.considered > 1


def test_split_execution_over_the_store(s3, s3_catalog, sky_db, ids):
    """One fragment per partition, then the merge: the executor's split path."""
    with skyshard.open(s3_catalog, storage_options=s3, fragment_partitions=1) as db:
        for template in (QUERIES[6],):
            sql = template.format(**ids)
            assert_same_rows(db.sql(sql), sky_db.sql(sql), ordered=" order by " in sql.lower())


# --- Dask: shared storage on object storage ------------------------------------------------


@pytest.fixture(scope="module")
def s3_dask_db(s3, s3_catalog):
    pytest.importorskip("distributed")
    db = skyshard.open(s3_catalog, storage_options=s3, workers=2)
    yield db
    db.close()


def test_dask_workers_read_the_store(sky_db, s3_dask_db, ids):
    assert len(s3_dask_db.executor.workers()) == 2
    for template in QUERIES:
        sql = template.format(**ids)
        got = s3_dask_db.sql(sql)
        assert_same_rows(got, sky_db.sql(sql), ordered=" order by " in sql.lower())


def test_dask_worker_engines_are_sandboxed_too(s3_dask_db):
    """A statement sent straight to a worker's engine cannot read outside the catalog."""
    from skyshard.dispatch.dask_executor import QueryFailed, run_batch

    ex = s3_dask_db.executor
    assert "endpoint_url" not in repr(ex.spec)  # options (credentials) never printed
    for outside in ("SELECT * FROM read_parquet('s3://other/private.parquet')",
                    "SELECT * FROM read_csv('/etc/passwd')"):
        got = ex.client.submit(run_batch, ex.spec, (outside,), pure=False).result(timeout=60)
        assert isinstance(got, QueryFailed), got
        assert isinstance(got.error, ForbiddenQueryError)


def test_replicas_placement_is_refused_for_a_url(s3, s3_catalog):
    with pytest.raises(UserError, match="placement='shared'"):
        skyshard.open(s3_catalog, storage_options=s3, workers=2, placement="replicas")


# --- the sandbox -------------------------------------------------------------------------


@pytest.mark.parametrize("outside", [
    "SELECT * FROM read_parquet('s3://other/private.parquet')",
    "SELECT * FROM read_parquet('s3a://other/private.parquet')",
    "SELECT * FROM read_parquet('s3://sky/surveys/catalog-private/x.parquet')",
    f"SELECT * FROM read_parquet('{URL}/../catalog-private/x.parquet')",
    "SELECT * FROM read_parquet('s3://sky/**/*.parquet')",
    "SELECT * FROM read_csv('/etc/passwd')",
])
def test_sandbox_refuses_reading_outside_the_catalog(s3_db, outside):
    with pytest.raises(ForbiddenQueryError):
        s3_db.engine.query(outside)


def test_sandbox_still_reads_inside_the_catalog(s3_db):
    """The refusals above are not a store that refuses everything."""
    got = s3_db.engine.query(f"SELECT COUNT(*) AS n FROM read_parquet('{URL}/Filter/Filter.parquet')")
    assert got.column("n").to_pylist() == [6]


# --- errors ------------------------------------------------------------------------------


def test_missing_catalog_is_a_catalog_error_naming_the_url(s3, s3_catalog):
    with pytest.raises(CatalogError, match="s3://sky/surveys/nothing: not a skyshard catalog"):
        skyshard.open("s3://sky/surveys/nothing", storage_options=s3)


def test_missing_bucket_is_a_catalog_error_naming_it(s3, s3_catalog):
    with pytest.raises(CatalogError, match="s3://no-such-bucket/catalog: .*bucket does not exist"):
        skyshard.open("s3://no-such-bucket/catalog", storage_options=s3)


@pytest.fixture
def authenticating(s3, monkeypatch):
    """The server checks credentials (moto's IAM) from now on; a user allowed to read S3,
    created before that, is returned as storage options."""
    import boto3
    from moto import settings

    iam = boto3.client("iam", region_name="us-east-1", endpoint_url=s3["endpoint_url"],
                       aws_access_key_id="testing", aws_secret_access_key="testing")
    name = f"reader{id(monkeypatch)}"
    iam.create_user(UserName=name)
    iam.put_user_policy(UserName=name, PolicyName="read", PolicyDocument=(
        '{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", '
        '"Action": "s3:*", "Resource": "*"}]}'))
    key = iam.create_access_key(UserName=name)["AccessKey"]
    monkeypatch.setattr(settings, "INITIAL_NO_AUTH_ACTION_COUNT", 0)
    return {**s3, "key": key["AccessKeyId"], "secret": key["SecretAccessKey"]}


def test_bad_credentials_are_an_external_error_naming_the_url(s3, s3_catalog, authenticating):
    with skyshard.open(s3_catalog, storage_options=authenticating) as db:
        assert db.sql("SELECT COUNT(*) AS n FROM Filter").column("n").to_pylist() == [6]
    bad = {**s3, "key": "AKIAWRONGWRONGWRONG0", "secret": "wrong"}
    with pytest.raises(ExternalError, match=f"{URL}/skyshard.json: cannot read: .*") as err:
        skyshard.open(s3_catalog, storage_options=bad)
    assert "secret" not in str(err.value) and "wrong" not in str(err.value).replace(
        "WRONG", "")


@pytest.mark.slow  # the S3 client retries a refused connection for ~6 s
def test_unreachable_store_is_an_external_error_naming_the_url(request):
    if "slow" not in (request.config.getoption("-m") or ""):
        pytest.skip("slow: run with -m slow")
    options = {"endpoint_url": "http://127.0.0.1:1", "key": "k", "secret": "s"}
    with pytest.raises(ExternalError, match="s3://sky/catalog/skyshard.json: cannot read: "
                                            ".*Could not connect"):
        skyshard.open("s3://sky/catalog", storage_options=options)


def test_store_failing_mid_query_is_an_external_error(s3, s3_catalog):
    """A partition file gone from the store (moved away behind the catalog's back) fails
    the query with ExternalError: never a partial answer, never a raw DuckDB error."""
    fs = remote.filesystem("s3", s3)
    victim = next(f for f in fs.find("sky/surveys/catalog/Object/Object/dataset")
                  if "Npix=" in f)
    with skyshard.open(s3_catalog, storage_options=s3) as db:
        fs.mv(victim, victim + ".away")
        try:
            db.engine.query("SELECT 1")  # the engine is fine
            with pytest.raises(ExternalError, match="cannot read the catalog's files"):
                db.sql("SELECT COUNT(*) AS n, AVG(gMag) FROM Object")
        finally:
            fs.mv(victim + ".away", victim)


def test_storage_options_for_a_local_path_are_refused(sky_root):
    with pytest.raises(UserError, match="storage_options apply to a catalog URL"):
        skyshard.open(sky_root, storage_options={"anon": True})


# --- command line and server -------------------------------------------------------------


def _cli_options(s3) -> list[str]:
    return [f"--storage-option={k}={v}" for k, v in s3.items()]


def test_cli_sql_and_tables_on_a_url(s3, s3_catalog, sky_db, capsys):
    sql = "SELECT COUNT(*) AS n FROM Object WHERE qserv_areaspec_circle(45, 10, 0.7)"
    assert main(["sql", "--catalog", s3_catalog, *_cli_options(s3), "--format", "csv", sql]) == 0
    out = capsys.readouterr().out.split()
    assert out[0].strip('"') == "n" and int(out[1]) == sky_db.sql(sql)[0][0].as_py() > 0
    assert main(["tables", s3_catalog, *_cli_options(s3)]) == 0
    assert "Object: director, 6,000 rows" in capsys.readouterr().out


def test_cli_upload_copies_what_is_missing(s3, s3_catalog, sky_root, capsys):
    """Uploading the catalog again copies skyshard.json alone: the data files are there
    with their sizes (the fixture uploaded them all)."""
    assert main(["upload", str(sky_root), s3_catalog, *_cli_options(s3)]) == 0
    assert capsys.readouterr().out.strip().endswith(f"1 file(s) copied to {s3_catalog}")


def test_upload_refuses_a_folder_that_is_not_a_catalog(s3, tmp_path):
    with pytest.raises(CatalogError, match="not a skyshard catalog"):
        remote.upload(tmp_path, "s3://sky/nothing-here", s3)


def test_cli_errors_are_one_line(s3, s3_catalog, capsys):
    assert main(["sql", "--catalog", "s3://sky/surveys/nothing", *_cli_options(s3),
                 "SELECT 1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: s3://sky/surveys/nothing: not a skyshard catalog")
    assert "Traceback" not in err
    assert main(["sql", "--catalog", s3_catalog, "--storage-option", "novalue",
                 "SELECT 1"]) == 2
    assert "KEY=VALUE" in capsys.readouterr().err


def test_serve_a_url_with_credentials_from_the_environment(s3, s3_catalog, sky_db, tmp_path,
                                                           monkeypatch):
    """``skyshard serve --catalog s3://...``: the AWS_* variables are enough."""
    pymysql = pytest.importorskip("pymysql")
    import s3fs

    from skyshard.service import config
    from skyshard.service.server import Server

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3["key"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3["secret"])
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3["endpoint_url"])
    s3fs.S3FileSystem.clear_instance_cache()
    cfg = config.load(None, catalog=s3_catalog, mysql_port=0, http_port=0,
                      users=["alice:secret"], results_dir=tmp_path)
    assert cfg.catalog == s3_catalog
    srv = Server(cfg).start()
    try:
        conn = pymysql.connect(host="127.0.0.1", port=srv.mysql_port, user="alice",
                               password="secret", connect_timeout=5)
        sql = "SELECT kind, COUNT(*) AS n FROM Object GROUP BY kind ORDER BY kind"
        with conn.cursor() as cur:
            cur.execute(sql)
            rows = cur.fetchall()
        conn.close()
        assert [tuple(r) for r in rows] == [tuple(r.values()) for r in sky_db.sql(sql).to_pylist()]
    finally:
        srv.stop()
        s3fs.S3FileSystem.clear_instance_cache()


# --- paths -------------------------------------------------------------------------------


def test_remote_paths_join_like_pathlib():
    root = remote.catalog_root("s3://Bucket/a//b/", {"anon": True})
    assert isinstance(root, RemotePath) and str(root) == "s3://Bucket/a/b"
    assert str(root / "T" / "dataset") == "s3://Bucket/a/b/T/dataset"
    assert (root / "T").parent == root and root.name == "b"
    assert (root / "T").storage_options == {"anon": True}
    assert "anon" not in repr(root)
    assert remote.catalog_root("S3://bucket/x").url == "s3://bucket/x"


@pytest.mark.parametrize("bad", ["s3://bucket/../other", "s3://", "s3:///"])
def test_remote_paths_refuse_escapes_and_empty_names(bad):
    with pytest.raises(UserError):
        remote.catalog_root(bad)


def test_remote_paths_refuse_joining_absolute_paths():
    with pytest.raises(UserError):
        remote.catalog_root("s3://bucket/x") / "/etc"


def test_file_urls_are_local_paths(sky_root):
    assert remote.catalog_root(f"file://{sky_root}") == sky_root


def test_unknown_protocol_is_a_user_error():
    with pytest.raises(UserError, match="nosuchproto"):
        skyshard.open("nosuchproto://bucket/catalog")
