"""Seed the lab cluster with a Nexus Helm release, as if `helm install` had run (without docker exposure).

Creates the release namespace and the release Secret Helm 3's default storage driver writes
(helm pkg/storage/driver/secrets.go): name ``sh.helm.release.v1.<release>.v1``, type ``helm.sh/release.v1``,
labels ``name``, ``owner=helm``, ``status=deployed``, ``version=1``, ``createdAt``; data ``release`` = the release
JSON gzipped and base64-encoded (the API base64-encodes it once more). The release carries the chart metadata
of the chosen flavour, the docker-related subset of the chart's default values (templates are not stored:
they are the chart's code), the install values and a manifest of the UI Services the chart renders for them.
Idempotent: an existing release (any revision) is left as it is.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import time
from typing import Any

from runbook_lib.helm import render
from runbook_lib.helm.charts import chart
from runbook_lib.helm.release import RELEASE_TYPE, encode_release, secret_name
from runbook_lib.helm.values import coalesce
from runbook_lib.params import RunbookParams


def ui_host(params: RunbookParams) -> str:
    """The UI's host beside the mirror hosts: mirror.lab.internal -> nexus.lab.internal."""
    suffix = params.helm.host_suffix or "lab.internal"
    parent = suffix.split(".", 1)[1] if suffix.count(".") >= 2 else suffix
    return f"nexus.{parent}"


def install_values(params: RunbookParams) -> dict[str, Any]:
    """What the operator gave `helm install`: Nexus and its UI Ingress; docker connectors not exposed."""
    h = params.helm
    if h.flavour == "nxrm-ha":
        values: dict[str, Any] = {
            "namespaces": {"nexusNs": {"enabled": True, "name": h.namespace}},
            "statefulset": {"replicaCount": 1, "clustered": False},
            "service": {"nexus": {"enabled": True, "type": "ClusterIP"}},
            "ingress": {"enabled": True, "host": ui_host(params), "defaultRule": True},
            "nexus": {"docker": {"enabled": False}},
        }
        if h.ingress_class:
            values["ingress"]["ingressClassName"] = h.ingress_class
        return values
    if h.flavour == "nexus-repository-manager":
        values = {"ingress": {"enabled": True, "hostRepo": ui_host(params)},
                  "nexus": {"docker": {"enabled": False}}}
        if h.ingress_class:
            values["ingress"]["ingressClassName"] = h.ingress_class
        return values
    return {"namespaces": {"nexusNs": h.namespace}, "ingress": {"host": ui_host(params)},
            "service": {"docker": {"enabled": False}}}


def release_document(params: RunbookParams, now: dt.datetime | None = None) -> dict[str, Any]:
    """The release JSON (helm pkg/release.Release field names) for revision 1."""
    h = params.helm
    c = chart(h.flavour)
    config = install_values(params)
    values = coalesce(c.defaults, config)
    meta = c.metadata()
    objects = render.ui_services(meta, h.release, h.namespace, values)
    stamp = (now or dt.datetime.now(dt.UTC)).isoformat().replace("+00:00", "Z")
    return {
        "name": h.release,
        "info": {"first_deployed": stamp, "last_deployed": stamp, "deleted": "",
                 "description": "Install complete", "status": "deployed",
                 "notes": f"Nexus Repository ({c.name} {c.version}) installed in {h.namespace}."},
        "chart": {"metadata": meta, "lock": None, "templates": [], "values": c.defaults, "schema": None,
                  "files": []},
        "config": config,
        "manifest": render.manifest(c.name, objects),
        "version": 1,
        "namespace": h.namespace,
    }


def seed_helm_release(api_client: Any, params: RunbookParams) -> dict[str, Any]:
    """Create ``helm.namespace`` and the release Secret of ``helm.release`` unless a release exists.

    Returns ``{"namespace_created": bool, "secret": name, "created": bool}``.
    """
    from kubernetes import client
    from kubernetes.client.rest import ApiException

    h = params.helm
    core = client.CoreV1Api(api_client)
    created_ns = False
    try:
        core.create_namespace({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": h.namespace}},
                              _preload_content=False)
        created_ns = True
    except ApiException as err:
        if err.status != 409:
            raise
    existing = json.loads(core.list_namespaced_secret(
        h.namespace, label_selector=f"owner=helm,name={h.release}", _preload_content=False).data).get("items")
    name = secret_name(h.release, 1)
    if existing:
        return {"namespace_created": created_ns, "secret": existing[-1]["metadata"]["name"], "created": False}
    stored = encode_release(release_document(params))
    body = {
        "apiVersion": "v1", "kind": "Secret", "type": RELEASE_TYPE,
        "metadata": {"name": name, "namespace": h.namespace,
                     "labels": {"name": h.release, "owner": "helm", "status": "deployed", "version": "1",
                                "createdAt": str(int(time.time()))}},
        "data": {"release": base64.b64encode(stored.encode()).decode()},
    }
    core.create_namespaced_secret(h.namespace, body, _preload_content=False)
    return {"namespace_created": created_ns, "secret": name, "created": True}
