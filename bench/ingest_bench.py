#!/usr/bin/env python3
"""Ingest benchmark: skyshard and hats-import side by side on the same Object Parquet.

    python bench/ingest_bench.py --objects 1000000 [--objects 10000000]
                                 [--workdir bench/data] [--max-rows-per-partition 200000]
                                 [--margin-arcsec 60] [--skip-hats] [--no-record]
                                 [--only SYSTEM ...]
                                 [--hats-python PYTHON]

For each size, on the input of ``bench/generate.py`` (generated if missing), three child
processes, one after the other:

- ``skyshard``: one transaction loading every file (director table: partitions, a 60"
  margin, the objectId director index), as ``skyshard ingest`` does;
- ``skyshard-append``: the first 90 % of the files, then the last 10 % as an increment
  into the existing table (timed alone: the cost of a daily load);
- ``hats-import``: the same files into a HATS collection with the same products (catalog
  with the same pixel threshold, a margin cache of the same width, an objectId index),
  on a dask LocalCluster of 2 workers x 1 thread (as hats-import is usually run here).

Reported: wall time, rows/s, and peak RSS of the whole process tree (psutil, sampled
every 0.1 s: dask workers included). A section is appended to ``bench/RESULTS.md``.

hats-import's index step refuses to run on Python 3.11 unless dask is 2025.3.x; with a
newer dask installed, give ``--hats-python`` of a virtual environment that has it::

    python -m venv --system-site-packages hats-venv
    hats-venv/bin/pip install hats-import "dask[complete]>=2025.3.0,<2025.4.0"
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
GB = 1 << 30


# --- children -------------------------------------------------------------------------------


def child_skyshard(files: list[Path], out: Path, result: Path, max_rows: int, margin: float,
                   more: list[Path] | None) -> None:
    import skyshard

    opts = skyshard.IngestOptions(max_rows_per_partition=max_rows, margin_arcsec=margin,
                                  progress=False)
    res: dict = {}
    if more is None:
        t0 = time.perf_counter()
        info = skyshard.ingest(out, "Object", files, ra="ra", dec="decl", key="objectId",
                               options=opts)
        res.update(seconds=time.perf_counter() - t0, rows=info.rows,
                   partitions=len(info.partitions))
    else:
        base = files
        t0 = time.perf_counter()
        info = skyshard.ingest(out, "Object", base, ra="ra", dec="decl", key="objectId",
                               options=opts)
        t1 = time.perf_counter()
        info2 = skyshard.ingest(out, "Object", more, options=opts, append=True)
        t2 = time.perf_counter()
        res.update(rewritten=_written_partitions(out, info2))
        skyshard_gc(out)  # the retired version out of the disk usage
        res.update(base_seconds=t1 - t0, base_rows=info.rows, seconds=t2 - t1,
                   rows=info2.rows - info.rows, total_rows=info2.rows,
                   partitions=len(info2.partitions), partitions_before=len(info.partitions),
                   version=info2.version)
    result.write_text(json.dumps(res))


def _written_partitions(catalog: Path, info) -> int:
    """Partition files of the current version written by the increment (not hard links
    to the previous version's files)."""
    files = (catalog / info.path / "dataset").glob("Norder=*/Dir=*/*.parquet")
    return sum(1 for f in files if f.stat().st_nlink == 1)


def skyshard_gc(catalog: Path) -> None:
    from skyshard.storage import transactions

    transactions.collect_garbage(catalog, grace_s=0)


def child_hats(files: list[Path], out: Path, result: Path, max_rows: int, margin: float,
               tmp: Path) -> None:
    import warnings

    warnings.filterwarnings("ignore")
    import hats_import.catalog.run_import as catalog_runner
    import hats_import.index.run_index as index_runner
    import hats_import.margin_cache.margin_cache as margin_runner
    from dask.distributed import Client
    from hats_import import CollectionArguments

    tmp.mkdir(parents=True, exist_ok=True)
    client = Client(n_workers=2, threads_per_worker=1, memory_limit="10GB",
                    local_directory=str(tmp), dashboard_address=None)
    try:
        t0 = time.perf_counter()
        args = CollectionArguments(output_artifact_name="object", output_path=str(out),
                                   progress_bar=False, tmp_dir=str(tmp), resume=False)
        args.catalog(input_file_list=[str(f) for f in files], file_reader="parquet",
                     ra_column="ra", dec_column="decl", catalog_type="object",
                     output_artifact_name="object", pixel_threshold=max_rows)
        catalog_runner.run(args.get_catalog_args(), client)
        t1 = time.perf_counter()
        args.add_margin(margin_threshold=margin, is_default=True)
        args.add_index(indexing_column="objectId", include_healpix_29=False)
        for m in args.get_margin_args():
            margin_runner.generate_margin_cache(m, client)
        t2 = time.perf_counter()
        for i in args.get_index_args():
            index_runner.run(i, client)
        args.to_collection_properties().to_properties_file(args.catalog_path)
        t3 = time.perf_counter()
    finally:
        client.close()
    import hats

    cat = hats.read_hats(out / "object")
    cat = getattr(cat, "main_catalog", cat)
    import dask
    import hats_import

    result.write_text(json.dumps({
        "versions": {"hats-import": hats_import.__version__, "hats": hats.__version__,
                     "dask": dask.__version__},
        "seconds": t3 - t0, "catalog_seconds": t1 - t0, "margin_seconds": t2 - t1,
        "index_seconds": t3 - t2, "rows": cat.catalog_info.total_rows,
        "partitions": len(cat.get_healpix_pixels())}))


# --- the parent ----------------------------------------------------------------------------


def evict(files: list[Path]) -> None:
    """Write every pending change to the disk (``sync``), then drop the input files from
    the page cache (``posix_fadvise(DONTNEED)``), so that every system starts with its
    input on the disk, as a large load does, and with no writes of an earlier step (the
    previous system's files, the split inputs of the append runs) still going to the
    disk beside it. Otherwise whichever runs first would find the input cached by the
    generator, or not, at random (some machines drop file pages nobody touched for a
    minute)."""
    os.sync()
    for f in files:
        fd = os.open(f, os.O_RDONLY)
        try:
            os.fdatasync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def run_child(cmd: list[str], log: Path) -> dict:
    """Run ``cmd``; wall seconds, exit code and the peak RSS of its process tree."""
    import psutil

    t0 = time.perf_counter()
    peak = 0
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=HERE.parent)
        ps = psutil.Process(proc.pid)
        stop = threading.Event()

        def sample() -> None:
            nonlocal peak
            while not stop.is_set():
                try:
                    tree = [ps] + ps.children(recursive=True)
                    peak = max(peak, sum(_rss(p) for p in tree))
                except psutil.Error:
                    pass
                stop.wait(0.1)

        t = threading.Thread(target=sample, daemon=True)
        t.start()
        rc = proc.wait()
        stop.set()
        t.join()
    return {"wall_seconds": time.perf_counter() - t0, "rc": rc, "peak_rss_bytes": peak,
            "log": str(log)}


