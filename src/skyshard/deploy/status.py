"""The resource's status from its workloads' statuses and its latest replica Job
(rebalance or drain): conditions Available, Progressing and Degraded, ready workers,
version.

- **Available**: the front end, the scheduler and at least one worker are ready.
- **Progressing**: a workload has not yet taken its latest spec (a rollout, a
  scale-up); a scale-down waits for its drain (reason ``Draining``: the StatefulSet
  keeps its workers until the drain Job has succeeded); or the rebalance Job is running
  (reason ``Rebalancing`` when that is all).
- **Degraded**: the latest replica Job failed (reason ``RebalanceFailed``, or
  ``DrainFailed``: the scale-down does not proceed; until a new Job runs or it is
  deleted); or everything has taken its spec, yet some pod is not ready (a crash loop,
  a lost node, fewer ready workers than ``spec.workers``).
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
    """A replica Job as observed: its name, why it runs, running/succeeded/failed, what
    it does (``rebalance`` or ``drain``) and the workers a drain empties."""

    name: str
    reason: str
    state: str
    message: str = ""
    action: str = "rebalance"
    drained: tuple[str, ...] = ()

    @property
    def is_drain(self) -> bool:
        return self.action == "drain"

    @property
    def summary(self) -> str:
        """One line for ``status.rebalance``."""
        text = f"{self.reason}: Job {self.name} {self.state}"
        return f"{text}: {self.message}" if self.message else text


def job_state(obj: Mapping[str, Any], reason_key: str, action_key: str | None = None,
              drained_key: str | None = None) -> JobState:
    """A Job's state from its conditions (``Failed``/``FailureTarget``: failed;
    ``Complete``: succeeded; otherwise it is pending or running); what it does from
    its annotations ``action_key`` and ``drained_key``."""
    meta = obj.get("metadata") or {}
    notes = meta.get("annotations") or {}
    reason = notes.get(reason_key, "rebalance")
    action = notes.get(action_key, "rebalance") if action_key else "rebalance"
    drained = tuple(w for w in (notes.get(drained_key, "") if drained_key else "").split(",")
                    if w)
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
    return JobState(meta.get("name", ""), reason, state, message, action, drained)


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
    # pvc mode: the StatefulSet keeps its workers until a drain Job has emptied them
    shrinking = not spec.is_s3 and workers.exists and workers.desired > spec.workers
    drain_failed = shrinking and rebalance_failed and rebalance is not None \
        and rebalance.is_drain
    rolling = bool(pending) or (workers.desired != spec.workers and not shrinking)
    progressing = rolling or rebalancing or (shrinking and not drain_failed)
    degraded = rebalance_failed or (not progressing and bool(unready))

    if available:
        avail = ("True", "Ready",
                 f"the front end, the scheduler and {workers.ready} worker(s) are ready")
    elif missing:
        avail = ("False", "NotCreated", f"not created yet: {', '.join(missing)}")
    else:
        not_ready = [n for n, r in parts.items() if r.ready < 1]
        avail = ("False", "NotReady", f"no ready pod: {', '.join(not_ready)}")
    what = "drain" if rebalance is not None and rebalance.is_drain else "rebalance"
    job_text = (f"replica {what} Job {rebalance.name} running ({rebalance.reason})"
                if rebalancing and rebalance is not None else "")
    scale_down = f"the StatefulSet keeps {workers.desired} workers (spec: {spec.workers})"
    if rolling:
        text = f"rolling out: {', '.join(pending or ['workers'])}"
        prog = ("True", "RollingOut", f"{text}; {job_text}" if job_text else text)
    elif shrinking and not drain_failed:
        until = (f"until {job_text}" if rebalancing and what == "drain"
                 else "until a drain Job has moved the replicas off the workers that go")
        prog = ("True", "Draining", f"{scale_down} {until}")
    elif rebalancing:
        prog = ("True", "Rebalancing", job_text)
    elif drain_failed:
        prog = ("False", "DrainFailed", f"{scale_down}: the drain failed")
    else:
        prog = ("False", "RolledOut", "every workload has its latest spec")
    unready_text = f"{', '.join(unready)} ({workers.ready}/{spec.workers} workers)"
    if rebalance_failed and rebalance is not None:
        reason = "DrainFailed" if rebalance.is_drain else "RebalanceFailed"
        blocked = (f"; {scale_down} until a drain succeeds (set the annotation "
                   "rebalance.skyshard.io/request to retry)" if drain_failed else "")
        deg = ("True", reason,
               f"replica {what} Job {rebalance.name} failed ({rebalance.reason})"
               + (f": {rebalance.message}" if rebalance.message else "")
               + f"; see kubectl logs job/{rebalance.name}" + blocked)
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
