"""Server configuration: where to listen, who may connect, and the query limits.

A TOML file (all keys optional; command-line options override it)::

    catalog = "/data/lsst"
    host = "127.0.0.1"
    mysql_port = 4040
    http_port = 8080
    database = "LSST"            # the name clients USE (default: the catalog's name)
    results_dir = "/var/tmp/skyshard-results"
    allow_anonymous = false
    anonymous_tap = false        # TAP (/tap) readable without credentials

    [users]                      # MySQL (mysql_native_password) and HTTP Basic
    alice = "secret"             # a password, or MySQL's "*<SHA1(SHA1(password))>"

    [tokens]                     # HTTP bearer tokens: user = token
    alice = "kJ3v...Q"

    [limits]
    timeout_s = 600              # per query, from the start of execution
    max_rows = 1000000           # rows in one result
    max_result_bytes = 536870912 # Arrow bytes of one result
    max_concurrent = 4           # interactive queries executing at once; the others are QUEUED
    max_scans = 2                # full scans executing at once, on threads of their own
                                 # (8 with shared_scans: riders of a shared pass wait idle)
    interactive_partitions = 10  # a query reading more partitions is a full scan
    scan_nice = 19               # how much lower the scans' CPU priority is (0: same; Linux)
    scan_threads = 3             # DuckDB threads of the scans (default: the CPUs but one; 0: all)
    shared_scans = false         # concurrent full scans of a big table share one pass over it
    resident_share = 0.25        # of the memory, for director tables' files kept in memory
    max_queued = 100
    memory_results_bytes = 268435456  # results kept in memory, above that spilled to Parquet
    result_ttl_s = 3600          # async results are deleted after this
    history = 1000               # finished queries remembered

    [cluster]                    # run queries on Dask (default: in this process)
    workers = 4                  # start a local cluster of 4 worker processes, or
    scheduler = "tcp://host:8786"  # use an existing one (not both)
    placement = "shared"         # or "replicas": partitions copied to the workers' disks
    replication = 2              # copies of each partition (placement = "replicas")
    local_interactive = true     # interactive queries in this process (default: true for
                                 # "shared", false for "replicas"); scans always on Dask

Secrets are kept hashed (passwords as MySQL's double SHA1, tokens as SHA-256) and never
appear in ``describe()``.
"""

from __future__ import annotations

import hashlib
import hmac
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from skyshard.machine import cpus
from skyshard.service.errors import ConfigError
from skyshard.storage.remote import is_url

ANONYMOUS = "anonymous"


#: ``Limits.max_scans`` when shared scans are on and it is not given.
SHARED_MAX_SCANS = 8


@dataclass(frozen=True)
class Limits:
    """What one query, and the server as a whole, may use."""

    timeout_s: float = 600.0
    max_rows: int = 1_000_000
    max_result_bytes: int = 512 * 2**20
    max_concurrent: int = 4
    #: Scans (queries reading more than ``interactive_partitions`` partitions, as
    #: Qserv's interactiveChunkLimit) run ``max_scans`` at a time on threads of their own,
    #: ``scan_nice`` steps lower in CPU priority, so they never hold up interactive queries.
    max_scans: int = 2
    interactive_partitions: int = 10
    scan_nice: int = 19
    #: DuckDB threads the scans use in this process (0: one per CPU; on a Dask cluster
    #: the workers' settings apply). The default leaves one CPU to the
    #: interactive lane: scans at the lowest priority still slow a query on the same
    #: CPU's caches and memory bus, and share none of their threads' time with it.
    scan_threads: int = field(default_factory=lambda: max(1, cpus() - 1))
    #: Full scans of a big table running at once (at most ``max_scans``) share their
    #: reads (``dispatch.scans``), in this process or on the Dask workers. Then
    #: ``max_scans`` defaults to ``SHARED_MAX_SCANS``: a scan riding a shared pass waits
    #: without using the CPU, and scans queued behind the lane could not board it.
    shared_scans: bool = False
    #: The director tables' files are kept mapped in memory (``storage.resident``), up to
    #: this share of the machine's (or container's) memory; 0 turns it off.
    resident_share: float = 0.25
    max_queued: int = 100
    memory_results_bytes: int = 256 * 2**20
    result_ttl_s: float = 3600.0
    history: int = 1000


