"""Kubernetes deployment of skyshard: manifests rendered as Python dicts, the ``SkyShard``
custom resource and the kopf operator that reconciles it.

- ``spec``: the resource's spec as typed values (defaults, validation, names, labels);
- ``render``: every manifest of one deployment (``skyshard deploy render`` and the
  operator both use it), as dicts or YAML;
- ``crd`` and ``install``: the CRD and the operator's own Deployment and RBAC;
- ``reconcile`` and ``status``: the operator's decisions, without kopf;
- ``operator``: the kopf handlers (``kopf run -m skyshard.deploy.operator``).
"""
