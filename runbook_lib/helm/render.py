"""The Service and Ingress objects each chart renders for given values, as `helm template` prints them.

Written from the charts' documented behaviour (templates of sonatype/helm3-charts nxrm-ha 95.2.0 and
sonatype/nxrm3-helm-repository 64.2.0) and pinned by the
golden files rendered from the real charts (tests/data/reference/nexus-helm/*/rendered-docker-8082.yaml,
checked in
tests). Only the objects this stage cares about are built: the docker Service/Ingress per registry and the
UI Services (for a realistic lab release manifest). Helm's ownership metadata is not part of a rendered
template: Helm adds it when it creates an object (pkg/action/validate.go setMetadataVisitor), and so does
``with_helm_ownership`` for objects applied without Helm.
"""

from __future__ import annotations

import copy
from typing import Any

import yaml

from runbook_lib.helm.values import get_path

MANAGED_BY = "app.kubernetes.io/managed-by"
RELEASE_NAME = "meta.helm.sh/release-name"
RELEASE_NAMESPACE = "meta.helm.sh/release-namespace"


def _trunc(text: str, n: int = 63) -> str:
    return text[:n].rstrip("-")


def fullname(chart_name: str, release: str, values: dict[str, Any]) -> str:
    """`<chart>.fullname` of nxrm-ha and nexus-repository-manager (_helpers.tpl)."""
    if values.get("fullnameOverride"):
        return _trunc(str(values["fullnameOverride"]))
    name = values.get("nameOverride") or chart_name
    return _trunc(release) if name in release else _trunc(f"{release}-{name}")


def _chart_labels(chart: dict[str, Any], release: str, values: dict[str, Any]) -> dict[str, str]:
    name = _trunc(str(values.get("nameOverride") or chart["name"]))
    labels = {
        "helm.sh/chart": _trunc(f"{chart['name']}-{chart['version']}".replace("+", "_")),
        "app.kubernetes.io/name": name,
        "app.kubernetes.io/instance": release,
    }
    if chart.get("appVersion"):
        labels["app.kubernetes.io/version"] = str(chart["appVersion"])
    labels[MANAGED_BY] = "Helm"  # .Release.Service
    labels.update(get_path(values, "nexus.extraLabels") or {})
    return labels


def _selector(chart: dict[str, Any], release: str, values: dict[str, Any]) -> dict[str, str]:
    sel = {
        "app.kubernetes.io/name": _trunc(str(values.get("nameOverride") or chart["name"])),
        "app.kubernetes.io/instance": release,
    }
    sel.update(get_path(values, "nexus.extraSelectorLabels") or {})
    return sel


def _rule(host: str | None, service: str, port: int, path: str = "/") -> dict[str, Any]:
    rule: dict[str, Any] = {"host": host} if host else {}
    rule["http"] = {
        "paths": [
            {
                "path": path,
                "pathType": "Prefix",
                "backend": {"service": {"name": service, "port": {"number": port}}},
            }
        ]
    }
    return rule


def _registries(values: dict[str, Any]) -> list[dict[str, Any]]:
    if not get_path(values, "nexus.docker.enabled"):
        return []
    return [r for r in (get_path(values, "nexus.docker.registries") or []) if isinstance(r, dict)]


# -- nxrm-ha -------------------------------------------------------------------------------------------
def _ha_namespace(values: dict[str, Any], release_namespace: str) -> str:
    return get_path(values, "namespaces.nexusNs.name") or release_namespace


