"""The ``skyshard`` command.

    skyshard demo [--catalog DIR]
    skyshard ingest CATALOG_DIR TABLE FILE... [--ra COL --dec COL --key COL]
                    [--director TABLE --director-key COL] [--replicated] [--schema FILE]
                    [--append]
    skyshard ingest begin|add|commit|publish|abort|status|gc ...   (transactions)
    skyshard sql --catalog CATALOG_DIR "SELECT ..." [--format table|csv|json|parquet]
    skyshard tables CATALOG_DIR
    skyshard upload CATALOG_DIR s3://BUCKET/PREFIX   (then: sql/serve --catalog s3://...)
    skyshard replicas place|check|repair|rebalance CATALOG_DIR --scheduler ADDR
    skyshard replicas drain CATALOG_DIR WORKER... --scheduler ADDR   (shared-nothing)

Errors that are the user's to fix print one line, ``error: ...``, and exit with status 2;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import sys

import click

from skyshard.errors import SkyshardError, UserError


def main(argv: list[str] | None = None) -> int:
    try:
        cli.main(args=argv, prog_name="skyshard", standalone_mode=False)
        return 0
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        return 130
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except UserError as exc:
        click.echo(f"error: {exc}", err=True)
        return 2
    except SkyshardError as exc:
        click.echo(f"error ({exc.fault}): {exc}", err=True)
        return 1


@click.group()
@click.version_option(package_name="skyshard")
def cli() -> None:
    """Spatially sharded SQL over HATS catalogs."""


@cli.command()
@click.option("--catalog", "catalog_dir", type=click.Path(file_okay=False),
              help="keep the demo catalog in this (new) folder")
def demo(catalog_dir: str | None) -> None:
    """Build a catalog from Gaia DR3 stars and run example queries."""
    from skyshard import demo as demo_module

    demo_module.run(catalog_dir)


class _IngestGroup(click.Group):
    """``skyshard ingest CATALOG TABLE FILE...`` stays the one-shot load (``load``); a
    first argument naming a subcommand selects that subcommand instead."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] != "--help":
            args = ["load", *args]
        return super().parse_args(ctx, args)


def _role_options(f):
    """Options naming a table's role and tiling (one-shot load and ``begin``)."""
    for option in reversed([
        click.option("--ra", help="right ascension column (degrees)"),
        click.option("--dec", help="declination column (degrees)"),
        click.option("--key", help="unique key column of a director table"),
        click.option("--director", help="director table of a child table"),
        click.option("--director-key", help="column of a child table holding its director's key"),
        click.option("--replicated", is_flag=True,
                     help="a small table copied whole, joinable with anything"),
        click.option("--schema", "schema_file", type=click.Path(dir_okay=False, exists=True),
                     help="MySQL CREATE TABLE file giving column names and types"),
        click.option("--max-rows-per-partition", type=int, default=None,
                     help="split partitions above this many rows (default 1,000,000)"),
        click.option("--margin-arcsec", type=float, default=None,
                     help="margin width (default 60)"),
        click.option("--allow-duplicate-keys", is_flag=True,
                     help="accept repeated director keys"),
        click.option("--memory-limit", default=None,
                     help="memory for the commit's sorts and checks, e.g. 4GB (default 1GB)"),
    ]):
        f = option(f)
    return f


def _ingest_options(max_rows_per_partition, margin_arcsec, allow_duplicate_keys,
                    memory_limit=None):
    import skyshard

    kwargs = {}
    if memory_limit is not None:
        kwargs["memory_limit"] = memory_limit
    if max_rows_per_partition is not None:
        kwargs["max_rows_per_partition"] = max_rows_per_partition
    if margin_arcsec is not None:
        kwargs["margin_arcsec"] = margin_arcsec
    return skyshard.IngestOptions(allow_duplicate_keys=allow_duplicate_keys, **kwargs)


@cli.group(cls=_IngestGroup)
def ingest() -> None:
    """Load files into tables: in one go (skyshard ingest CATALOG TABLE FILE...), or as
    a transaction: begin, add (any number of times, in parallel), commit or abort.

    \b
      TXN=$(skyshard ingest begin cat Object --ra ra --dec decl --key objectId)
      skyshard ingest add cat $TXN part1.parquet https://host/part2.csv
      skyshard ingest commit cat $TXN          # or: abort, status, commit --no-publish + publish
    """


