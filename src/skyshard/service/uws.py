"""UWS 1.1 jobs of the TAP ``/async`` endpoint: records, phases and their XML documents.

A job is created PENDING with its parameters; ``PHASE=RUN`` hands its query to the query
service (or, for TAP_SCHEMA, to a ``LocalRun``) and from then on its phase is the query's
state::

    PENDING --RUN--> QUEUED -> EXECUTING -> COMPLETED
       |                |           |    \\-> ERROR     (bad query, limit, time limit)
       +-----ABORT------+-----------+------> ABORTED   (the query is cancelled)

A job whose parameters are wrong goes from PENDING straight to ERROR when run. Each job
has an owner (the authenticated user, or ``anonymous``), who alone sees it; an
``executionDuration`` (seconds, at most the server's time limit, which is the default);
and a ``destruction`` time (at most ``retention_s`` after creation, the lifetime of
results), when it is deleted with its result.

>>> store = JobStore(max_duration=600, retention_s=3600)
>>> job = store.create("alice", {"QUERY": "SELECT 1"}, run_id="r1")
>>> job.phase, job.execution_duration
(<Phase.PENDING: 'PENDING'>, 600)
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any
from xml.sax.saxutils import escape, quoteattr

from skyshard.errors import SkyshardError, UserError
from skyshard.service.errors import JobPhaseError, UnknownJobError, uws_error_type
from skyshard.service.queries import State

NAMESPACE = "http://www.ivoa.net/xml/UWS/v1.0"
MEDIA_TYPE = "text/xml"
#: parameters that steer the job rather than the query
CONTROL = frozenset({"PHASE", "ACTION", "EXECUTIONDURATION", "DESTRUCTION", "WAIT"})


class Phase(StrEnum):
    PENDING = "PENDING"
    QUEUED = "QUEUED"
    EXECUTING = "EXECUTING"
    COMPLETED = "COMPLETED"
    ERROR = "ERROR"
    ABORTED = "ABORTED"
    UNKNOWN = "UNKNOWN"
    HELD = "HELD"
    SUSPENDED = "SUSPENDED"
    ARCHIVED = "ARCHIVED"

    @property
    def active(self) -> bool:
        """Still to finish (what ``WAIT`` waits on)."""
        return self in (Phase.PENDING, Phase.QUEUED, Phase.EXECUTING)


_PHASE_OF_STATE = {State.QUEUED: Phase.QUEUED, State.EXECUTING: Phase.EXECUTING,
                   State.COMPLETED: Phase.COMPLETED, State.FAILED: Phase.ERROR,
                   State.CANCELLED: Phase.ABORTED}


@dataclass
class Job:
    """One UWS job. ``run`` is the service's ``Query`` or a ``LocalRun`` once started."""

    id: str
    owner: str
    parameters: dict[str, str]
    created: float
    execution_duration: int
    destruction: float
    run_id: str | None = None
    run: Any = None
    prepared: Any = None
    error: SkyshardError | None = None  # a failure before the query could start
    aborted: float | None = None        # aborted while PENDING
    failed: float | None = None         # when ``error`` was set
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def phase(self) -> Phase:
        if self.error is not None:
            return Phase.ERROR
        if self.aborted is not None:
            return Phase.ABORTED
        if self.run is None:
            return Phase.PENDING
        return _PHASE_OF_STATE[self.run.state]

    @property
    def started(self) -> float | None:
        return getattr(self.run, "started", None) or (self.failed if self.error else None)

    @property
    def ended(self) -> float | None:
        if self.error is not None:
            return self.failed
        if self.aborted is not None:
            return self.aborted
        return getattr(self.run, "finished", None)

    @property
    def failure(self) -> SkyshardError | None:
        """Why the job is in ERROR (or ABORTED), if it is."""
        if self.error is not None:
            return self.error
        return getattr(self.run, "error", None) if self.run is not None else None

    @property
    def quote(self) -> float:
        """When the job should be done at the latest: its start (or now) plus its
        execution duration."""
        return (self.started or time.time()) + self.execution_duration

    def set_parameters(self, params: dict[str, str]) -> None:
        """Change parameters; only while PENDING."""
        if self.phase is not Phase.PENDING:
            raise JobPhaseError(f"job {self.id} is {self.phase.value}: its parameters can "
                                "only change while it is PENDING")
        for k, v in params.items():
            if k not in CONTROL:
                self.parameters[k] = v
        if "RUNID" in params:
            self.run_id = params["RUNID"]


