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
# AWS Load Balancer Controller: kubernetes-sigs/aws-load-balancer-controller docs/guide/ingress/annotations.md
# (published at kubernetes-sigs.github.io/aws-load-balancer-controller/latest/guide/ingress/annotations/).
ALB = "alb.ingress.kubernetes.io/"
ALB_DEFAULTS = {
    # The target group's check runs on the traffic port, i.e. the docker connector (ip targets: the pod's
    # targetPort; instance targets: the node port). Nexus answers /v2/ there with 401 and a Bearer challenge
    # when the Docker Bearer Token realm is on, even for anonymous pulls (sonatype/nexus-public#651), and
    # with 200 when no token is asked for: both mean the connector serves.
    ALB + "healthcheck-path": "/v2/",
    ALB + "success-codes": "200,401",
    # default idle timeout 60 s (see the nginx read timeout); exclusive in a group: same on every Ingress
    ALB + "load-balancer-attributes": "idle_timeout.timeout_seconds=600",
}
_SERVICE_TYPES_FOR_INSTANCE = ("NodePort", "LoadBalancer")  # annotations.md, target-type
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


def alb_group_name(params: RunbookParams) -> str:
    """The IngressGroup of every docker Ingress: one group, one ALB (annotations.md, IngressGroup)."""
    helm = params.helm
    if helm.alb.group_name:
        return helm.alb.group_name
    return f"{helm.namespace}-{helm.release}-docker"[:63].rstrip("-.")


def listen_ports(ep: Endpoint) -> str:
    """The ALB listener nodes reach: the mirror URL's scheme and port. Without this annotation the controller
    opens HTTP:80 only, unless certificate-arn is set, and discovers certificates only for an HTTPS
    listener (model_build_listener.go computeIngressListenPorts; docs/guide/ingress/cert_discovery.md)."""
    parts = urlsplit(ep.url)
    port = parts.port or (443 if ep.tls else 80)
    return json.dumps([{"HTTPS" if ep.tls else "HTTP": port}], separators=(",", ":"))


def ingress_annotations(params: RunbookParams, ep: Endpoint, tls_block: bool) -> dict[str, str]:
    """Class defaults (+ no SSL redirect for an http mirror behind a TLS block), then helm.annotations."""
    helm = params.helm
    out: dict[str, str] = {}
    if helm.controller == "nginx":
        out.update(NGINX_DEFAULTS)
        if tls_block and not ep.tls:
            out.update(NGINX_NO_SSL_REDIRECT)
    elif helm.controller == "alb":
        out.update(ALB_DEFAULTS)
        out.update(
            {
                # default `instance` needs NodePort Services: with ClusterIP no target group is made
                # (aws-load-balancer-controller#1695); `ip` registers the pod IPs, any Service type.
                ALB + "target-type": helm.alb.target_type,
                # nxrm-ha renders one Ingress per registry; without a group each one gets its own ALB
                ALB + "group.name": alb_group_name(params),
                ALB + "scheme": helm.alb.scheme,
                ALB + "listen-ports": listen_ports(ep),
            }
        )
    out.update(helm.annotations)
    return out


def alb_service_type(params: RunbookParams, default: str) -> str:
    """The docker Service type: helm.service_type, else NodePort for ALB instance targets, else default."""
    helm = params.helm
    if helm.service_type:
        return helm.service_type
    if helm.controller == "alb" and helm.alb.target_type == "instance":
        return "NodePort"
    return default


