"""The resource's status from its workloads' statuses and its latest replica rebalance
Job: conditions Available, Progressing and Degraded, ready workers, version.

- **Available**: the front end, the scheduler and at least one worker are ready.
- **Progressing**: a workload has not yet taken its latest spec (a rollout, a scale), or
  the rebalance Job is running (reason ``Rebalancing`` when that is all).
- **Degraded**: the latest rebalance Job failed (reason ``RebalanceFailed``, until a new
  one runs or it is deleted); or everything has taken its spec, yet some pod is not
  ready (a crash loop, a lost node, fewer ready workers than ``spec.workers``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from skyshard.deploy.spec import SkyShardSpec


@dataclass(frozen=True)
class Rollout:
    """One workload as observed: replicas wanted, updated to the latest spec, ready."""

    exists: bool
    desired: int = 0
    updated: int = 0
    ready: int = 0
    current: int = 0
    generation_seen: bool = True

    @property
    def rolled_out(self) -> bool:
        return self.exists and self.generation_seen and self.updated >= self.desired

    @property
    def all_ready(self) -> bool:
        return self.exists and self.ready >= self.desired


def rollout(obj: Mapping[str, Any] | None) -> Rollout:
    """A Deployment's or StatefulSet's rollout state (None: not created yet)."""
    if obj is None:
        return Rollout(exists=False)
    st = obj.get("status") or {}
    desired = (obj.get("spec") or {}).get("replicas", 1)
    generation = (obj.get("metadata") or {}).get("generation", 0)
    return Rollout(exists=True, desired=desired, updated=st.get("updatedReplicas", 0),
                   ready=st.get("readyReplicas", 0), current=st.get("replicas", 0),
                   generation_seen=st.get("observedGeneration", 0) >= generation)


RUNNING, SUCCEEDED, FAILED = "running", "succeeded", "failed"


@dataclass(frozen=True)
class JobState:
    """A rebalance Job as observed: its name, why it runs, running/succeeded/failed."""

    name: str
    reason: str
    state: str
    message: str = ""

    @property
    def summary(self) -> str:
        """One line for ``status.rebalance``."""
        text = f"{self.reason}: Job {self.name} {self.state}"
        return f"{text}: {self.message}" if self.message else text


def job_state(obj: Mapping[str, Any], reason_key: str) -> JobState:
    """A Job's state from its conditions (``Failed``/``FailureTarget``: failed;
    ``Complete``: succeeded; otherwise it is pending or running)."""
    meta = obj.get("metadata") or {}
    reason = (meta.get("annotations") or {}).get(reason_key, "rebalance")
    state, message = RUNNING, ""
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c.get("status") != "True":
            continue
        if c.get("type") in ("Failed", "FailureTarget"):
            state = FAILED
            message = ": ".join(x for x in (c.get("reason"), c.get("message")) if x)
            break
        if c.get("type") == "Complete":
            state = SUCCEEDED
    return JobState(meta.get("name", ""), reason, state, message)


def compute(spec: SkyShardSpec, generation: int, frontend: Rollout, scheduler: Rollout,
            workers: Rollout, previous: Mapping[str, Any] | None, now: str,
            rebalance: JobState | None = None) -> dict[str, Any]:
    """The ``status`` to write; ``previous`` keeps unchanged conditions' transition times.
    ``rebalance``: the latest rebalance Job, if there is one."""
    parts = {"front end": frontend, "scheduler": scheduler, "workers": workers}
    missing = [n for n, r in parts.items() if not r.exists]
    available = frontend.ready >= 1 and scheduler.ready >= 1 and workers.ready >= 1
    pending = [n for n, r in parts.items() if not r.rolled_out]
    unready = [n for n, r in parts.items() if r.exists and not r.all_ready]
    rebalancing = rebalance is not None and rebalance.state == RUNNING
    rebalance_failed = rebalance is not None and rebalance.state == FAILED
    rolling = bool(pending) or workers.desired != spec.workers
    progressing = rolling or rebalancing
    degraded = rebalance_failed or (not progressing and bool(unready))

    if available:
        avail = ("True", "Ready",
                 f"the front end, the scheduler and {workers.ready} worker(s) are ready")
    elif missing:
        avail = ("False", "NotCreated", f"not created yet: {', '.join(missing)}")
    else:
        not_ready = [n for n, r in parts.items() if r.ready < 1]
        avail = ("False", "NotReady", f"no ready pod: {', '.join(not_ready)}")
    job_text = (f"replica rebalance Job {rebalance.name} running ({rebalance.reason})"
                if rebalancing and rebalance is not None else "")
    if rolling:
        text = f"rolling out: {', '.join(pending or ['workers'])}"
        prog = ("True", "RollingOut", f"{text}; {job_text}" if job_text else text)
    elif rebalancing:
        prog = ("True", "Rebalancing", job_text)
    else:
        prog = ("False", "RolledOut", "every workload has its latest spec")
    unready_text = f"{', '.join(unready)} ({workers.ready}/{spec.workers} workers)"
    if rebalance_failed and rebalance is not None:
        deg = ("True", "RebalanceFailed",
               f"replica rebalance Job {rebalance.name} failed ({rebalance.reason})"
               + (f": {rebalance.message}" if rebalance.message else "")
               + f"; see kubectl logs job/{rebalance.name}")
    elif degraded:
        deg = ("True", "PodsNotReady", f"not all pods ready: {unready_text}")
    else:
        deg = ("False", "AsExpected", "no fault seen")
    old = {c.get("type"): c for c in (previous or {}).get("conditions") or []}
    conditions = [_condition(t, v, old.get(t), generation, now)
                  for t, v in (("Available", avail), ("Progressing", prog), ("Degraded", deg))]
    selector = ",".join(f"{k}={v}" for k, v in spec.selector("worker").items())
    out = {"conditions": conditions, "readyWorkers": workers.ready,
           "workers": workers.current, "workerSelector": selector,
           "version": spec.version, "observedGeneration": generation}
    if rebalance is not None:
        out["rebalance"] = rebalance.summary
    return out


def changed(new: Mapping[str, Any], old: Mapping[str, Any] | None) -> bool:
    """Whether writing ``new`` would change anything in ``old``."""
    old = old or {}
    return any(old.get(k) != v for k, v in new.items())


def _condition(kind: str, value: Sequence[str], before: Mapping[str, Any] | None,
               generation: int, now: str) -> dict[str, Any]:
    status, reason, message = value
    since = before.get("lastTransitionTime") if before and before.get("status") == status else now
    return {"type": kind, "status": status, "reason": reason, "message": message,
            "lastTransitionTime": since or now, "observedGeneration": generation}