def _ha_docker(chart: dict[str, Any], release: str, ns: str, values: dict[str, Any]) -> list[dict[str, Any]]:
    base = fullname(chart["name"], release, values)[:49]  # `trunc 49`, no trimSuffix
    labels, selector = _chart_labels(chart, release, values), _selector(chart, release, values)
    namespace = _ha_namespace(values, ns)
    docker = get_path(values, "nexus.docker") or {}
    out = []
    for reg in _registries(values):
        name = f"{base}-docker-{reg.get('port')}"
        svc_meta: dict[str, Any] = {"name": name, "namespace": namespace}
        if get_path(values, "service.annotations"):
            svc_meta["annotations"] = dict(get_path(values, "service.annotations"))
        svc_meta["labels"] = dict(labels)
        port: dict[str, Any] = {
            "name": f"docker-{reg.get('port')}",
            "protocol": docker.get("protocol"),
            "port": reg.get("port"),
        }
        if reg.get("targetPort") is not None:  # omitted: the template renders null, the API defaults to port
            port["targetPort"] = reg["targetPort"]
        out.append(
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": svc_meta,
                "spec": {"type": docker.get("type"), "selector": dict(selector), "ports": [port]},
            }
        )
        ing_meta: dict[str, Any] = {"namespace": namespace, "name": name, "labels": dict(labels)}
        if reg.get("annotations"):
            ing_meta["annotations"] = dict(reg["annotations"])
        spec: dict[str, Any] = {}
        if get_path(values, "ingress.ingressClassName"):
            spec["ingressClassName"] = get_path(values, "ingress.ingressClassName")
        tls: dict[str, Any] = {"hosts": [reg.get("host")]}
        if reg.get("secretName"):
            tls["secretName"] = reg["secretName"]
        spec["tls"] = [tls]
        spec["rules"] = [_rule(reg.get("host"), name, reg.get("port"))]
        out.append(
            {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": ing_meta, "spec": spec}
        )
    return out


def _ha_ui(chart: dict[str, Any], release: str, ns: str, values: dict[str, Any]) -> list[dict[str, Any]]:
    full = fullname(chart["name"], release, values)
    labels, selector = _chart_labels(chart, release, values), _selector(chart, release, values)
    namespace = _ha_namespace(values, ns)
    out = []
    headless_meta: dict[str, Any] = {"name": _trunc(f"{full}-hl"), "namespace": namespace}
    annotations = {
        **(get_path(values, "service.annotations") or {}),
        **(get_path(values, "service.headless.annotations") or {}),
    }
    if annotations:
        headless_meta["annotations"] = annotations
    headless_meta["labels"] = dict(labels)
    out.append(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": headless_meta,
            "spec": {
                "clusterIP": "None",
                "publishNotReadyAddresses": bool(
                    get_path(values, "service.headless.publishNotReadyAddresses")
                ),
                "selector": dict(selector),
                "ports": [{"name": "nexus-ui", "port": 8081, "targetPort": "nexus-ui"}],
            },
        }
    )
    nexus = get_path(values, "service.nexus") or {}
    if nexus.get("enabled"):
        meta: dict[str, Any] = {"name": full, "namespace": namespace}
        if get_path(values, "service.annotations"):
            meta["annotations"] = dict(get_path(values, "service.annotations"))
        meta["labels"] = dict(labels)
        out.append(
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": meta,
                "spec": {
                    "type": nexus.get("type"),
                    "selector": dict(selector),
                    "ports": [
                        {
                            "name": "nexus-ui",
                            "protocol": nexus.get("protocol"),
                            "port": nexus.get("port"),
                            "targetPort": nexus.get("targetPort"),
                        }
                    ],
                },
            }
        )
    return out


# -- nexus-repository-manager (deprecated) -------------------------------------------------------------
def _legacy_docker(
    chart: dict[str, Any], release: str, ns: str, values: dict[str, Any]
) -> list[dict[str, Any]]:
    full = fullname(chart["name"], release, values)
    base = full[:49]
    labels, selector = _chart_labels(chart, release, values), _selector(chart, release, values)
    service = get_path(values, "service") or {}
    ingress = get_path(values, "ingress") or {}
    out = []
    for reg in _registries(values):
        name = f"{base}-docker-{reg.get('port')}"
        if service.get("enabled"):
            meta: dict[str, Any] = {"name": name}
            if service.get("annotations"):
                meta["annotations"] = dict(service["annotations"])
            meta["labels"] = {**labels, **(reg.get("labels") or {})}
            out.append(
                {
                    "apiVersion": "v1",
                    "kind": "Service",
                    "metadata": meta,
                    "spec": {
                        "type": service.get("type"),
                        "ports": [
                            {"port": reg.get("port"), "protocol": "TCP", "name": f"docker-{reg.get('port')}"}
                        ],
                        "selector": dict(selector),
                    },
                }
            )
        if ingress.get("enabled"):
            ing_meta: dict[str, Any] = {"name": name, "labels": dict(labels)}
            if ingress.get("annotations"):
                ing_meta["annotations"] = dict(ingress["annotations"])
            spec: dict[str, Any] = {}
            if ingress.get("ingressClassName"):
                spec["ingressClassName"] = ingress["ingressClassName"]
            tls: dict[str, Any] = {"hosts": [reg.get("host")]}
            if reg.get("secretName"):
                tls["secretName"] = reg["secretName"]
            spec["tls"] = [tls]
            spec["rules"] = [_rule(reg.get("host"), name, reg.get("port"))]
            out.append(
                {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": ing_meta, "spec": spec}
            )
    return out


def _legacy_ui(chart: dict[str, Any], release: str, ns: str, values: dict[str, Any]) -> list[dict[str, Any]]:
    service = get_path(values, "service") or {}
    if not service.get("enabled"):
        return []
    meta: dict[str, Any] = {"name": fullname(chart["name"], release, values)}
    if service.get("annotations"):
        meta["annotations"] = dict(service["annotations"])
    meta["labels"] = {**_chart_labels(chart, release, values), **(service.get("labels") or {})}
    return [
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": meta,
            "spec": {
                "type": service.get("type"),
                "ports": [
                    {"port": get_path(values, "nexus.nexusPort"), "protocol": "TCP", "name": "nexus-ui"}
                ],
                "selector": _selector(chart, release, values),
            },
        }
    ]


# -- nxrm-aws-resiliency (deprecated) ------------------------------------------------------------------
def aws_docker_service_name(chart: dict[str, Any]) -> str:
    return f"{chart['name']}-docker-service"  # `.Chart.Name`: one release per namespace