class JobStore:
    """The jobs of one TAP service, by id. Thread-safe."""

    def __init__(self, *, max_duration: int, retention_s: float) -> None:
        self.max_duration = max(1, int(max_duration))
        self.retention_s = retention_s
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Lock()

    def create(self, owner: str, params: dict[str, str], *, run_id: str | None = None) -> Job:
        now = time.time()
        job = Job(secrets.token_hex(8), owner,
                  {k: v for k, v in params.items() if k not in CONTROL}, now,
                  self.max_duration, now + self.retention_s, run_id=run_id)
        if "EXECUTIONDURATION" in params:
            self.set_duration(job, params["EXECUTIONDURATION"])
        if "DESTRUCTION" in params:
            self.set_destruction(job, params["DESTRUCTION"])
        with self._lock:
            self._jobs[job.id] = job
        return job

    def get(self, job_id: str, owner: str) -> Job:
        with self._lock:
            job = self._jobs.get(job_id)
        if job is None or job.owner != owner:
            raise UnknownJobError(job_id)
        return job

    def remove(self, job: Job) -> None:
        with self._lock:
            self._jobs.pop(job.id, None)

    def jobs(self, owner: str, *, phases: Iterable[str] = (), after: float | None = None,
             last: int | None = None) -> list[Job]:
        """This owner's jobs, oldest first; UWS 1.1's filters (``last``: the newest n)."""
        wanted = {p.upper() for p in phases}
        with self._lock:
            found = [j for j in self._jobs.values() if j.owner == owner]
        if wanted:
            found = [j for j in found if j.phase.value in wanted]
        if after is not None:
            found = [j for j in found if j.created > after]
        found.sort(key=lambda j: j.created)
        if last is not None:
            found = found[-last:] if last > 0 else []
        return found

    def expired(self, now: float | None = None) -> list[Job]:
        """Jobs past their destruction time, taken out of the store."""
        now = time.time() if now is None else now
        with self._lock:
            old = [j for j in self._jobs.values() if j.destruction <= now]
            for j in old:
                del self._jobs[j.id]
        return old

    def set_duration(self, job: Job, text: str) -> None:
        """``EXECUTIONDURATION``: seconds, while PENDING; 0 or more than the server's
        limit means the limit."""
        if job.phase is not Phase.PENDING:
            raise JobPhaseError(f"job {job.id} is {job.phase.value}: its execution "
                                "duration can only change while it is PENDING")
        try:
            seconds = int(float(text.strip()))
        except ValueError:
            raise UserError(f"EXECUTIONDURATION must be a number of seconds, not {text!r}") \
                from None
        job.execution_duration = self.max_duration if seconds <= 0 else min(
            seconds, self.max_duration)

    def set_destruction(self, job: Job, text: str) -> None:
        """``DESTRUCTION``: an ISO 8601 time, at most ``retention_s`` after creation."""
        job.destruction = min(parse_time(text), job.created + self.retention_s)


# --- times --------------------------------------------------------------------------------


def iso(t: float | None) -> str:
    """UTC ISO 8601 with milliseconds, as UWS writes times."""
    if t is None:
        return ""
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def parse_time(text: str) -> float:
    value = text.strip()
    try:
        if value.endswith(("Z", "z")):
            value = value[:-1] + "+00:00"
        when = datetime.fromisoformat(value)
    except ValueError:
        raise UserError(f"not an ISO 8601 time: {text!r}") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


