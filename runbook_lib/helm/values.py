"""The mirror endpoints and the Helm values overlay that exposes them, per chart flavour.

One endpoint per Nexus docker connector (stage 1 gives every upstream its own): ingress host, Service port
and target port (both the connector port: the Service forwards to the port Nexus listens on). Ingress hosts
are ``helm.hosts[registry]`` or ``<label>.<helm.host_suffix>`` with the label scheme of ``registry_label``.

The overlay sets only the keys this stage owns; ``helm upgrade --reuse-values -f overlay.yaml`` merges it over
the release's values (maps merge key by key, lists are replaced whole, so docker registries someone else
added to the list are carried over). What a flavour cannot express becomes either a note (a side effect the
operator should know) or a limit: an endpoint that would not be reachable at its mirror URL. Limits stop the
stage before anything is written, because nodes configured later (stage 4) would silently pull around the
cache for the missing registries.
"""

from __future__ import annotations

import copy
import html
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from runbook_lib.params import RunbookParams
from runbook_lib.plan import StageFailed, diff_documents

OVERLAY_FILE = "helm-values-overlay.yaml"

# Registry host -> ingress host label, where the rule below does not give the usual short name.
LABELS = {
    "docker.io": "docker",
    "registry-1.docker.io": "docker",
    "public.ecr.aws": "ecr",
    "registry.k8s.io": "k8s",
    "k8s.gcr.io": "k8s-gcr",
}

# ingress-nginx annotations for a registry (kubernetes.github.io/ingress-nginx, user-guide annotations):
NGINX_DEFAULTS = {
    # default client_max_body_size is 1m: larger uploads (pushes, big manifests) get 413
    "nginx.ingress.kubernetes.io/proxy-body-size": "0",
    # default 60 s between two reads: Nexus may fetch a whole large layer upstream before the first byte
    "nginx.ingress.kubernetes.io/proxy-read-timeout": "600",
    "nginx.ingress.kubernetes.io/proxy-send-timeout": "600",
    # stream request bodies to Nexus instead of spooling them to the controller's disk first
    "nginx.ingress.kubernetes.io/proxy-request-buffering": "off",
}
# ingress-nginx redirects HTTP to HTTPS (308) for hosts listed under the Ingress's tls (with or without a
# secretName); a mirror reached over plain http must switch that off for its Ingress.
NGINX_NO_SSL_REDIRECT = {"nginx.ingress.kubernetes.io/ssl-redirect": "false"}
# AWS Load Balancer Controller (kubernetes-sigs.github.io/aws-load-balancer-controller, ingress annotations):
ALB_DEFAULTS = {
    "alb.ingress.kubernetes.io/healthcheck-path": "/v2/",
    "alb.ingress.kubernetes.io/success-codes": "200,401",  # /v2/ answers 401 with a Bearer challenge
    # default idle timeout 60 s; see the nginx read timeout above
    "alb.ingress.kubernetes.io/load-balancer-attributes": "idle_timeout.timeout_seconds=600",
}
_SECRETISH = re.compile(r"password|passwd|token|fileContents", re.IGNORECASE)


def registry_label(registry: str) -> str:
    """docker.io -> docker, gcr.io -> gcr, quay.io -> quay, ghcr.io -> ghcr, registry.k8s.io -> k8s,
    public.ecr.aws -> ecr; otherwise the first label of the host after a leading ``registry.``."""
    if registry in LABELS:
        return LABELS[registry]
    host = registry.split(":", 1)[0]
    if host.startswith("registry.") and host.count(".") >= 2:
        host = host[len("registry.") :]
    return host.split(".", 1)[0]