@dataclass(frozen=True)
class Credentials:
    """Users (double-SHA1 password hashes) and bearer tokens (SHA-256 -> user)."""

    passwords: dict[str, str] = field(default_factory=dict)
    tokens: dict[str, str] = field(default_factory=dict)
    allow_anonymous: bool = False
    #: TAP (``/tap``) answers requests without credentials, as user ``anonymous``
    anonymous_tap: bool = False

    def password_hash(self, user: str) -> str | None:
        """MySQL's ``SHA1(SHA1(password))`` in hex, for mysql_native_password."""
        return self.passwords.get(user)

    def check_password(self, user: str, password: str) -> bool:
        want = self.passwords.get(user)
        return want is not None and hmac.compare_digest(want, password_hash(password))

    def user_of_token(self, token: str) -> str | None:
        return self.tokens.get(hashlib.sha256(token.encode()).hexdigest())

    @property
    def required(self) -> bool:
        return not self.allow_anonymous


@dataclass(frozen=True)
class ClusterConfig:
    """Where queries run: a Dask cluster (``workers``: a local one started by the server;
    ``scheduler``: an existing one), or nowhere but this process (neither given).

    Full scans always run on the cluster. Interactive queries (at most
    ``Limits.interactive_partitions`` partitions) run in this process when
    ``local_interactive``: a Dask round trip costs more than such a query. That needs the
    catalog files here, which shared storage gives; the default is True for
    ``placement="shared"`` and False for ``"replicas"`` (None: that default).
    """

    workers: int | None = None
    scheduler: str | None = None
    placement: str = "shared"
    replication: int | None = None
    local_interactive: bool | None = None

    @property
    def enabled(self) -> bool:
        return self.workers is not None or self.scheduler is not None

    @property
    def interactive_in_process(self) -> bool:
        """Whether interactive queries run in this process."""
        if not self.enabled:
            return True
        if self.local_interactive is not None:
            return self.local_interactive
        return self.placement == "shared"

    def describe(self) -> str:
        """One line for the log: where queries run."""
        if not self.enabled:
            return "queries run in this process (no Dask cluster)"
        where = (f"a local Dask cluster of {self.workers} worker process(es)"
                 if self.workers is not None else f"the Dask cluster at {self.scheduler}")
        placed = ("shared storage" if self.placement == "shared" else
                  f"replicas on the workers' disks (replication "
                  f"{self.replication or 'as recorded, default 2'})")
        small = ("in this process" if self.interactive_in_process else "on the cluster too")
        return f"full scans run on {where}, {placed}; interactive queries run {small}"


@dataclass(frozen=True)
class ServiceConfig:
    catalog: Path | str  # a folder, or a URL (storage.remote)
    host: str = "127.0.0.1"
    mysql_port: int = 4040
    http_port: int = 8080
    database: str | None = None
    results_dir: Path | None = None
    credentials: Credentials = field(default_factory=Credentials)
    limits: Limits = field(default_factory=Limits)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)

    def describe(self) -> str:
        """One line for the log: no secrets, only how many."""
        c = self.credentials
        users = ", ".join(sorted(c.passwords)) or "none"
        tap = "; anonymous TAP" if c.anonymous_tap and not c.allow_anonymous else ""
        return (f"users: {users}; {len(c.tokens)} token(s); "
                f"anonymous {'allowed' if c.allow_anonymous else 'refused'}{tap}")


def password_hash(password: str) -> str:
    """MySQL's stored form of a password: hex ``SHA1(SHA1(password))``."""
    return hashlib.sha1(hashlib.sha1(password.encode()).digest()).hexdigest()


def _stored_password(value: str) -> str:
    if value.startswith("*") and len(value) == 41:
        try:
            bytes.fromhex(value[1:])
            return value[1:].lower()
        except ValueError:
            pass
    return password_hash(value)