# --- documents ----------------------------------------------------------------------------

_ROOT_ATTRS = (f'xmlns:uws="{NAMESPACE}" xmlns:xlink="http://www.w3.org/1999/xlink" '
               'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" version="1.1"')


def _time_element(name: str, t: float | None) -> str:
    if t is None:
        return f'<uws:{name} xsi:nil="true"/>'
    return f"<uws:{name}>{iso(t)}</uws:{name}>"


def job_document(job: Job, job_url: str) -> bytes:
    """``<uws:job>``: the whole job."""
    phase = job.phase
    parts = ['<?xml version="1.0" encoding="UTF-8"?>', f"<uws:job {_ROOT_ATTRS}>",
             f"<uws:jobId>{escape(job.id)}</uws:jobId>"]
    if job.run_id is not None:
        parts.append(f"<uws:runId>{escape(job.run_id)}</uws:runId>")
    parts += [f"<uws:ownerId>{escape(job.owner)}</uws:ownerId>",
              f"<uws:phase>{phase.value}</uws:phase>",
              _time_element("quote", job.quote),
              f"<uws:creationTime>{iso(job.created)}</uws:creationTime>",
              _time_element("startTime", job.started),
              _time_element("endTime", job.ended),
              f"<uws:executionDuration>{job.execution_duration}</uws:executionDuration>",
              _time_element("destruction", job.destruction),
              _parameters(job), _results(job, job_url)]
    failure = job.failure
    if phase is Phase.ERROR and failure is not None:
        parts.append(f'<uws:errorSummary type="{uws_error_type(failure)}" hasDetail="true">'
                     f"<uws:message>{escape(str(failure))}</uws:message></uws:errorSummary>")
    parts.append("</uws:job>")
    return ("\n".join(parts) + "\n").encode()


def _parameters(job: Job) -> str:
    items = "".join(f"<uws:parameter id={quoteattr(k)}>{escape(v)}</uws:parameter>"
                    for k, v in job.parameters.items())
    return f"<uws:parameters>{items}</uws:parameters>"


def _results(job: Job, job_url: str) -> str:
    if job.phase is not Phase.COMPLETED:
        return "<uws:results/>"
    href = quoteattr(f"{job_url}/results/result")
    return (f'<uws:results><uws:result id="result" xlink:type="simple" xlink:href={href}/>'
            "</uws:results>")


def parameters_document(job: Job) -> bytes:
    return ('<?xml version="1.0" encoding="UTF-8"?>\n'
            + _parameters(job).replace("<uws:parameters>", f"<uws:parameters {_ROOT_ATTRS}>", 1)
            + "\n").encode()


def results_document(job: Job, job_url: str) -> bytes:
    body = _results(job, job_url)
    if body == "<uws:results/>":
        body = f"<uws:results {_ROOT_ATTRS}/>"
    else:
        body = body.replace("<uws:results>", f"<uws:results {_ROOT_ATTRS}>", 1)
    return f'<?xml version="1.0" encoding="UTF-8"?>\n{body}\n'.encode()


def jobs_document(jobs: list[Job], list_url: str) -> bytes:
    """``<uws:jobs>``: references to jobs."""
    parts = ['<?xml version="1.0" encoding="UTF-8"?>', f"<uws:jobs {_ROOT_ATTRS}>"]
    for j in jobs:
        href = quoteattr(f"{list_url}/{j.id}")
        run_id = f"<uws:runId>{escape(j.run_id)}</uws:runId>" if j.run_id is not None else ""
        parts.append(f'<uws:jobref id="{escape(j.id)}" xlink:type="simple" xlink:href={href}>'
                     f"<uws:phase>{j.phase.value}</uws:phase>{run_id}"
                     f"<uws:ownerId>{escape(j.owner)}</uws:ownerId>"
                     f"<uws:creationTime>{iso(j.created)}</uws:creationTime></uws:jobref>")
    parts.append("</uws:jobs>")
    return ("\n".join(parts) + "\n").encode()