@dataclass
class Endpoint:
    registry: str
    label: str
    host: str  # ingress rule host
    repository: str  # Nexus repository whose connector serves it
    port: int  # Service port (= connector port)
    target_port: int  # the connector port on the Nexus pod
    url: str  # what nodes use: the mirror URL, default https://<host>

    @property
    def tls(self) -> bool:
        return self.url.startswith("https://")

    def row(self) -> dict[str, Any]:
        return {
            "registry": self.registry,
            "label": self.label,
            "ingress host": self.host,
            "repository": self.repository,
            "service port": self.port,
            "target port": self.target_port,
            "mirror URL": self.url,
        }


def endpoints(params: RunbookParams) -> list[Endpoint]:
    """One endpoint per connector, in parameter order. Raises StageFailed when a host cannot be named or
    an upstream's mirror_url points somewhere else than its ingress host."""
    helm = params.helm
    out: list[Endpoint] = []
    seen_ports: set[int] = set()
    hosts: dict[str, str] = {}
    for up in params.upstreams:
        if up.connector_port is None or up.connector_port in seen_ports:
            continue
        seen_ports.add(up.connector_port)
        label = registry_label(up.registry)
        mirror_host = urlsplit(up.mirror_url).hostname if up.mirror_url else None
        host = helm.hosts.get(up.registry) or (f"{label}.{helm.host_suffix}" if helm.host_suffix else None)
        if host is None and mirror_host and not _is_address(mirror_host):
            host = mirror_host
        if host is None:
            raise StageFailed(
                f"no ingress host for {up.registry}: set helm.host_suffix (hosts become "
                f"<label>.<suffix>, here {label}.<suffix>) or helm.hosts[{up.registry!r}]",
                step="ingress hosts",
            )
        host = host.lower()
        if mirror_host and mirror_host.lower() != host:
            raise StageFailed(
                f"{up.registry}: mirror_url {up.mirror_url} does not point at its ingress host {host}; "
                f"nodes would bypass the Ingress. Set the mirror_url to http(s)://{host}[:port] or "
                f"helm.hosts[{up.registry!r}] to {mirror_host}",
                step="ingress hosts",
            )
        if host in hosts:
            raise StageFailed(
                f"{up.registry} and {hosts[host]} would share the ingress host {host}; "
                f"set helm.hosts for one of them",
                step="ingress hosts",
            )
        hosts[host] = up.registry
        out.append(
            Endpoint(
                up.registry,
                label,
                host,
                up.endpoint_repository,
                up.connector_port,
                up.connector_port,
                up.mirror_url or f"https://{host}",
            )
        )
    if not out:
        raise StageFailed(
            "no upstream has a connector_port: there is no docker endpoint to expose", step="ingress hosts"
        )
    return out


def _is_address(host: str) -> bool:
    import ipaddress

    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def ingress_annotations(params: RunbookParams, ep: Endpoint, tls_block: bool) -> dict[str, str]:
    """Class defaults (+ no SSL redirect for an http mirror behind a TLS block), then helm.annotations."""
    cls = (params.helm.ingress_class or "").lower()
    out: dict[str, str] = {}
    if cls == "nginx":
        out.update(NGINX_DEFAULTS)
        if tls_block and not ep.tls:
            out.update(NGINX_NO_SSL_REDIRECT)
    elif cls == "alb":
        out.update(ALB_DEFAULTS)
    out.update(params.helm.annotations)
    return out