def _rss(p) -> int:
    try:
        return p.memory_info().rss
    except Exception:  # noqa: BLE001 - the process ended meanwhile
        return 0


def ensure_input(n: int, work: Path, seed: int) -> Path:
    """The Object Parquet of ``n`` rows: the core benchmark's input when it exists, else
    generated without sources (this benchmark reads Object only)."""
    full = work / f"input-{n}-seed{seed}"
    if (full / "Object").is_dir():
        return full
    data = work / f"objects-{n}-seed{seed}"
    if not (data / "Object").is_dir():
        subprocess.run([sys.executable, str(HERE / "generate.py"), "--objects", str(n),
                        "--out", str(data), "--seed", str(seed), "--sources-per-object", "0"],
                       check=True)
    return data


def bench_size(n: int, a: argparse.Namespace) -> dict:
    work = Path(a.workdir).resolve()
    data = ensure_input(n, work, a.seed)
    files = sorted((data / "Object").glob("*.parquet"))
    run = work / f"ingest-bench-{n}"
    if run.exists():
        shutil.rmtree(run)
    run.mkdir(parents=True)
    size = sum(f.stat().st_size for f in files)
    res: dict = {"objects": n, "files": len(files), "input_bytes": size, "systems": {}}
    wanted = set(a.only or ["skyshard", "skyshard-append", "skyshard-append-region",
                            "hats-import"])
    if a.skip_hats:
        wanted.discard("hats-import")
    systems = [("skyshard", ["skyshard"], files)]
    if "skyshard-append" in wanted:
        base, more = split_tail(files, run / "split", 0.1)
        systems.append(("skyshard-append", ["skyshard", "--more", *map(str, more), "--"], base))
    if "skyshard-append-region" in wanted:
        region_base, region_more = split_region(files, run / "region", a.region_ra)
        systems.append(("skyshard-append-region",
                        ["skyshard", "--more", *map(str, region_more), "--"], region_base))
    systems.append(("hats-import", ["hats"], files))
    systems = [s for s in systems if s[0] in wanted]
    for name, extra, inputs in systems:
        out = run / name
        result = run / f"{name}.json"
        python = a.hats_python if name == "hats-import" and a.hats_python else sys.executable
        cmd = [python, str(Path(__file__).resolve()), "--child", *extra[:1],
               "--out", str(out), "--result", str(result), "--tmp", str(run / f"{name}-tmp"),
               "--max-rows-per-partition", str(a.max_rows_per_partition),
               "--margin-arcsec", str(a.margin_arcsec), *extra[1:], *map(str, inputs)]
        print(f"{n:,} objects: {name} ...", flush=True)
        evict([*inputs, *(Path(x) for x in extra[1:] if x not in ("--more", "--"))])
        info = run_child(cmd, run / f"{name}.log")
        if info["rc"] != 0:
            print(f"  failed (rc {info['rc']}), see {info['log']}", flush=True)
            res["systems"][name] = {"failed": True, **info}
            continue
        info.update(json.loads(result.read_text()))
        info["rows_per_s"] = info["rows"] / info["seconds"]
        info["disk_bytes"] = _du(out)
        res["systems"][name] = info
        print(f"  {info['rows']:,} rows in {info['seconds']:.1f} s: {info['rows_per_s']:,.0f} "
              f"rows/s, peak RSS {info['peak_rss_bytes'] / GB:.2f} GB", flush=True)
        if not a.keep:
            shutil.rmtree(out, ignore_errors=True)
        shutil.rmtree(run / f"{name}-tmp", ignore_errors=True)
    for folder in ("split", "region"):
        shutil.rmtree(run / folder, ignore_errors=True)
    return res


