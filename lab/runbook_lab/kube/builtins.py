"""Strategies of the built-in kinds: defaulting, status handling and the validations the real server applies.

Only the basics are reproduced, each from the upstream registry strategy / defaults / validation of that
kind (pkg/registry/<group>/<kind>/strategy.go, pkg/apis/<group>/v1/defaults.go,
pkg/apis/<group>/validation/validation.go) and the default admission plugins (NamespaceLifecycle,
ServiceAccount, DefaultTolerationSeconds, Priority). Deliberate gaps: no ServiceAccount token volume,
no deep PodSpec validation (only names/images/restartPolicy), no endpoint objects, no unknown-field pruning
of built-in kinds (the v37 Python client's pydantic models cannot send unknown fields anyway).
"""

from __future__ import annotations

import base64
import binascii
import copy
import ipaddress
import json
from collections.abc import Callable
from typing import Any

from .errors import FieldError, bad_request
from .names import config_key, dns1123_label, qualified_name
from .resources import ResourceType, type_from_crd

SERVICE_CIDR = ipaddress.ip_network("10.100.0.0/16")  # EKS default service CIDR for 10.0.0.0/8 VPCs
NODE_PORT_RANGE = range(30000, 32768)
DEFAULT_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")
UNDELETABLE_NAMESPACES = ("default", "kube-system", "kube-public")


class Allocator:
    """Cluster IPs and node ports already in use (handed in by the store)."""

    def __init__(self, used_ips: set[str], used_ports: set[int]) -> None:
        self.used_ips, self.used_ports = used_ips, used_ports

    def cluster_ip(self) -> str:
        for ip in SERVICE_CIDR.hosts():
            if str(ip) not in self.used_ips and ip != SERVICE_CIDR.network_address + 1:
                self.used_ips.add(str(ip))
                return str(ip)
        raise bad_request("range is full")

    def node_port(self) -> int:
        for port in NODE_PORT_RANGE:
            if port not in self.used_ports:
                self.used_ports.add(port)
                return port
        raise bad_request("range is full")


# -- defaults -------------------------------------------------------------------------------------
def _default_container(c: dict[str, Any]) -> None:
    image = c.get("image") or ""
    if "imagePullPolicy" not in c and image:
        # SetDefaults_Container: Always for :latest or untagged images, IfNotPresent otherwise.
        last = image.rsplit("/", 1)[-1]
        tagged = ":" in last and not last.endswith(":latest")
        c["imagePullPolicy"] = "IfNotPresent" if tagged or "@" in last else "Always"
    c.setdefault("terminationMessagePath", "/dev/termination-log")
    c.setdefault("terminationMessagePolicy", "File")
    c.setdefault("resources", {})
    for port in c.get("ports") or []:
        port.setdefault("protocol", "TCP")


def default_pod_spec(spec: dict[str, Any]) -> None:
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("schedulerName", "default-scheduler")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("securityContext", {})
    spec.setdefault("enableServiceLinks", True)
    for c in (spec.get("containers") or []) + (spec.get("initContainers") or []):
        if isinstance(c, dict):
            _default_container(c)


def _qos_class(spec: dict[str, Any]) -> str:
    requests, limits, guaranteed = False, False, True
    for c in spec.get("containers") or []:
        res = c.get("resources") or {}
        req, lim = res.get("requests") or {}, res.get("limits") or {}
        requests = requests or bool(req)
        limits = limits or bool(lim)
        for r in ("cpu", "memory"):
            if r not in lim or req.get(r, lim.get(r)) != lim.get(r):
                guaranteed = False
    if not requests and not limits:
        return "BestEffort"
    return "Guaranteed" if guaranteed else "Burstable"


def _not_ready_tolerations(spec: dict[str, Any]) -> None:
    # DefaultTolerationSeconds admission plugin.
    tolerations = spec.setdefault("tolerations", [])
    for key in ("node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"):
        if not any(t.get("key") == key and t.get("effect") in (None, "", "NoExecute") for t in tolerations):
            tolerations.append(
                {"key": key, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}
            )