def coalesce(base: Any, top: Any) -> Any:
    """Helm's value merge: maps merge key by key, anything else replaces, null deletes the key."""
    if not isinstance(base, dict) or not isinstance(top, dict):
        return copy.deepcopy(top)
    out = copy.deepcopy(base)
    for key, value in top.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = coalesce(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def get_path(doc: Any, path: str, default: Any = None) -> Any:
    for part in path.split("."):
        if not isinstance(doc, dict) or part not in doc:
            return default
        doc = doc[part]
    return doc


@dataclass
class Overlay:
    flavour: str
    values: dict[str, Any]
    endpoints: list[Endpoint]
    notes: list[str] = field(default_factory=list)
    limits: list[str] = field(default_factory=list)

    def yaml(self) -> str:
        head = (
            f"# Helm values overlay for chart {self.flavour}, generated by the runbook (stage helm).\n"
            "# Apply with: helm upgrade <release> <chart> --reuse-values -f this-file\n"
        )
        return head + yaml.safe_dump(self.values, sort_keys=False, default_flow_style=False)

    def write(self, run_dir: str | Path) -> Path:
        path = Path(run_dir) / OVERLAY_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.yaml())
        return path

    def raise_for_limits(self, record: Any = None) -> None:
        if not self.limits:
            return
        err = StageFailed(
            "the chart cannot express what the parameters ask for: " + "; ".join(self.limits),
            step="chart limits",
        )
        if record is not None:
            record("failure", err.failure_record())
        raise err

    def record(self) -> dict[str, Any]:
        return {
            "flavour": self.flavour,
            "overlay": self.values,
            "notes": self.notes,
            "limits": self.limits,
            "endpoints": [e.row() for e in self.endpoints],
        }


def build_overlay(params: RunbookParams, current: dict[str, Any] | None = None) -> Overlay:
    """The overlay for params.helm.flavour; ``current`` is the release's effective values (for the notes and
    to keep docker registry entries someone else added)."""
    current = current or {}
    flavour = params.helm.flavour
    eps = endpoints(params)
    builder = {
        "nxrm-ha": _nxrm_ha,
        "nexus-repository-manager": _legacy,
        "nxrm-aws-resiliency": _aws_resiliency,
    }[flavour]
    overlay = Overlay(flavour, {}, eps)
    builder(params, current, overlay)
    return overlay


def _kept_registries(current: dict[str, Any], ours: set[int], overlay: Overlay) -> list[dict[str, Any]]:
    kept = [
        r
        for r in (get_path(current, "nexus.docker.registries") or [])
        if isinstance(r, dict) and r.get("port") not in ours
    ]
    if kept:
        overlay.notes.append(
            "docker registries already in the release for other ports are kept: "
            + ", ".join(f"{r.get('host')}:{r.get('port')}" for r in kept)
        )
    return copy.deepcopy(kept)


def _class_notes(params: RunbookParams, current: dict[str, Any], overlay: Overlay, ui_enabled: bool) -> None:
    cls = params.helm.ingress_class
    have = get_path(current, "ingress.ingressClassName")
    if cls and ui_enabled and have != cls:
        overlay.notes.append(f"ingress.ingressClassName ({have} -> {cls}) also applies to the UI Ingress")


def _nxrm_ha(params: RunbookParams, current: dict[str, Any], overlay: Overlay) -> None:
    helm = params.helm
    entries = []
    for ep in overlay.endpoints:
        entry: dict[str, Any] = {"host": ep.host, "port": ep.port, "targetPort": ep.target_port}
        if helm.tls_secret:
            entry["secretName"] = helm.tls_secret
        annotations = ingress_annotations(params, ep, tls_block=True)  # nxrm-ha always renders tls
        if annotations:
            entry["annotations"] = annotations
        entries.append(entry)
    ours = {ep.port for ep in overlay.endpoints}
    docker = {
        "enabled": True,
        "type": helm.service_type or "ClusterIP",
        "registries": entries + _kept_registries(current, ours, overlay),
    }
    overlay.values = {"nexus": {"docker": docker}}
    if helm.ingress_class:
        overlay.values["ingress"] = {"ingressClassName": helm.ingress_class}
    _class_notes(params, current, overlay, bool(get_path(current, "ingress.enabled")))
    if not helm.tls_secret:
        overlay.notes.append(
            "no helm.tls_secret: the chart still renders a tls entry per host, so the ingress "
            "controller serves its default certificate for these hosts"
        )
    overlay.notes.append(
        "the chart also adds a containerPort docker-<port> per registry to the StatefulSet: "
        "`helm upgrade` rolls the Nexus pods once (manifests mode leaves the StatefulSet alone; "
        "a numeric targetPort needs no declared containerPort)"
    )
    ns = get_path(current, "namespaces.nexusNs.name")
    if ns and ns != helm.namespace:
        overlay.notes.append(
            f"the chart writes its objects into namespaces.nexusNs.name={ns!r}, not the release "
            f"namespace {helm.namespace!r}"
        )


