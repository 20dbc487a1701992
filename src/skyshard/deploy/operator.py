"""The kopf operator for ``SkyShard`` resources.

    kopf run --standalone --all-namespaces -m skyshard.deploy.operator

Handlers are thin: the decisions are in ``reconcile``. The API client is put in
``memo.cluster`` at startup, so tests call the handlers as plain functions with a fake.

- create / update / resume: apply the rendered manifests (owner references set), prune
  what the spec no longer renders, create the auth Secret if there is none (random
  password; an existing Secret is never read), report the status;
- ``spec.workers`` changed (pvc mode; ``reconcile`` has the order and why): a
  scale-up has grown the StatefulSet already (the update handler runs first), and the
  rebalance Job starts; a scale-down starts the drain Job of the pods that will go,
  and the StatefulSet keeps them until it has succeeded. The annotation
  ``rebalance.skyshard.io/request`` set to a new value starts the Job again (after
  loading a catalog, or after a failed Job);
- delete: owned objects go with the garbage collector; the workers' scratch claims are
  deleted here (best effort, no finalizer);
- every 15 s: re-create a workload deleted by hand; shrink the StatefulSet once its
  drain has succeeded (or start a missing drain); the status from the workloads'
  statuses and the latest replica Job's.
"""

from __future__ import annotations

import logging
from typing import Any

import kopf

from skyshard.deploy import reconcile
from skyshard.deploy.spec import GROUP, PLURAL, VERSION, SpecError
from skyshard.deploy.status import changed

RESOURCE = (GROUP, VERSION, PLURAL)


def post_event(body: kopf.Body, type: str, reason: str, message: str) -> None:
    """Post a Kubernetes event on the resource (replaced in tests)."""
    kopf.event(body, type=type, reason=reason, message=message)


@kopf.on.startup()
def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    # Handler progress in annotations, so the status keeps its strict schema.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix=GROUP)
    settings.posting.level = logging.INFO
    if getattr(memo, "cluster", None) is None:
        from skyshard.deploy.cluster import KubeCluster

        memo.cluster = KubeCluster()


@kopf.on.resume(*RESOURCE)
@kopf.on.create(*RESOURCE)
@kopf.on.update(*RESOURCE)
def reconcile_resource(body: kopf.Body, memo: Any, patch: kopf.Patch,
                       logger: kopf.Logger, **_: Any) -> None:
    """Apply the manifests; an invalid spec is a permanent error (no retries)."""
    try:
        created = reconcile.ensure_auth_secret(memo.cluster, body)  # before the front end
        done = reconcile.apply(memo.cluster, body)
    except SpecError as exc:
        raise kopf.PermanentError(f"invalid spec: {exc}") from exc
    if created:
        name = body["spec"]["authSecretRef"]["name"]
        post_event(body, "Normal", "AuthSecretCreated",
                   f"Secret {name} created with user 'skyshard' and a random password")
    logger.info("applied %s", ", ".join(done))
    patch.status.update(reconcile.observe(memo.cluster, body))


@kopf.on.field(*RESOURCE, field="spec.workers")
def workers_changed(old: Any, new: Any, body: kopf.Body, memo: Any,
                    patch: kopf.Patch, logger: kopf.Logger, **_: Any) -> None:
    """The replica Job of a scale: rebalance after a scale-up, drain before a
    scale-down (nothing on creation)."""
    if old is None or new is None or old == new:
        return
    _rebalance(memo.cluster, body, patch, logger, f"workers {old} -> {new}")


@kopf.on.field(*RESOURCE, field=("metadata", "annotations", reconcile.REQUEST_ANNOTATION))
def rebalance_requested(new: Any, body: kopf.Body, memo: Any, patch: kopf.Patch,
                        logger: kopf.Logger, **_: Any) -> None:
    """The replica Job on request: the annotation set to a new value."""
    if not new:
        return
    _rebalance(memo.cluster, body, patch, logger,
               f"requested ({reconcile.REQUEST_ANNOTATION}={new})", request=str(new))


def _rebalance(cluster: Any, body: kopf.Body, patch: kopf.Patch, logger: kopf.Logger,
               reason: str, request: str | None = None) -> None:
    try:
        step = reconcile.start_rebalance(cluster, body, reason, request)
    except SpecError as exc:
        raise kopf.PermanentError(f"invalid spec: {exc}") from exc
    except reconcile.RebalanceWait as exc:
        raise kopf.TemporaryError(str(exc), delay=15) from exc
    logger.info("%s: %s", step.reason, step.message)
    post_event(body, step.type, step.reason, step.message)
    patch.status.update(reconcile.observe(cluster, body))  # Progressing from now on
    patch.status["rebalance"] = step.message


@kopf.on.delete(*RESOURCE, optional=True)
def deleted(body: kopf.Body, memo: Any, logger: kopf.Logger, **_: Any) -> None:
    removed = reconcile.cleanup(memo.cluster, body)
    logger.info("deleted %s", ", ".join(removed) or "nothing (owned objects go with it)")


@kopf.timer(*RESOURCE, interval=15, initial_delay=5)
def refresh_status(body: kopf.Body, memo: Any, patch: kopf.Patch, logger: kopf.Logger,
                   **_: Any) -> None:
    """Re-create a workload deleted by hand; shrink the StatefulSet once its drain has
    succeeded; keep conditions and ready workers current (patched only when they
    change)."""
    try:
        healed = reconcile.heal(memo.cluster, body)
        steps = reconcile.advance(memo.cluster, body)
        new = reconcile.observe(memo.cluster, body)
    except SpecError:
        return  # reported by the reconcile handler
    if healed:
        logger.info("a workload was missing; applied %s", ", ".join(healed))
    for step in steps:
        logger.info("%s: %s", step.reason, step.message)
        post_event(body, step.type, step.reason, step.message)
    if changed(new, body.get("status")):
        patch.status.update(new)
