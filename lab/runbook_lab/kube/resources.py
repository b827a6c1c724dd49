"""The resource types the stand-in serves: built-in kinds and the kinds of installed CRDs.

Per-kind facts (scope, short names, categories, status subresource, which extra field selectors the
real server supports, whether DELETE answers the deleted object or a Status, which name rule applies)
follow the upstream registries in k8s.io/kubernetes/pkg/registry/** and the published discovery documents.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field
from typing import Any

from .errors import bad_request
from .schema import make_validator

VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")
STATUS_VERBS = ("get", "patch", "update")

# Patch content types the apiserver accepts (handlers register strategic merge only for built-in types).
JSON_PATCH = "application/json-patch+json"
MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_PATCH = "application/strategic-merge-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"
BUILTIN_PATCH_TYPES = [JSON_PATCH, MERGE_PATCH, STRATEGIC_PATCH, APPLY_PATCH]
CUSTOM_PATCH_TYPES = [JSON_PATCH, MERGE_PATCH, APPLY_PATCH]


@dataclass
class ResourceType:
    group: str
    kind: str
    plural: str
    singular: str
    namespaced: bool
    versions: list[str]  # served versions, storage version first
    storage_version: str
    short_names: list[str] = field(default_factory=list)
    categories: list[str] = field(default_factory=list)
    has_status: bool = False
    builtin: bool = True
    field_selectors: tuple[str, ...] = ()
    returns_deleted_object: bool = False  # Store.ReturnDeletedObject
    name_rule: str = "subdomain"
    tracks_generation: bool = False  # strategy sets metadata.generation and bumps it on spec changes
    allow_unconditional_update: bool = True
    allow_create_on_update: bool = False
    subresources: tuple[str, ...] = ()
    crd_name: str | None = None
    # custom resources: per served version
    schemas: dict[str, dict[str, Any]] = field(default_factory=dict)
    printer_columns: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    _validators: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def key(self) -> tuple[str, str]:
        return (self.group, self.plural)

    def api_version(self, version: str | None = None) -> str:
        v = version or self.storage_version
        return f"{self.group}/{v}" if self.group else v

    @property
    def list_kind(self) -> str:
        return f"{self.kind}List"

    @property
    def patch_types(self) -> list[str]:
        return BUILTIN_PATCH_TYPES if self.builtin else CUSTOM_PATCH_TYPES

    def all_field_selectors(self) -> tuple[str, ...]:
        base = (
            ("metadata.name", "metadata.namespace")
            if self.namespaced or not self.builtin
            else ("metadata.name",)
        )
        return base + self.field_selectors

    def check_field_selector(self, fields: list[str]) -> None:
        allowed = self.all_field_selectors()
        for f in fields:
            if f in allowed:
                continue
            if self.builtin:
                raise bad_request(f"field label not supported: {f}")
            # apiextensions-apiserver crdhandler: only metadata.name / metadata.namespace (no
            # selectableFields).
            raise bad_request(
                f'"{f}" is not a known field selector: only "metadata.name", "metadata.namespace"'
            )

    def validator(self, version: str) -> Any | None:
        schema = self.schemas.get(version)
        if schema is None:
            return None
        if version not in self._validators:
            self._validators[version] = make_validator(schema)
        return self._validators[version]


def _core(kind: str, plural: str, namespaced: bool, **kw: Any) -> ResourceType:
    return ResourceType(
        group="",
        kind=kind,
        plural=plural,
        singular=kind.lower(),
        namespaced=namespaced,
        versions=["v1"],
        storage_version="v1",
        **kw,
    )


def _rbac() -> list[ResourceType]:
    """rbac.authorization.k8s.io/v1 (pkg/registry/rbac): stored and served; the stand-in authorizes nothing,
    so these are checked for shape (strict field validation), not enforced."""
    return [
        ResourceType(
            group="rbac.authorization.k8s.io",
            kind=kind,
            plural=plural,
            singular=kind.lower(),
            namespaced=namespaced,
            versions=["v1"],
            storage_version="v1",
            name_rule="path",  # ValidateRBACName: path.IsValidPathSegmentName
        )
        for kind, plural, namespaced in (
            ("Role", "roles", True),
            ("RoleBinding", "rolebindings", True),
            ("ClusterRole", "clusterroles", False),
            ("ClusterRoleBinding", "clusterrolebindings", False),
        )
    ]


def builtin_types() -> list[ResourceType]:
    return [
        _core(
            "Namespace",
            "namespaces",
            False,
            short_names=["ns"],
            has_status=True,
            name_rule="label",
            returns_deleted_object=True,
            field_selectors=("status.phase",),
            subresources=("status", "finalize"),
        ),
        _core(
            "Node",
            "nodes",
            False,
            short_names=["no"],
            has_status=True,
            field_selectors=("spec.unschedulable",),
            subresources=("status",),
        ),
        _core(
            "Pod",
            "pods",
            True,
            short_names=["po"],
            categories=["all"],
            has_status=True,
            returns_deleted_object=True,
            subresources=("status", "binding"),
            field_selectors=(
                "spec.nodeName",
                "spec.restartPolicy",
                "spec.schedulerName",
                "spec.serviceAccountName",
                "spec.hostNetwork",
                "status.phase",
                "status.podIP",
                "status.podIPs",
                "status.nominatedNodeName",
            ),
        ),
        _core(
            "Event",
            "events",
            True,
            short_names=["ev"],
            name_rule="subdomain",
            allow_create_on_update=True,
            field_selectors=(
                "involvedObject.kind",
                "involvedObject.namespace",
                "involvedObject.name",
                "involvedObject.uid",
                "involvedObject.apiVersion",
                "involvedObject.resourceVersion",
                "involvedObject.fieldPath",
                "reason",
                "reportingComponent",
                "source",
                "type",
            ),
        ),
        _core("Secret", "secrets", True, field_selectors=("type",)),
        _core("ConfigMap", "configmaps", True, short_names=["cm"]),
        _core("ServiceAccount", "serviceaccounts", True, short_names=["sa"]),
        _core(
            "Service",
            "services",
            True,
            short_names=["svc"],
            categories=["all"],
            has_status=True,
            name_rule="dns1035",
            returns_deleted_object=True,
            subresources=("status",),
            field_selectors=("spec.clusterIP", "spec.type"),
        ),
        ResourceType(
            group="networking.k8s.io",
            kind="Ingress",
            plural="ingresses",
            singular="ingress",
            namespaced=True,
            versions=["v1"],
            storage_version="v1",
            short_names=["ing"],
            has_status=True,
            tracks_generation=True,
            subresources=("status",),
        ),
        ResourceType(
            group="batch",
            kind="Job",
            plural="jobs",
            singular="job",
            namespaced=True,
            versions=["v1"],
            storage_version="v1",
            categories=["all"],
            has_status=True,
            tracks_generation=True,
            field_selectors=("status.successful",),
            subresources=("status",),
        ),
        ResourceType(
            group="batch",
            kind="CronJob",
            plural="cronjobs",
            singular="cronjob",
            namespaced=True,
            versions=["v1"],
            storage_version="v1",
            short_names=["cj"],
            categories=["all"],
            has_status=True,
            tracks_generation=True,
            subresources=("status",),
        ),
        *_rbac(),
        ResourceType(
            group="apiextensions.k8s.io",
            kind="CustomResourceDefinition",
            plural="customresourcedefinitions",
            singular="customresourcedefinition",
            namespaced=False,
            versions=["v1"],
            storage_version="v1",
            short_names=["crd", "crds"],
            categories=["api-extensions"],
            has_status=True,
            tracks_generation=True,
            subresources=("status",),
        ),
    ]


def version_priority(version: str) -> tuple[int, int, int]:
    """Kubernetes version ordering: GA > beta > alpha, then by number (v1 > v1beta2 > v1beta1 > v1alpha5)."""
    m = re.fullmatch(r"v(\d+)(?:(alpha|beta)(\d+))?", version)
    if not m:
        return (-1, 0, 0)
    stage = {"alpha": 0, "beta": 1, None: 2}[m[2]]
    return (stage, int(m[1]), int(m[3] or 0))


def type_from_crd(crd: dict[str, Any]) -> ResourceType:
    spec = crd["spec"]
    names = spec["names"]
    served = [v for v in spec["versions"] if v.get("served", True)]
    storage = next((v["name"] for v in spec["versions"] if v.get("storage")), served[0]["name"])
    versions = sorted((v["name"] for v in served), key=version_priority, reverse=True)
    rt = ResourceType(
        group=spec["group"],
        kind=names["kind"],
        plural=names["plural"],
        singular=names.get("singular", names["kind"].lower()),
        namespaced=spec.get("scope") == "Namespaced",
        versions=versions,
        storage_version=storage,
        short_names=list(names.get("shortNames") or []),
        categories=list(names.get("categories") or []),
        builtin=False,
        name_rule="subdomain",
        tracks_generation=True,
        allow_unconditional_update=False,
        crd_name=crd["metadata"]["name"],
    )
    for v in served:
        schema = ((v.get("schema") or {}).get("openAPIV3Schema")) or {
            "type": "object",
            "x-kubernetes-preserve-unknown-fields": True,
        }
        rt.schemas[v["name"]] = schema
        rt.printer_columns[v["name"]] = list(v.get("additionalPrinterColumns") or [])
        if "status" in (v.get("subresources") or {}):
            rt.has_status = True
    rt.subresources = ("status",) if rt.has_status else ()
    return rt


class Registry:
    """Lookup of served resource types; rebuilt when CRDs change."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._builtins = builtin_types()
        self._custom: dict[str, ResourceType] = {}

    def set_crds(self, crds: list[dict[str, Any]]) -> None:
        custom = {}
        for crd in crds:
            if crd.get("metadata", {}).get("deletionTimestamp"):
                continue
            custom[crd["metadata"]["name"]] = type_from_crd(crd)
        with self._lock:
            self._custom = custom

    def all(self) -> list[ResourceType]:
        with self._lock:
            return self._builtins + list(self._custom.values())

    def by_plural(self, group: str, version: str, plural: str) -> ResourceType | None:
        for rt in self.all():
            if rt.group == group and rt.plural == plural and version in rt.versions:
                return rt
        return None

    def by_key(self, key: tuple[str, str]) -> ResourceType | None:
        return next((rt for rt in self.all() if rt.key == key), None)

    def by_api_version_kind(self, api_version: str, kind: str) -> tuple[ResourceType, str] | None:
        group, _, version = api_version.rpartition("/")
        for rt in self.all():
            if rt.group == group and rt.kind == kind and version in rt.versions:
                return rt, version
        return None

    def groups(self) -> dict[str, list[str]]:
        """group -> served versions, preferred first."""
        out: dict[str, set[str]] = {}
        for rt in self.all():
            out.setdefault(rt.group, set()).update(rt.versions)
        return {g: sorted(vs, key=version_priority, reverse=True) for g, vs in out.items()}