@ingest.command("load")
@click.argument("catalog_dir", type=click.Path(file_okay=False))
@click.argument("table")
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False))
@_role_options
@click.option("--append", is_flag=True, help="add the rows to TABLE if it exists")
def ingest_load(catalog_dir, table, files, ra, dec, key, director, director_key, replicated,
                schema_file, max_rows_per_partition, margin_arcsec, allow_duplicate_keys,
                memory_limit, append) -> None:
    """Load FILES (CSV/TSV, mysqldump text, Parquet, FITS, VOTable; paths or URLs) into
    TABLE in one transaction."""
    import skyshard

    opts = _ingest_options(max_rows_per_partition, margin_arcsec, allow_duplicate_keys,
                           memory_limit)
    info = skyshard.ingest(catalog_dir, table, list(files), ra=ra, dec=dec, key=key,
                           director=director, director_key=director_key, replicated=replicated,
                           schema=schema_file, options=opts, append=append)
    where = f"{len(info.partitions)} partitions" if info.is_partitioned else "stored whole"
    click.echo(f"{info.name}: {info.rows:,} rows ({info.kind.value}, {where})")


@ingest.command("begin")
@click.argument("catalog_dir", type=click.Path(file_okay=False))
@click.argument("table")
@_role_options
def ingest_begin(catalog_dir, table, ra, dec, key, director, director_key, replicated,
                 schema_file, max_rows_per_partition, margin_arcsec,
                 allow_duplicate_keys, memory_limit) -> None:
    """Start a transaction into TABLE (created at commit if new: give its role); print
    its id."""
    from skyshard.storage import transactions

    opts = _ingest_options(max_rows_per_partition, margin_arcsec, allow_duplicate_keys,
                           memory_limit)
    st = transactions.begin(catalog_dir, table, ra=ra, dec=dec, key=key, director=director,
                            director_key=director_key, replicated=replicated,
                            schema=schema_file, options=opts)
    click.echo(st.id)


@ingest.command("add")
@click.argument("catalog_dir", type=click.Path(file_okay=False, exists=True))
@click.argument("transaction")
@click.argument("sources", nargs=-1, required=True)
def ingest_add(catalog_dir, transaction, sources) -> None:
    """Read, check and spool SOURCES (paths or http/https/file URLs) into TRANSACTION."""
    from skyshard.storage import transactions

    for c in transactions.add(catalog_dir, transaction, list(sources)):
        click.echo(f"contribution {c.number}: {c.source}: {c.rows:,} rows, {c.bytes:,} bytes")
    click.echo(transactions.status(catalog_dir, transaction).summary())


@ingest.command("commit")
@click.argument("catalog_dir", type=click.Path(file_okay=False, exists=True))
@click.argument("transaction")
@click.option("--no-publish", is_flag=True,
              help="build only (PREPARED); publish later, with other transactions at once")
def ingest_commit(catalog_dir, transaction, no_publish) -> None:
    """Build the table's new version from TRANSACTION and publish it atomically (run it
    again to resume an interrupted commit)."""
    from skyshard.storage import transactions

    st = transactions.commit(catalog_dir, transaction, publish=not no_publish)
    click.echo(st.summary())


@ingest.command("publish")
@click.argument("catalog_dir", type=click.Path(file_okay=False, exists=True))
@click.argument("transactions_", metavar="TRANSACTION...", nargs=-1, required=True)
def ingest_publish(catalog_dir, transactions_) -> None:
    """Publish PREPARED transactions together, in one atomic step."""
    from skyshard.storage import transactions

    for st in transactions.publish(catalog_dir, list(transactions_)):
        click.echo(st.summary())


@ingest.command("abort")
@click.argument("catalog_dir", type=click.Path(file_okay=False, exists=True))
@click.argument("transaction")
def ingest_abort(catalog_dir, transaction) -> None:
    """Remove TRANSACTION and everything it wrote."""
    from skyshard.storage import transactions

    transactions.abort(catalog_dir, transaction)
    click.echo(f"transaction {transaction} aborted")


@ingest.command("status")
@click.argument("catalog_dir", type=click.Path(file_okay=False, exists=True))
@click.argument("transaction", required=False)
@click.option("--json", "as_json", is_flag=True, help="print JSON")
def ingest_status(catalog_dir, transaction, as_json) -> None:
    """Rows, bytes, contributions and state of TRANSACTION (default: of every open one)."""
    import json

    from skyshard.storage import transactions

    found = ([transactions.status(catalog_dir, transaction)] if transaction
             else transactions.list_transactions(catalog_dir))
    if as_json:
        click.echo(json.dumps([s.to_json() for s in found], indent=1))
        return
    for st in found:
        click.echo(st.summary())
    if not found:
        click.echo("no open transactions")