def _alb_checks(
    params: RunbookParams, overlay: Overlay, annotations: dict[str, dict[str, str]], service_type: str
) -> None:
    """What the controller would refuse or route elsewhere, from the final annotations of each endpoint's
    Ingress (helm.annotations may override ours). ``annotations``: ingress host -> annotations."""
    if params.helm.controller != "alb":
        return
    by_host = {ep.host: ep for ep in overlay.endpoints}
    protocols: dict[int, set[str]] = {}
    for host, ann in annotations.items():
        ep = by_host[host]
        if ann.get(ALB + "target-type", "instance") == "instance" and service_type not in (
            _SERVICE_TYPES_FOR_INSTANCE
        ):
            overlay.limits.append(
                f"{host}: ALB instance targets need a NodePort or LoadBalancer Service, the docker "
                f"Service is {service_type} (no target group would be made, aws-load-balancer-controller"
                "#1695): use alb.target_type ip or helm.service_type NodePort"
            )
        try:
            entries = json.loads(ann.get(ALB + "listen-ports", "[]"))
            ports = {(proto, int(port)) for entry in entries for proto, port in entry.items()}
        except (ValueError, TypeError, AttributeError):
            overlay.limits.append(
                f"{host}: alb.ingress.kubernetes.io/listen-ports is not a JSON list of maps"
            )
            continue
        want = json.loads(listen_ports(ep))[0].popitem()
        if want not in ports:
            overlay.limits.append(
                f"{host}: nodes use {ep.url}, but the ALB would listen on "
                f"{', '.join(f'{p}:{n}' for p, n in sorted(ports)) or 'HTTP:80'} (listen-ports)"
            )
        for proto, port in ports:
            protocols.setdefault(port, set()).add(proto)
    clash = sorted(port for port, protos in protocols.items() if len(protos) > 1)
    if clash:
        overlay.limits.append(
            f"one ALB cannot listen with HTTP and HTTPS on the same port {clash}: the mirror URLs mix "
            "schemes on one port"
        )
    plain = sorted(ep.host for ep in overlay.endpoints if not ep.tls and ep.host in annotations)
    if plain and any(ALB + "ssl-redirect" in ann for ann in annotations.values()):
        overlay.limits.append(
            "alb.ingress.kubernetes.io/ssl-redirect turns every HTTP listener of the group into a redirect, "
            f"but {', '.join(plain)} are http mirror URLs"
        )


