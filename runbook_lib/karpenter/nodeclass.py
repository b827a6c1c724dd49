"""Node classes: read, merge our userData part, diff, validate against the CRD, patch.

| Karpenter | object | userData field |
|---|---|---|
| <= v0.31 | AWSNodeTemplate karpenter.k8s.aws/v1alpha1 | spec.userData |
| v0.32-v0.37 | EC2NodeClass karpenter.k8s.aws/v1beta1 | spec.userData |
| >= v1.0 | EC2NodeClass karpenter.k8s.aws/v1 | spec.userData |

(the CRDs in runbook_lib/karpenter/crds/). Karpenter base64-encodes userData itself (every Script() in
aws/karpenter-provider-aws pkg/providers/amifamily/bootstrap/), so the field holds plain text.
Only ``spec.userData`` is written, by a JSON merge patch that carries the resourceVersion read (a concurrent
edit makes the patch fail with 409 instead of being overwritten). Every byte change of userData drifts every
node of the class (pkg/cloudprovider/drift.go), so the merge is deterministic and a rerun writes nothing.
"""

from __future__ import annotations

import copy
import difflib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from runbook_lib.karpenter import bottlerocket, schemas, userdata
from runbook_lib.params import RunbookParams
from runbook_lib.plan import Change, Plan

if TYPE_CHECKING:
    from kubernetes.client import ApiClient


@dataclass(frozen=True)
class NodeClassKind:
    api_version: str  # the parameter value: v1 | v1beta1 | v1alpha1
    group: str
    version: str
    plural: str
    kind: str
    hash_annotation: str  # set by Karpenter on the node class and on each NodeClaim/Machine it launched

    @property
    def full_api_version(self) -> str:
        return f"{self.group}/{self.version}"


KINDS = {
    "v1": NodeClassKind(
        "v1",
        "karpenter.k8s.aws",
        "v1",
        "ec2nodeclasses",
        "EC2NodeClass",
        "karpenter.k8s.aws/ec2nodeclass-hash",
    ),
    "v1beta1": NodeClassKind(
        "v1beta1",
        "karpenter.k8s.aws",
        "v1beta1",
        "ec2nodeclasses",
        "EC2NodeClass",
        "karpenter.k8s.aws/ec2nodeclass-hash",
    ),
    "v1alpha1": NodeClassKind(
        "v1alpha1",
        "karpenter.k8s.aws",
        "v1alpha1",
        "awsnodetemplates",
        "AWSNodeTemplate",
        "karpenter.k8s.aws/nodetemplate-hash",
    ),
}
ALIAS_FAMILIES = {
    "al2": "AL2",
    "al2023": "AL2023",
    "bottlerocket": "Bottlerocket",
    "windows2019": "Windows2019",
    "windows2022": "Windows2022",
    "windows2025": "Windows2025",
}


def kind_for(params: RunbookParams) -> NodeClassKind:
    return KINDS[params.karpenter.api_version]


def _custom(api_client: ApiClient) -> Any:
    from kubernetes import client

    return client.CustomObjectsApi(api_client)


def read(api_client: ApiClient, kind: NodeClassKind, name: str) -> dict[str, Any] | None:
    from kubernetes.client.rest import ApiException

    try:
        return _custom(api_client).get_cluster_custom_object(kind.group, kind.version, kind.plural, name)
    except ApiException as err:
        if err.status == 404:
            return None
        raise


def patch_user_data(
    api_client: ApiClient, kind: NodeClassKind, name: str, user_data: str, resource_version: str | None
) -> dict[str, Any]:
    body: dict[str, Any] = {"spec": {"userData": user_data}}
    if resource_version:
        body["metadata"] = {
            "resourceVersion": resource_version
        }  # precondition: 409 if someone edited it since
    return _custom(api_client).patch_cluster_custom_object(kind.group, kind.version, kind.plural, name, body)


def ami_family_of(obj: dict[str, Any], kind: NodeClassKind) -> str | None:
    """The family that decides the userData format: spec.amiFamily, else the v1 alias (CRD CEL rules),
    else AL2 for v1alpha1 (its default)."""
    spec = obj.get("spec") or {}
    if spec.get("amiFamily"):
        return spec["amiFamily"]
    for term in spec.get("amiSelectorTerms") or []:
        alias = term.get("alias")
        if alias:
            return ALIAS_FAMILIES.get(alias.split("@", 1)[0].lower())
    return "AL2" if kind.api_version == "v1alpha1" else None


# -- what we put in ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Generated:
    """Our userData content for one run: a boot script (AL2/AL2023) or a TOML block (Bottlerocket)."""

    ami_family: str
    payload: str

    def merge(self, existing: str | None) -> str:
        if self.ami_family == "Bottlerocket":
            return bottlerocket.merge(existing, self.payload)
        return userdata.merge(existing, self.payload, self.ami_family)

    def ours_in(self, user_data: str | None) -> str | None:
        if self.ami_family == "Bottlerocket":
            return bottlerocket.managed_block(user_data)
        return userdata.managed_script(user_data)