@ingest.command("gc")
@click.argument("catalog_dir", type=click.Path(file_okay=False, exists=True))
@click.option("--grace", type=click.FloatRange(min=0), default=None,
              help="remove table versions superseded more than this many seconds ago "
                   "(default 3600)")
def ingest_gc(catalog_dir, grace) -> None:
    """Clean what killed ingests left and remove superseded table versions."""
    from skyshard.storage import transactions

    removed = transactions.collect_garbage(catalog_dir, grace_s=grace)
    for path in removed:
        click.echo(f"removed {path}")
    click.echo(f"{len(removed)} item(s) removed")


class _Catalog(click.ParamType):
    """A catalog folder that exists, or a URL (``s3://bucket/catalog``) taken as is."""

    name = "catalog"

    def convert(self, value, param, ctx):
        from skyshard.storage.remote import is_url

        if is_url(value):
            return value
        return click.Path(file_okay=False, exists=True).convert(value, param, ctx)


_storage_option = click.option(
    "--storage-option", "storage_options", multiple=True, metavar="KEY=VALUE",
    help="for a catalog URL: a file-system option (endpoint_url=http://HOST:9000, "
         "anon=true; VALUE read as JSON when it parses); repeatable. Default: the "
         "AWS_* environment variables")


def _options(pairs: tuple[str, ...]) -> dict | None:
    from skyshard.storage.remote import parse_option

    return dict(parse_option(p) for p in pairs) or None


@cli.command()
@click.option("--catalog", "catalog_dir", required=True, type=_Catalog())
@_storage_option
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json", "parquet"]),
              default="table", show_default=True)
@click.option("--explain", is_flag=True, help="print the plan instead of running the query")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="run on a local Dask cluster of N worker processes")
@click.option("--scheduler", default=None,
              help="run on the Dask cluster at this scheduler address (tcp://HOST:8786)")
@click.option("--adql", is_flag=True, help="the query is ADQL, not MySQL/Qserv")
@click.argument("query")
def sql(catalog_dir: str, storage_options: tuple[str, ...], fmt: str, explain: bool,
        workers: int | None, scheduler: str | None, adql: bool, query: str) -> None:
    """Run one SELECT on a catalog (a folder, or a URL such as s3://bucket/catalog)."""
    import skyshard
    from skyshard.output import write

    options = _options(storage_options)
    if explain:
        click.echo(skyshard.open(catalog_dir, storage_options=options).explain(query))
        return
    with skyshard.open(catalog_dir, workers=workers, scheduler=scheduler,
                       storage_options=options) as db:
        write(db.sql(query, dialect="adql" if adql else "qserv"), fmt)


@cli.command()
@click.argument("catalog_dir", type=_Catalog())
@_storage_option
def tables(catalog_dir: str, storage_options: tuple[str, ...]) -> None:
    """List a catalog's tables with their roles and sizes."""
    import skyshard

    db = skyshard.open(catalog_dir, storage_options=_options(storage_options))
    for t in db.tables.values():
        extra = f", director {t.director} by {t.director_key}" if t.director else ""
        parts = f", {len(t.partitions)} partitions" if t.is_partitioned else ""
        click.echo(f"{t.name}: {t.kind.value}, {t.rows:,} rows{parts}{extra}")


@cli.command()
@click.argument("catalog_dir", type=click.Path(file_okay=False, exists=True))
@click.argument("url")
@_storage_option
def upload(catalog_dir: str, url: str, storage_options: tuple[str, ...]) -> None:
    """Copy a local catalog to object storage (s3://bucket/prefix), skyshard.json last."""
    from skyshard.storage.remote import upload as upload_catalog

    n = upload_catalog(catalog_dir, url, _options(storage_options))
    click.echo(f"{catalog_dir}: {n} file(s) copied to {url}")


@cli.command()
@click.option("--catalog", "catalog_dir", type=_Catalog(),
              help="catalog to serve, a folder or a URL (or catalog = ... in the config "
                   "file); a URL's credentials come from the AWS_* environment variables")