def aws_docker_ingress_name(chart: dict[str, Any], release: str) -> str:
    return f"{chart['name']}-{chart['version']}.{release}-ingress-nxrm-docker"


def _aws_docker(chart: dict[str, Any], release: str, ns: str, values: dict[str, Any]) -> list[dict[str, Any]]:
    namespace = get_path(values, "namespaces.nexusNs") or ns
    docker = get_path(values, "service.docker") or {}
    dingress = get_path(values, "ingress.dockerIngress") or {}
    out = []
    if docker.get("enabled"):
        out.append(
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {
                    "name": aws_docker_service_name(chart),
                    "namespace": namespace,
                    "labels": {"app": "nxrm"},
                },
                "spec": {
                    "type": docker.get("type"),
                    "selector": {"app": "nxrm"},
                    "ports": [
                        {
                            "name": "docker-service",
                            "protocol": docker.get("protocol"),
                            "port": docker.get("port"),
                            "targetPort": docker.get("targetPort"),
                        }
                    ],
                },
            }
        )
    if dingress.get("enabled"):
        meta: dict[str, Any] = {"namespace": namespace, "name": aws_docker_ingress_name(chart, release)}
        if dingress.get("annotations"):
            meta["annotations"] = dict(dingress["annotations"])
        out.append(
            {
                "apiVersion": "networking.k8s.io/v1",
                "kind": "Ingress",
                "metadata": meta,
                "spec": {
                    "rules": [_rule(dingress.get("host"), aws_docker_service_name(chart), docker.get("port"))]
                },
            }
        )
    return out


def _aws_ui(chart: dict[str, Any], release: str, ns: str, values: dict[str, Any]) -> list[dict[str, Any]]:
    nexus = get_path(values, "service.nexus") or {}
    return [
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {
                "name": f"{chart['name']}-service",
                "namespace": get_path(values, "namespaces.nexusNs") or ns,
                "labels": {"app": "nxrm"},
            },
            "spec": {
                "type": nexus.get("type"),
                "selector": {"app": "nxrm"},
                "ports": [
                    {
                        "protocol": nexus.get("protocol"),
                        "port": nexus.get("port"),
                        "targetPort": nexus.get("targetPort"),
                    }
                ],
            },
        }
    ]


_DOCKER = {
    "nxrm-ha": _ha_docker,
    "nexus-repository-manager": _legacy_docker,
    "nxrm-aws-resiliency": _aws_docker,
}
_UI = {"nxrm-ha": _ha_ui, "nexus-repository-manager": _legacy_ui, "nxrm-aws-resiliency": _aws_ui}
_SOURCES = {
    "nxrm-ha": ("services.yaml", "ingress.yaml"),
    "nexus-repository-manager": ("service.yaml", "ingress.yaml"),
    "nxrm-aws-resiliency": ("services.yaml", "ingress.yaml"),
}


def docker_objects(
    chart: dict[str, Any], release: str, release_namespace: str, values: dict[str, Any]
) -> list[dict[str, Any]]:
    """The docker Services and Ingresses for the effective ``values`` (chart metadata from the release)."""
    return _DOCKER[chart["name"]](chart, release, release_namespace, values)


def ui_services(
    chart: dict[str, Any], release: str, release_namespace: str, values: dict[str, Any]
) -> list[dict[str, Any]]:
    return _UI[chart["name"]](chart, release, release_namespace, values)


def namespace_of(obj: dict[str, Any], release_namespace: str) -> str:
    return obj["metadata"].get("namespace") or release_namespace


def with_helm_ownership(obj: dict[str, Any], release: str, release_namespace: str) -> dict[str, Any]:
    """The object with the label and annotations Helm requires before it adopts an existing object."""
    out = copy.deepcopy(obj)
    meta = out["metadata"]
    meta["labels"] = {**(meta.get("labels") or {}), MANAGED_BY: "Helm"}
    meta["annotations"] = {
        **(meta.get("annotations") or {}),
        RELEASE_NAME: release,
        RELEASE_NAMESPACE: release_namespace,
    }
    return out


def ownership_conflict(actual: dict[str, Any], release: str, release_namespace: str) -> str | None:
    """Why Helm (and we) must not take this object over, or None (helm validate.go checkOwnership)."""
    annotations = (actual.get("metadata") or {}).get("annotations") or {}
    owner = annotations.get(RELEASE_NAME)
    owner_ns = annotations.get(RELEASE_NAMESPACE)
    if owner is not None and (owner != release or (owner_ns or "") != release_namespace):
        return f"it belongs to Helm release {owner_ns}/{owner}"
    return None


def manifest(chart_name: str, objects: list[dict[str, Any]]) -> str:
    """Objects as a Helm release manifest (`---` + `# Source:` per document)."""
    sources = _SOURCES[chart_name]
    parts = []
    for obj in objects:
        source = sources[1] if obj["kind"] == "Ingress" else sources[0]
        parts.append(
            f"---\n# Source: {chart_name}/templates/{source}\n"
            + yaml.safe_dump(obj, sort_keys=False, default_flow_style=False)
        )
    return "".join(parts)