def load(path: str | Path | None = None, *, catalog: str | Path | None = None,
         host: str | None = None, mysql_port: int | None = None,
         http_port: int | None = None, users: Sequence[str] = (), tokens: Sequence[str] = (),
         allow_anonymous: bool = False, anonymous_tap: bool = False,
         results_dir: str | Path | None = None, limits: dict | None = None,
         cluster: dict | None = None) -> ServiceConfig:
    """The file at ``path`` (if any) with the command-line values on top.

    ``users`` are ``NAME:PASSWORD``; ``tokens`` are ``TOKEN`` (owned by user ``token``)
    or ``NAME:TOKEN``. ``limits`` and ``cluster``: keys of ``[limits]`` and ``[cluster]``
    (None values are not given). A ``workers`` or ``scheduler`` given here replaces the
    file's choice of either.
    """
    data: dict = {}
    if path is not None:
        try:
            data = tomllib.loads(Path(path).read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"{path}: {exc}") from exc
    known = {"catalog", "host", "mysql_port", "http_port", "database", "results_dir",
             "allow_anonymous", "anonymous_tap", "users", "tokens", "limits", "cluster"}
    _no_unknown(data, known, str(path))
    passwords = {str(k): _stored_password(str(v)) for k, v in data.get("users", {}).items()}
    token_map = {_token_hash(str(v)): str(k) for k, v in data.get("tokens", {}).items()}
    for spec in users:
        name, sep, password = spec.partition(":")
        if not sep or not name:
            raise ConfigError("--user takes NAME:PASSWORD")
        passwords[name] = _stored_password(password)
    for spec in tokens:
        name, sep, token = spec.partition(":")
        name, token = (name, token) if sep else ("token", spec)
        if not token:
            raise ConfigError("--token takes TOKEN or NAME:TOKEN")
        token_map[_token_hash(token)] = name
    lim = dict(data.get("limits", {}))
    lim.update({k: v for k, v in (limits or {}).items() if v is not None})
    _no_unknown(lim, {f.name for f in fields(Limits)}, "[limits]")
    try:
        limit_values = replace(Limits(), **{k: _typed(k, getattr(Limits(), k), v)
                                            for k, v in lim.items()})
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"[limits]: {exc}") from exc
    if limit_values.shared_scans and "max_scans" not in lim:
        limit_values = replace(limit_values, max_scans=SHARED_MAX_SCANS)
    _check_limits(limit_values)
    cluster_values = _cluster(data.get("cluster", {}), cluster or {})
    root = catalog if catalog is not None else data.get("catalog")
    if root is None:
        raise ConfigError("no catalog: give --catalog DIR or catalog = ... in the config file")
    creds = Credentials(passwords, token_map,
                        allow_anonymous or bool(data.get("allow_anonymous", False)),
                        anonymous_tap or bool(data.get("anonymous_tap", False)))
    if creds.required and not passwords and not token_map and not creds.anonymous_tap:
        raise ConfigError("no users or tokens: give --user NAME:PASSWORD, --token TOKEN "
                          "or [users]/[tokens] in the config file, or --allow-anonymous "
                          "(or --anonymous-tap to serve TAP alone without credentials)")
    out_dir = results_dir if results_dir is not None else data.get("results_dir")
    return ServiceConfig(
        catalog=str(root) if is_url(str(root)) else Path(root),  # s3://... stays a URL
        host=host or data.get("host", "127.0.0.1"),
        mysql_port=int(mysql_port if mysql_port is not None else data.get("mysql_port", 4040)),
        http_port=int(http_port if http_port is not None else data.get("http_port", 8080)),
        database=data.get("database"),
        results_dir=Path(out_dir) if out_dir else None,
        credentials=creds,
        limits=limit_values,
        cluster=cluster_values,
    )


def _typed(name: str, default: object, value: object) -> object:
    """``value`` as the type of ``default`` (a true/false stays one, never a string)."""
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ValueError(f"{name} must be true or false, not {value!r}")
        return value
    return type(default)(value)