@click.option("--mysql-port", type=int, default=None, help="MySQL protocol port [4040]")
@click.option("--http-port", type=int, default=None, help="HTTP port [8080]")
@click.option("--host", default=None, help="address to listen on [127.0.0.1]")
@click.option("--config", "config_file", type=click.Path(dir_okay=False, exists=True),
              help="TOML file: users, tokens, limits, ports")
@click.option("--user", "users", multiple=True, metavar="NAME:PASSWORD",
              help="a MySQL user (also HTTP Basic); repeatable")
@click.option("--token", "tokens", multiple=True, metavar="[NAME:]TOKEN",
              help="an HTTP bearer token; repeatable")
@click.option("--allow-anonymous", is_flag=True, help="serve without authentication")
@click.option("--anonymous-tap", is_flag=True,
              help="serve TAP (/tap) without authentication, the rest with it")
@click.option("--results-dir", type=click.Path(file_okay=False),
              help="where large asynchronous results are written [a temporary folder]")
@click.option("--workers", type=int, default=None,
              help="run queries on a local Dask cluster of N worker processes")
@click.option("--scheduler", default=None, metavar="tcp://HOST:PORT",
              help="run queries on the existing Dask cluster of this scheduler")
@click.option("--placement", type=click.Choice(["shared", "replicas"]), default=None,
              help="with a cluster: the workers read the catalog itself [shared], or "
                   "copies of its partitions on their own disks [replicas]")
@click.option("--replication", type=int, default=None,
              help="with --placement replicas: copies of each partition [2]")
@click.option("--local-interactive/--no-local-interactive", default=None,
              help="with a cluster: run interactive queries (few partitions) in this "
                   "process [yes for shared placement, no for replicas]; scans always "
                   "run on the cluster")
def serve(catalog_dir, mysql_port, http_port, host, config_file, users, tokens,
          allow_anonymous, anonymous_tap, results_dir, workers, scheduler, placement,
          replication, local_interactive) -> None:
    """Serve a catalog over the MySQL protocol and HTTP (with IVOA TAP at /tap)."""
    import logging

    from skyshard.service import config
    from skyshard.service.server import Server

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    cfg = config.load(config_file, catalog=catalog_dir, host=host, mysql_port=mysql_port,
                      http_port=http_port, users=list(users), tokens=list(tokens),
                      allow_anonymous=allow_anonymous, anonymous_tap=anonymous_tap,
                      results_dir=results_dir,
                      cluster={"workers": workers, "scheduler": scheduler,
                               "placement": placement, "replication": replication,
                               "local_interactive": local_interactive})
    Server(cfg).run()


@cli.command()
@click.argument("case_dir", required=False, type=click.Path(file_okay=False, exists=True))
@click.option("--all", "all_cases", is_flag=True, help="run every case of --cases (case01..case04)")
@click.option("--cases", "cases_dir", type=click.Path(file_okay=False),
              help="folder of Qserv cases (default $SKYSHARD_QSERV_TESTDATA, "
                   "else tests/data/qserv in the source tree)")
@click.option("--catalog", "catalog_dir", type=click.Path(file_okay=False),
              help="keep the skyshard catalog(s) here (one sub-folder per case with --all)")
@click.option("--report", "report_file", type=click.Path(dir_okay=False),
              help="write the report here: Markdown, or JSON if the name ends in .json")
@click.option("--reference-socket", type=click.Path(),
              help="use the MariaDB server at this unix socket instead of starting one")
@click.option("--max-rows-per-partition", type=int, default=None,
              help="partition size of director tables (default 40)")
def itest(case_dir, all_cases, cases_dir, catalog_dir, report_file, reference_socket,
          max_rows_per_partition) -> None:
    """Run Qserv's integration-test queries on skyshard and on MariaDB; compare."""
    from pathlib import Path

    from skyshard.itest import case as itest_case
    from skyshard.itest import report, runner
    from skyshard.itest.reference import ReferenceServer

    if bool(case_dir) == all_cases:
        raise click.UsageError("give either CASE_DIR or --all")
    if all_cases:
        root = Path(cases_dir) if cases_dir else runner.default_cases_dir()
        cases = itest_case.load_cases(root)
    else:
        cases = [itest_case.load_case(case_dir)]
        root = Path(case_dir).resolve().parent
    settings = runner.Settings(max_rows_per_partition=max_rows_per_partition
                               or runner.DEFAULT_MAX_ROWS_PER_PARTITION)
    expected = root / "expected" if (root / "expected").is_dir() else None
    with ReferenceServer(reference_socket) as reference:
        suite = runner.run_suite(cases, reference=reference, catalog_dir=catalog_dir,
                                 expected_dir=expected, settings=settings, echo=click.echo)
    for line in report.summary_lines(suite):
        click.echo(line)
    if report_file:
        target = "--all" if all_cases else cases[0].name
        report.write_report(suite, report_file, f"skyshard itest {target} --report {report_file}")
        click.echo(f"report written to {report_file}")


