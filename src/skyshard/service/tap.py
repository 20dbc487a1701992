"""The IVOA TAP 1.1 service, under ``/tap`` of the HTTP front end.

==================================================  ===========================================
GET, POST  /tap/sync                                run an ADQL query, answer its result
GET, POST  /tap/async                               UWS job list; POST creates a job (303)
GET, POST, DELETE  /tap/async/{job}                 the job (WAIT blocks); POST ACTION=DELETE,
                                                    PHASE=RUN|ABORT, or new parameters
GET, POST  /tap/async/{job}/phase                   PENDING ... COMPLETED; POST PHASE=RUN|ABORT
GET, POST  /tap/async/{job}/executionduration       seconds
GET, POST  /tap/async/{job}/destruction             ISO 8601
GET        /tap/async/{job}/quote                   ISO 8601
GET        /tap/async/{job}/owner                   the owner's name
GET, POST  /tap/async/{job}/parameters              the job's parameters
GET        /tap/async/{job}/error                   DALI error document (phase ERROR)
GET        /tap/async/{job}/results                 UWS result list
GET        /tap/async/{job}/results/result          the result, in its RESPONSEFORMAT
GET        /tap/capabilities                        VOSI capabilities (TAPRegExt); anonymous
GET        /tap/availability                        VOSI availability; anonymous
GET        /tap/tables, /tap/tables/{table}         VOSI tables (VODataService)
GET        /tap/examples                            DALI examples
==================================================  ===========================================

Queries run on the shared query service (its limits, queue, cancellation and result
store): a job's ABORT cancels its query and interrupts DuckDB, as ``CANCEL`` does over
MySQL. Queries on TAP_SCHEMA run in the service's private in-memory TAP_SCHEMA database.
Errors are DALI error documents (VOTable, ``QUERY_STATUS=ERROR``) with the HTTP status of
``service.errors``. Without ``anonymous_tap``, TAP takes the HTTP API's credentials
(bearer token or Basic); capabilities and availability are always public (VOSI).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from skyshard.errors import SkyshardError, UserError
from skyshard.service import examples as dali_examples
from skyshard.service import uws, vosi, votable
from skyshard.service.config import ANONYMOUS, Credentials
from skyshard.service.errors import (
    JobPhaseError,
    ResultGoneError,
    UnknownQueryError,
    UnknownResourceError,
    votable_error,
    wire,
)
from skyshard.service.queries import QueryService
from skyshard.service.tap_output import Result, encode, respond, respond_buffered, small
from skyshard.service.tap_query import (
    LocalRun,
    Params,
    Prepared,
    TapQuery,
    prepare,
    read_params,
)
from skyshard.service.tap_schema import TapMetadata, TapSchemaDb

log = logging.getLogger("skyshard.service")

PREFIX = "/tap"
MAX_WAIT_S = 60.0
#: A synchronous result of at most this many Arrow bytes is encoded on the event loop:
#: under load, each hop to a worker thread waits for that thread to be scheduled.
INLINE_BYTES = 64 * 1024
_TEXT = "text/plain; charset=utf-8"
Handler = Callable[[Request], Awaitable[Response]]


def _guarded(handler: Handler) -> Handler:
    """Answer any exception with a DALI error document (and log unexpected ones)."""

    @functools.wraps(handler)
    async def run(request: Request) -> Response:
        try:
            return await handler(request)
        except Exception as exc:
            if not isinstance(exc, SkyshardError):
                log.error("TAP %s %s failed", request.method, request.url.path, exc_info=exc)
            return error_response(exc)

    return run


def error_response(exc: BaseException) -> Response:
    w = wire(exc)
    headers = {"WWW-Authenticate": 'Basic realm="skyshard"'} if w.http_status == 401 else None
    return Response(votable_error(w), status_code=w.http_status, headers=headers,
                    media_type=votable.MEDIA_TYPE)


class TapService:
    """TAP over one query service; ``routes()`` mounts it."""

    def __init__(self, service: QueryService, credentials: Credentials, database: str, *,
                 user_of: Callable[[Request], str]) -> None:
        self.service = service
        self.credentials = credentials
        self.database = database
        self.limits = service.limits
        self.jobs = uws.JobStore(max_duration=int(self.limits.timeout_s),
                                 retention_s=self.limits.result_ttl_s)
        self.up_since = time.time()
        self._user_of = user_of
        self._meta_source: Any = None
        self._view: tuple[TapMetadata, TapSchemaDb] | None = None
        self._examples: bytes | None = None
        self._meta_lock = threading.Lock()

    def routes(self) -> list[Route]:
        table = [
            ("/sync", self.sync, ["GET", "POST"]),
            ("/async", self.job_list, ["GET"]),
            ("/async", self.create_job, ["POST"]),
            ("/async/{job_id}", self.job, ["GET"]),
            ("/async/{job_id}", self.post_job, ["POST"]),
            ("/async/{job_id}", self.delete_job, ["DELETE"]),
            ("/async/{job_id}/phase", self.phase, ["GET", "POST"]),
            ("/async/{job_id}/executionduration", self.execution_duration, ["GET", "POST"]),
            ("/async/{job_id}/destruction", self.destruction, ["GET", "POST"]),
            ("/async/{job_id}/quote", self.quote, ["GET"]),
            ("/async/{job_id}/owner", self.owner, ["GET"]),
            ("/async/{job_id}/parameters", self.parameters, ["GET", "POST"]),
            ("/async/{job_id}/error", self.error, ["GET"]),
            ("/async/{job_id}/results", self.results, ["GET"]),
            ("/async/{job_id}/results/result", self.result, ["GET"]),
            ("/capabilities", self.capabilities, ["GET"]),
            ("/availability", self.availability, ["GET"]),
            ("/tables", self.tables, ["GET"]),
            ("/tables/{table_name}", self.table, ["GET"]),
            ("/examples", self.examples, ["GET"]),
        ]
        return [Route(PREFIX + path, _guarded(handler), methods=methods)
                for path, handler, methods in table]

    # --- metadata -----------------------------------------------------------------------

    def view(self) -> tuple[TapMetadata, TapSchemaDb]:
        """TAP's view of the catalog and its TAP_SCHEMA database, rebuilt when the
        catalog description changes."""
        with self._meta_lock:
            meta = self.service.db.meta
            if self._view is None or meta is not self._meta_source:
                metadata = TapMetadata(meta, self.database)
                self._view = (metadata, TapSchemaDb(metadata))
                self._meta_source = meta
                self._examples = None
            return self._view

    # --- synchronous queries ------------------------------------------------------------

    async def sync(self, request: Request) -> Response:
        user = self._user(request)
        params = await read_params(request)
        query = TapQuery.from_params(params, hard_limit=self.limits.max_rows)
        prepared = await asyncio.to_thread(self._prepare, query)
        run = self._start(prepared, user, mode="sync", host=_client(request))
        try:
            await asyncio.wrap_future(run.done)
        except asyncio.CancelledError:  # the client went away
            self._cancel(run)
            raise
        table = run.outcome() if isinstance(run, LocalRun) else self.service.outcome(run)
        result = self._result(table, prepared, query.adql)
        if small(result, INLINE_BYTES):  # an id lookup, a cone: cheaper than a thread hop
            return respond_buffered(result, query.format, encode(result, query.format))
        if small(result):  # one thread hop for the whole body, not one per chunk
            body = await asyncio.to_thread(encode, result, query.format)
            return respond_buffered(result, query.format, body)
        return respond(result, query.format)

    def _prepare(self, query: TapQuery) -> Prepared:
        metadata, schema_db = self.view()
        return prepare(query, metadata, schema_db, plan=self.service.db.plan)

    def _start(self, prepared: Prepared, user: str, *, mode: str, host: str | None = None,
               timeout_s: float | None = None) -> Any:
        """Run on TAP_SCHEMA or submit to the query service: a ``LocalRun`` or ``Query``."""
        if prepared.local is not None:
            return LocalRun(prepared.local, prepared.tree, timeout_s or self.limits.timeout_s)
        return self.service.submit(prepared.sql, user, mode=mode, host=host,
                                   timeout_s=timeout_s, partitions=prepared.partitions,
                                   tree=prepared.tree)

    def _cancel(self, run: Any) -> None:
        if isinstance(run, LocalRun):
            run.cancel()
            return
        with contextlib.suppress(UnknownQueryError):
            self.service.cancel(run.id)

    def _result(self, source: Any, prepared: Prepared, adql: str) -> Result:
        rows = source.num_rows
        return Result(source, min(rows, prepared.maxrec), prepared.overflow(rows),
                      prepared.fields, {"QUERY": adql})

    # --- asynchronous jobs (UWS) --------------------------------------------------------

    async def job_list(self, request: Request) -> Response:
        user = self._user(request)
        self._expire()
        q = request.query_params
        after = uws.parse_time(q["AFTER"]) if q.get("AFTER") else None
        last = q.get("LAST")
        if last is not None and not last.strip().isdigit():
            raise UserError(f"LAST must be a non-negative integer, not {last!r}")
        jobs = self.jobs.jobs(user, phases=q.getlist("PHASE"), after=after,
                              last=int(last) if last is not None else None)
        return _xml(uws.jobs_document(jobs, self._base(request) + "/async"))

    async def create_job(self, request: Request) -> Response:
        user = self._user(request)
        self._expire()
        params = (await read_params(request)).upper()
        job = self.jobs.create(user, params, run_id=params.get("RUNID"))
        if params.get("PHASE", "").upper() == "RUN":
            await asyncio.to_thread(self._run, job)
        return self._to_job(request, job)

    async def job(self, request: Request) -> Response:
        job = self._job(request)
        wait = request.query_params.get("WAIT")
        if wait is not None:
            await self._wait(job, wait, request.query_params.get("PHASE"))
        return _xml(uws.job_document(job, self._job_url(request, job)))

    async def post_job(self, request: Request) -> Response:
        job = self._job(request)
        params = (await read_params(request)).upper()
        if params.get("ACTION", "").upper() == "DELETE":
            self._delete(job)
            return RedirectResponse(self._base(request) + "/async", status_code=303)
        if "PHASE" in params:
            await asyncio.to_thread(self._phase, job, params["PHASE"])
        if "EXECUTIONDURATION" in params:
            self.jobs.set_duration(job, params["EXECUTIONDURATION"])
        if "DESTRUCTION" in params:
            self.jobs.set_destruction(job, params["DESTRUCTION"])
        rest = {k: v for k, v in params.items() if k not in uws.CONTROL}
        if rest:
            job.set_parameters(rest)
        return self._to_job(request, job)

    async def delete_job(self, request: Request) -> Response:
        self._delete(self._job(request))
        return RedirectResponse(self._base(request) + "/async", status_code=303)

    async def phase(self, request: Request) -> Response:
        job = self._job(request)
        if request.method == "POST":
            params = await read_params(request)
            await asyncio.to_thread(self._phase, job, params.get("PHASE") or "")
            return self._to_job(request, job)
        return _text(job.phase.value)

    async def execution_duration(self, request: Request) -> Response:
        job = self._job(request)
        if request.method == "POST":
            value = (await read_params(request)).get("EXECUTIONDURATION")
            if value is None:
                raise UserError("missing EXECUTIONDURATION parameter (seconds)")
            self.jobs.set_duration(job, value)
            return self._to_job(request, job)
        return _text(str(job.execution_duration))

    async def destruction(self, request: Request) -> Response:
        job = self._job(request)
        if request.method == "POST":
            value = (await read_params(request)).get("DESTRUCTION")
            if value is None:
                raise UserError("missing DESTRUCTION parameter (an ISO 8601 time)")
            self.jobs.set_destruction(job, value)
            return self._to_job(request, job)
        return _text(uws.iso(job.destruction))

    async def quote(self, request: Request) -> Response:
        return _text(uws.iso(self._job(request).quote))

    async def owner(self, request: Request) -> Response:
        return _text(self._job(request).owner)

    async def parameters(self, request: Request) -> Response:
        job = self._job(request)
        if request.method == "POST":
            params = (await read_params(request)).upper()
            job.set_parameters(params)
            return self._to_job(request, job)
        return _xml(uws.parameters_document(job))

    async def error(self, request: Request) -> Response:
        job = self._job(request)
        failure = job.failure
        if job.phase not in (uws.Phase.ERROR, uws.Phase.ABORTED) or failure is None:
            raise JobPhaseError(f"job {job.id} is {job.phase.value}: it has no error")
        return Response(votable_error(wire(failure)), media_type=votable.MEDIA_TYPE)

    async def results(self, request: Request) -> Response:
        job = self._job(request)
        return _xml(uws.results_document(job, self._job_url(request, job)))

    async def result(self, request: Request) -> Response:
        job = self._job(request)
        phase = job.phase
        if phase is not uws.Phase.COMPLETED:
            if phase in (uws.Phase.ERROR, uws.Phase.ABORTED) and job.failure is not None:
                raise job.failure
            raise JobPhaseError(f"job {job.id} is {phase.value}: it has no result yet")
        run, prepared = job.run, job.prepared
        try:
            source = (run.outcome() if isinstance(run, LocalRun)
                      else self.service.result(run.id, job.owner))
        except UnknownQueryError:  # the service has forgotten the query, and its result
            raise ResultGoneError(run.id) from None
        query = TapQuery.from_params(Params(job.parameters.items()),
                                     hard_limit=self.limits.max_rows)
        return respond(self._result(source, prepared, query.adql), query.format)

    # --- job actions --------------------------------------------------------------------

    def _phase(self, job: uws.Job, value: str) -> None:
        phase = value.strip().upper()
        if phase == "RUN":
            self._run(job)
        elif phase == "ABORT":
            self._abort(job)
        else:
            raise UserError(f"PHASE must be RUN or ABORT, not {value!r}")

    def _run(self, job: uws.Job) -> None:
        """Start a PENDING job (anything else: no change, as UWS allows)."""
        with job.lock:
            if job.phase is not uws.Phase.PENDING:
                return
            try:
                query = TapQuery.from_params(Params(job.parameters.items()),
                                             hard_limit=self.limits.max_rows)
                job.prepared = self._prepare(query)
                job.run = self._start(job.prepared, job.owner, mode="async",
                                      timeout_s=job.execution_duration)
            except SkyshardError as exc:
                job.error, job.failed = exc, time.time()

    def _abort(self, job: uws.Job) -> None:
        with job.lock:
            if job.run is None:
                if job.phase is uws.Phase.PENDING:
                    job.aborted = time.time()
                return
            if not job.run.state.final:
                self._cancel(job.run)

    def _delete(self, job: uws.Job) -> None:
        self._abort(job)
        self.jobs.remove(job)
        if job.run is not None and not isinstance(job.run, LocalRun):
            with contextlib.suppress(UnknownQueryError):
                self.service.delete_result(job.run.id)

    def _expire(self) -> None:
        for job in self.jobs.expired():
            self._abort(job)
            if job.run is not None and not isinstance(job.run, LocalRun):
                with contextlib.suppress(UnknownQueryError):
                    self.service.delete_result(job.run.id)

    async def _wait(self, job: uws.Job, wait: str, phase: str | None) -> None:
        """UWS blocking: until the phase leaves ``phase`` (its current one by default)
        or WAIT seconds (-1: the server's longest wait) have passed."""
        try:
            seconds = float(wait)
        except ValueError:
            raise UserError(f"WAIT must be a number of seconds, not {wait!r}") from None
        seconds = MAX_WAIT_S if seconds < 0 else min(seconds, MAX_WAIT_S)
        start = job.phase
        if not start.active or (phase is not None and phase.strip().upper() != start.value):
            return
        deadline = time.monotonic() + seconds
        while job.phase is start and time.monotonic() < deadline:
            run = job.run
            if run is not None:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(run.done)),
                                           min(0.05, max(0.0, deadline - time.monotonic())))
            else:
                await asyncio.sleep(0.05)

    # --- VOSI and DALI ------------------------------------------------------------------

    async def capabilities(self, request: Request) -> Response:
        return _xml(vosi.capabilities(
            self._base(request), max_rows=self.limits.max_rows,
            timeout_s=self.limits.timeout_s, retention_s=self.limits.result_ttl_s,
            anonymous=self.credentials.anonymous_tap or self.credentials.allow_anonymous))

    async def availability(self, request: Request) -> Response:
        return _xml(vosi.availability(self.up_since))

    async def tables(self, request: Request) -> Response:
        self._user(request)
        detail = request.query_params.get("detail", "max").lower() != "min"
        return _xml(vosi.tableset(self.view()[0], detail=detail))

    async def table(self, request: Request) -> Response:
        self._user(request)
        name = request.path_params["table_name"]
        try:
            found = self.view()[0].table(name)
        except SkyshardError:
            raise UnknownResourceError(f"no table {name!r} in this service") from None
        return _xml(vosi.table(found))

    async def examples(self, request: Request) -> Response:
        self._user(request)
        md = self.view()[0]
        if self._examples is None:
            sample = await asyncio.to_thread(dali_examples.sample, self.service.db,
                                             self.service.db.meta)
            items = dali_examples.examples(self.service.db.meta, self.database, sample)
            self._examples = dali_examples.document(
                items, f"Example queries of {md.database} (TAP)")
        return Response(self._examples, media_type=dali_examples.MEDIA_TYPE)

    # --- internals ----------------------------------------------------------------------

    def _user(self, request: Request) -> str:
        if self.credentials.anonymous_tap and not request.headers.get("authorization"):
            return ANONYMOUS
        return self._user_of(request)

    def _job(self, request: Request) -> uws.Job:
        user = self._user(request)
        self._expire()
        return self.jobs.get(request.path_params["job_id"], user)

    def _base(self, request: Request) -> str:
        return str(request.base_url).rstrip("/") + PREFIX

    def _job_url(self, request: Request, job: uws.Job) -> str:
        return f"{self._base(request)}/async/{job.id}"

    def _to_job(self, request: Request, job: uws.Job) -> Response:
        return RedirectResponse(self._job_url(request, job), status_code=303)


def _xml(body: bytes) -> Response:
    return Response(body, media_type=uws.MEDIA_TYPE)


def _text(text: str) -> Response:
    return Response(text, media_type=_TEXT)


def _client(request: Request) -> str | None:
    return f"{request.client.host}:{request.client.port}" if request.client else None
