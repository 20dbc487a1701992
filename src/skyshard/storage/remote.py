"""Catalogs on object storage: a catalog root named by a URL, read through fsspec.

A catalog can be served from any fsspec file system: ``s3://bucket/prefix/catalog``
(S3 and S3-compatible stores such as MinIO or Ceph, with ``pip install 'skyshard[s3]'``),
``gs://``, ``az://``, ``memory://``... A local path stays a ``pathlib.Path`` everywhere;
a URL becomes a ``RemotePath``, which joins like a ``Path`` and prints as its URL, so the
planner builds the URLs of partition files with the same code it uses for local paths.
The query engine reads them through the same fsspec file system, registered with its
DuckDB (``engine.duck``).

Credentials and endpoints come from ``storage_options`` (passed to the fsspec file
system, e.g. ``{"key": ..., "secret": ..., "endpoint_url": "http://minio:9000"}``) or,
for S3, from the standard AWS environment (``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_ENDPOINT_URL``, profiles...).

A catalog at a URL is read-only for skyshard: ingest writes a local folder, which is then
uploaded (``upload``: data files first, ``skyshard.json`` last).

>>> root = catalog_root("s3://bucket/surveys/lsst/")
>>> root
RemotePath('s3://bucket/surveys/lsst')
>>> str(root / "Object" / "Object"), (root / "Object").parent == root
('s3://bucket/surveys/lsst/Object/Object', True)
>>> is_url("/data/lsst"), is_url("s3://bucket/x"), is_url("file:///data/lsst")
(False, True, False)
"""

from __future__ import annotations

import json
import os
import posixpath
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Any

from skyshard.errors import ExternalError, UserError

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*)://")

#: Extras that bring a protocol's fsspec implementation, for the "not installed" error.
_EXTRAS = {"s3": "pip install 'skyshard[s3]' (s3fs)", "s3a": "pip install 'skyshard[s3]' (s3fs)",
           "gs": "pip install gcsfs", "gcs": "pip install gcsfs", "az": "pip install adlfs",
           "abfs": "pip install adlfs", "abfss": "pip install adlfs"}


def is_url(path: object) -> bool:
    """True for a ``RemotePath`` or a ``scheme://...`` string other than ``file://``."""
    if isinstance(path, RemotePath):
        return True
    if not isinstance(path, str):
        return False
    m = _SCHEME.match(path)
    return m is not None and m.group(1).lower() != "file"


@dataclass(frozen=True)
class RemotePath:
    """A file or folder on an fsspec file system, named by its URL.

    Supports what the catalog code uses of ``pathlib``: ``/``, ``parent``, ``name``,
    ``is_absolute()``, ``str()``. ``storage_options`` configure the file system; they are
    not part of the path's identity and never printed.
    """

    url: str
    storage_options: Mapping[str, Any] = field(default_factory=dict, compare=False,
                                               hash=False, repr=False)

    def __post_init__(self) -> None:
        m = _SCHEME.match(self.url)
        if m is None:
            raise UserError(f"not a URL: {self.url!r}")
        rest = self.url[m.end():]
        if ".." in rest.split("/"):
            raise UserError(f"{self.url}: '..' is not allowed in a catalog URL")
        clean = posixpath.normpath(rest) if rest else ""
        if clean in ("", ".", "/"):
            raise UserError(f"{self.url}: a catalog URL names a bucket or folder, "
                            "e.g. s3://bucket/catalog")
        object.__setattr__(self, "url", f"{m.group(1).lower()}://{clean.lstrip('/')}")

    def __str__(self) -> str:
        return self.url

    def __repr__(self) -> str:
        return f"RemotePath({self.url!r})"

    def __truediv__(self, other: str | PurePath) -> RemotePath:
        part = str(other).replace(os.sep, "/")
        if part.startswith("/") or _SCHEME.match(part):
            raise UserError(f"cannot join {part!r} below {self.url}")
        return RemotePath(f"{self.url}/{part}", self.storage_options)

    @property
    def protocol(self) -> str:
        return self.url.split("://", 1)[0]

    @property
    def parent(self) -> RemotePath:
        head, _, _ = self.url.rpartition("/")
        if head.endswith(":/"):
            return self  # the bucket itself
        return RemotePath(head, self.storage_options)

    @property
    def name(self) -> str:
        return self.url.rpartition("/")[2]

    def is_absolute(self) -> bool:
        return True

    # --- reading ---------------------------------------------------------------------

    @property
    def fs(self):
        """The fsspec file system (fsspec caches instances by protocol and options)."""
        return filesystem(self.protocol, self.storage_options)

    def read_bytes(self) -> bytes:
        """The file's content; ``FileNotFoundError`` when it (or its bucket) does not
        exist, ``ExternalError`` when the store cannot be read (credentials, network)."""
        fs = self.fs
        try:
            return fs.cat_file(self.url)
        except FileNotFoundError:
            raise
        except Exception as exc:
            raise ExternalError(f"{self.url}: cannot read: {_reason(exc)}") from exc

    def read_text(self) -> str:
        return self.read_bytes().decode()

    def glob(self) -> list[str]:
        """URLs of the files matching this path (a glob pattern), sorted."""
        fs = self.fs
        try:
            found = fs.glob(self.url)
        except FileNotFoundError:
            return []
        except Exception as exc:
            raise ExternalError(f"{self.url}: cannot list: {_reason(exc)}") from exc
        return sorted(f"{self.protocol}://{p.split('://', 1)[-1]}" for p in found)