@cli.group()
def deploy() -> None:
    """Kubernetes: render manifests, the CRD and the operator (see docs/kubernetes.md)."""


@deploy.command("render")
@click.option("--name", default="skyshard", show_default=True,
              help="deployment name (the front end's Service)")
@click.option("--namespace", default="default", show_default=True)
@click.option("--workers", type=click.IntRange(min=1), required=True, help="Dask workers")
@click.option("--image", default=None, help="skyshard image [skyshard:VERSION]")
@click.option("--replication", type=click.IntRange(min=1), default=1, show_default=True,
              help="replication factor (recorded; shared storage has one copy)")
@click.option("--storage", default="pvc", show_default=True, metavar="pvc|s3://...",
              help="the catalog on a shared PVC, or copied from this S3 URL")
@click.option("--storage-size", default="10Gi", show_default=True, help="catalog PVC size")
@click.option("--storage-class", default=None, help="storage class of the PVCs")
@click.option("--access-mode", default="ReadWriteMany", show_default=True,
              help="catalog PVC access mode (ReadWriteOnce on a one-node cluster)")
@click.option("--s3-secret", default="skyshard-s3", show_default=True,
              help="Secret with AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (S3 mode)")
@click.option("--auth-secret", default="skyshard-auth", show_default=True,
              help="Secret whose key 'user' is NAME:PASSWORD")
@click.option("--database", default=None, help="database name clients USE")
@click.option("--network-policies/--no-network-policies", default=True, show_default=True)
def deploy_render(name, namespace, workers, image, replication, storage, storage_size,
                  storage_class, access_mode, s3_secret, auth_secret, database,
                  network_policies) -> None:
    """Print the manifests of a deployment, for kubectl apply -f - (no operator needed)."""
    from skyshard.deploy import spec as spec_module
    from skyshard.deploy.render import render, to_yaml

    if storage == "pvc":
        pvc: dict = {"size": storage_size, "accessMode": access_mode}
        if storage_class:
            pvc["storageClassName"] = storage_class
        store: dict = {"pvc": pvc}
    elif storage.startswith("s3://"):
        store = {"s3": {"url": storage, "secretRef": {"name": s3_secret}}}
    else:
        raise click.BadParameter("pvc or an s3:// URL", param_hint="--storage")
    doc: dict = {"workers": workers, "replicationFactor": replication, "storage": store,
                 "authSecretRef": {"name": auth_secret}, "networkPolicies": network_policies}
    if image:
        doc["image"] = image
    if database:
        doc["database"] = database
    try:
        spec = spec_module.from_dict(name, namespace, doc)
    except spec_module.SpecError as exc:
        raise click.UsageError(str(exc)) from exc
    click.echo(to_yaml(render(spec)), nl=False)


@deploy.command("loader")
@click.option("--name", default="skyshard", show_default=True, help="the deployment's name")
@click.option("--namespace", default="default", show_default=True)
@click.option("--image", default=None, help="skyshard image [skyshard:VERSION]")
@click.option("--tmp-size", default="10Gi", show_default=True,
              help="space for the input files copied in")
def deploy_loader(name: str, namespace: str, image: str | None, tmp_size: str) -> None:
    """Print a pod with the catalog volume mounted read-write: copy inputs into its /tmp
    (kubectl cp) and run skyshard ingest in it (kubectl exec)."""
    from skyshard.deploy import spec as spec_module
    from skyshard.deploy.render import to_yaml
    from skyshard.deploy.workloads import loader_pod

    doc: dict = {"authSecretRef": {"name": "unused"}}
    if image:
        doc["image"] = image
    try:
        spec = spec_module.from_dict(name, namespace, doc)
    except spec_module.SpecError as exc:
        raise click.UsageError(str(exc)) from exc
    click.echo(to_yaml([loader_pod(spec, tmp_size)]), nl=False)