def _check_limits(limits: Limits) -> None:
    for name in ("max_concurrent", "max_scans"):
        if getattr(limits, name) < 1:
            raise ConfigError(f"[limits]: {name} must be at least 1, not {getattr(limits, name)}")
    if limits.interactive_partitions < 0:
        raise ConfigError("[limits]: interactive_partitions must be 0 or more, "
                          f"not {limits.interactive_partitions}")
    if not 0 <= limits.scan_nice <= 19:
        raise ConfigError(f"[limits]: scan_nice must be between 0 and 19, not {limits.scan_nice}")
    if limits.scan_threads < 0:
        raise ConfigError(f"[limits]: scan_threads must be 0 (one per CPU) or more, "
                          f"not {limits.scan_threads}")
    if not 0 <= limits.resident_share <= 0.9:
        raise ConfigError("[limits]: resident_share must be between 0 (off) and 0.9, "
                          f"not {limits.resident_share}")


def _cluster(table: object, given: dict) -> ClusterConfig:
    """``[cluster]`` of the file with the command-line values on top, checked."""
    if not isinstance(table, dict):
        raise ConfigError("[cluster] must be a table")
    values = dict(table)
    _no_unknown(values, {f.name for f in fields(ClusterConfig)}, "[cluster]")
    given = {k: v for k, v in given.items() if v is not None}
    _no_unknown(given, {f.name for f in fields(ClusterConfig)}, "cluster options")
    if "workers" in given or "scheduler" in given:  # the command line chooses the cluster
        values.pop("workers", None)
        values.pop("scheduler", None)
    values.update(given)
    workers, scheduler = values.get("workers"), values.get("scheduler")
    if workers is not None and scheduler is not None:
        raise ConfigError("[cluster]: give workers (start a local Dask cluster) or scheduler "
                          "(use an existing one), not both")
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int)
                                or workers < 1):
        raise ConfigError(f"[cluster]: workers must be a whole number of at least 1, "
                          f"not {workers!r}")
    if scheduler is not None and (not isinstance(scheduler, str) or "://" not in scheduler):
        raise ConfigError(f"[cluster]: scheduler must be an address such as "
                          f"tcp://HOST:8786, not {scheduler!r}")
    placement = values.get("placement", "shared")
    if placement not in ("shared", "replicas"):
        raise ConfigError(f"[cluster]: placement must be 'shared' or 'replicas', "
                          f"not {placement!r}")
    replication = values.get("replication")
    if replication is not None:
        if isinstance(replication, bool) or not isinstance(replication, int) or replication < 1:
            raise ConfigError(f"[cluster]: replication must be a whole number of at least 1, "
                              f"not {replication!r}")
        if placement != "replicas":
            raise ConfigError("[cluster]: replication needs placement = \"replicas\"")
        if workers is not None and replication > workers:
            raise ConfigError(f"[cluster]: replication {replication} needs at least as many "
                              f"workers, not {workers}")
    local = values.get("local_interactive")
    if local is not None and not isinstance(local, bool):
        raise ConfigError(f"[cluster]: local_interactive must be true or false, not {local!r}")
    if workers is None and scheduler is None:
        extra = sorted(k for k, v in values.items() if k not in ("workers", "scheduler")
                       and (k, v) != ("placement", "shared"))
        if extra:
            raise ConfigError(f"[cluster]: {', '.join(extra)} need workers or scheduler "
                              "(a Dask cluster)")
        return ClusterConfig()
    if placement == "replicas" and workers is not None and replication is None and workers < 2:
        raise ConfigError("[cluster]: placement = \"replicas\" keeps 2 copies of each "
                          f"partition by default: give at least 2 workers, not {workers}, "
                          "or replication = 1")
    return ClusterConfig(workers=workers, scheduler=scheduler, placement=placement,
                         replication=replication, local_interactive=local)


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _no_unknown(data: dict, known: set[str], where: str) -> None:
    extra = sorted(set(data) - known)
    if extra:
        raise ConfigError(f"{where}: unknown setting(s) {', '.join(extra)} "
                          f"(known: {', '.join(sorted(known))})")
