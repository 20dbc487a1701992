"""Copy a catalog from object storage into a local folder (S3 mode's init container).

    skyshard deploy fetch s3://bucket/catalog /data/catalog

Uses pyarrow's file systems (S3 credentials from ``AWS_ACCESS_KEY_ID`` and
``AWS_SECRET_ACCESS_KEY``; ``?endpoint_override=host:port&scheme=http`` for MinIO and
other S3-compatible stores). A marker file written last makes a repeated fetch into the
same folder a no-op.
"""

from __future__ import annotations

from pathlib import Path

DONE_MARKER = ".skyshard-fetched"


def fetch_catalog(url: str, dest: str | Path) -> int:
    """Copy every file below ``url`` into ``dest``; the number of files copied (0 if
    ``dest`` already holds this URL's copy)."""
    from pyarrow import fs

    target = Path(dest)
    marker = target / DONE_MARKER
    if marker.exists() and marker.read_text() == url:
        return 0
    source, path = fs.FileSystem.from_uri(url)
    infos = source.get_file_info(fs.FileSelector(path, recursive=True, allow_not_found=True))
    files = [i for i in infos if i.type == fs.FileType.File]
    if not files:
        from skyshard.errors import UserError

        raise UserError(f"{url}: no files found")
    target.mkdir(parents=True, exist_ok=True)
    fs.copy_files(path, str(target), source_filesystem=source,
                  destination_filesystem=fs.LocalFileSystem(), use_threads=True)
    marker.write_text(url)
    return len(files)