@deploy.command("crd")
def deploy_crd() -> None:
    """Print the SkyShard CustomResourceDefinition."""
    from skyshard.deploy.crd import crd
    from skyshard.deploy.render import to_yaml

    click.echo(to_yaml([crd()]), nl=False)


@deploy.command("operator")
@click.option("--image", default=None, help="skyshard image with the deploy extra")
@click.option("--namespace", default=None, help="the operator's namespace [skyshard-system]")
def deploy_operator(image: str | None, namespace: str | None) -> None:
    """Print the operator's namespace, RBAC and Deployment."""
    from skyshard.deploy import install
    from skyshard.deploy.render import to_yaml

    objs = install.operator_manifests(image or install.DEFAULT_IMAGE,
                                      namespace or install.NAMESPACE)
    click.echo(to_yaml(objs), nl=False)


@deploy.command("fetch")
@click.argument("url")
@click.argument("dest", type=click.Path(file_okay=False))
def deploy_fetch(url: str, dest: str) -> None:
    """Copy a catalog from URL (s3://...) into DEST (the S3 mode's init container)."""
    from skyshard.deploy.fetch import fetch_catalog

    n = fetch_catalog(url, dest)
    click.echo(f"{url}: {n} file(s) copied to {dest}" if n else f"{dest}: already fetched")


# --- replicas: copies of a catalog on Dask workers' own disks ---------------------------------


def _cluster_options(f):
    """Which cluster holds the replicas: a scheduler, or local workers and their folder."""
    for option in reversed([
        click.option("--scheduler", default=None,
                     help="the Dask cluster at this scheduler address (tcp://HOST:8786)"),
        click.option("--workers", type=click.IntRange(min=1), default=None,
                     help="a local cluster of N workers (named 0..N-1) instead"),
        click.option("--replica-dir", type=click.Path(file_okay=False), default=None,
                     help="where the local workers keep their copies (one folder each)"),
        click.option("--expect-workers", type=click.IntRange(min=1), default=None,
                     help="first wait until exactly N workers are in the cluster (a scale "
                          "has finished)"),
        click.option("--wait", "wait_s", type=click.FloatRange(min=0), default=600.0,
                     show_default=True, help="seconds --expect-workers waits at most"),
    ]):
        f = option(f)
    return f


def _await_workers(client, count: int | None, wait_s: float) -> None:
    """Wait until the cluster has exactly ``count`` workers (None: do not wait)."""
    import time

    from skyshard.dispatch import replicas as rep
    from skyshard.errors import ExternalError

    if count is None:
        return
    deadline = time.monotonic() + wait_s
    while len(names := rep.named_workers(client)) != count:
        if time.monotonic() >= deadline:
            raise ExternalError(f"expected {count} Dask worker(s), the cluster has "
                                f"{len(names)} after {wait_s:g} s: "
                                f"{', '.join(sorted(names)) or 'none'}")
        time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))


def _replica_report(report, quiet: bool, what: str) -> None:
    from skyshard.errors import ExternalError

    click.echo(report.text(every_unit=not quiet))
    if not report.healthy:
        raise ExternalError(f"{what}: the replicas are not healthy (see above)")


@cli.group()
def replicas() -> None:
    """Shared-nothing placement: copies of a catalog on the Dask workers' own disks.

    Workers keep their copies below the directory in their Dask config
    skyshard.replicas.directory (DASK_SKYSHARD__REPLICAS__DIRECTORY=DIR) and need a
    fixed --name. The placement is recorded in CATALOG_DIR/replicas.json. Exit status 1
    when something is missing, corrupt or could not be copied.

    After workers join: rebalance. Before workers leave: drain them."""


def _quick_option(f):
    return click.option("--quick", is_flag=True,
                        help="trust existing copies of the right size (skip their "
                             "checksums)")(f)


def _grace_option(f):
    return click.option(
        "--grace", "grace_s", type=click.FloatRange(min=0), default=5.0, show_default=True,
        help="seconds between recording the new placement and removing the copies it no "
             "longer names (each worker's also waits for the queries it was running)")(f)


@replicas.command("place")
@click.argument("catalog_dir", type=click.Path(file_okay=False, exists=True))
@_cluster_options
@click.option("--replication", type=click.IntRange(min=1), default=None,
              help="copies of each partition [as recorded, else 2]")
