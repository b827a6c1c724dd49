"""Seed the lab cluster with a Nexus Helm release, as if `helm install` had run (without docker exposure).

Creates the release namespace and the release Secret Helm 3's default storage driver writes
(helm pkg/storage/driver/secrets.go): name ``sh.helm.release.v1.<release>.v1``, type ``helm.sh/release.v1``,
labels ``name``, ``owner=helm``, ``status=deployed``, ``version=1``, ``createdAt``; data ``release`` = the
release
JSON gzipped and base64-encoded (the API base64-encodes it once more). The release carries the chart metadata
of the chosen flavour, the docker-related subset of the chart's default values (templates are not stored:
they are the chart's code), the install values and a manifest of the UI Services the chart renders for them.
Idempotent: an existing release (any revision) is left as it is.

The lab writes the release with code of its own, never with the runbook's Helm renderer or release codec:
stage 3 reads this release, so sharing that logic would mirror a bug instead of catching it. The UI
Services below are what each chart renders for the install values here (checked against the charts' own
`helm template` output in tests/data/reference/nexus-helm/<chart>/rendered-docker-8082.yaml). Only the
charts' data (metadata and default values, runbook_lib/helm/charts.py) is shared.
"""

from __future__ import annotations

import base64
import datetime as dt
import gzip
import json
import time
from typing import Any

import yaml

from runbook_lib.helm.charts import Chart, chart
from runbook_lib.params import RunbookParams

RELEASE_TYPE = "helm.sh/release.v1"  # helm pkg/storage/driver/secrets.go


def secret_name(release: str, version: int) -> str:
    return f"sh.helm.release.v1.{release}.v{version}"


def encode_release(release: dict[str, Any]) -> str:
    """Helm's stored form: base64 of the gzipped release JSON (helm pkg/storage/driver/util.go)."""
    return base64.b64encode(gzip.compress(json.dumps(release).encode())).decode()


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
        values = {
            "ingress": {"enabled": True, "hostRepo": ui_host(params)},
            "nexus": {"docker": {"enabled": False}},
        }
        if h.ingress_class:
            values["ingress"]["ingressClassName"] = h.ingress_class
        return values
    return {
        "namespaces": {"nexusNs": h.namespace},
        "ingress": {"host": ui_host(params)},
        "service": {"docker": {"enabled": False}},
    }


def _helm_labels(c: Chart, release: str) -> dict[str, str]:
    return {
        "helm.sh/chart": f"{c.name}-{c.version}",
        "app.kubernetes.io/name": c.name,
        "app.kubernetes.io/instance": release,
        "app.kubernetes.io/version": c.app_version,
        "app.kubernetes.io/managed-by": "Helm",
    }


def ui_services(c: Chart, release: str, namespace: str) -> list[dict[str, Any]]:
    """The UI Services the chart renders for install_values() (the charts' templates/service(s).yaml)."""
    if c.name == "nxrm-aws-resiliency":
        return [
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": f"{c.name}-service", "namespace": namespace, "labels": {"app": "nxrm"}},
                "spec": {
                    "type": "NodePort",
                    "selector": {"app": "nxrm"},
                    "ports": [{"protocol": "TCP", "port": 80, "targetPort": 8081}],
                },
            }
        ]
    # `<chart>.fullname` (the charts' _helpers.tpl): trunc 63, trimSuffix "-"
    name = (f"{release}-{c.name}" if c.name not in release else release)[:63].rstrip("-")
    selector = {"app.kubernetes.io/name": c.name, "app.kubernetes.io/instance": release}
    if c.name == "nexus-repository-manager":
        return [
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": name, "labels": _helm_labels(c, release)},
                "spec": {
                    "type": "ClusterIP",
                    "ports": [{"port": 8081, "protocol": "TCP", "name": "nexus-ui"}],
                    "selector": selector,
                },
            }
        ]
    return [
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": f"{name}-hl", "namespace": namespace, "labels": _helm_labels(c, release)},
            "spec": {
                "clusterIP": "None",
                "publishNotReadyAddresses": True,
                "selector": selector,
                "ports": [{"name": "nexus-ui", "port": 8081, "targetPort": "nexus-ui"}],
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": name, "namespace": namespace, "labels": _helm_labels(c, release)},
            "spec": {
                "type": "ClusterIP",
                "selector": selector,
                "ports": [{"name": "nexus-ui", "protocol": "TCP", "port": 80, "targetPort": 8081}],
            },
        },
    ]


def _manifest(c: Chart, objects: list[dict[str, Any]]) -> str:
    """A release manifest: each document after `---` and a `# Source:` line, as Helm stores it."""
    source = "service.yaml" if c.name == "nexus-repository-manager" else "services.yaml"
    return "".join(
        f"---\n# Source: {c.name}/templates/{source}\n" + yaml.safe_dump(obj, sort_keys=False)
        for obj in objects
    )


def release_document(params: RunbookParams, now: dt.datetime | None = None) -> dict[str, Any]:
    """The release JSON (helm pkg/release.Release field names) for revision 1."""
    h = params.helm
    c = chart(h.flavour)
    config = install_values(params)
    meta = c.metadata()
    objects = ui_services(c, h.release, h.namespace)
    stamp = (now or dt.datetime.now(dt.UTC)).isoformat().replace("+00:00", "Z")
    return {
        "name": h.release,
        "info": {
            "first_deployed": stamp,
            "last_deployed": stamp,
            "deleted": "",
            "description": "Install complete",
            "status": "deployed",
            "notes": f"Nexus Repository ({c.name} {c.version}) installed in {h.namespace}.",
        },
        "chart": {
            "metadata": meta,
            "lock": None,
            "templates": [],
            "values": c.defaults,
            "schema": None,
            "files": [],
        },
        "config": config,
        "manifest": _manifest(c, objects),
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
        core.create_namespace(
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": h.namespace}},
            _preload_content=False,
        )
        created_ns = True
    except ApiException as err:
        if err.status != 409:
            raise
    existing = json.loads(
        core.list_namespaced_secret(
            h.namespace, label_selector=f"owner=helm,name={h.release}", _preload_content=False
        ).data
    ).get("items")
    name = secret_name(h.release, 1)
    if existing:
        return {"namespace_created": created_ns, "secret": existing[-1]["metadata"]["name"], "created": False}
    stored = encode_release(release_document(params))
    body = {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": RELEASE_TYPE,
        "metadata": {
            "name": name,
            "namespace": h.namespace,
            "labels": {
                "name": h.release,
                "owner": "helm",
                "status": "deployed",
                "version": "1",
                "createdAt": str(int(time.time())),
            },
        },
        "data": {"release": base64.b64encode(stored.encode()).decode()},
    }
    core.create_namespaced_secret(h.namespace, body, _preload_content=False)
    return {"namespace_created": created_ns, "secret": name, "created": True}
