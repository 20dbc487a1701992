"""The knobs of an ingest (one-shot or transaction)."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

from skyshard.catalog import model
from skyshard.errors import IngestError

DEFAULT_MAX_ROWS = 1_000_000
DEFAULT_MARGIN_ARCSEC = 60.0
DEFAULT_MAX_ORDER = 10
#: Seconds a superseded table version stays on disk for readers that opened it.
DEFAULT_GC_GRACE_S = 3600.0


@dataclass(frozen=True)
class IngestOptions:
    """Knobs of one ingest. ``max_rows_per_partition`` is HATS's ``pixel_threshold``.

    The tiling knobs (``max_rows_per_partition``, ``max_order``, ``margin_arcsec``) apply
    to a new table; later increments follow the rule the table was built with.
    ``fsync`` flushes a new version to disk before publishing it (power-loss safety);
    ``gc_grace_s`` is how long a superseded version stays for readers that opened it.
    """

    max_rows_per_partition: int = DEFAULT_MAX_ROWS
    max_order: int = DEFAULT_MAX_ORDER
    margin_arcsec: float = DEFAULT_MARGIN_ARCSEC
    batch_rows: int = 262_144
    # DuckDB's, for its sorts and key checks (it spills beyond); also sizes the regions a
    # director's rows are sorted by in memory
    memory_limit: str = "1GB"
    allow_duplicate_keys: bool = False
    progress: bool | None = None  # None: show a bar when stderr is a terminal
    fsync: bool = True
    gc_grace_s: float = DEFAULT_GC_GRACE_S

    def __post_init__(self) -> None:
        if self.max_rows_per_partition < 1:
            raise IngestError("max_rows_per_partition must be at least 1")
        if not 0 <= self.max_order <= model.MAX_ORDER:
            raise IngestError(f"max_order must be within 0..{model.MAX_ORDER}")
        if not self.margin_arcsec > 0:
            raise IngestError("margin_arcsec must be positive")
        if self.batch_rows < 1:
            raise IngestError("batch_rows must be at least 1")
        if self.gc_grace_s < 0:
            raise IngestError("gc_grace_s must not be negative")
        memory_bytes(self.memory_limit)

    def to_json(self) -> dict:
        d = asdict(self)
        del d["progress"]
        return d

    @classmethod
    def from_json(cls, d: dict) -> IngestOptions:
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in d.items() if k in known})


_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def memory_bytes(text: str) -> int:
    """A memory size as DuckDB writes it (``1GB`` = 10^9 bytes, ``1GiB`` = 2^30), in bytes.

    >>> memory_bytes("1GB"), memory_bytes("512 MiB")
    (1000000000, 536870912)
    """
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", str(text))
    unit = m.group(2).lower() if m else None
    if m is None or unit not in _UNITS or float(m.group(1)) <= 0:
        raise IngestError(f"memory_limit {text!r} is not a size such as '1GB' or '512MiB'")
    return int(float(m.group(1)) * _UNITS[unit])
