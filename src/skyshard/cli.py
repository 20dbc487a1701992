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
@click.argument("query")
def sql(catalog_dir: str, fmt: str, explain: bool, query: str) -> None:
    """Run one SELECT on a catalog."""
    import skyshard
    from skyshard.output import write

    db = skyshard.open(catalog_dir)
    if explain:
        click.echo(db.explain(query))
        return
    write(db.sql(query), fmt)


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


if __name__ == "__main__":
    sys.exit(main())
