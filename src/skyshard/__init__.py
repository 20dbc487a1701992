"""skyshard: spatially sharded SQL over HATS catalogs.

>>> import skyshard
>>> sorted(skyshard.__all__)[:3]
['CatalogError', 'Database', 'ForbiddenQueryError']
"""

__version__ = "0.1.0"

from skyshard.database import Database, open  # noqa: E402,A004
from skyshard.errors import (  # noqa: E402
    CatalogError,
    ForbiddenQueryError,
    IngestError,
    InputError,
    SkyshardError,
    SqlError,
    SqlSyntaxError,
    UnknownNameError,
    UnsupportedQueryError,
    UserError,
)
from skyshard.storage.ingest import IngestOptions, ingest  # noqa: E402

__all__ = [
    "CatalogError",
    "Database",
    "ForbiddenQueryError",
    "IngestError",
    "IngestOptions",
    "InputError",
    "SkyshardError",
    "SqlError",
    "SqlSyntaxError",
    "UnknownNameError",
    "UnsupportedQueryError",
    "UserError",
    "ingest",
    "open",
]