def prepare_for_create(rt: ResourceType, obj: dict[str, Any], alloc: Callable[[], Allocator]) -> None:
    """Defaults plus the strategy's PrepareForCreate (status reset or initialised)."""
    kind, meta = rt.kind, obj["metadata"]
    if kind == "Pod":
        spec = obj.setdefault("spec", {})
        default_pod_spec(spec)
        spec.setdefault("serviceAccountName", "default")
        spec["serviceAccount"] = spec["serviceAccountName"]
        spec.setdefault("priority", 0)
        spec.setdefault("preemptionPolicy", "PreemptLowerPriority")
        _not_ready_tolerations(spec)
        obj["status"] = {"phase": "Pending", "qosClass": _qos_class(spec)}
    elif kind == "Namespace":
        obj.setdefault("spec", {}).setdefault("finalizers", ["kubernetes"])
        obj["status"] = {"phase": "Active"}
        meta.setdefault("labels", {})["kubernetes.io/metadata.name"] = meta["name"]
    elif kind == "Job":
        _prepare_job(obj)
        obj["status"] = {}
    elif kind == "Service":
        _prepare_service(obj, None, alloc)
        obj["status"] = {"loadBalancer": {}}
    elif kind == "Ingress":
        obj["status"] = {"loadBalancer": {}}
    elif kind == "Secret":
        _fold_string_data(obj)
        obj.setdefault("type", "Opaque")
    elif kind == "CustomResourceDefinition":
        obj["status"] = _crd_status(obj)