def split_tail(files: list[Path], folder: Path, share: float) -> tuple[list[Path], list[Path]]:
    """The inputs as (first 1 - share, last share) of the rows: whole files when there
    are enough of them, else the last file cut in two."""
    import pyarrow.parquet as pq

    cut = round(len(files) * (1 - share))
    if 1 <= cut < len(files) and len(files) >= 5:
        return files[:cut], files[cut:]
    folder.mkdir(parents=True, exist_ok=True)
    last = pq.read_table(files[-1])
    total = sum(pq.read_metadata(f).num_rows for f in files)
    keep = max(0, last.num_rows - int(total * share))
    head, tail = folder / "head.parquet", folder / "tail.parquet"
    pq.write_table(last.slice(0, keep), head)
    pq.write_table(last.slice(keep), tail)
    return files[:-1] + [head], [tail]


def split_region(files: list[Path], folder: Path, ra_max: float) -> tuple[list[Path], list[Path]]:
    """The inputs as (rows with ra >= ra_max, rows with ra < ra_max): an increment that
    covers one band of the sky, as a night of observations does."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    folder.mkdir(parents=True, exist_ok=True)
    base, more = [], []
    for i, f in enumerate(files):
        t = pq.read_table(f)
        inside = pc.less(t.column("ra"), ra_max)
        for keep, out in ((pc.invert(inside), base), (inside, more)):
            part = t.filter(keep)
            if part.num_rows:
                path = folder / f"{'more' if out is more else 'base'}-{i:04d}.parquet"
                pq.write_table(part, path)
                out.append(path)
    return base, more


def _du(path: Path) -> int:
    total = 0
    for root, _, names in os.walk(path):
        for name in names:
            try:
                total += os.stat(os.path.join(root, name)).st_blocks * 512
            except OSError:
                pass
    return total


def report(results: list[dict], a: argparse.Namespace, command: str) -> str:
    sys.path.insert(0, str(HERE))
    from core import machine, versions

    m, v = machine(), versions()
    for r in results:
        v.update(r["systems"].get("hats-import", {}).get("versions", {}))
    now = dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    load = os.getloadavg()[0]
    lines = [
        f"## {now} — ingest: skyshard vs hats-import",
        "",
        f"Command: `{command}`",
        "",
        (f"- Machine: {m['cores']} cores, {m['ram_bytes'] / GB:.1f} GiB RAM, {m['cpu']}, "
         f"{m['os']}, Python {m['python']}; load average {load:.1f} at the end"),
        "- Versions: " + ", ".join(f"{k} {val}" for k, val in v.items()),
        (f"- Same input (bench/generate.py Object Parquet), same products: partitions of at "
         f"most {a.max_rows_per_partition:,} rows (hats-import `pixel_threshold`), a "
         f"{a.margin_arcsec:g}\" margin, an objectId index. skyshard: one process (rows "
         "sorted in memory a region of the sky at a time, director index sorted by DuckDB; "
         "1 GB memory limit); hats-import: dask LocalCluster, 2 workers x 1 thread."),
        "- Peak RSS: the whole process tree (dask workers included), sampled every 0.1 s.",
        ("- Input cold: before each run pending writes are flushed (`sync`) and the input "
         "files are dropped from the page cache (`posix_fadvise(DONTNEED)`), so every "
         "system reads them from the disk, with no earlier writes going on beside it."),
        ("- `skyshard append`: the last 10 % of the rows loaded as an increment into the "
         "table built from the other 90 % (time and rows of the increment alone): the "
         "increment is spread over the whole sky, so every partition is rewritten. "
         f"`skyshard append region`: the rows with ra < {a.region_ra:g} deg as the "
         "increment (a band of the sky, as a night of observations): only the partitions "
         "it touches are rewritten, the others hard-linked."),
        "",
        "| objects | system | rows | seconds | rows/s | peak RSS | partitions | on disk |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        for name, s in r["systems"].items():
            if s.get("failed"):
                lines.append(f"| {r['objects']:,} | {name} | failed | | | | | |")
                continue
            extra = ""
            if name == "hats-import":
                extra = (f" (catalog {s['catalog_seconds']:.0f} s, margin "
                         f"{s['margin_seconds']:.0f} s, index {s['index_seconds']:.0f} s)")
            if name.startswith("skyshard-append"):
                extra = (f" (into {s['base_rows']:,} rows; {s['rewritten']} of "
                         f"{s['partitions']} partitions written)")
            lines.append(
                f"| {r['objects']:,} | {name.replace('-', ' ')} | {s['rows']:,} | "
                f"{s['seconds']:.1f}{extra} | {s['rows_per_s']:,.0f} | "
                f"{s['peak_rss_bytes'] / GB:.2f} GB | {s['partitions']} | "
                f"{s['disk_bytes'] / GB:.2f} GB |")
    for r in results:
        sky, hats = r["systems"].get("skyshard"), r["systems"].get("hats-import")
        if sky and hats and not sky.get("failed") and not hats.get("failed"):
            lines.append("")
            lines.append(f"At {r['objects']:,} objects skyshard ingests "
                         f"{sky['rows_per_s'] / hats['rows_per_s']:.1f}x as many rows/s as "
                         f"hats-import, with {sky['peak_rss_bytes'] / hats['peak_rss_bytes']:.2f}x "
                         "its peak RSS.")
    return "\n".join(lines) + "\n"


def append_results(text: str) -> None:
    """A new section at the end of RESULTS.md, one blank line after the last one."""
    path = HERE / "RESULTS.md"
    before = path.read_text() if path.exists() else ""
    gap = "" if not before or before.endswith("\n\n") else (
        "\n" if before.endswith("\n") else "\n\n")
    with open(path, "a") as f:
        f.write(gap + text)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--objects", type=int, action="append", help="repeatable; default 1000000")
    p.add_argument("--workdir", default=str(HERE / "data"))
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--max-rows-per-partition", type=int, default=200_000)
    p.add_argument("--margin-arcsec", type=float, default=60.0)
    p.add_argument("--skip-hats", action="store_true")
    p.add_argument("--only", action="append", default=None,
                   choices=["skyshard", "skyshard-append", "skyshard-append-region",
                            "hats-import"],
                   help="run only this system (repeatable), e.g. for a 100 M-row load")
    p.add_argument("--keep", action="store_true", help="keep the catalogs written")
    p.add_argument("--no-record", action="store_true", help="do not append to RESULTS.md")
    p.add_argument("--child", nargs="?", const="", default=None, help=argparse.SUPPRESS)
    p.add_argument("child_args", nargs="*", help=argparse.SUPPRESS)
    p.add_argument("--region-ra", type=float, default=36.0,
                   help="the regional increment holds the rows with ra below this")
    p.add_argument("--hats-python", default=None,
                   help="Python of an environment where hats-import runs (see above)")
    p.add_argument("--more", nargs="+", default=None, help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    p.add_argument("--tmp", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.child is not None:
        files = [Path(f) for f in a.child_args]
        if a.child == "skyshard":
            child_skyshard(files, Path(a.out), Path(a.result), a.max_rows_per_partition,
                           a.margin_arcsec, [Path(f) for f in a.more] if a.more else None)
        elif a.child == "hats":
            child_hats(files, Path(a.out), Path(a.result), a.max_rows_per_partition,
                       a.margin_arcsec, Path(a.tmp))
        else:
            p.error(f"unknown child {a.child!r}")
        return 0
    sizes = a.objects or [1_000_000]
    results = [bench_size(n, a) for n in sizes]
    shown = list(argv if argv is not None else sys.argv[1:])
    if "--hats-python" in shown:  # a path of this machine: shown by its role
        i = shown.index("--hats-python")
        shown[i + 1 : i + 2] = ["HATS_VENV/bin/python"]
    command = "python bench/ingest_bench.py " + " ".join(shown)
    text = report(results, a, command)
    print()
    print(text)
    Path(a.workdir).mkdir(parents=True, exist_ok=True)
    (Path(a.workdir) / "ingest-bench-results.json").write_text(json.dumps(results, indent=1))
    if not a.no_record:
        append_results(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