def diff_text(old: str, new: str, name: str) -> str:
    """A unified diff of a node class's userData (what `kubectl diff` would show for the field)."""
    lines = difflib.unified_diff(
        old.splitlines(keepends=True),
        new.splitlines(keepends=True),
        f"{name} spec.userData (cluster)",
        f"{name} spec.userData (planned)",
    )
    return "".join(lines) or "(no change)\n"


@dataclass
class NodeClassState:
    name: str
    kind: NodeClassKind
    obj: dict[str, Any] | None
    current: str = ""
    desired: str = ""
    family: str | None = None
    problems: list[str] = field(default_factory=list)  # blockers: this class cannot be changed
    warnings: list[str] = field(default_factory=list)

    @property
    def exists(self) -> bool:
        return self.obj is not None

    @property
    def changed(self) -> bool:
        return self.exists and not self.problems and self.current != self.desired

    @property
    def hash(self) -> str | None:
        return ((self.obj or {}).get("metadata", {}).get("annotations") or {}).get(self.kind.hash_annotation)

    def diff(self) -> str:
        return diff_text(self.current, self.desired, self.name)

    def row(self) -> dict[str, Any]:
        status = (
            "missing"
            if not self.exists
            else "blocked"
            if self.problems
            else "update"
            if self.changed
            else "unchanged"
        )
        return {
            "node class": self.name,
            "kind": f"{self.kind.kind} {self.kind.full_api_version}",
            "amiFamily": self.family or "",
            "status": status,
            "userData bytes": f"{len(self.current.encode())} -> {len(self.desired.encode())}"
            if self.exists
            else "",
            "notes": "; ".join(self.problems + self.warnings),
        }


def inspect(params: RunbookParams, api_client: ApiClient, name: str, generated: Generated) -> NodeClassState:
    """Read one node class and work out its desired userData, with every reason it cannot be changed."""
    kind = kind_for(params)
    obj = read(api_client, kind, name)
    state = NodeClassState(name, kind, obj)
    if obj is None:
        state.problems.append(
            f"{kind.kind} {name} not found: create it (see the example manifest) or fix "
            "karpenter.node_classes / api_version"
        )
        return state
    state.current = (obj.get("spec") or {}).get("userData") or ""
    state.family = ami_family_of(obj, kind)
    if state.family != generated.ami_family:
        state.problems.append(
            f"the node class is amiFamily {state.family}, the parameters say "
            f"{generated.ami_family}: its userData format would be wrong"
        )
        return state
    try:
        state.desired = generated.merge(state.current)
    except ValueError as err:  # MimeError, UserDataError, BottlerocketError: the user's content conflicts
        state.problems.append(str(err))
        return state
    report = userdata.size_report(state.desired)
    if not report["ok"]:
        state.problems.append(f"userData too large: {report['detail']}")
    candidate = copy.deepcopy(obj)
    candidate["spec"]["userData"] = state.desired
    for problem in schemas.validate(
        candidate, schemas.crd_set_for(params.karpenter.api_version, params.karpenter.version)
    ):
        (state.problems if problem.severity == "error" else state.warnings).append(str(problem))
    return state


def plan_changes(
    plan: Plan, params: RunbookParams, api_client: ApiClient, generated: Generated
) -> list[NodeClassState]:
    """One change per node class: update of spec.userData, or unchanged. Missing or blocked classes add no
    change; the caller reports them (states[i].problems)."""
    states = []
    for name in params.karpenter.node_classes:
        state = inspect(params, api_client, name, generated)
        states.append(state)
        if not state.exists or state.problems:
            continue
        rv = state.obj["metadata"].get("resourceVersion")

        def write(state: NodeClassState = state, rv: str | None = rv) -> Any:
            return patch_user_data(api_client, state.kind, state.name, state.desired, rv)

        plan.compare(
            state.kind.kind,
            name,
            {"spec": {"userData": state.current}},
            {"spec": {"userData": state.desired}},
            update=write,
            note=f"{generated.ami_family}; every node of the class is replaced (drift) after this change",
        )
    return states


def rollback_change(
    params: RunbookParams, api_client: ApiClient, name: str, previous_user_data: str, apply: bool
) -> Change:
    """Put back a node class's previous userData (from the run folder of an earlier run): this drifts the
    nodes back just as the forward change did."""
    kind = kind_for(params)
    obj = read(api_client, kind, name)
    if obj is None:
        raise LookupError(f"{kind.kind} {name} not found")
    plan = Plan("karpenter-rollback", apply)
    current = (obj.get("spec") or {}).get("userData") or ""
    change = plan.compare(
        kind.kind,
        name,
        {"spec": {"userData": current}},
        {"spec": {"userData": previous_user_data}},
        update=lambda: patch_user_data(
            api_client, kind, name, previous_user_data, obj["metadata"].get("resourceVersion")
        ),
    )
    plan.apply()
    return change