@_quick_option
@click.option("--quiet", is_flag=True, help="print the summary only")
def replicas_place(catalog_dir, scheduler, workers, replica_dir, expect_workers, wait_s,
                   replication, quick, quiet) -> None:
    """Copy CATALOG_DIR onto the workers (only what they lack) and record where."""
    from skyshard.dispatch import replicas as rep

    with rep.connect(scheduler, workers=workers, replica_dir=replica_dir) as client:
        _await_workers(client, expect_workers, wait_s)
        report = rep.place(client, catalog_dir, replication=replication, checksum=not quick)
    _replica_report(report, quiet, "place")


@replicas.command("check")
@click.argument("catalog_dir", type=click.Path(file_okay=False, exists=True))
@_cluster_options
@click.option("--quiet", is_flag=True, help="print the summary only")
def replicas_check(catalog_dir, scheduler, workers, replica_dir, expect_workers, wait_s,
                   quiet) -> None:
    """Per partition: holders, verified copies (size + SHA-256), missing and corrupt."""
    from skyshard.dispatch import replicas as rep

    with rep.connect(scheduler, workers=workers, replica_dir=replica_dir) as client:
        _await_workers(client, expect_workers, wait_s)
        report = rep.check(client, catalog_dir)
    _replica_report(report, quiet, "check")


@replicas.command("repair")
@click.argument("catalog_dir", type=click.Path(file_okay=False, exists=True))
@_cluster_options
@click.option("--replication", type=click.IntRange(min=1), default=None,
              help="copies of each partition [as recorded]")
@click.option("--quiet", is_flag=True, help="print the summary only")
def replicas_repair(catalog_dir, scheduler, workers, replica_dir, expect_workers, wait_s,
                    replication, quiet) -> None:
    """Restore the replication factor from intact copies on other workers."""
    from skyshard.dispatch import replicas as rep

    with rep.connect(scheduler, workers=workers, replica_dir=replica_dir) as client:
        _await_workers(client, expect_workers, wait_s)
        report = rep.repair(client, catalog_dir, replication=replication)
    _replica_report(report, quiet, "repair")


@replicas.command("rebalance")
@click.argument("catalog_dir", type=click.Path(file_okay=False, exists=True))
@_cluster_options
@click.option("--replication", type=click.IntRange(min=1), default=None,
              help="copies of each partition [as recorded, else 2]")
@_grace_option
@_quick_option
@click.option("--quiet", is_flag=True, help="print the summary only")
def replicas_rebalance(catalog_dir, scheduler, workers, replica_dir, expect_workers, wait_s,
                       replication, grace_s, quick, quiet) -> None:
    """Place what is missing, then even the partitions out over every live worker.

    Moves the fewest copies (bytes per worker within 10 % of the mean where partition
    sizes allow): new copies first, then the record, then the surplus copies go.
    Queries keep running throughout. Run it after workers join."""
    from skyshard.dispatch import replicas as rep

    with rep.connect(scheduler, workers=workers, replica_dir=replica_dir) as client:
        _await_workers(client, expect_workers, wait_s)
        report = rep.rebalance(client, catalog_dir, replication=replication,
                               checksum=not quick, grace_s=grace_s)
    _replica_report(report, quiet, "rebalance")


@replicas.command("drain")
@click.argument("catalog_dir", type=click.Path(file_okay=False, exists=True))
@click.argument("names", metavar="WORKER...", nargs=-1, required=True)
@_cluster_options
@click.option("--replication", type=click.IntRange(min=1), default=None,
              help="copies of each partition [as recorded]")
@_grace_option
@_quick_option
@click.option("--quiet", is_flag=True, help="print the summary only")
def replicas_drain(catalog_dir, names, scheduler, workers, replica_dir, expect_workers, wait_s,
                   replication, grace_s, quick, quiet) -> None:
    """Move every copy off the named workers (Dask worker names, or NAME,NAME) onto the
    others, keeping the replication factor; then they can be removed.

    Refused, changing nothing, when fewer workers would remain than the replication
    factor. Exit status 0 once no drained worker holds anything the placement names."""
    from skyshard.dispatch import replicas as rep

    drained = [n for arg in names for n in arg.split(",") if n.strip()]
    with rep.connect(scheduler, workers=workers, replica_dir=replica_dir) as client:
        _await_workers(client, expect_workers, wait_s)
        report = rep.drain(client, catalog_dir, drained, replication=replication,
                           checksum=not quick, grace_s=grace_s)
    _replica_report(report, quiet, "drain")


if __name__ == "__main__":
    sys.exit(main())