def _prepare_job(obj: dict[str, Any]) -> None:
    meta, spec = obj["metadata"], obj.setdefault("spec", {})
    if spec.get("completions") is None and spec.get("parallelism") is None:
        spec["completions"] = 1
        spec["parallelism"] = 1
    spec.setdefault("parallelism", 1)
    spec.setdefault("backoffLimit", 6)
    spec.setdefault("completionMode", "NonIndexed")
    spec.setdefault("suspend", False)
    if spec.get("podFailurePolicy") is None:
        spec.setdefault("podReplacementPolicy", "TerminatingOrFailed")
    template = spec.setdefault("template", {})
    default_pod_spec(template.setdefault("spec", {}))
    if not spec.get("manualSelector"):
        # generateSelector (pkg/registry/batch/job/strategy.go)
        uid = meta["uid"]
        labels = template.setdefault("metadata", {}).setdefault("labels", {})
        labels.update(
            {
                "batch.kubernetes.io/controller-uid": uid,
                "batch.kubernetes.io/job-name": meta["name"],
                "controller-uid": uid,
                "job-name": meta["name"],
            }
        )
        spec["selector"] = {"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}
    meta.setdefault("labels", {}).setdefault("batch.kubernetes.io/job-name", meta["name"])
    meta["labels"].setdefault("job-name", meta["name"])


def _prepare_service(obj: dict[str, Any], old: dict[str, Any] | None, alloc: Callable[[], Allocator]) -> None:
    spec = obj.setdefault("spec", {})
    old_spec = (old or {}).get("spec") or {}
    spec.setdefault("type", "ClusterIP")
    spec.setdefault("sessionAffinity", "None")
    if spec["type"] != "ExternalName":
        if old_spec.get("clusterIP") and not spec.get("clusterIP"):
            spec["clusterIP"] = old_spec["clusterIP"]  # update keeps the allocated IP
        if not spec.get("clusterIP"):
            spec["clusterIP"] = alloc().cluster_ip()
        spec["clusterIPs"] = [spec["clusterIP"]]
        if spec["clusterIP"] != "None":
            spec.setdefault("ipFamilies", ["IPv4"])
            spec.setdefault("ipFamilyPolicy", "SingleStack")
        spec.setdefault("internalTrafficPolicy", "Cluster")
    for i, port in enumerate(spec.get("ports") or []):
        port.setdefault("protocol", "TCP")
        if "targetPort" not in port and "port" in port:
            port["targetPort"] = port["port"]
        if spec["type"] in ("NodePort", "LoadBalancer") and not port.get("nodePort"):
            old_ports = old_spec.get("ports") or []
            port["nodePort"] = (
                old_ports[i].get("nodePort")
                if i < len(old_ports) and old_ports[i].get("nodePort")
                else alloc().node_port()
            )
    if spec["type"] in ("NodePort", "LoadBalancer"):
        spec.setdefault("externalTrafficPolicy", "Cluster")


def _fold_string_data(obj: dict[str, Any]) -> None:
    # v1 -> internal conversion merges stringData into data (stringData wins) and drops it.
    string_data = obj.pop("stringData", None) or {}
    if string_data:
        data = obj.setdefault("data", {})
        for k, v in string_data.items():
            data[k] = base64.b64encode(str(v).encode()).decode()


def _crd_status(crd: dict[str, Any]) -> dict[str, Any]:
    names = crd.get("spec", {}).get("names", {})
    storage = [v["name"] for v in crd.get("spec", {}).get("versions", []) if v.get("storage")]
    return {
        "acceptedNames": copy.deepcopy(names),
        "conditions": [
            {
                "type": "NamesAccepted",
                "status": "True",
                "reason": "NoConflicts",
                "message": "no conflicts found",
                "lastTransitionTime": crd["metadata"]["creationTimestamp"],
            },
            {
                "type": "Established",
                "status": "True",
                "reason": "InitialNamesAccepted",
                "message": "the initial names have been accepted",
                "lastTransitionTime": crd["metadata"]["creationTimestamp"],
            },
        ],
        "storedVersions": storage,
    }


def prepare_for_update(
    rt: ResourceType, new: dict[str, Any], old: dict[str, Any], alloc: Callable[[], Allocator]
) -> None:
    kind = rt.kind
    if kind == "Pod":
        default_pod_spec(new.setdefault("spec", {}))
    elif kind == "Namespace":
        new.setdefault("spec", {}).setdefault("finalizers", (old.get("spec") or {}).get("finalizers", []))
        new["metadata"].setdefault("labels", {})["kubernetes.io/metadata.name"] = new["metadata"]["name"]
    elif kind == "Job":
        spec, old_spec = new.setdefault("spec", {}), old.get("spec") or {}
        for key in ("selector", "completionMode", "podReplacementPolicy", "backoffLimit", "suspend"):
            if key not in spec and key in old_spec:
                spec[key] = copy.deepcopy(old_spec[key])
        default_pod_spec(spec.setdefault("template", {}).setdefault("spec", {}))
    elif kind == "Service":
        _prepare_service(new, old, alloc)
    elif kind == "Secret":
        _fold_string_data(new)
        new.setdefault("type", "Opaque")


# -- validation -----------------------------------------------------------------------------------
def _validate_containers(containers: Any, path: str, required: bool) -> list[FieldError]:
    errs: list[FieldError] = []
    if not containers:
        if required:
            errs.append(FieldError.required(path))
        return errs
    names: set[str] = set()
    for i, c in enumerate(containers):
        p = f"{path}[{i}]"
        name = (c or {}).get("name") or ""
        if not name:
            errs.append(FieldError.required(f"{p}.name"))
        else:
            errs.extend(FieldError.invalid(f"{p}.name", name, m) for m in dns1123_label(name))
            if name in names:
                errs.append(FieldError("FieldValueDuplicate", f"{p}.name", name))
            names.add(name)
        if not (c or {}).get("image"):
            errs.append(FieldError.required(f"{p}.image"))
    return errs


def _validate_pod_spec(
    spec: dict[str, Any], path: str, restart_policies: tuple[str, ...]
) -> list[FieldError]:
    errs = _validate_containers(spec.get("containers"), f"{path}.containers", True)
    errs += _validate_containers(spec.get("initContainers"), f"{path}.initContainers", False)
    policy = spec.get("restartPolicy")
    if policy not in restart_policies:
        errs.append(FieldError.not_supported(f"{path}.restartPolicy", policy, list(restart_policies)))
    return errs


# ValidatePodUpdate's message (upstream appends a diff of the two specs, which is not reproduced)
POD_MUTABLE = (
    "pod updates may not change fields other than `spec.containers[*].image`,"
    "`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions "
    "to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was "
    "previously negative)"
)


def _pod_spec_mutable_view(spec: dict[str, Any]) -> dict[str, Any]:
    view = copy.deepcopy(spec)
    for key in ("containers", "initContainers"):
        for c in view.get(key) or []:
            c.pop("image", None)
    for key in ("activeDeadlineSeconds", "tolerations", "schedulingGates"):
        view.pop(key, None)
    return view


def _secret_errors(obj: dict[str, Any], old: dict[str, Any] | None) -> list[FieldError]:
    errs: list[FieldError] = []
    data = obj.get("data") or {}
    total = 0
    for key, value in data.items():
        errs.extend(FieldError.invalid("data", key, m) for m in config_key(key))
        total += len(base64.b64decode(value or ""))
    if total > 1024 * 1024:
        errs.append(FieldError("FieldValueTooLong", "data", "", f"must have at most {1024 * 1024} bytes"))
    stype = obj.get("type") or "Opaque"
    required = {
        "kubernetes.io/dockerconfigjson": [".dockerconfigjson"],
        "kubernetes.io/dockercfg": [".dockercfg"],
        "kubernetes.io/tls": ["tls.crt", "tls.key"],
    }.get(stype, [])
    for key in required:
        if key not in data:
            errs.append(FieldError.required(f"data[{key}]"))
        elif key in (".dockerconfigjson", ".dockercfg"):
            try:
                json.loads(base64.b64decode(data[key]))
            except ValueError as exc:
                errs.append(FieldError.invalid(f"data[{key}]", "<secret contents redacted>", str(exc)))
    if stype == "kubernetes.io/basic-auth" and not ({"username", "password"} & set(data)):
        errs.append(FieldError.required("data[username]"))
    if old is not None:
        if (old.get("type") or "Opaque") != stype:
            errs.append(FieldError.invalid("type", stype, "field is immutable"))
        errs += _immutable_data(obj, old, ("data",))
    return errs


def _immutable_data(obj: dict[str, Any], old: dict[str, Any], fields: tuple[str, ...]) -> list[FieldError]:
    errs = []
    if old.get("immutable"):
        if not obj.get("immutable"):
            errs.append(FieldError.forbidden("immutable", "field is immutable when `immutable` is set"))
        for f in fields:
            if (obj.get(f) or {}) != (old.get(f) or {}):
                errs.append(FieldError.forbidden(f, "field is immutable when `immutable` is set"))
    return errs


def validate(rt: ResourceType, obj: dict[str, Any], old: dict[str, Any] | None) -> list[FieldError]:
    kind, errs = rt.kind, []
    if kind == "Pod":
        spec = obj.get("spec") or {}
        errs += _validate_pod_spec(spec, "spec", ("Always", "OnFailure", "Never"))
        if old is not None and _pod_spec_mutable_view(spec) != _pod_spec_mutable_view(old.get("spec") or {}):
            errs.append(FieldError.forbidden("spec", POD_MUTABLE))
    elif kind == "Job":
        spec = obj.get("spec") or {}
        template = spec.get("template")
        if not template:
            errs.append(FieldError.required("spec.template"))
        else:
            errs += _validate_pod_spec(
                template.get("spec") or {}, "spec.template.spec", ("OnFailure", "Never")
            )
        if old is not None:
            old_spec = old.get("spec") or {}
            for key in ("template", "selector", "completions", "completionMode"):
                if key == "template" and spec.get("suspend"):
                    continue
                if key in old_spec and spec.get(key) != old_spec.get(key):
                    errs.append(FieldError.invalid(f"spec.{key}", spec.get(key), "field is immutable"))
    elif kind == "Service":
        spec = obj.get("spec") or {}
        ports = spec.get("ports") or []
        if spec.get("type") != "ExternalName" and spec.get("clusterIP") != "None" and not ports:
            errs.append(FieldError.required("spec.ports"))
        for i, port in enumerate(ports):
            p = f"spec.ports[{i}]"
            if len(ports) > 1 and not port.get("name"):
                errs.append(FieldError.required(f"{p}.name"))
            number = port.get("port")
            if not isinstance(number, int) or not 1 <= number <= 65535:
                errs.append(FieldError.invalid(f"{p}.port", number, "must be between 1 and 65535, inclusive"))
            if port.get("protocol") not in ("TCP", "UDP", "SCTP"):
                errs.append(
                    FieldError.not_supported(f"{p}.protocol", port.get("protocol"), ["SCTP", "TCP", "UDP"])
                )
        if spec.get("type") not in ("ClusterIP", "NodePort", "LoadBalancer", "ExternalName"):
            errs.append(
                FieldError.not_supported(
                    "spec.type", spec.get("type"), ["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"]
                )
            )
        if old is not None and (old.get("spec") or {}).get("clusterIP") not in (None, spec.get("clusterIP")):
            errs.append(
                FieldError.invalid("spec.clusterIPs[0]", spec.get("clusterIP"), "may not change once set")
            )
    elif kind == "Secret":
        errs += _secret_errors(obj, old)
    elif kind == "ConfigMap":
        data, binary = obj.get("data") or {}, obj.get("binaryData") or {}
        for key in data:
            errs.extend(FieldError.invalid("data", key, m) for m in config_key(key))
            if key in binary:
                errs.append(FieldError.invalid("data", key, "duplicate of key present in binaryData"))
        for key in binary:
            errs.extend(FieldError.invalid("binaryData", key, m) for m in config_key(key))
        if old is not None:
            errs += _immutable_data(obj, old, ("data", "binaryData"))
    elif kind == "Ingress":
        for i, rule in enumerate((obj.get("spec") or {}).get("rules") or []):
            for j, path in enumerate(((rule or {}).get("http") or {}).get("paths") or []):
                if not path.get("pathType"):
                    errs.append(
                        FieldError.required(
                            f"spec.rules[{i}].http.paths[{j}].pathType", "pathType must be specified"
                        )
                    )
    elif kind == "CustomResourceDefinition":
        errs += _crd_errors(obj)
    elif kind == "Event":
        involved = obj.get("involvedObject") or {}
        ns = obj["metadata"].get("namespace")
        if involved.get("namespace") and involved["namespace"] != ns:
            errs.append(
                FieldError.invalid(
                    "involvedObject.namespace", involved["namespace"], "does not match event.namespace"
                )
            )
    return errs


def _crd_errors(crd: dict[str, Any]) -> list[FieldError]:
    spec = crd.get("spec") or {}
    names = spec.get("names") or {}
    errs = []
    expected = f"{names.get('plural', '')}.{spec.get('group', '')}"
    if crd["metadata"]["name"] != expected:
        errs.append(
            FieldError.invalid(
                "metadata.name", crd["metadata"]["name"], 'must be spec.names.plural+"."+spec.group'
            )
        )
    for key in ("group",):
        if not spec.get(key):
            errs.append(FieldError.required(f"spec.{key}"))
    for key in ("plural", "kind"):
        if not names.get(key):
            errs.append(FieldError.required(f"spec.names.{key}"))
    versions = spec.get("versions") or []
    if not versions:
        errs.append(FieldError.required("spec.versions"))
    elif sum(1 for v in versions if v.get("storage")) != 1:
        errs.append(
            FieldError.invalid(
                "spec.versions", versions, "must have exactly one version marked as storage version"
            )
        )
    if spec.get("scope") not in ("Cluster", "Namespaced"):
        errs.append(FieldError.not_supported("spec.scope", spec.get("scope"), ["Cluster", "Namespaced"]))
    if not errs:
        try:
            type_from_crd(crd)
        except (KeyError, TypeError, ValueError) as exc:
            errs.append(FieldError.invalid("spec", "", f"unusable definition: {exc}"))
    return errs


def check_secret_encoding(obj: dict[str, Any]) -> None:
    """Decoding a v1 Secret with non-base64 data fails before validation (a 400, not a 422)."""
    for value in (obj.get("data") or {}).values():
        try:
            base64.b64decode(value or "", validate=True)
        except (binascii.Error, TypeError) as exc:
            raise bad_request(
                f'Secret in version "v1" cannot be handled as a Secret: illegal base64 data: {exc}'
            ) from exc


def finalizer_errors(finalizers: Any) -> list[FieldError]:
    errs = []
    for f in finalizers or []:
        errs.extend(FieldError.invalid("metadata.finalizers", f, m) for m in qualified_name(str(f)))
    return errs