def _legacy(params: RunbookParams, current: dict[str, Any], overlay: Overlay) -> None:
    helm = params.helm
    entries = []
    for ep in overlay.endpoints:
        entry: dict[str, Any] = {"host": ep.host, "port": ep.port}
        if helm.tls_secret:
            entry["secretName"] = helm.tls_secret
        entries.append(entry)
    ours = {ep.port for ep in overlay.endpoints}
    overlay.values = {
        "nexus": {
            "docker": {"enabled": True, "registries": entries + _kept_registries(current, ours, overlay)}
        }
    }
    ingress: dict[str, Any] = {"enabled": True}
    if helm.ingress_class:
        ingress["ingressClassName"] = helm.ingress_class
    sets = {
        json.dumps(ingress_annotations(params, ep, tls_block=True), sort_keys=True)
        for ep in overlay.endpoints
    }
    if len(sets) > 1:
        overlay.limits.append(
            "nexus-repository-manager has one annotation set (ingress.annotations) for every "
            "docker Ingress, but the endpoints need different ones (mixed http/https mirror URLs)"
        )
    annotations = json.loads(sets.pop()) if sets else {}
    if annotations:
        ingress["annotations"] = annotations
        overlay.notes.append("ingress.annotations are shared by the UI Ingress and every docker Ingress")
    overlay.values["ingress"] = ingress
    if not get_path(current, "ingress.enabled"):
        overlay.notes.append(
            "ingress.enabled: true (the docker Ingresses need it) also renders the UI Ingress for "
            f"ingress.hostRepo={get_path(current, 'ingress.hostRepo')!r}"
        )
    _class_notes(params, current, overlay, bool(get_path(current, "ingress.enabled")))
    if get_path(current, "service.enabled") is False:
        overlay.values["service"] = {"enabled": True}
        overlay.notes.append(
            "service.enabled: true (the docker Services need it) also renders the UI Service"
        )
    have_type = get_path(current, "service.type") or "ClusterIP"
    if helm.service_type and helm.service_type != have_type:
        overlay.notes.append(
            f"service.type is shared with the UI Service; left at {have_type} "
            f"(helm.service_type {helm.service_type} not applied)"
        )
    overlay.notes.append(
        "no targetPort in this chart: the Service forwards to the same port number, which is "
        "the connector port"
    )


def _aws_resiliency(params: RunbookParams, current: dict[str, Any], overlay: Overlay) -> None:
    helm = params.helm
    first, rest = overlay.endpoints[0], overlay.endpoints[1:]
    if rest:
        overlay.limits.append(
            "nxrm-aws-resiliency exposes one docker port per release (service.docker.port); "
            f"only {first.registry} ({first.host} -> {first.port}) fits, not "
            + ", ".join(f"{e.registry} ({e.host} -> {e.port})" for e in rest)
            + ". Use the nxrm-ha chart (a list of registries), expose the others with your own "
            + "Service/Ingress, "
            "or mirror fewer registries"
        )
    annotations = {}
    if helm.ingress_class:
        annotations["kubernetes.io/ingress.class"] = helm.ingress_class  # this chart has no ingressClassName
    annotations.update(ingress_annotations(params, first, tls_block=False))
    overlay.values = {
        "service": {
            "docker": {
                "enabled": True,
                "type": helm.service_type or "NodePort",
                "port": first.port,
                "targetPort": first.target_port,
            }
        },
        "ingress": {"dockerIngress": {"enabled": True, "host": first.host, "annotations": annotations}},
    }
    if helm.tls_secret:
        overlay.notes.append(
            "this chart renders no tls on its Ingress: helm.tls_secret is not used; an ALB "
            "terminates TLS with alb.ingress.kubernetes.io/certificate-arn (set it in helm.annotations)"
        )
    elif (
        first.tls
        and (helm.ingress_class or "").lower() == "alb"
        and "alb.ingress.kubernetes.io/certificate-arn" not in annotations
    ):
        overlay.notes.append(
            "the mirror URL is https: set alb.ingress.kubernetes.io/certificate-arn and "
            "listen-ports in helm.annotations"
        )
    have = get_path(current, "ingress.dockerIngress.annotations") or {}
    placeholder = (
        have.get("alb.ingress.kubernetes.io/subnets") == "subnet-1,subnet-2"
        and "alb.ingress.kubernetes.io/subnets" not in annotations
    )
    if placeholder:
        overlay.notes.append(
            "the chart's placeholder annotation alb.ingress.kubernetes.io/subnets=subnet-1,subnet-2 "
            "is still in the values (merged maps keep it): set the real subnets in helm.annotations"
        )