def _alb_notes(params: RunbookParams, overlay: Overlay) -> None:
    helm = params.helm
    if helm.controller != "alb":
        return
    if helm.alb.target_type == "ip":
        overlay.notes.append(
            "ALB target-type ip registers the Nexus pod IPs: the pods need VPC addresses (Amazon VPC CNI)"
        )
    overlay.notes.append(
        f"every docker Ingress joins the ALB IngressGroup {alb_group_name(params)!r} (one ALB); anyone "
        "allowed to write Ingresses can add rules to that group"
    )
    overlay.notes.append(
        "the controller does not write DNS: every ingress host must resolve to the ALB's DNS name "
        "(external-dns or your records); a new ALB can take minutes to provision"
        + (
            f", longer than helm.ready_timeout_s={helm.ready_timeout_s:g}"
            if helm.ready_timeout_s < 300
            else ""
        )
    )
    https = [ep.host for ep in overlay.endpoints if ep.tls]
    if https and ALB + "certificate-arn" not in helm.annotations:
        overlay.notes.append(
            "no alb.ingress.kubernetes.io/certificate-arn: the controller looks up ACM certificates for "
            f"{', '.join(https)} (certificate discovery); one must cover these hosts"
        )


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
    by_host: dict[str, dict[str, str]] = {}
    for ep in overlay.endpoints:
        entry: dict[str, Any] = {"host": ep.host, "port": ep.port, "targetPort": ep.target_port}
        if helm.tls_secret:
            entry["secretName"] = helm.tls_secret
        annotations = ingress_annotations(params, ep, tls_block=True)  # nxrm-ha always renders tls
        if annotations:
            entry["annotations"] = annotations
        by_host[ep.host] = annotations
        entries.append(entry)
    ours = {ep.port for ep in overlay.endpoints}
    service_type = alb_service_type(params, "ClusterIP")
    docker = {
        "enabled": True,
        "type": service_type,
        "registries": entries + _kept_registries(current, ours, overlay),
    }
    overlay.values = {"nexus": {"docker": docker}}
    if helm.ingress_class:
        overlay.values["ingress"] = {"ingressClassName": helm.ingress_class}
    _class_notes(params, current, overlay, bool(get_path(current, "ingress.enabled")))
    _alb_checks(params, overlay, by_host, service_type)
    _alb_notes(params, overlay)
    if helm.controller == "alb":
        if helm.tls_secret:
            overlay.notes.append(
                "the ALB serves ACM certificates: the tls secretName (helm.tls_secret) is not used by it"
            )
        if get_path(current, "ingress.enabled"):
            overlay.notes.append(
                "the UI Ingress (ingress.annotations) is not in the docker IngressGroup: it gets an ALB of "
                f"its own unless ingress.annotations sets {ALB}group.name: {alb_group_name(params)}"
            )
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
            "docker Ingress, but the endpoints need different ones (mirror URLs mixing http/https or ports)"
        )
    annotations = json.loads(sets.pop()) if sets else {}
    if annotations:
        ingress["annotations"] = annotations
        overlay.notes.append("ingress.annotations are shared by the UI Ingress and every docker Ingress")
    overlay.values["ingress"] = ingress
    if helm.controller == "alb":
        # one annotation set: checked per endpoint anyway (listen-ports must fit each mirror URL)
        per_host = {ep.host: ingress_annotations(params, ep, tls_block=True) for ep in overlay.endpoints}
        have_type = get_path(current, "service.type") or "ClusterIP"
        shared_type = have_type
        if helm.alb.target_type == "instance" and have_type not in _SERVICE_TYPES_FOR_INSTANCE:
            shared_type = alb_service_type(params, "NodePort")
            overlay.values["service"] = {"type": shared_type}
            overlay.notes.append(
                f"service.type {have_type} -> {shared_type} for ALB instance targets: the UI Service "
                "shares it"
            )
        _alb_checks(params, overlay, per_host, shared_type)
        _alb_notes(params, overlay)
        overlay.notes.append(
            "the UI Ingress shares the ALB annotations: it joins the docker IngressGroup and its target "
            "group is health-checked at /v2/ on the UI port, which is not a docker connector"
        )
    if not get_path(current, "ingress.enabled"):
        overlay.notes.append(
            "ingress.enabled: true (the docker Ingresses need it) also renders the UI Ingress for "
            f"ingress.hostRepo={get_path(current, 'ingress.hostRepo')!r}"
        )
    _class_notes(params, current, overlay, bool(get_path(current, "ingress.enabled")))
    if get_path(current, "service.enabled") is False:
        overlay.values.setdefault("service", {})["enabled"] = True
        overlay.notes.append(
            "service.enabled: true (the docker Services need it) also renders the UI Service"
        )
    have_type = get_path(current, "service.type") or "ClusterIP"
    if (
        helm.service_type
        and helm.service_type != have_type
        and "type" not in overlay.values.get("service", {})
    ):
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
    service_type = alb_service_type(params, "NodePort")  # the chart's default
    overlay.values = {
        "service": {
            "docker": {
                "enabled": True,
                "type": service_type,
                "port": first.port,
                "targetPort": first.target_port,
            }
        },
        "ingress": {"dockerIngress": {"enabled": True, "host": first.host, "annotations": annotations}},
    }
    if helm.tls_secret:
        overlay.notes.append(
            "this chart renders no tls on its Ingress: helm.tls_secret is not used; an ALB serves an "
            "ACM certificate (alb.ingress.kubernetes.io/certificate-arn in helm.annotations, or one "
            "discovered for the host)"
        )
    _alb_checks(params, overlay, {first.host: annotations}, service_type)
    _alb_notes(params, overlay)
    if helm.controller == "alb":
        overlay.notes.append(
            "the chart's UI Ingress (ingress.annotations) is not in the docker IngressGroup: it gets an "
            "ALB of its own"
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
    from runbook_lib.display import table

    return table([e.row() for e in endpoints(params)])