def catalog_root(root: str | os.PathLike | RemotePath,
                 storage_options: Mapping[str, Any] | None = None) -> Path | RemotePath:
    """A catalog root as the code uses it: a resolved local ``Path``, or a ``RemotePath``
    for a URL (``file://`` URLs are local paths). ``storage_options`` only go with a URL.
    """
    if isinstance(root, RemotePath):
        if storage_options is None:
            return root
        return RemotePath(root.url, dict(storage_options))
    if isinstance(root, str) and is_url(root):
        return RemotePath(root, dict(storage_options or {}))
    if storage_options:
        raise UserError(f"storage_options apply to a catalog URL (s3://...), not to the "
                        f"local path {os.fspath(root)!r}")
    if isinstance(root, str) and root.lower().startswith("file://"):
        root = root[len("file://"):]
    return Path(root).resolve()


def filesystem(protocol: str, storage_options: Mapping[str, Any] | None = None):
    """The fsspec file system for ``protocol``; ``UserError`` naming the package to
    install when fsspec has no implementation of it here."""
    try:
        import fsspec

        return fsspec.filesystem(protocol, **dict(storage_options or {}))
    except ImportError as exc:
        hint = _EXTRAS.get(protocol, "install the fsspec implementation of this protocol")
        raise UserError(f"reading {protocol}:// needs a package that is not installed: "
                        f"{hint}") from exc
    except ValueError as exc:
        raise UserError(f"{protocol}:// is not a known storage protocol: {exc}") from exc
    except TypeError as exc:
        raise UserError(f"bad storage options for {protocol}://: {exc}") from exc


#: How long an engine trusts its listing of a catalog (seconds): sizes of files it
#: listed are not asked again. Published files never change in place, so this only
#: bounds how long a worker keeps a listing of a catalog deleted and uploaded anew.
LISTING_TTL_S = 600.0


def engine_filesystem(protocol: str, storage_options: Mapping[str, Any] | None,
                      prefixes: list[str]):
    """A file system of its own for one query engine, with the listing of the catalog
    below ``prefixes`` cached: DuckDB asks a file's size several times per read, and on
    object storage each ask is a request, while one listing (paged, 1000 files per
    request) answers them all. Listing failures are left to the reads to report."""
    options = {**dict(storage_options or {}), "skip_instance_cache": True,
               "listings_expiry_time": LISTING_TTL_S}
    fs = filesystem(protocol, options)
    for prefix in prefixes:
        try:
            fs.find(prefix)
        except Exception:  # noqa: BLE001 - best effort: a read names the real failure
            pass
    return fs


def options_text(storage_options: Mapping[str, Any] | None) -> str:
    """Storage options as JSON text (sorted keys), the form sent to Dask workers;
    ``UserError`` when they are not plain JSON values."""
    if not storage_options:
        return ""
    try:
        return json.dumps(dict(storage_options), sort_keys=True)
    except (TypeError, ValueError) as exc:
        raise UserError("storage options must be plain values (strings, numbers, booleans, "
                        f"lists, mappings) to reach Dask workers: {exc}") from exc


def parse_option(text: str) -> tuple[str, Any]:
    """``KEY=VALUE`` from the command line; VALUE is read as JSON when it parses
    (``anon=true``, ``client_kwargs={"region_name": "eu-west-1"}``), else as a string.

    >>> parse_option("endpoint_url=http://localhost:9000"), parse_option("anon=true")
    (('endpoint_url', 'http://localhost:9000'), ('anon', True))
    """
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise UserError(f"a storage option is KEY=VALUE, not {text!r}")
    try:
        parsed: Any = json.loads(value)
    except ValueError:
        parsed = value
    return key.strip(), parsed


def upload(local: str | os.PathLike, url: str,
           storage_options: Mapping[str, Any] | None = None) -> int:
    """Copy a local catalog folder to ``url``; the number of files copied.

    Data files go first and ``skyshard.json`` last, so a reader never sees a description
    naming files that are not there yet. Lock files, reader leases and ingest staging
    areas stay behind. Files already at the destination with the same size are skipped
    (published partition files never change in place).
    """
    from skyshard.catalog import model
    from skyshard.storage import layout, leases, locks

    src = Path(local).resolve()
    model.load(src)  # a skyshard catalog, not any folder
    dest = catalog_root(url, storage_options)
    if not isinstance(dest, RemotePath):
        raise UserError(f"upload goes to a URL (s3://bucket/prefix), not {url!r}")
    skip = {locks.LOCKS, leases.READERS_DIR, layout.STAGING}
    files = []
    for path in sorted(src.rglob("*")):
        rel = path.relative_to(src)
        if (path.is_file() and rel.parts[0] not in skip
                and not rel.name.startswith(model.TEMP_PREFIX)
                and rel.as_posix() != layout.CATALOG_META):
            files.append(rel.as_posix())
    files.append(layout.CATALOG_META)
    fs = dest.fs
    try:
        present = {p.split("://", 1)[-1]: info.get("size")
                   for p, info in fs.find(dest.url, detail=True).items()}
    except FileNotFoundError:
        present = {}
    except Exception as exc:
        raise ExternalError(f"{dest}: cannot list: {_reason(exc)}") from exc
    todo = [rel for rel in files[:-1]
            if present.get((dest / rel).url.split("://", 1)[1]) != (src / rel).stat().st_size]
    # the data files (concurrently where the file system can), then the description
    for batch in (todo, [layout.CATALOG_META]):
        if not batch:
            continue
        try:
            fs.put([str(src / rel) for rel in batch], [(dest / rel).url for rel in batch])
        except Exception as exc:
            raise ExternalError(f"{dest}: cannot write: {_reason(exc)}") from exc
    return len(todo) + 1


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