# -- reading and showing -------------------------------------------------------------------------------
def owned_diff(current: dict[str, Any], overlay: Overlay) -> dict[str, list[Any]]:
    """Field-level differences for the keys the overlay sets (lists compare whole)."""
    return diff_documents(current, overlay.values, secret_keys=())


def leaf_paths(doc: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """Dotted paths of the overlay's leaves; lists and annotation maps count as one value."""
    if isinstance(doc, dict) and not prefix.endswith("annotations"):
        out: list[tuple[str, Any]] = []
        for key, value in doc.items():
            out += leaf_paths(value, f"{prefix}.{key}" if prefix else str(key))
        return out
    return [(prefix, doc)]


def comparison_rows(
    config: dict[str, Any], effective: dict[str, Any], overlay: Overlay
) -> list[dict[str, str]]:
    """Per owned key: what the release was given, its effective value (with chart defaults), the overlay."""
    rows = []
    for path, value in leaf_paths(overlay.values):
        have = get_path(effective, path)
        rows.append(
            {
                "key": path,
                "release values": _show(get_path(config, path)),
                "effective now": _show(have),
                "overlay": _show(value),
                "changes": "yes" if diff_documents(have, value, secret_keys=()) else "",
            }
        )
    return rows


def _show(value: Any) -> str:
    if value is None:
        return "-"
    return value if isinstance(value, str) else json.dumps(value)


def mask(doc: Any) -> Any:
    """A copy with password/token-like values masked (release values can carry secrets)."""
    if isinstance(doc, dict):
        return {
            k: (
                "***"
                if _SECRETISH.search(str(k)) and not isinstance(v, (dict, list)) and v not in (None, "")
                else mask(v)
            )
            for k, v in doc.items()
        }
    if isinstance(doc, list):
        return [mask(v) for v in doc]
    return doc


@dataclass
class SideBySide:
    """Two YAML documents next to each other (renders as HTML in the notebook)."""

    left_title: str
    left: dict[str, Any]
    right_title: str
    right: dict[str, Any]

    def _text(self, doc: dict[str, Any]) -> str:
        return yaml.safe_dump(mask(doc), sort_keys=False, default_flow_style=False) if doc else "{}\n"

    def _repr_html_(self) -> str:
        cell = "<td style='vertical-align:top;text-align:left'><b>{}</b><pre>{}</pre></td>"
        return (
            "<table><tr>"
            + cell.format(html.escape(self.left_title), html.escape(self._text(self.left)))
            + cell.format(html.escape(self.right_title), html.escape(self._text(self.right)))
            + "</tr></table>"
        )

    def __str__(self) -> str:
        return (
            f"--- {self.left_title}\n{self._text(self.left)}--- {self.right_title}\n{self._text(self.right)}"
        )

    __repr__ = __str__


def endpoint_table(params: RunbookParams):
    import pandas as pd

    return pd.DataFrame([e.row() for e in endpoints(params)])
