"""The ``skyshard`` command.

    skyshard demo [--catalog DIR]
    skyshard ingest CATALOG_DIR TABLE FILE... [--ra COL --dec COL --key COL]
                    [--director TABLE --director-key COL] [--replicated] [--schema FILE]
    skyshard sql --catalog CATALOG_DIR "SELECT ..." [--format table|csv|json|parquet]
    skyshard tables CATALOG_DIR

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


@cli.command()
@click.argument("catalog_dir", type=click.Path(file_okay=False))
@click.argument("table")
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--ra", help="right ascension column (degrees)")
@click.option("--dec", help="declination column (degrees)")
@click.option("--key", help="unique key column of a director table")
@click.option("--director", help="director table of a child table")
@click.option("--director-key", help="column of a child table holding its director's key")
@click.option("--replicated", is_flag=True, help="a small table copied whole, joinable with anything")
@click.option("--schema", "schema_file", type=click.Path(dir_okay=False, exists=True),
              help="MySQL CREATE TABLE file giving column names and types")
@click.option("--max-rows-per-partition", type=int, default=None,
              help="split partitions above this many rows (default 1,000,000)")
@click.option("--margin-arcsec", type=float, default=None, help="margin width (default 60)")
@click.option("--allow-duplicate-keys", is_flag=True, help="accept repeated director keys")
def ingest(catalog_dir, table, files, ra, dec, key, director, director_key, replicated,
           schema_file, max_rows_per_partition, margin_arcsec, allow_duplicate_keys) -> None:
    """Load FILES (CSV/TSV, mysqldump text, Parquet, FITS, VOTable) into TABLE."""
    import skyshard

    kwargs = {}
    if max_rows_per_partition is not None:
        kwargs["max_rows_per_partition"] = max_rows_per_partition
    if margin_arcsec is not None:
        kwargs["margin_arcsec"] = margin_arcsec
    opts = skyshard.IngestOptions(allow_duplicate_keys=allow_duplicate_keys, **kwargs)
    info = skyshard.ingest(catalog_dir, table, list(files), ra=ra, dec=dec, key=key,
                           director=director, director_key=director_key, replicated=replicated,
                           schema=schema_file, options=opts)
    where = f"{len(info.partitions)} partitions" if info.is_partitioned else "stored whole"
    click.echo(f"{info.name}: {info.rows:,} rows ({info.kind.value}, {where})")


@cli.command()
@click.option("--catalog", "catalog_dir", required=True, type=click.Path(file_okay=False, exists=True))
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json", "parquet"]),
              default="table", show_default=True)
@click.option("--explain", is_flag=True, help="print the plan instead of running the query")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="run on a local Dask cluster of N worker processes")
@click.option("--scheduler", default=None,
              help="run on the Dask cluster at this scheduler address (tcp://HOST:8786)")
@click.option("--adql", is_flag=True, help="the query is ADQL, not MySQL/Qserv")
@click.argument("query")
def sql(catalog_dir: str, fmt: str, explain: bool, workers: int | None, scheduler: str | None,
        adql: bool, query: str) -> None:
    """Run one SELECT on a catalog."""
    import skyshard
    from skyshard.output import write

    if explain:
        click.echo(skyshard.open(catalog_dir).explain(query))
        return
    with skyshard.open(catalog_dir, workers=workers, scheduler=scheduler) as db:
        write(db.sql(query, dialect="adql" if adql else "qserv"), fmt)


@cli.command()
@click.argument("catalog_dir", type=click.Path(file_okay=False, exists=True))
def tables(catalog_dir: str) -> None:
    """List a catalog's tables with their roles and sizes."""
    import skyshard

    db = skyshard.open(catalog_dir)
    for t in db.tables.values():
        extra = f", director {t.director} by {t.director_key}" if t.director else ""
        parts = f", {len(t.partitions)} partitions" if t.is_partitioned else ""
        click.echo(f"{t.name}: {t.kind.value}, {t.rows:,} rows{parts}{extra}")


@cli.command()
@click.option("--catalog", "catalog_dir", type=click.Path(file_okay=False, exists=True),
              help="catalog to serve (or catalog = ... in the config file)")
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
@click.option("--results-dir", type=click.Path(file_okay=False),
              help="where large asynchronous results are written [a temporary folder]")
def serve(catalog_dir, mysql_port, http_port, host, config_file, users, tokens,
          allow_anonymous, results_dir) -> None:
    """Serve a catalog over the MySQL protocol and HTTP, as Qserv does."""
    import logging

    from skyshard.service import config
    from skyshard.service.server import Server

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    cfg = config.load(config_file, catalog=catalog_dir, host=host, mysql_port=mysql_port,
                      http_port=http_port, users=list(users), tokens=list(tokens),
                      allow_anonymous=allow_anonymous, results_dir=results_dir)
    Server(cfg).run()


@cli.command()
@click.argument("case_dir", required=False, type=click.Path(file_okay=False, exists=True))
@click.option("--all", "all_cases", is_flag=True, help="run every case of --cases (case01..case04)")
@click.option("--cases", "cases_dir", type=click.Path(file_okay=False),
              help="folder of Qserv cases (default $SKYSHARD_QSERV_TESTDATA, "
                   "else ../shared/testdata/qserv beside the repository)")
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


if __name__ == "__main__":
    sys.exit(main())
