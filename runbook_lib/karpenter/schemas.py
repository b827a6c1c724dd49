"""Validate Karpenter manifests against the vendored CRDs (crds/, see crds/PROVENANCE).

The CRD's ``openAPIV3Schema`` is checked with jsonschema (OpenAPI 3.0 schema objects follow JSON Schema
draft 4: boolean ``exclusiveMaximum``), plus what the API server does beyond it: fields the schema does not
know are *pruned* silently (structural schemas), which is reported here as a warning, because a field that
vanishes on apply (e.g. ``disruption.budgets`` on v0.32) is a mistake. CEL rules
(``x-kubernetes-validations``)
are not evaluated: a server-side dry-run is the complete check.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from importlib import resources
from typing import Any

import jsonschema  # without rfc3987_syntax: see runbook_lib/__init__.py
import yaml

_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

# CRD set (folder under crds/) -> the Karpenter releases it stands for
CRD_SETS: dict[str, tuple[tuple[int, int], tuple[int, int]]] = {
    "v0.31.5": ((0, 0), (0, 32)),
    "v0.32.10": ((0, 32), (0, 33)),
    "v0.37.0": ((0, 33), (1, 0)),
    "v1.0.0": ((1, 0), (1, 14)),
    "v1.14.1": ((1, 14), (99, 0)),
}
NEWEST = {"v1alpha1": "v0.31.5", "v1alpha5": "v0.31.5", "v1beta1": "v0.37.0", "v1": "v1.14.1"}
FILES = {
    ("karpenter.k8s.aws", "EC2NodeClass"): "karpenter.k8s.aws_ec2nodeclasses.yaml",
    ("karpenter.k8s.aws", "AWSNodeTemplate"): "karpenter.k8s.aws_awsnodetemplates.yaml",
    ("karpenter.sh", "NodePool"): "karpenter.sh_nodepools.yaml",
    ("karpenter.sh", "Provisioner"): "karpenter.sh_provisioners.yaml",
}


@dataclass(frozen=True)
class Problem:
    path: str
    message: str
    severity: str  # error | warning

    def __str__(self) -> str:
        return f"{self.severity}: {self.path or '(object)'}: {self.message}"


def crd_set_for(api_version: str, karpenter_version: str | None) -> str:
    """The CRD set matching a Karpenter release, or the newest one serving `api_version`."""
    if karpenter_version:
        core = re.split(r"[-~+]", karpenter_version.strip().lstrip("v"), maxsplit=1)[0]
        release = tuple(int(p) for p in (core.split(".") + ["0"])[:2])
        for name, (low, high) in CRD_SETS.items():
            if low <= release < high:
                return name
    return NEWEST[api_version]


@functools.cache
def _crd(crd_set: str, filename: str) -> dict[str, Any]:
    path = resources.files(__package__).joinpath("crds", crd_set, filename)
    if not path.is_file():
        raise KeyError(f"CRD set {crd_set} has no {filename}")
    return yaml.load(path.read_text(), Loader=_Loader)


def schema(crd_set: str, api_version: str, kind: str) -> dict[str, Any]:
    group, _, version = api_version.partition("/")
    crd = _crd(crd_set, FILES[(group, kind)])
    for v in crd["spec"]["versions"]:
        if v["name"] == version:
            return v["schema"]["openAPIV3Schema"]
    raise KeyError(f"CRD set {crd_set} does not serve {api_version} {kind}")


def _unknown_fields(obj: Any, sch: dict[str, Any], path: str) -> list[Problem]:
    out: list[Problem] = []
    if sch.get("x-kubernetes-preserve-unknown-fields"):
        return out
    if isinstance(obj, dict) and "properties" in sch:
        props = sch["properties"]
        for key, value in obj.items():
            sub = f"{path}.{key}" if path else key
            if key not in props:
                if not sch.get("additionalProperties"):
                    out.append(Problem(sub, "unknown field: the API server drops it", "warning"))
                continue
            out += _unknown_fields(value, props[key], sub)
    elif isinstance(obj, dict) and isinstance(sch.get("additionalProperties"), dict):
        for key, value in obj.items():
            out += _unknown_fields(value, sch["additionalProperties"], f"{path}.{key}")
    elif isinstance(obj, list) and isinstance(sch.get("items"), dict):
        for i, value in enumerate(obj):
            out += _unknown_fields(value, sch["items"], f"{path}[{i}]")
    return out


def validate(obj: dict[str, Any], crd_set: str) -> list[Problem]:
    """Problems of one manifest against one CRD set (errors: the API server would reject it)."""
    sch = schema(crd_set, obj.get("apiVersion", ""), obj.get("kind", ""))
    body = {k: v for k, v in obj.items() if k != "status"}
    body["metadata"] = {
        k: v for k, v in (obj.get("metadata") or {}).items() if k in ("name", "labels", "annotations")
    }
    problems = [
        Problem(".".join(str(p) for p in e.absolute_path), e.message, "error")
        for e in jsonschema.Draft4Validator(sch).iter_errors(body)
    ]
    spec_schema = sch.get("properties", {}).get("spec", {})
    problems += _unknown_fields(body.get("spec", {}), spec_schema, "spec")
    return problems


def errors(problems: list[Problem]) -> list[Problem]:
    return [p for p in problems if p.severity == "error"]
